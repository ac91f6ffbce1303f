//! Prototype initialisation: k-means with k-means++ seeding, and k chosen by silhouette
//! (spec, "Training procedure", step 2).
//!
//! Plain Rust on `f32` rows: the latent codes are small (e = 8), and a seeded generator keeps
//! the choice deterministic.

use rand::Rng;

/// A k-means clustering.
#[derive(Debug, Clone)]
pub struct KMeans {
    pub k: usize,
    pub dim: usize,
    /// Row-major `[k, dim]`.
    pub centroids: Vec<f32>,
    /// Cluster of each input row.
    pub labels: Vec<usize>,
    /// Sum of squared distances to the assigned centroid.
    pub inertia: f64,
}

fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

/// k-means++ seeding (Arthur & Vassilvitskii 2007) then Lloyd iterations until no label
/// changes or `max_iter`. `data` is row-major with width `dim`; needs at least `k` rows.
pub fn kmeans(data: &[f32], dim: usize, k: usize, rng: &mut impl Rng, max_iter: usize) -> KMeans {
    let n = data.len() / dim;
    assert!(k >= 1 && n >= k, "k-means needs at least k rows ({n} rows, k = {k})");
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let mut centroids: Vec<f32> = Vec::with_capacity(k * dim);
    centroids.extend_from_slice(row(rng.random_range(0..n)));
    let mut d2: Vec<f64> = (0..n).map(|i| dist2(row(i), &centroids[0..dim])).collect();
    for c in 1..k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut target = rng.random_range(0.0..total);
            let mut chosen = n - 1;
            for (i, &v) in d2.iter().enumerate() {
                if target < v {
                    chosen = i;
                    break;
                }
                target -= v;
            }
            chosen
        } else {
            rng.random_range(0..n)
        };
        centroids.extend_from_slice(row(pick));
        let new = &centroids[c * dim..(c + 1) * dim];
        for (i, v) in d2.iter_mut().enumerate() {
            *v = v.min(dist2(row(i), new));
        }
    }
    let mut labels = vec![usize::MAX; n];
    let mut inertia = 0.0;
    for _ in 0..max_iter.max(1) {
        let mut changed = false;
        inertia = 0.0;
        for (i, label) in labels.iter_mut().enumerate() {
            let (best, bd) = (0..k)
                .map(|c| (c, dist2(row(i), &centroids[c * dim..(c + 1) * dim])))
                .fold((0, f64::INFINITY), |acc, x| if x.1 < acc.1 { x } else { acc });
            inertia += bd;
            if *label != best {
                *label = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for i in 0..n {
            counts[labels[i]] += 1;
            for (s, &v) in sums[labels[i] * dim..(labels[i] + 1) * dim].iter_mut().zip(row(i)) {
                *s += v as f64;
            }
        }
        for c in 0..k {
            // An emptied cluster keeps its centroid (it may win rows back next round).
            if counts[c] > 0 {
                for j in 0..dim {
                    centroids[c * dim + j] = (sums[c * dim + j] / counts[c] as f64) as f32;
                }
            }
        }
    }
    KMeans { k, dim, centroids, labels, inertia }
}

/// Mean silhouette coefficient with Euclidean distance, as scikit-learn's
/// `silhouette_score`: a point alone in its cluster scores 0. Needs 2 <= clusters < rows.
pub fn silhouette(data: &[f32], dim: usize, labels: &[usize], k: usize) -> f64 {
    let n = labels.len();
    let dist: Vec<f64> = (0..n * n)
        .map(|ij| {
            dist2(
                &data[(ij / n) * dim..(ij / n + 1) * dim],
                &data[(ij % n) * dim..(ij % n + 1) * dim],
            )
            .sqrt()
        })
        .collect();
    silhouette_from_distances(&dist, labels, k)
}

/// Silhouette from a precomputed `n x n` distance matrix (reused across candidate k).
pub fn silhouette_from_distances(dist: &[f64], labels: &[usize], k: usize) -> f64 {
    let n = labels.len();
    let mut counts = vec![0usize; k];
    for &l in labels {
        counts[l] += 1;
    }
    let mut total = 0.0;
    let mut sums = vec![0f64; k];
    for i in 0..n {
        sums.iter_mut().for_each(|s| *s = 0.0);
        for j in 0..n {
            sums[labels[j]] += dist[i * n + j];
        }
        let own = labels[i];
        if counts[own] <= 1 {
            continue;
        }
        let a = sums[own] / (counts[own] - 1) as f64;
        let b = (0..k)
            .filter(|&c| c != own && counts[c] > 0)
            .map(|c| sums[c] / counts[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if b.is_finite() {
            let s = (b - a) / a.max(b);
            if s.is_finite() {
                total += s;
            }
        }
    }
    total / n as f64
}

/// Chooses k in `ks` by the best silhouette on at most `sample` rows, clustering those rows.
/// Returns the chosen clustering and every (k, silhouette) tried.
pub fn select_k(
    data: &[f32],
    dim: usize,
    ks: std::ops::RangeInclusive<usize>,
    sample: usize,
    rng: &mut impl Rng,
) -> (KMeans, Vec<(usize, f64)>) {
    let n = data.len() / dim;
    let idx: Vec<usize> = if n > sample {
        rand::seq::index::sample(rng, n, sample).into_vec()
    } else {
        (0..n).collect()
    };
    let sub: Vec<f32> =
        idx.iter().flat_map(|&i| data[i * dim..(i + 1) * dim].iter().copied()).collect();
    let m = idx.len();
    let dist: Vec<f64> = (0..m * m)
        .map(|ij| {
            dist2(
                &sub[(ij / m) * dim..(ij / m + 1) * dim],
                &sub[(ij % m) * dim..(ij % m + 1) * dim],
            )
            .sqrt()
        })
        .collect();
    let mut best: Option<(f64, KMeans)> = None;
    let mut tried = Vec::new();
    for k in ks.filter(|&k| k >= 2 && k < m) {
        let km = kmeans(&sub, dim, k, rng, 300);
        let used = km.labels.iter().collect::<std::collections::HashSet<_>>().len();
        let s = if used >= 2 { silhouette_from_distances(&dist, &km.labels, k) } else { -1.0 };
        tried.push((k, s));
        if best.as_ref().is_none_or(|(bs, _)| s > *bs) {
            best = Some((s, km));
        }
    }
    let km = match best {
        Some((_, km)) => km,
        None => kmeans(&sub, dim, 1.min(m), rng, 300),
    };
    (km, tried)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Three tight blobs far apart, 30 points each.
    fn blobs(rng: &mut ChaCha8Rng) -> Vec<f32> {
        let centres = [[0.0f32, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let mut v = Vec::new();
        for c in centres {
            for _ in 0..30 {
                v.push(c[0] + rng.random_range(-0.5..0.5));
                v.push(c[1] + rng.random_range(-0.5..0.5));
            }
        }
        v
    }

    #[test]
    fn kmeans_recovers_blobs() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let data = blobs(&mut rng);
        let km = kmeans(&data, 2, 3, &mut rng, 100);
        for b in 0..3 {
            let l = km.labels[b * 30];
            assert!(km.labels[b * 30..(b + 1) * 30].iter().all(|&x| x == l));
        }
        let distinct: std::collections::HashSet<_> = km.labels.iter().collect();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn silhouette_known_values() {
        // Two clusters on a line: {0, 1} and {10, 11}.
        // a(0) = 1, b(0) = (10 + 11) / 2 = 10.5 -> s = 9.5/10.5; by symmetry the same for all four
        // except distances: point 1: a = 1, b = (9 + 10)/2 = 9.5 -> 8.5/9.5.
        let data = [0.0f32, 1.0, 10.0, 11.0];
        let s = silhouette(&data, 1, &[0, 0, 1, 1], 2);
        let expected = (2.0 * (9.5 / 10.5) + 2.0 * (8.5 / 9.5)) / 4.0;
        assert!((s - expected).abs() < 1e-12, "{s} vs {expected}");
        // A singleton cluster contributes 0 (scikit-learn's convention).
        let s = silhouette(&[0.0f32, 1.0, 10.0], 1, &[0, 0, 1], 2);
        let expected = ((10.0 - 1.0) / 10.0 + (9.0 - 1.0) / 9.0) / 3.0;
        assert!((s - expected).abs() < 1e-12);
    }

    #[test]
    fn select_k_finds_three() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let data = blobs(&mut rng);
        let (km, tried) = select_k(&data, 2, 2..=6, 1000, &mut rng);
        assert_eq!(km.k, 3, "{tried:?}");
    }
}
