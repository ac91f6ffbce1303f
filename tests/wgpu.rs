//! The GPU backend (`--features wgpu`) as a user runs it: `--backend wgpu` on `score`, `train`
//! and `replay` against the CPU, and the fallback when no GPU driver is visible.
//!
//! CI runs these on Mesa's lavapipe (`apt-get install mesa-vulkan-drivers libvulkan1`), a
//! software Vulkan driver: sizes are small because it is 20 to 150 times slower than the CPU
//! backend. No adapter is a failure here, not a skip.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::util::shared_root;

fn mnpflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnpflow"));
    // Silences a harmless probe warning of the GL backend.
    let xdg = std::env::temp_dir().join("mnpflow-test-xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    c.env("XDG_RUNTIME_DIR", xdg).env_remove("MNPFLOW_DATA");
    c
}

/// Hides every GPU driver from a child: the Vulkan loader finds no ICD (both the old and the
/// new variable), and libglvnd no EGL vendor (the GL backend would find Mesa's llvmpipe).
fn without_gpu_drivers(c: &mut Command) -> &mut Command {
    c.env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent/egl.json")
        .env("__EGL_VENDOR_LIBRARY_DIRS", "/nonexistent")
}

fn ok(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

/// The first 800 rows of the thyroid table (20 anomalies): enough to train, small enough for
/// a software GPU.
fn small_table(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(shared_root("data/tables/adbench-thyroid.csv")).unwrap();
    let head: Vec<&str> = text.lines().take(801).collect();
    let p = dir.join("thyroid-800.csv");
    std::fs::write(&p, head.join("\n") + "\n").unwrap();
    p
}

/// A short schedule: a software GPU trains it in a minute or two.
const SHORT: [&str; 6] =
    ["--epochs", "3", "--set", "pretrain_epochs=2", "--set", "batches_per_epoch=4"];

fn train(table: &Path, model: &Path, backend: &str, schedule: &[&str]) -> String {
    ok(mnpflow()
        .args(["train", "--quiet", "--seed", "3", "--backend", backend])
        .args(schedule)
        .arg("-o")
        .arg(model)
        .arg("--table")
        .arg(table)
        .output()
        .unwrap())
}

/// `score`'s CSV: row -> (score, recon_error, similarity).
fn scores_of(csv: &Path) -> BTreeMap<String, [f32; 3]> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().starts_with("row,label,score,recon_error,prototype,similarity,z0")
    );
    lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (
                c[0].to_string(),
                [c[2].parse().unwrap(), c[3].parse().unwrap(), c[5].parse().unwrap()],
            )
        })
        .collect()
}

fn score(model: &Path, table: &Path, out: &Path, backend: &str, no_driver: bool) -> String {
    let mut c = mnpflow();
    if no_driver {
        without_gpu_drivers(&mut c);
    }
    ok(c.args(["score", "--backend", backend, "--model"])
        .arg(model)
        .arg("--table")
        .arg(table)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap())
}

fn max_diff(a: &BTreeMap<String, [f32; 3]>, b: &BTreeMap<String, [f32; 3]>) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(k, x)| {
            let y = b.get(k).unwrap_or_else(|| panic!("row {k} missing"));
            (0..3).map(|i| (x[i] - y[i]).abs()).fold(0.0f32, f32::max)
        })
        .fold(0.0f32, f32::max)
}

/// `score --backend wgpu` on a model trained on the CPU equals `--backend cpu` to 1e-4, and
/// names the adapter; with no driver visible it says why in one line and scores on the CPU,
/// byte for byte the CPU's output.
#[test]
fn score_on_wgpu_equals_the_cpu_and_falls_back_without_a_driver() {
    let dir = tempfile::tempdir().unwrap();
    let table = small_table(dir.path());
    let model = dir.path().join("m.mnp");
    // Trained long enough (2 s on the CPU) for its scores to spread over most of [0, 1].
    train(&table, &model, "cpu", &["--epochs", "30"]);
    let (cpu, gpu, fallback) =
        (dir.path().join("cpu.csv"), dir.path().join("gpu.csv"), dir.path().join("fallback.csv"));
    let err = score(&model, &table, &cpu, "cpu", false);
    assert!(!err.contains("wgpu"), "{err}");
    let err = score(&model, &table, &gpu, "wgpu", false);
    assert!(err.contains("wgpu: using adapter "), "no adapter line: {err}");
    let (a, b) = (scores_of(&cpu), scores_of(&gpu));
    assert_eq!(a.len(), 800);
    let d = max_diff(&a, &b);
    assert!(d < 1e-4, "wgpu scores differ from the CPU's by {d}");
    // The scores are not all alike, so agreeing means something.
    let spread = a.values().map(|v| v[0]).fold(f32::NEG_INFINITY, f32::max)
        - a.values().map(|v| v[0]).fold(f32::INFINITY, f32::min);
    assert!(spread > 0.3, "score spread {spread}");

    let err = score(&model, &table, &fallback, "wgpu", true);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("wgpu:")).collect();
    assert_eq!(lines.len(), 1, "one fallback line expected: {err}");
    assert!(
        lines[0].starts_with("wgpu: no GPU adapter (")
            && lines[0].ends_with("): using the CPU backend"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&fallback).unwrap(),
        std::fs::read(&cpu).unwrap(),
        "the fallback is the CPU path"
    );
}

/// `train --backend wgpu` trains on the GPU: the model file is usable, its scores finite, and
/// they track a CPU-trained model of the same seed (same batches; f32 rounding only).
#[test]
fn train_on_wgpu_tracks_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let table = small_table(dir.path());
    let (mg, mc) = (dir.path().join("gpu.mnp"), dir.path().join("cpu.mnp"));
    let err = train(&table, &mg, "wgpu", &SHORT);
    assert!(err.contains("wgpu: using adapter "), "{err}");
    train(&table, &mc, "cpu", &SHORT);
    let (sg, sc) = (dir.path().join("g.csv"), dir.path().join("c.csv"));
    score(&mg, &table, &sg, "cpu", false);
    score(&mc, &table, &sc, "cpu", false);
    let (a, b) = (scores_of(&sg), scores_of(&sc));
    assert!(
        a.values().all(|v| v.iter().all(|x| x.is_finite())),
        "non-finite scores from the wgpu-trained model"
    );
    let diffs: Vec<f32> = a.iter().map(|(k, x)| (x[0] - b[k][0]).abs()).collect();
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    assert!(
        mean < 0.02,
        "wgpu- and CPU-trained scores differ by {mean} on average (max {})",
        diffs.iter().fold(0.0f32, |m, &v| m.max(v))
    );
}

/// `replay --backend wgpu`: the streaming scorer scores its batches with burn on the GPU; every
/// flow's score equals the CPU scorer's to 1e-4, and the flows are the same.
#[test]
fn replay_on_wgpu_scores_like_the_cpu() {
    let (model, _) = crate::stream::model();
    let dir = tempfile::tempdir().unwrap();
    let run = |backend: &str| -> Vec<serde_json::Value> {
        let out_dir = dir.path().join(backend);
        let err = ok(mnpflow()
            .current_dir(dir.path())
            .args([
                "replay",
                "--workers",
                "1",
                "--flows",
                "jsonl",
                "--threshold",
                "0.5",
                "--rules",
                "none",
                "--backend",
                backend,
                "--model",
            ])
            .arg(model)
            .arg("--data-dir")
            .arg(dir.path().join(format!("data-{backend}")))
            .arg("--output-dir")
            .arg(&out_dir)
            .arg(crate::stream::repo("captures/demo.pcap"))
            .output()
            .unwrap());
        assert_eq!(err.contains("wgpu: using adapter "), backend == "wgpu", "{err}");
        let text = std::fs::read_to_string(out_dir.join("flows.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (cpu, gpu) = (run("cpu"), run("wgpu"));
    assert!(cpu.len() > 100, "{} flows", cpu.len());
    assert_eq!(cpu.len(), gpu.len());
    let key = |f: &serde_json::Value| {
        let mut f = f.clone();
        let m = f.as_object_mut().unwrap();
        let s = m.remove("score").and_then(|s| s.as_f64()).expect("a score per flow");
        m.remove("alert");
        (f.to_string(), s)
    };
    let mut a: Vec<(String, f64)> = cpu.iter().map(key).collect();
    let mut b: Vec<(String, f64)> = gpu.iter().map(key).collect();
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    let mut worst = 0.0f64;
    for ((fa, sa), (fb, sb)) in a.iter().zip(&b) {
        assert_eq!(fa, fb, "the same flows in the same order");
        worst = worst.max((sa - sb).abs());
    }
    assert!(worst < 1e-4, "replay scores differ by up to {worst}");
}
