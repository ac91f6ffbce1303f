//! Where the model computes: the CPU (burn's `flex` backend and the hand-written scorer) or a
//! GPU through burn's `wgpu` backend (cargo feature `wgpu`, off by default).
//!
//! Asking for the GPU never stops a command that the CPU can run. [`select`] tries the GPU
//! and, when there is none, says why in one line on standard error and computes on the CPU:
//! the model is the same function on either (scores agree to about 1e-6), only the speed
//! differs, so a command line or configuration written for a GPU machine keeps working on a
//! machine, a container or a build without one. That covers a build without the feature too:
//! it is one more way of having no GPU, and the line says how to get one (rebuild with
//! `--features wgpu`). [`open`] is the strict form, for callers that must know.
//!
//! Why the care: burn's lazy `Device::wgpu(..)` only meets the driver at the first tensor
//! operation, and with no adapter that operation panics (`AdapterUnavailable`). Here the
//! runtime is initialised up front with the fallible `Device::wgpu_options().init()`. burn
//! allows that initialisation once per process, so its outcome (device and adapter name, or
//! the reason there is none) is kept and every later call gets the same answer.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// The compute backend a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The CPU: burn's `flex` backend for training, the hand-written forward pass for scoring.
    #[default]
    Cpu,
    /// A GPU through burn's `wgpu` backend (Vulkan, Metal, DX12 or GL, loaded at run time).
    Wgpu,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
        })
    }
}

/// Why the GPU backend could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("this build has no wgpu backend; rebuild with --features wgpu")]
    NotBuilt,
    /// wgpu found no adapter, or could not start a device on it; `reason` is wgpu's words.
    #[error("no GPU adapter ({reason})")]
    NoAdapter { reason: String },
}

/// A device that was opened, and what it is.
#[derive(Debug, Clone)]
pub struct Compute {
    /// The backend actually in use: `Cpu` after a fallback even when `Wgpu` was asked for.
    pub backend: Backend,
    pub device: Device,
    /// The GPU adapter's name and kind, e.g. `llvmpipe (LLVM 15.0.6, 256 bits), Vulkan, Cpu`.
    pub adapter: Option<String>,
}

impl Compute {
    /// The CPU (`flex`) device.
    pub fn cpu() -> Compute {
        Compute { backend: Backend::Cpu, device: Device::flex(), adapter: None }
    }
}

/// Opens `backend`, or says why it cannot. `Cpu` always opens.
pub fn open(backend: Backend) -> Result<Device, DeviceError> {
    match backend {
        Backend::Cpu => Ok(Device::flex()),
        Backend::Wgpu => gpu::open().map(|(device, _)| device),
    }
}

/// Opens `backend`, falling back to the CPU with one line on standard error when the GPU is
/// not there (see the module notes for why a fallback, not an error). When the GPU opens, one
/// line names the adapter, and warns when it is a software rasterizer (Mesa's lavapipe): that
/// one is for correctness checks, 20 to 150 times slower than the CPU backend.
pub fn select(backend: Backend) -> Compute {
    match backend {
        Backend::Cpu => Compute::cpu(),
        Backend::Wgpu => match gpu::open() {
            Ok((device, adapter)) => {
                let software = adapter.software;
                eprintln!(
                    "wgpu: using adapter {}{}",
                    adapter.name,
                    if software {
                        " (a software rasterizer: for correctness checks, much slower than --backend cpu)"
                    } else {
                        ""
                    }
                );
                Compute { backend: Backend::Wgpu, device, adapter: Some(adapter.name) }
            }
            Err(e) => {
                eprintln!("{}", fallback_line(&e));
                Compute::cpu()
            }
        },
    }
}

/// The line [`select`] prints when it falls back.
pub fn fallback_line(e: &DeviceError) -> String {
    format!("wgpu: {e}: using the CPU backend")
}

/// The adapter a GPU device runs on (never made in a build without the feature).
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
struct Adapter {
    name: String,
    /// A CPU "GPU" (lavapipe, llvmpipe, SwiftShader).
    software: bool,
}

#[cfg(feature = "wgpu")]
mod gpu {
    use std::sync::OnceLock;

    use burn::tensor::Device;

    use super::{Adapter, DeviceError};

    /// The one initialisation this process gets (burn refuses a second).
    static OPENED: OnceLock<Result<(Device, Adapter), DeviceError>> = OnceLock::new();

    pub(super) fn open() -> Result<(Device, Adapter), DeviceError> {
        OPENED.get_or_init(init).clone()
    }

    fn init() -> Result<(Device, Adapter), DeviceError> {
        // Initialisation panics in some driver stacks instead of returning an error (a broken
        // ICD file, a loader that aborts); that too means "no GPU here" to the user.
        let attempt = std::panic::catch_unwind(|| Device::wgpu_options().init_with_setup());
        match attempt {
            Ok(Ok((device, setup))) => {
                let info = setup.adapter.get_info();
                let software = info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
                let name = format!("{}, {:?}, {:?}", info.name, info.backend, info.device_type);
                Ok((device, Adapter { name, software }))
            }
            Ok(Err(e)) => Err(DeviceError::NoAdapter { reason: one_line(&e.to_string()) }),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the driver panicked".into());
                Err(DeviceError::NoAdapter { reason: one_line(&msg) })
            }
        }
    }

    /// wgpu's messages can span lines; the fallback is one.
    fn one_line(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

#[cfg(not(feature = "wgpu"))]
mod gpu {
    use burn::tensor::Device;

    use super::{Adapter, DeviceError};

    pub(super) fn open() -> Result<(Device, Adapter), DeviceError> {
        Err(DeviceError::NotBuilt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        use clap::ValueEnum;
        for b in [Backend::Cpu, Backend::Wgpu] {
            assert_eq!(Backend::from_str(&b.to_string(), false), Ok(b));
            assert_eq!(serde_json::to_string(&b).unwrap(), format!("\"{b}\""));
        }
        assert_eq!(select(Backend::Cpu).backend, Backend::Cpu);
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn without_the_feature_wgpu_falls_back_to_the_cpu() {
        assert_eq!(open(Backend::Wgpu).unwrap_err(), DeviceError::NotBuilt);
        assert_eq!(
            fallback_line(&DeviceError::NotBuilt),
            "wgpu: this build has no wgpu backend; rebuild with --features wgpu: using the CPU backend"
        );
        let c = select(Backend::Wgpu);
        assert_eq!((c.backend, c.adapter), (Backend::Cpu, None));
    }

    /// These run on whatever adapter the machine has; CI installs Mesa's lavapipe
    /// (`mesa-vulkan-drivers`). No adapter is a failure here, not a skip.
    #[cfg(feature = "wgpu")]
    mod on_wgpu {
        use super::super::*;
        use crate::model::score::tests::{max_diff, variants};
        use crate::model::score::{CpuScorer, Scorer, explain_rows};

        pub(crate) fn gpu() -> Compute {
            let c = select(Backend::Wgpu);
            assert_eq!(
                c.backend,
                Backend::Wgpu,
                "no wgpu adapter on this machine: install one (apt-get install mesa-vulkan-drivers libvulkan1 for the software one)"
            );
            c
        }

        #[test]
        fn opening_twice_gives_the_same_device() {
            let a = gpu();
            let b = gpu();
            assert!(a.adapter.is_some());
            assert_eq!(a.adapter, b.adapter);
            assert_eq!(format!("{:?}", a.device), format!("{:?}", b.device));
            assert!(open(Backend::Wgpu).is_ok());
        }

        #[test]
        fn wgpu_scores_equal_the_cpu_path() {
            let g = gpu();
            for (model, rows, d) in variants(17) {
                let n = rows.len() / d;
                let cpu = CpuScorer::new(&model).explain(&rows);
                let on_gpu = Scorer::new(&model, &g);
                assert!(
                    matches!(on_gpu, Scorer::Burn { .. }),
                    "a wgpu scorer runs burn on the GPU"
                );
                // Odd batches: the last one is partial.
                for a in
                    [on_gpu.explain(&rows), explain_rows(on_gpu.model().unwrap(), &rows, d, 97)]
                {
                    assert_eq!(a.score.len(), n);
                    assert!(
                        max_diff(&a.score, &cpu.score) < 1e-4,
                        "d {d}: score differs by {}",
                        max_diff(&a.score, &cpu.score)
                    );
                    assert!(
                        max_diff(&a.recon, &cpu.recon) < 1e-4,
                        "d {d}: recon differs by {}",
                        max_diff(&a.recon, &cpu.recon)
                    );
                    assert!(
                        max_diff(&a.similarity, &cpu.similarity) < 1e-4,
                        "d {d}: similarity differs by {}",
                        max_diff(&a.similarity, &cpu.similarity)
                    );
                    assert!(
                        max_diff(&a.latent, &cpu.latent) < 1e-3,
                        "d {d}: latent differs by {}",
                        max_diff(&a.latent, &cpu.latent)
                    );
                    let agree =
                        a.prototype.iter().zip(&cpu.prototype).filter(|(p, q)| p == q).count();
                    assert!(agree >= n - 2, "d {d}: nearest prototype agrees on {agree}/{n}");
                }
            }
        }
    }
}
