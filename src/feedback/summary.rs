//! The numbers behind the analysts' page's pictures (`GET /api/summary`): alerts over time with
//! the alert rate the threshold gives, the score distribution of recent traffic with the
//! threshold, and the top sources and destinations of the alerts held.
//!
//! Computed here, in Rust, so that the page only draws them and a test can check them:
//!
//! - [`Timeline`]: alerts and scored flows per bucket of capture time (a flow counts at its
//!   end, as its alert is timed). Fixed memory: at most [`TIMELINE_BUCKETS`] buckets. When the
//!   run outgrows them, the buckets widen to the next of [`BUCKET_SECS`] (each width a multiple
//!   of the one before, so buckets merge exactly); at the widest they slide, dropping the
//!   oldest. A flow older than the first bucket is counted in the first one while the span
//!   still fits, else only in `before_window` (capture time goes backwards in some captures).
//! - [`histogram`]: the scores of the feed's window of recent scored flows in equal bins over
//!   the range of those scores and the threshold.
//! - [`top_talkers`]: alert counts per source and per destination address.
//!
//! The page does not keep its own numbers: each poll draws what this module says.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::web::AlertView;
use crate::alert::threshold::Threshold;

/// Buckets the timeline keeps at most.
pub const TIMELINE_BUCKETS: usize = 60;
/// Bucket widths in seconds, narrowest first; each divides the next.
pub const BUCKET_SECS: [i64; 9] = [1, 5, 10, 30, 60, 300, 600, 1800, 3600];
/// Histogram bins when the request names none, and the most it may ask for.
pub const DEFAULT_BINS: usize = 30;
pub const MAX_BINS: usize = 200;
/// Top talkers listed when the request names none, and the most it may ask for.
pub const DEFAULT_TOP: usize = 10;
pub const MAX_TOP: usize = 100;

/// One bucket of capture time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Unix seconds of its start (a multiple of the width).
    pub start: i64,
    /// Flows scored, alerted or not.
    pub scored: u64,
    /// Alerts written.
    pub alerts: u64,
}

/// Alerts and scored flows per bucket of capture time, the whole run in at most
/// [`TIMELINE_BUCKETS`] buckets (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Index into [`BUCKET_SECS`].
    width: usize,
    /// Consecutive buckets, empty ones included, oldest first.
    buckets: VecDeque<Bucket>,
    /// Flows that fell before the first bucket when it could not move back.
    before_window: u64,
    /// Flows and alerts dropped from the front as the buckets slid.
    slid_out: (u64, u64),
}

/// The timeline as the API gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineView {
    pub bucket_secs: i64,
    pub buckets: Vec<Bucket>,
    /// Sums over `buckets`.
    pub scored: u64,
    pub alerts: u64,
    /// Flows counted in no bucket: older than the first bucket, or slid out of the window.
    pub before_window: u64,
    /// The alert rate of the buckets together, `alerts / scored` (0 with no flow).
    pub rate: f64,
}

impl Timeline {
    fn secs(&self) -> i64 {
        BUCKET_SECS[self.width]
    }

    /// Counts one flow that ended at `t` (Unix seconds), alerted or not.
    pub fn count(&mut self, t: i64, alerted: bool) {
        let alerts = u64::from(alerted);
        loop {
            let w = self.secs();
            let at = t.div_euclid(w) * w;
            let (Some(first), Some(last)) = (self.buckets.front(), self.buckets.back()) else {
                self.buckets.push_back(Bucket { start: at, scored: 1, alerts });
                return;
            };
            let (lo, hi) = (first.start.min(at), last.start.max(at));
            let needed = (hi - lo) / w + 1;
            if needed <= TIMELINE_BUCKETS as i64 {
                while self.buckets.front().is_some_and(|b| b.start > at) {
                    let start = self.buckets[0].start - w;
                    self.buckets.push_front(Bucket { start, scored: 0, alerts: 0 });
                }
                while self.buckets.back().is_some_and(|b| b.start < at) {
                    let start = self.buckets[self.buckets.len() - 1].start + w;
                    self.buckets.push_back(Bucket { start, scored: 0, alerts: 0 });
                }
                let k = ((at - self.buckets[0].start) / w) as usize;
                if let Some(b) = self.buckets.get_mut(k) {
                    b.scored += 1;
                    b.alerts += alerts;
                }
                return;
            }
            if self.width + 1 < BUCKET_SECS.len() {
                self.widen();
                continue;
            }
            if at < first.start {
                // Time went back further than the window reaches.
                self.before_window += 1;
                return;
            }
            // At the widest: slide, dropping the oldest (all of them on a jump far ahead).
            let drop = ((needed - TIMELINE_BUCKETS as i64) as usize).min(self.buckets.len());
            for b in self.buckets.drain(..drop) {
                self.slid_out.0 += b.scored;
                self.slid_out.1 += b.alerts;
            }
            if self.buckets.is_empty() {
                self.buckets.push_back(Bucket { start: at, scored: 1, alerts });
                return;
            }
        }
    }

    /// Merges the buckets into the next width (each old bucket lies in one new one).
    fn widen(&mut self) {
        self.width += 1;
        let w = self.secs();
        let mut merged: VecDeque<Bucket> = VecDeque::with_capacity(TIMELINE_BUCKETS);
        for b in self.buckets.drain(..) {
            let start = b.start.div_euclid(w) * w;
            match merged.back_mut() {
                Some(m) if m.start == start => {
                    m.scored += b.scored;
                    m.alerts += b.alerts;
                }
                _ => merged.push_back(Bucket { start, ..b }),
            }
        }
        self.buckets = merged;
    }

    /// The buckets and their sums.
    pub fn view(&self) -> TimelineView {
        let buckets: Vec<Bucket> = self.buckets.iter().copied().collect();
        let scored = buckets.iter().map(|b| b.scored).sum();
        let alerts = buckets.iter().map(|b| b.alerts).sum();
        TimelineView {
            bucket_secs: self.secs(),
            buckets,
            scored,
            alerts,
            before_window: self.before_window + self.slid_out.0,
            rate: if scored > 0 { alerts as f64 / scored as f64 } else { 0.0 },
        }
    }
}

/// The alert rate a threshold aims at, drawn on the timeline beside the rate it gave.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TargetRate {
    /// `rate`: a share of all scored flows; `budget`: a model's false-positive budget, a share
    /// of the normal-looking flows (so attacks come on top of it).
    pub kind: &'static str,
    pub rate: f64,
}

impl TargetRate {
    /// The rate `t` aims at; none for a fixed score.
    pub fn of(t: &Threshold) -> Option<TargetRate> {
        match t {
            Threshold::Score(_) => None,
            Threshold::Rate(r) => Some(TargetRate { kind: "rate", rate: *r }),
            Threshold::Budget(b) => Some(TargetRate { kind: "budget", rate: b.budget }),
        }
        .filter(|r| r.rate.is_finite())
    }
}

/// One histogram bin: scores in `[lo, hi)` (the last bin includes `hi`). The edges are
/// the `f32` values the scores were compared with, written as their shortest decimals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

/// An `f32` as the `f64` of its shortest decimal (0.35, not 0.3499999940395355), so that the
/// JSON reads as the number the user typed.
pub fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// The score distribution of recent traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Finite scores binned (the sum of the bins' counts).
    pub flows: u64,
    pub bins: Vec<Bin>,
    /// Of those, the scores at or above the threshold.
    pub at_or_above_threshold: u64,
    /// Scores left out: not finite.
    pub not_finite: u64,
}

/// `scores` in `bins` equal bins (at least 1) over the range of the finite scores and the
/// threshold, so that the threshold always falls on the chart.
pub fn histogram(scores: &[f32], threshold: Option<f32>, bins: usize) -> Histogram {
    let bins = bins.clamp(1, MAX_BINS);
    let threshold = threshold.filter(|t| t.is_finite());
    let finite = || scores.iter().copied().filter(|s| s.is_finite());
    let (mut lo, mut hi) = finite()
        .chain(threshold)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| (lo.min(s), hi.max(s)));
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    // One value only: a narrow range around it, so the bins have a width.
    if hi - lo <= f32::EPSILON * lo.abs().max(1.0) {
        let pad = 0.05 * lo.abs().max(1.0);
        (lo, hi) = (lo - pad, hi + pad);
    }
    let step = (f64::from(hi) - f64::from(lo)) / bins as f64;
    let mut out: Vec<Bin> = (0..bins)
        .map(|i| Bin {
            lo: decimal((f64::from(lo) + step * i as f64) as f32),
            hi: decimal(if i + 1 == bins {
                hi
            } else {
                (f64::from(lo) + step * (i + 1) as f64) as f32
            }),
            count: 0,
        })
        .collect();
    let mut flows = 0;
    let mut above = 0;
    for s in finite() {
        let k = ((f64::from(s) - f64::from(lo)) / step) as usize;
        out[k.min(bins - 1)].count += 1;
        flows += 1;
        above += u64::from(threshold.is_some_and(|t| s >= t));
    }
    Histogram {
        flows,
        bins: out,
        at_or_above_threshold: above,
        not_finite: scores.len() as u64 - flows,
    }
}

/// An address and its alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Talker {
    pub addr: String,
    pub alerts: u64,
}

/// The `top` sources and destinations by alert count (ties by address), of `alerts`.
pub fn top_talkers<'a>(
    alerts: impl Iterator<Item = &'a AlertView>,
    top: usize,
) -> (Vec<Talker>, Vec<Talker>) {
    let mut orig: HashMap<&str, u64> = HashMap::new();
    let mut resp: HashMap<&str, u64> = HashMap::new();
    for a in alerts {
        *orig.entry(a.flow.orig_h.as_str()).or_default() += 1;
        *resp.entry(a.flow.resp_h.as_str()).or_default() += 1;
    }
    let rank = |m: HashMap<&str, u64>| {
        let mut v: Vec<Talker> =
            m.into_iter().map(|(addr, alerts)| Talker { addr: addr.to_owned(), alerts }).collect();
        v.sort_unstable_by(|a, b| b.alerts.cmp(&a.alerts).then_with(|| a.addr.cmp(&b.addr)));
        v.truncate(top);
        v
    };
    (rank(orig), rank(resp))
}

/// Everything `GET /api/summary` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub timeline: TimelineView,
    pub scores: Histogram,
    /// The alert cut of the latest scored flow (null before the first, or when not finite),
    /// as its shortest decimal.
    pub threshold: Option<f64>,
    /// The alert rate that threshold aims at (null for a fixed score).
    pub target_rate: Option<TargetRate>,
    /// Alerts the page holds, of which the top talkers are counted.
    pub alerts_held: usize,
    pub top_sources: Vec<Talker>,
    pub top_destinations: Vec<Talker>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(t: &Timeline) -> Vec<(i64, u64, u64)> {
        t.view().buckets.iter().map(|b| (b.start, b.scored, b.alerts)).collect()
    }

    #[test]
    fn timeline_counts_flows_and_alerts_per_second() {
        let mut t = Timeline::default();
        for (s, a) in [(100, false), (100, true), (102, false), (101, true), (99, true)] {
            t.count(s, a);
        }
        assert_eq!(counts(&t), [(99, 1, 1), (100, 2, 1), (101, 1, 1), (102, 1, 0)]);
        let v = t.view();
        assert_eq!((v.bucket_secs, v.scored, v.alerts, v.rate), (1, 5, 3, 0.6));
    }

    #[test]
    fn timeline_widens_then_slides() {
        let mut t = Timeline::default();
        t.count(0, true);
        t.count(59, false);
        assert_eq!(t.view().bucket_secs, 1, "60 seconds fit");
        t.count(60, true);
        let v = t.view();
        assert_eq!(v.bucket_secs, 5);
        assert_eq!((v.buckets.len(), v.scored, v.alerts), (13, 3, 2));
        assert_eq!(
            (v.buckets[0], v.buckets[11], v.buckets[12]),
            (
                Bucket { start: 0, scored: 1, alerts: 1 },
                Bucket { start: 55, scored: 1, alerts: 0 },
                Bucket { start: 60, scored: 1, alerts: 1 }
            )
        );
        // An hour per bucket, then a jump of years: the old buckets slide out, counted.
        t.count(3600 * 59, false);
        assert_eq!(t.view().bucket_secs, 3600);
        assert_eq!(counts(&t)[0], (0, 3, 2));
        t.count(3600 * 60, true);
        assert_eq!(counts(&t)[0], (3600, 0, 0), "the first hour slid out");
        t.count(50 * 365 * 86400, true);
        let v = t.view();
        assert_eq!((v.buckets.len(), v.scored, v.alerts, v.before_window), (1, 1, 1, 5));
        // Back in time beyond the window: counted apart.
        t.count(0, true);
        assert_eq!((t.view().scored, t.view().before_window), (1, 6));
        assert!(t.view().buckets.len() <= TIMELINE_BUCKETS);
    }

    #[test]
    fn timeline_takes_negative_and_extreme_times() {
        let mut t = Timeline::default();
        for s in [-5, i64::MIN / 2_000_000_000, i64::MAX / 2_000_000_000, 0, -1] {
            t.count(s, true);
        }
        let v = t.view();
        assert!(v.buckets.len() <= TIMELINE_BUCKETS);
        assert_eq!(v.scored + v.before_window, 5);
    }

    #[test]
    fn histogram_bins_scores_and_counts_the_threshold() {
        let scores = [0.0, 0.1, 0.25, 0.5, 0.74, 0.75, 1.0, f32::NAN, f32::INFINITY];
        let h = histogram(&scores, Some(0.75), 4);
        let bins: Vec<(f64, f64, u64)> = h.bins.iter().map(|b| (b.lo, b.hi, b.count)).collect();
        assert_eq!(bins, [(0.0, 0.25, 2), (0.25, 0.5, 1), (0.5, 0.75, 2), (0.75, 1.0, 2)]);
        assert_eq!((h.flows, h.at_or_above_threshold, h.not_finite), (7, 2, 2));
        // The threshold widens the range to stay on the chart.
        let h = histogram(&[0.2, 0.5], Some(0.8), 3);
        assert_eq!((h.bins[0].lo, h.bins[2].hi), (0.2, 0.8));
        assert_eq!(h.bins.iter().map(|b| b.count).collect::<Vec<_>>(), [1, 1, 0]);
        // One value, no value, no bins asked: still bins, nothing lost.
        let h = histogram(&[0.3; 5], None, 0);
        assert_eq!((h.bins.len(), h.bins[0].count, h.flows), (1, 5, 5));
        assert!(h.bins[0].lo < 0.3 && h.bins[0].hi > 0.3);
        let h = histogram(&[], Some(f32::NAN), 10_000);
        assert_eq!((h.bins.len(), h.flows), (MAX_BINS, 0));
    }
}
