//! Which scores alert: a fixed score, or a target alert rate over recent traffic.
//!
//! A rate threshold keeps the last `window` scores in a ring and, for each batch, alerts on
//! the scores at or above the ring's `1 - rate` quantile (the batch itself included, so the
//! very first batch is calibrated on itself). It adapts to the traffic: a burst of anomalies
//! larger than the rate raises the bar instead of flooding the alert file, and that is the
//! point of asking for a rate.

use std::fmt;
use std::str::FromStr;

/// A threshold as the user writes it: `0.93` (a score) or `2%` (a rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Score(f32),
    /// Fraction of flows, in (0, 1].
    Rate(f64),
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("threshold {0:?}: expected a score (0.9) or an alert rate between 0% and 100% (2%)")]
pub struct ThresholdError(pub String);

impl FromStr for Threshold {
    type Err = ThresholdError;
    fn from_str(s: &str) -> Result<Threshold, ThresholdError> {
        let t = s.trim();
        let bad = || ThresholdError(s.to_string());
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(bad());
            }
            Ok(Threshold::Rate(v / 100.0))
        } else {
            let v: f32 = t.parse().map_err(|_| bad())?;
            if !v.is_finite() {
                return Err(bad());
            }
            Ok(Threshold::Score(v))
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Score(s) => write!(f, "{s}"),
            Threshold::Rate(r) => write!(f, "{}%", r * 100.0),
        }
    }
}

/// Turns a [`Threshold`] into a score cut per batch.
#[derive(Debug, Clone)]
pub struct ThresholdCalibrator {
    threshold: Threshold,
    ring: Vec<f32>,
    next: usize,
    window: usize,
    scratch: Vec<f32>,
    current: f32,
}

impl ThresholdCalibrator {
    pub fn new(threshold: Threshold, window: usize) -> ThresholdCalibrator {
        let window = window.max(1);
        let current = match threshold {
            Threshold::Score(s) => s,
            Threshold::Rate(_) => f32::INFINITY,
        };
        ThresholdCalibrator { threshold, ring: Vec::with_capacity(window), next: 0, window, scratch: Vec::new(), current }
    }

    /// Takes a batch's scores into the window and returns the score cut for that batch:
    /// a score alerts when `score >= cut`.
    pub fn calibrate(&mut self, scores: &[f32]) -> f32 {
        let Threshold::Rate(rate) = self.threshold else { return self.current };
        for &s in scores {
            let s = if s.is_nan() { f32::NEG_INFINITY } else { s };
            if self.ring.len() < self.window {
                self.ring.push(s);
            } else {
                self.ring[self.next] = s;
                self.next = (self.next + 1) % self.window;
            }
        }
        if self.ring.is_empty() {
            return self.current;
        }
        // The k-th largest score, k = ceil(rate * n): at most k of the window alert (ties aside).
        let n = self.ring.len();
        let k = ((rate * n as f64).ceil() as usize).clamp(1, n);
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.ring);
        let (_, kth, _) = self.scratch.select_nth_unstable_by(n - k, |a, b| a.total_cmp(b));
        self.current = *kth;
        self.current
    }

    /// The cut of the last batch (infinite before the first batch of a rate threshold).
    pub fn current(&self) -> f32 {
        self.current
    }

    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    /// Recent scores a rate is calibrated on.
    pub fn window(&self) -> usize {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scores_and_rates() {
        assert_eq!("0.75".parse(), Ok(Threshold::Score(0.75)));
        assert_eq!(" 2% ".parse(), Ok(Threshold::Rate(0.02)));
        assert_eq!("100%".parse(), Ok(Threshold::Rate(1.0)));
        for bad in ["", "0%", "101%", "x%", "abc", "nan", "-1%"] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fixed_score_ignores_traffic() {
        let mut c = ThresholdCalibrator::new(Threshold::Score(0.5), 10);
        assert_eq!(c.calibrate(&[0.9, 0.1]), 0.5);
    }

    #[test]
    fn rate_alerts_on_that_share_of_the_window() {
        let mut c = ThresholdCalibrator::new(Threshold::Rate(0.1), 1000);
        let scores: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let cut = c.calibrate(&scores);
        assert_eq!(scores.iter().filter(|&&s| s >= cut).count(), 100);
        // Only the window counts: after 1000 low scores, the old high ones are gone.
        let cut = c.calibrate(&vec![0.5; 1000]);
        assert_eq!(cut, 0.5);
    }
}
