//! The training losses of MNPWAD, one function each.
//!
//! Read `../shared/spec/mnpwad.md`, section "Losses for one mini-batch", first. Each function
//! names the bullet it implements. All return a scalar tensor of shape `[1]`. Gradients flow
//! wherever the reference lets them (through the normal-likelihood weights, the KL target
//! unless `detach_target`, and the DWA factors), since the reference is the ground truth for
//! behaviour.

use burn::tensor::activation::{log_sigmoid, relu, sigmoid};
use burn::tensor::{Bool, Tensor};

use super::mnpwad::smooth_l1;

/// Normal-likelihood weights (spec, "Normal-likelihood weights"): w = sigmoid(beta m),
/// rescaled so that the batch mean of w is 1.
///
/// # Shapes
/// - m_u: `[n]` -> `[n]`
pub fn normal_weights(m_u: Tensor<1>, beta: f64) -> Tensor<1> {
    normal_weights_trusting(m_u, beta, None)
}

/// [`normal_weights`] where the rows marked in `trusted` are known to be normal (an analyst
/// confirmed them benign): their likelihood is 1 instead of sigmoid(beta m), so they weigh
/// fully whatever the prototypes make of them. The batch mean of w is still 1.
pub fn normal_weights_trusting(
    m_u: Tensor<1>,
    beta: f64,
    trusted: Option<Tensor<1, Bool>>,
) -> Tensor<1> {
    let n = m_u.dims()[0] as f64;
    let mut w = sigmoid(m_u.mul_scalar(beta));
    if let Some(mask) = trusted {
        w = w.mask_fill(mask, 1.0);
    }
    let total = w.clone().sum();
    w.mul_scalar(n) / total
}

/// Reconstruction loss (spec, "Reconstruction"): weighted mean of unlabeled errors plus a hinge
/// pushing each labeled anomaly's error above that mean by `margin`.
///
/// # Shapes
/// - r_u, w: `[n]`; r_a: `[m]` -> `[1]`
pub fn recon_loss(r_u: Tensor<1>, w: Tensor<1>, r_a: Tensor<1>, margin: f64) -> Tensor<1> {
    let l_u = (w * r_u).mean(); // [1]
    let l_a = relu(l_u.clone() - r_a + margin).mean(); // [m] -> [1], l_u broadcast
    l_u + l_a
}

/// Score loss (spec, "Score"): SmoothL1 of anomaly scores to 1 plus (weighted, unless
/// `w` is `None`, the reference's effective form) SmoothL1 of unlabeled scores to 0.
///
/// # Shapes
/// - s_u: `[n]`, w: `[n]`, s_a: `[m]` -> `[1]`
pub fn score_loss(s_u: Tensor<1>, w: Option<Tensor<1>>, s_a: Tensor<1>) -> Tensor<1> {
    let l_a = smooth_l1(s_a.sub_scalar(1.0)).mean();
    let per_u = smooth_l1(s_u);
    let l_u = match w {
        Some(w) => (w * per_u).mean(),
        None => per_u.mean(),
    };
    l_a + l_u
}

/// Deep embedding clustering loss (spec, "Deep embedding clustering"): KL(T || Q) summed over
/// the batch, with the DEC target T_ij = Q_ij^2 / f_j renormalised per row.
///
/// # Shapes
/// - q_u: `[n, k]` (positive similarities) -> `[1]`
pub fn kl_loss(q_u: Tensor<2>, detach_target: bool) -> Tensor<1> {
    let q = q_u.clone() / q_u.sum_dim(1); // [n, k], rows sum to 1
    let f = q.clone().sum_dim(0); // [1, k]
    let t = q.clone().powf_scalar(2.0) / f; // [n, k]
    let t = t.clone() / t.sum_dim(1);
    let t = if detach_target { t.detach() } else { t };
    (t.clone() * (t.log() - q.log())).sum()
}

/// Contrastive prototype loss (spec, "Contrastive prototype loss"):
/// -log sigmoid(mean(w m_u) - mean(m_a)).
///
/// # Shapes
/// - m_u, w: `[n]`; m_a: `[m]` -> `[1]`
pub fn contrastive_loss(m_u: Tensor<1>, w: Tensor<1>, m_a: Tensor<1>) -> Tensor<1> {
    let gap = (w * m_u).mean() - m_a.mean();
    -log_sigmoid(gap)
}

/// Dynamic weight averaging (spec, "Dynamic weight averaging"): k_t = exp((L_t / prev_t) / T),
/// total = sum_t (k_t / sum k) L_t, where `prev` holds each loss's mean over the previous epoch
/// (1 before the first). The factors are computed from the loss tensors, so gradients flow
/// through them as in the reference.
///
/// # Shapes
/// - each loss: `[1]` -> `[1]`
pub fn dwa_total(losses: &[Tensor<1>], prev: &[f64], temperature: f64) -> Tensor<1> {
    assert_eq!(losses.len(), prev.len(), "one previous value per loss");
    let ks: Vec<Tensor<1>> = losses
        .iter()
        .zip(prev)
        .map(|(l, &p)| l.clone().div_scalar(p.max(1e-12) * temperature).exp())
        .collect();
    let sum_k = ks.iter().cloned().reduce(|a, b| a + b).expect("at least one loss");
    ks.into_iter()
        .zip(losses)
        .map(|(k, l)| k / sum_k.clone() * l.clone())
        .reduce(|a, b| a + b)
        .expect("at least one loss")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mnpwad::to_vec;
    use burn::tensor::{Device, TensorData};

    fn t1(v: &[f32]) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Device::flex())
    }
    fn scalar(t: Tensor<1>) -> f64 {
        to_vec(t)[0] as f64
    }
    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }
    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-5, "{a} != {b}");
    }

    #[test]
    fn weights_are_normalised_to_mean_one() {
        let m = [0.2, 0.9, 0.5];
        let w = to_vec(normal_weights(t1(&m.map(|x| x as f32)), 1.0));
        let raw: Vec<f64> = m.iter().map(|&x| sig(x)).collect();
        let s: f64 = raw.iter().sum();
        for (a, r) in w.iter().zip(&raw) {
            close(*a as f64, r * 3.0 / s);
        }
        close(w.iter().map(|&x| x as f64).sum::<f64>() / 3.0, 1.0);
    }

    #[test]
    fn trusted_rows_weigh_fully() {
        // Row 1 is confirmed benign: likelihood 1 instead of sigmoid(-2).
        let m = [0.2f32, -2.0, 0.5];
        let mask = Tensor::<1, Bool>::from_data(
            TensorData::new(vec![false, true, false], [3]),
            &Device::flex(),
        );
        let w = to_vec(normal_weights_trusting(t1(&m), 1.0, Some(mask)));
        let raw = [sig(0.2), 1.0, sig(0.5)];
        let s: f64 = raw.iter().sum();
        for (a, r) in w.iter().zip(&raw) {
            close(*a as f64, r * 3.0 / s);
        }
        assert!(w[1] > w[0] && w[1] > w[2]);
    }

    #[test]
    fn recon_loss_by_hand() {
        // L_u = mean(w r) = (0.5*0.1 + 1.5*0.3)/2 = 0.25
        // hinge: relu(0.25 - 0.2 + 0.02) = 0.07, relu(0.25 - 0.5 + 0.02) = 0 -> mean 0.035
        let l = scalar(recon_loss(t1(&[0.1, 0.3]), t1(&[0.5, 1.5]), t1(&[0.2, 0.5]), 0.02));
        close(l, 0.25 + 0.035);
    }

    #[test]
    fn score_loss_by_hand() {
        // anomalies: s = 0.8, 0.4 -> 0.5*(0.04 + 0.36)/2 = 0.1
        // unlabeled: s = 0.2, 0.6 with w = 0.5, 1.5 -> (0.5*0.02 + 1.5*0.18)/2 = 0.14
        let l = scalar(score_loss(t1(&[0.2, 0.6]), Some(t1(&[0.5, 1.5])), t1(&[0.8, 0.4])));
        close(l, 0.1 + 0.14);
        // unweighted: (0.02 + 0.18)/2 = 0.1
        let l = scalar(score_loss(t1(&[0.2, 0.6]), None, t1(&[0.8, 0.4])));
        close(l, 0.1 + 0.1);
        // beyond |d| = 1 SmoothL1 is linear: d = 2 -> 1.5
        close(scalar(smooth_l1(t1(&[2.0])).sum()), 1.5);
    }

    #[test]
    fn kl_loss_by_hand() {
        let q = [[0.5f64, 0.25], [0.2, 0.6]];
        // Q rows normalised, f column sums, T = Q^2/f renormalised, KL summed.
        let qn: Vec<[f64; 2]> =
            q.iter().map(|r| [r[0] / (r[0] + r[1]), r[1] / (r[0] + r[1])]).collect();
        let f = [qn[0][0] + qn[1][0], qn[0][1] + qn[1][1]];
        let mut expected = 0.0;
        for r in &qn {
            let t = [r[0] * r[0] / f[0], r[1] * r[1] / f[1]];
            let s = t[0] + t[1];
            for j in 0..2 {
                let tj = t[j] / s;
                expected += tj * (tj.ln() - r[j].ln());
            }
        }
        let qt = Tensor::<2>::from_data(
            TensorData::new(vec![0.5f32, 0.25, 0.2, 0.6], [2, 2]),
            &Device::flex(),
        );
        close(scalar(kl_loss(qt.clone(), false)), expected);
        close(scalar(kl_loss(qt, true)), expected);
    }

    #[test]
    fn contrastive_loss_by_hand() {
        // mean(w m_u) = (0.5*0.8 + 1.5*0.6)/2 = 0.65; mean(m_a) = 0.3; -log sigmoid(0.35)
        let l = scalar(contrastive_loss(t1(&[0.8, 0.6]), t1(&[0.5, 1.5]), t1(&[0.3])));
        close(l, -(sig(0.35)).ln());
    }

    #[test]
    fn dwa_by_hand() {
        let l = [0.5f64, 1.0, 2.0];
        let prev = [1.0, 2.0, 1.0];
        let k: Vec<f64> = l.iter().zip(&prev).map(|(a, p)| (a / p / 2.0).exp()).collect();
        let s: f64 = k.iter().sum();
        let expected: f64 = k.iter().zip(&l).map(|(k, l)| k / s * l).sum();
        let losses: Vec<Tensor<1>> = l.iter().map(|&x| t1(&[x as f32])).collect();
        close(scalar(dwa_total(&losses, &prev, 2.0)), expected);
    }
}
