//! Scoring throughput at batch 4096 for a 40-feature model: burn (flex backend) against the
//! hand-written CPU path. Rows are generated in memory before timing.
//!
//! The speed bar is per core: run with `RAYON_NUM_THREADS=1 cargo bench --bench score`
//! (burn's flex backend spreads matrix products over rayon threads otherwise).
//!
//! With `--features wgpu`, a second group compares burn on the GPU with the CPU backend (the
//! hand-written path, one core) at batch sizes 256 to 65,536, in rows/s:
//!
//! ```text
//! cargo bench --features wgpu --bench score -- score_wgpu_vs_cpu
//! ```
//!
//! The GPU figures include the copy of the rows to the GPU and of the scores back, as the
//! scorer pays them. The group refuses to run on a CPU fallback (it would report CPU figures
//! under the GPU's name). On lavapipe (software Vulkan) it runs, slowly: for a real figure run
//! it where a GPU driver is installed.

use burn::tensor::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mnpflow::model::mnpwad::ModelConfig;
use mnpflow::model::score::{CpuScorer, score_rows};
use rand::{Rng, SeedableRng};

const D: usize = 40;
const BATCH: usize = 4096;

fn bench(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let model = ModelConfig::new(D, 8, 4).init(&mut rng, &Device::flex());
    let rows: Vec<f32> = (0..BATCH * D).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let cpu = CpuScorer::new(&model);
    let mut out = vec![0.0f32; BATCH];
    let mut g = c.benchmark_group("score_40features_batch4096");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("burn_flex", |b| b.iter(|| score_rows(&model, &rows, D, BATCH)));
    g.bench_function("hand_written_cpu", |b| b.iter(|| cpu.score_into(&rows, &mut out)));
    g.finish();
}

/// burn on the GPU against the CPU backend, batch sizes 256 to 65,536, 40 features.
#[cfg(feature = "wgpu")]
fn bench_wgpu(c: &mut Criterion) {
    use burn::module::Module;
    use criterion::BenchmarkId;
    use mnpflow::model::device::{Backend, select};

    const SIZES: [usize; 5] = [256, 1024, 4096, 16_384, 65_536];
    let gpu = select(Backend::Wgpu);
    assert_eq!(
        gpu.backend,
        Backend::Wgpu,
        "no wgpu adapter: this group measures the GPU, it does not fall back"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let model = ModelConfig::new(D, 8, 4).init(&mut rng, &Device::flex());
    let on_gpu = model.clone().to_device(&gpu.device);
    let cpu = CpuScorer::new(&model);
    let max = SIZES[SIZES.len() - 1];
    let rows: Vec<f32> = (0..max * D).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let mut out = vec![0.0f32; max];
    // Compile the GPU kernels for every shape before timing.
    for &n in &SIZES {
        score_rows(&on_gpu, &rows[..n * D], D, n);
    }
    let mut g = c.benchmark_group("score_wgpu_vs_cpu");
    // A software adapter takes seconds per large batch: few samples, bounded time.
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(3));
    for &n in &SIZES {
        let x = &rows[..n * D];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("cpu", n), &n, |b, _| {
            b.iter(|| cpu.score_into(x, &mut out[..n]))
        });
        g.bench_with_input(BenchmarkId::new("wgpu", n), &n, |b, _| {
            b.iter(|| score_rows(&on_gpu, x, D, n))
        });
    }
    g.finish();
}

#[cfg(not(feature = "wgpu"))]
criterion_group!(benches, bench);
#[cfg(feature = "wgpu")]
criterion_group!(benches, bench, bench_wgpu);
criterion_main!(benches);
