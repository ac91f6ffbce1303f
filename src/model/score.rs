//! Batched inference with explanations: each score comes with the reconstruction error, the
//! nearest prototype and its similarity, and the latent vector, so an alert can say why.
//!
//! Two paths compute the same function. [`score_rows`]/[`explain_rows`] run the burn model on
//! any device. [`CpuScorer`] is a hand-written forward pass over the same weights for the CPU:
//! the network is tiny (a 40-feature model is about 2,500 multiply-adds per row), so burn's
//! per-operation overhead and intermediate tensors dominate there. The hand-written path runs
//! blocks of 256 rows through sgemm (`gemm`) with every buffer reused and the per-row parts
//! (reconstruction error, normalisation, prototypes, sigmoid) fused in one loop. The test
//! below holds the two paths equal to 1e-5.
//!
//! [`Scorer`] is what a caller that only wants scores holds: the hand-written path on the
//! CPU, burn on a GPU (`--backend wgpu`), behind one `explain`.

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};

use super::denormal::{FlushGuard, flush_subnormals};
use super::device::{Backend, Compute};
use super::gemm::gemm_acc;
use super::mnpwad::{LEAKY_SLOPE, Mnpwad, to_vec};

/// Scores and their explanations for a batch of rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// s(x) in [0, 1], higher is more anomalous.
    pub score: Vec<f32>,
    /// r(x), mean SmoothL1 reconstruction error.
    pub recon: Vec<f32>,
    /// Index of the most similar prototype.
    pub prototype: Vec<u32>,
    /// Its Student's t similarity m(x) in (0, 1].
    pub similarity: Vec<f32>,
    /// Normalised latent z, row-major `[n, e]`.
    pub latent: Vec<f32>,
    /// Latent width e.
    pub latent_width: usize,
}

/// Anomaly scores only, burn path, in batches of `batch` rows.
pub fn score_rows(model: &Mnpwad, rows: &[f32], d: usize, batch: usize) -> Vec<f32> {
    let device = model.prototypes.val().device();
    let mut out = Vec::with_capacity(rows.len() / d.max(1));
    for chunk in rows.chunks(batch.max(1) * d) {
        let x = Tensor::from_data(TensorData::new(chunk.to_vec(), [chunk.len() / d, d]), &device);
        out.extend(to_vec(model.forward(x).score));
    }
    out
}

/// Scores with explanations, burn path.
pub fn explain_rows(model: &Mnpwad, rows: &[f32], d: usize, batch: usize) -> Scores {
    let device = model.prototypes.val().device();
    let e = model.config.latent;
    let mut s = Scores { latent_width: e, ..Default::default() };
    for chunk in rows.chunks(batch.max(1) * d) {
        let x = Tensor::from_data(TensorData::new(chunk.to_vec(), [chunk.len() / d, d]), &device);
        let f = model.forward(x);
        // The explanation names the nearest prototype even in the `prototypes` ablation,
        // where m(x) does not reach the scorer.
        let (sim, arg) = f.q.max_dim_with_indices(1);
        s.score.extend(to_vec(f.score));
        s.recon.extend(to_vec(f.recon));
        s.similarity.extend(to_vec(sim));
        s.prototype.extend(
            arg.into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .expect("indices read back as i64")
                .into_iter()
                .map(|v| v as u32),
        );
        s.latent.extend(to_vec(f.z));
    }
    s
}

/// Rows per burn dispatch on a GPU. A GPU wants large batches (a dispatch costs tens of
/// microseconds whatever its size); 65,536 rows of a 200-feature model are 52 MB, small for
/// any GPU. The streaming scorer's batches (at most `[stream] batch_rows`) go in one dispatch.
pub const GPU_BATCH: usize = 65_536;

/// A model ready to score on one backend.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per scoring thread, made once: the size is never copied in a loop
pub enum Scorer {
    /// The hand-written CPU forward pass: the fastest on a CPU (see the module notes).
    Cpu(CpuScorer),
    /// The burn model on its device (a GPU), scored `batch` rows per dispatch.
    Burn { model: Mnpwad, batch: usize },
}

impl Scorer {
    /// The scorer for `on`: the hand-written path on the CPU, else the model moved to the
    /// device. A `Compute` that fell back to the CPU gets the CPU path.
    pub fn new(model: &Mnpwad, on: &Compute) -> Scorer {
        match on.backend {
            Backend::Cpu => Scorer::Cpu(CpuScorer::new(model)),
            Backend::Wgpu => {
                Scorer::Burn { model: model.clone().to_device(&on.device), batch: GPU_BATCH }
            }
        }
    }

    /// Input row width.
    pub fn input_width(&self) -> usize {
        match self {
            Scorer::Cpu(s) => s.input_width(),
            Scorer::Burn { model, .. } => model.config.d_input,
        }
    }

    /// Scores and explains every row of `rows` (row-major, width [`Scorer::input_width`]).
    pub fn explain(&self, rows: &[f32]) -> Scores {
        match self {
            Scorer::Cpu(s) => s.explain(rows),
            Scorer::Burn { model, batch } => {
                if rows.is_empty() {
                    // No zero-row tensors on a GPU: nothing to dispatch.
                    return Scores { latent_width: model.config.latent, ..Default::default() };
                }
                explain_rows(model, rows, model.config.d_input, *batch)
            }
        }
    }

    /// The burn model, for a scorer that runs one.
    pub fn model(&self) -> Option<&Mnpwad> {
        match self {
            Scorer::Cpu(_) => None,
            Scorer::Burn { model, .. } => Some(model),
        }
    }
}

/// One dense layer, row-major weights `[d_in, d_out]` (y = x W + b).
#[derive(Debug, Clone)]
struct Dense {
    d_in: usize,
    d_out: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Dense {
    fn from(l: &burn::nn::Linear) -> Dense {
        let w = l.weight.val();
        let [d_in, d_out] = w.dims();
        let mut b = l.bias.as_ref().map(|b| to_vec(b.val())).unwrap_or_else(|| vec![0.0; d_out]);
        let mut w = to_vec(w);
        flush_subnormals(&mut w);
        flush_subnormals(&mut b);
        Dense { d_in, d_out, w, b }
    }
}

/// The hand-written CPU forward pass over a trained model's weights.
#[derive(Debug, Clone)]
pub struct CpuScorer {
    enc1: Dense,
    enc2: Dense,
    dec1: Dense,
    dec2: Dense,
    score1: Dense,
    /// Second scorer layer as a vector (one output).
    score2_w: Vec<f32>,
    score2_b: f32,
    /// Normalised prototypes `[k, e]` and their squared norms.
    protos: Vec<f32>,
    proto_sq: Vec<f32>,
    alpha: f32,
    recon_input: bool,
    similarity_input: bool,
}

impl CpuScorer {
    /// Copies the weights out of a burn model.
    pub fn new(model: &Mnpwad) -> CpuScorer {
        let e = model.config.latent;
        let mut raw = to_vec(model.prototypes.val());
        flush_subnormals(&mut raw);
        let mut protos = Vec::with_capacity(raw.len());
        for p in raw.chunks(e) {
            let norm = p.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            protos.extend(p.iter().map(|v| v / norm));
        }
        let proto_sq = protos.chunks(e).map(|p| p.iter().map(|v| v * v).sum()).collect();
        let s2 = Dense::from(&model.score2);
        CpuScorer {
            enc1: Dense::from(&model.enc1),
            enc2: Dense::from(&model.enc2),
            dec1: Dense::from(&model.dec1),
            dec2: Dense::from(&model.dec2),
            score1: Dense::from(&model.score1),
            score2_w: s2.w,
            score2_b: s2.b[0],
            protos,
            proto_sq,
            alpha: model.config.alpha as f32,
            recon_input: model.config.recon_input,
            similarity_input: model.config.similarity_input,
        }
    }

    pub fn input_width(&self) -> usize {
        self.enc1.d_in
    }
    pub fn latent_width(&self) -> usize {
        self.enc2.d_out
    }

    /// Scores and explains every row of `rows` (row-major, width [`CpuScorer::input_width`]).
    pub fn explain(&self, rows: &[f32]) -> Scores {
        let n = rows.len() / self.input_width();
        let e = self.latent_width();
        let mut s = Scores {
            score: vec![0.0; n],
            recon: vec![0.0; n],
            prototype: vec![0; n],
            similarity: vec![0.0; n],
            latent: vec![0.0; n * e],
            latent_width: e,
        };
        self.run(rows, |i, score, recon, proto, sim, z| {
            s.score[i] = score;
            s.recon[i] = recon;
            s.prototype[i] = proto;
            s.similarity[i] = sim;
            s.latent[i * e..(i + 1) * e].copy_from_slice(z);
        });
        s
    }

    /// Scores only, written into `out` (one per row); the hot path of the bench.
    /// Scores of row-major scaled rows.
    pub fn scores(&self, rows: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; rows.len() / self.input_width().max(1)];
        self.score_into(rows, &mut out);
        out
    }

    pub fn score_into(&self, rows: &[f32], out: &mut [f32]) {
        self.run(rows, |i, score, _, _, _, _| out[i] = score);
    }

    /// y = leaky_relu(x W + b) for `rows` rows, through sgemm.
    fn layer(l: &Dense, x: &[f32], rows: usize, y: &mut [f32]) {
        let y = &mut y[..rows * l.d_out];
        for r in y.chunks_exact_mut(l.d_out) {
            r.copy_from_slice(&l.b);
        }
        gemm_acc(x, &l.w, y, rows, l.d_in, l.d_out);
        // A select with an unconditional store vectorises; a conditional store does not
        // (it was a third of the scorer's time).
        let slope = LEAKY_SLOPE as f32;
        for v in y.iter_mut() {
            *v = if *v < 0.0 { *v * slope } else { *v };
        }
    }

    /// Runs the network over `rows` in blocks of [`BLOCK`] rows; calls `sink(row, score, r,
    /// nearest prototype, m, z)` per row in order.
    fn run(&self, rows: &[f32], mut sink: impl FnMut(usize, f32, f32, u32, f32, &[f32])) {
        let d = self.input_width();
        let e = self.latent_width();
        let _ftz = FlushGuard::new();
        let mut t = Scratch::new(self);
        for (b, x) in rows.chunks(BLOCK * d).enumerate() {
            let n = x.len() / d;
            Self::layer(&self.enc1, x, n, &mut t.h);
            Self::layer(&self.enc2, &t.h, n, &mut t.lat);
            if self.recon_input {
                Self::layer(&self.dec1, &t.lat, n, &mut t.h2);
                Self::layer(&self.dec2, &t.h2, n, &mut t.xh);
            }
            let f = e + 2;
            for r in 0..n {
                let recon = if self.recon_input {
                    // Eight partial sums, so the loop vectorises (a single f32 sum is a
                    // serial chain the compiler may not reorder).
                    let smooth_l1 = |a: f32, b: f32| {
                        let diff = (a - b).abs();
                        if diff < 1.0 { 0.5 * diff * diff } else { diff - 0.5 }
                    };
                    let (xc, hc) = (
                        x[r * d..(r + 1) * d].chunks_exact(8),
                        t.xh[r * d..(r + 1) * d].chunks_exact(8),
                    );
                    let mut tail: f32 = xc
                        .remainder()
                        .iter()
                        .zip(hc.remainder())
                        .map(|(&a, &b)| smooth_l1(a, b))
                        .sum();
                    let mut acc = [0.0f32; 8];
                    for (a8, b8) in xc.zip(hc) {
                        for k in 0..8 {
                            acc[k] += smooth_l1(a8[k], b8[k]);
                        }
                    }
                    tail += acc.iter().sum::<f32>();
                    tail / d as f32
                } else {
                    0.0
                };
                let lat = &t.lat[r * e..(r + 1) * e];
                // The norm in f64: dividing by a small norm amplifies rounding, and e is small.
                let norm = (lat.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32)
                    .max(1e-12);
                let z = &mut t.z[r * e..(r + 1) * e];
                for (zi, li) in z.iter_mut().zip(lat) {
                    *zi = li / norm;
                }
                let z2: f32 = z.iter().map(|v| v * v).sum();
                let (mut best, mut best_q) = (0u32, f32::NEG_INFINITY);
                for (j, p) in self.protos.chunks_exact(e).enumerate() {
                    let dot: f32 = z.iter().zip(p).map(|(a, b)| a * b).sum();
                    let dist2 = (z2 + self.proto_sq[j] - 2.0 * dot).max(0.0);
                    let base = 1.0 + dist2 / self.alpha;
                    let q = if self.alpha == 1.0 {
                        1.0 / base
                    } else {
                        base.powf(-(self.alpha + 1.0) / 2.0)
                    };
                    if q > best_q {
                        best_q = q;
                        best = j as u32;
                    }
                }
                let feat = &mut t.feat[r * f..(r + 1) * f];
                feat[..e].copy_from_slice(z);
                feat[e] = recon;
                feat[e + 1] = if self.similarity_input { best_q } else { 0.0 };
                t.recon[r] = recon;
                t.best[r] = (best, best_q);
            }
            Self::layer(&self.score1, &t.feat, n, &mut t.s1);
            let hdim = self.score1.d_out;
            for r in 0..n {
                let logit = self.score2_b
                    + t.s1[r * hdim..(r + 1) * hdim]
                        .iter()
                        .zip(&self.score2_w)
                        .map(|(a, b)| a * b)
                        .sum::<f32>();
                let score = 1.0 / (1.0 + (-logit).exp());
                sink(
                    b * BLOCK + r,
                    score,
                    t.recon[r],
                    t.best[r].0,
                    t.best[r].1,
                    &t.z[r * e..(r + 1) * e],
                );
            }
        }
    }
}

/// Rows per block of the CPU path: the block's activations stay in L2 cache.
const BLOCK: usize = 256;

/// Buffers of one block's forward pass.
struct Scratch {
    h: Vec<f32>,
    lat: Vec<f32>,
    h2: Vec<f32>,
    xh: Vec<f32>,
    z: Vec<f32>,
    feat: Vec<f32>,
    s1: Vec<f32>,
    recon: Vec<f32>,
    best: Vec<(u32, f32)>,
}

impl Scratch {
    fn new(s: &CpuScorer) -> Scratch {
        Scratch {
            h: vec![0.0; BLOCK * s.enc1.d_out],
            lat: vec![0.0; BLOCK * s.enc2.d_out],
            h2: vec![0.0; BLOCK * s.dec1.d_out],
            xh: vec![0.0; BLOCK * s.dec2.d_out],
            z: vec![0.0; BLOCK * s.enc2.d_out],
            feat: vec![0.0; BLOCK * s.score1.d_in],
            s1: vec![0.0; BLOCK * s.score1.d_out],
            recon: vec![0.0; BLOCK],
            best: vec![(0, 0.0); BLOCK],
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::mnpwad::ModelConfig;
    use burn::tensor::Device;
    use rand::{Rng, SeedableRng};

    /// The scorer's test cases, shared by every comparison of two scoring paths: three model
    /// shapes (40 features and k 4; alpha 2.5 without the reconstruction input; no similarity
    /// input), each with 300 random rows slightly outside [0, 1]. Returns (model, rows, width).
    pub(crate) fn variants(seed: u64) -> Vec<(Mnpwad, Vec<f32>, usize)> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        [(40, 4, 1.0, true, true), (13, 3, 2.5, false, true), (6, 2, 1.0, true, false)]
            .into_iter()
            .map(|(d, k, alpha, recon, sim)| {
                let mut cfg = ModelConfig::new(d, 8, k);
                cfg.alpha = alpha;
                cfg.recon_input = recon;
                cfg.similarity_input = sim;
                let model = cfg.init(&mut rng, &Device::flex());
                let rows: Vec<f32> = (0..300 * d).map(|_| rng.random_range(-0.2f32..1.2)).collect();
                (model, rows, d)
            })
            .collect()
    }

    pub(crate) fn max_diff(x: &[f32], y: &[f32]) -> f32 {
        x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max)
    }

    #[test]
    fn cpu_path_equals_burn_path() {
        for (model, rows, d) in variants(7) {
            let n = rows.len() / d;
            let a = explain_rows(&model, &rows, d, 128);
            let b = CpuScorer::new(&model).explain(&rows);
            assert!(max_diff(&a.score, &b.score) < 1e-5, "score {}", max_diff(&a.score, &b.score));
            assert!(max_diff(&a.recon, &b.recon) < 1e-5);
            assert!(max_diff(&a.similarity, &b.similarity) < 1e-5);
            // The latent is normalised: where the encoder output is short (all its entries in
            // LeakyReLU's 0.01 slope), f32 rounding of either path is amplified by 1/norm. Equal
            // to 1e-5 where the norm is at least 0.05, and to 1e-4 everywhere.
            let x = Tensor::<2>::from_data(TensorData::new(rows.clone(), [n, d]), &Device::flex());
            let norms = to_vec(model.encode(x).powf_scalar(2.0).sum_dim(1).sqrt());
            for (r, &norm) in norms.iter().enumerate().take(n) {
                let diff = max_diff(&a.latent[r * 8..(r + 1) * 8], &b.latent[r * 8..(r + 1) * 8]);
                let tol = if norm >= 0.05 { 1e-5 } else { 1e-4 };
                assert!(diff < tol, "row {r}: latent differs by {diff}, encoder norm {norm}");
            }
            // Nearest prototype: equal unless two prototypes are within rounding of each other.
            let agree = a.prototype.iter().zip(&b.prototype).filter(|(p, q)| p == q).count();
            assert!(agree >= n - 2, "{agree}/{n}");
            let mut out = vec![0.0; n];
            CpuScorer::new(&model).score_into(&rows, &mut out);
            assert_eq!(out, b.score);
            assert!(max_diff(&score_rows(&model, &rows, d, 64), &a.score) < 1e-6);
        }
    }
}
