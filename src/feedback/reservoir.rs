//! The traffic buffer for retraining: a bounded, uniform sample of recent feature rows.
//!
//! The horizon is cut into `buckets` equal time slices; each slice keeps a uniform sample of
//! its rows (Vitter's algorithm R) of `capacity / buckets` rows. When a slice leaves the
//! horizon it is dropped whole. The union is a sample of the last horizon in which every
//! slice is represented in proportion to its capacity, in memory fixed by `capacity` rows.
//! `offer` is O(1) and allocates nothing once the slices are full.

use crate::capture::synth::Rng;

#[derive(Debug, Clone)]
struct Bucket {
    /// Start of the slice, in the caller's time unit.
    start: i64,
    seen: u64,
    rows: Vec<f32>,
}

/// A sliding-horizon reservoir of `width`-wide rows.
#[derive(Debug, Clone)]
pub struct Reservoir {
    width: usize,
    per_bucket: usize,
    slice: i64,
    buckets: Vec<Bucket>,
    max_buckets: usize,
    rng: Rng,
}

impl Reservoir {
    /// `capacity` rows in all, over `horizon` time units cut into `buckets` slices.
    pub fn new(
        width: usize,
        capacity: usize,
        horizon: i64,
        buckets: usize,
        seed: u64,
    ) -> Reservoir {
        let buckets = buckets.max(1);
        Reservoir {
            width,
            per_bucket: (capacity / buckets).max(1),
            slice: (horizon / buckets as i64).max(1),
            buckets: Vec::new(),
            max_buckets: buckets,
            rng: Rng::new(seed),
        }
    }

    /// Offers a row seen at time `t` (time going backwards files it in the newest slice).
    pub fn offer(&mut self, t: i64, row: &[f32]) {
        debug_assert_eq!(row.len(), self.width);
        let start = t.div_euclid(self.slice) * self.slice;
        if self.buckets.last().is_none_or(|b| start > b.start) {
            if self.buckets.len() == self.max_buckets {
                // Reuse the oldest slice's memory for the new one.
                let mut old = self.buckets.remove(0);
                old.start = start;
                old.seen = 0;
                old.rows.clear();
                self.buckets.push(old);
            } else {
                self.buckets.push(Bucket {
                    start,
                    seen: 0,
                    rows: Vec::with_capacity(self.per_bucket * self.width),
                });
            }
        }
        let (per_bucket, width) = (self.per_bucket, self.width);
        let b = self.buckets.last_mut().expect("a slice exists");
        b.seen += 1;
        if b.rows.len() < per_bucket * width {
            b.rows.extend_from_slice(row);
        } else {
            let j = self.rng.range(0, b.seen) as usize;
            if j < per_bucket {
                b.rows[j * width..(j + 1) * width].copy_from_slice(row);
            }
        }
        // Drop slices that left the horizon.
        let newest = b.start;
        let horizon = self.slice * self.max_buckets as i64;
        self.buckets.retain(|b| newest - b.start < horizon);
    }

    /// Rows held now.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.rows.len() / self.width.max(1)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the sample, row-major.
    pub fn sample(&self) -> Vec<f32> {
        self.buckets.iter().flat_map(|b| b.rows.iter().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_memory_and_sliding_horizon() {
        let mut r = Reservoir::new(2, 100, 1000, 10, 1);
        for t in 0..10_000 {
            r.offer(t, &[t as f32, 1.0]);
        }
        assert_eq!(r.len(), 100);
        // Only rows of the last horizon (t >= 9000) remain.
        let s = r.sample();
        assert!(s.chunks(2).all(|c| c[0] >= 9000.0), "an old row survived");
    }

    #[test]
    fn each_slice_is_a_uniform_sample() {
        // One slice, 10 kept of 10,000 offered, many times: every position is kept about
        // equally often (algorithm R), so the mean of kept values is near the mean of all.
        let mut total = 0.0;
        for seed in 0..200 {
            let mut r = Reservoir::new(1, 10, 1 << 40, 1, seed);
            for t in 0..10_000 {
                r.offer(t, &[t as f32]);
            }
            total += r.sample().iter().map(|v| *v as f64).sum::<f64>() / 10.0;
        }
        let mean = total / 200.0;
        assert!((mean - 4999.5).abs() < 250.0, "mean of kept rows {mean}");
    }
}
