//! The MNPWAD network as burn modules: encoder, decoder, prototypes, scorer.
//!
//! Read `../shared/spec/mnpwad.md`, section "Architecture", first; every layer width and
//! activation here is taken from it.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::{leaky_relu, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// LeakyReLU negative slope (spec: 0.01, PyTorch's default, on every layer including the
/// decoder output).
pub const LEAKY_SLOPE: f64 = 0.01;
/// Width of the scorer's hidden layer (spec: 16).
pub const SCORER_HIDDEN: usize = 16;

/// The recipe of a network: widths and the kernel parameter. Together with the weights it
/// rebuilds the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Input width d (after constant columns are dropped).
    pub d_input: usize,
    /// Hidden width h = d - (d - e) / 2 (integer division), from the reference.
    pub hidden: usize,
    /// Latent width e (default 8).
    pub latent: usize,
    /// Number of prototypes k.
    pub n_prototypes: usize,
    /// Student's t kernel degrees of freedom alpha (default 1).
    pub alpha: f64,
    /// Feed r(x) to the scorer (false for the `decoder` ablation, which has no decoder).
    pub recon_input: bool,
    /// Feed m(x) to the scorer (false for the `prototypes` ablation).
    pub similarity_input: bool,
}

impl ModelConfig {
    /// The spec's architecture for input width `d`, latent width `e` and `k` prototypes.
    pub fn new(d_input: usize, latent: usize, n_prototypes: usize) -> Self {
        // With e > d the formula still gives a width between the two.
        let hidden = if d_input >= latent { d_input - (d_input - latent) / 2 } else { latent };
        ModelConfig {
            d_input,
            hidden,
            latent,
            n_prototypes,
            alpha: 1.0,
            recon_input: true,
            similarity_input: true,
        }
    }

    /// A freshly initialised network. Linear layers use PyTorch's default initialisation
    /// (weights and biases uniform in +-1/sqrt(fan_in)) drawn from `rng`, not from burn's
    /// global generator, so that a seed decides the model on every backend. Prototypes start
    /// as random unit vectors and are normally replaced by k-means centroids.
    pub fn init(&self, rng: &mut impl Rng, device: &Device) -> Mnpwad {
        let e = self.latent;
        let protos: Vec<f32> =
            (0..self.n_prototypes * e).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Mnpwad {
            enc1: init_linear(rng, self.d_input, self.hidden, device),
            enc2: init_linear(rng, self.hidden, e, device),
            dec1: init_linear(rng, e, self.hidden, device),
            dec2: init_linear(rng, self.hidden, self.d_input, device),
            prototypes: Param::from_tensor(Tensor::from_data(
                TensorData::new(protos, [self.n_prototypes, e]),
                device,
            )),
            score1: init_linear(rng, e + 2, SCORER_HIDDEN, device),
            score2: init_linear(rng, SCORER_HIDDEN, 1, device),
            config: self.clone(),
        }
    }
}

/// A linear layer with PyTorch's default initialisation, drawn from `rng`.
pub fn init_linear(rng: &mut impl Rng, d_in: usize, d_out: usize, device: &Device) -> Linear {
    let bound = 1.0 / (d_in as f32).sqrt();
    let w: Vec<f32> = (0..d_in * d_out).map(|_| rng.random_range(-bound..bound)).collect();
    let b: Vec<f32> = (0..d_out).map(|_| rng.random_range(-bound..bound)).collect();
    linear_from(w, b, d_in, d_out, device)
}

/// A linear layer from row-major weights `[d_in, d_out]` (burn's row layout: y = x W + b).
pub fn linear_from(w: Vec<f32>, b: Vec<f32>, d_in: usize, d_out: usize, device: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [d_in, d_out]), device)),
        bias: Some(Param::from_tensor(Tensor::from_data(TensorData::new(b, [d_out]), device))),
    }
}

/// MNPWAD: encoder d -> h -> e, decoder e -> h -> d, k prototypes in R^e, scorer e+2 -> 16 -> 1.
#[derive(Module, Debug)]
pub struct Mnpwad {
    pub enc1: Linear,
    pub enc2: Linear,
    pub dec1: Linear,
    pub dec2: Linear,
    /// Prototype matrix P, `[k, e]` (normalised to unit rows when used).
    pub prototypes: Param<Tensor<2>>,
    pub score1: Linear,
    pub score2: Linear,
    #[module(skip)]
    pub config: ModelConfig,
}

/// Everything one forward pass yields; the by-products explain the score.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Normalised latent z, `[n, e]`.
    pub z: Tensor<2>,
    /// Reconstruction error r(x), `[n]`.
    pub recon: Tensor<1>,
    /// Student's t similarities q, `[n, k]`.
    pub q: Tensor<2>,
    /// Maximum similarity m(x), `[n]`.
    pub m: Tensor<1>,
    /// Anomaly score s(x) in [0, 1], `[n]`.
    pub score: Tensor<1>,
}

/// L2 normalisation of rows, as `torch.nn.functional.normalize` (norm clamped at 1e-12).
///
/// # Shapes
/// - x: `[n, e]` -> `[n, e]`
pub fn normalize_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// Mean over features of SmoothL1(x, x_hat) with beta = 1.
///
/// # Shapes
/// - x, x_hat: `[n, d]` -> `[n]`
pub fn smooth_l1_rows(x: Tensor<2>, x_hat: Tensor<2>) -> Tensor<1> {
    smooth_l1(x - x_hat).mean_dim(1).squeeze_dim(1)
}

/// Elementwise SmoothL1 of a difference, beta = 1: 0.5 d^2 if |d| < 1, else |d| - 0.5.
pub fn smooth_l1<const D: usize>(diff: Tensor<D>) -> Tensor<D> {
    let a = diff.abs();
    let q = a.clone().clamp_max(1.0);
    q.clone().powf_scalar(2.0).mul_scalar(0.5) + (a - q)
}

impl Mnpwad {
    /// Encoder output before normalisation.
    ///
    /// # Shapes
    /// - x: `[n, d]` -> `[n, e]`
    pub fn encode(&self, x: Tensor<2>) -> Tensor<2> {
        let h = leaky_relu(self.enc1.forward(x), LEAKY_SLOPE); // [n, h]
        leaky_relu(self.enc2.forward(h), LEAKY_SLOPE) // [n, e]
    }

    /// Decoder.
    ///
    /// # Shapes
    /// - latent: `[n, e]` -> `[n, d]`
    pub fn decode(&self, latent: Tensor<2>) -> Tensor<2> {
        let h = leaky_relu(self.dec1.forward(latent), LEAKY_SLOPE); // [n, h]
        leaky_relu(self.dec2.forward(h), LEAKY_SLOPE) // [n, d]
    }

    /// Student's t similarity of normalised latents to the normalised prototypes.
    ///
    /// # Shapes
    /// - z: `[n, e]` (unit rows) -> `[n, k]`
    pub fn similarity(&self, z: Tensor<2>) -> Tensor<2> {
        let p = normalize_rows(self.prototypes.val()); // [k, e]
        let z2 = z.clone().powf_scalar(2.0).sum_dim(1); // [n, 1]
        let p2 = p.clone().powf_scalar(2.0).sum_dim(1).transpose(); // [1, k]
        let cross = z.matmul(p.transpose()); // [n, k]
        let dist2 = (z2 + p2 - cross.mul_scalar(2.0)).clamp_min(0.0); // [n, k]
        let alpha = self.config.alpha;
        let base = dist2.div_scalar(alpha).add_scalar(1.0);
        if alpha == 1.0 { base.recip() } else { base.powf_scalar(-(alpha + 1.0) / 2.0) }
    }

    /// The full forward pass.
    ///
    /// # Shapes
    /// - x: `[n, d]`; outputs as documented on [`Forward`].
    pub fn forward(&self, x: Tensor<2>) -> Forward {
        let latent = self.encode(x.clone()); // [n, e]
        let z = normalize_rows(latent.clone()); // [n, e]
        let n = z.dims()[0];
        let device = z.device();
        let recon = if self.config.recon_input {
            smooth_l1_rows(x, self.decode(latent)) // [n]
        } else {
            Tensor::zeros([n], &device)
        };
        let q = self.similarity(z.clone()); // [n, k]
        let m = if self.config.similarity_input {
            q.clone().max_dim(1).squeeze_dim(1) // [n]
        } else {
            Tensor::zeros([n], &device)
        };
        let features = Tensor::cat(
            vec![z.clone(), recon.clone().unsqueeze_dim(1), m.clone().unsqueeze_dim(1)],
            1,
        ); // [n, e+2]
        let h = leaky_relu(self.score1.forward(features), LEAKY_SLOPE); // [n, 16]
        let score = sigmoid(self.score2.forward(h)).squeeze_dim(1); // [n]
        Forward { z, recon, q, m, score }
    }
}

/// Reads a tensor back as a flat `Vec<f32>`.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensors read back as f32 after convert")
}
