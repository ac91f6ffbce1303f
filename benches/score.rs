//! Scoring throughput at batch 4096 for a 40-feature model: burn (flex backend) against the
//! hand-written CPU path. Rows are generated in memory before timing.
//!
//! The speed bar is per core: run with `RAYON_NUM_THREADS=1 cargo bench --bench score`
//! (burn's flex backend spreads matrix products over rayon threads otherwise).

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

criterion_group!(benches, bench);
criterion_main!(benches);
