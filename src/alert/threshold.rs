//! Which scores alert: a fixed score, or a target alert rate over recent traffic.
//!
//! A rate threshold keeps the last `window` scores and alerts on a flow whose score is at or
//! above the `1 - rate` quantile of the window ending at it (itself included, so the very first
//! flows are calibrated on themselves). It adapts to the traffic: a burst of anomalies
//! larger than the rate raises the bar instead of flooding the alert file, and that is the
//! point of asking for a rate.
//!
//! A model's own threshold ([`BudgetCut`]) is a rate too, but over the recent flows that look
//! normal only, and never below the cut fit on its training traffic: a model meets traffic
//! that scores higher than the flows it was trained on (its own training rows score low, and
//! a network drifts), and a cut fixed at training time then overruns its false-positive budget
//! several times over (docs/detection.md).

use std::fmt;
use std::str::FromStr;

/// A threshold as the user writes it: `0.93` (a score) or `2%` (a rate); or a model's own
/// false-positive budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Score(f32),
    /// Fraction of flows, in (0, 1].
    Rate(f64),
    /// A false-positive budget over recent normal-looking flows ([`BudgetCut`]).
    Budget(BudgetCut),
}

/// A model's alert threshold: a false-positive budget held on the traffic it scores.
///
/// Made at training time by [`budget_cut`]. Each flow's cut is the higher of `floor` (the cut
/// that lets `budget` of the training traffic's normal-looking rows through) and the cut that
/// lets `budget` of the recent flows scoring below `set_aside` through, once enough of them
/// were seen ([`BudgetCut::min_flows`]). Flows at or above `set_aside` look like the confirmed
/// attacks and are left out of the window, so an attack burst does not raise the bar for
/// itself (where a plain rate does).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BudgetCut {
    /// Share of normal-looking flows that may alert, in [0, 1).
    pub budget: f64,
    /// The cut on the training traffic.
    pub floor: f32,
    /// Scores from here up look like the confirmed attacks (infinite without labels).
    pub set_aside: f32,
}

/// How many flows the budget's own quantile must allow before a window's cut counts (see
/// `min_flows`).
const MIN_FLOWS_BUDGET: f64 = 3.0;

impl BudgetCut {
    /// Normal-looking flows the window needs before its cut counts: enough for the budget's
    /// own quantile to allow three flows (300 at 1 %). Its confidence bound
    /// ([`allowed_above`]) still lets none of them through until 388, so until then the
    /// window's cut sits just above its highest flow (the flow itself included), and no
    /// normal-looking flow can alert at all. Sooner, a sensor would be mute but for its most
    /// attack-like flows for its first few hundred flows; later, a drifted network overruns
    /// the budget for longer (on the capture benchmark's test halves, 400 to 550 benign flows
    /// each, ten flows' worth never came into force; both measured in docs/detection.md). A
    /// model swap does not start the window again: the scorer has the new model score the
    /// window's flows (`pipeline::stream::score`).
    pub fn min_flows(&self) -> usize {
        if self.budget > 0.0 {
            (MIN_FLOWS_BUDGET / self.budget).ceil().min(1e9) as usize
        } else {
            usize::MAX
        }
    }
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
            Threshold::Budget(b) => {
                write!(f, "{}% false-positive budget (at least {})", b.budget * 100.0, b.floor)
            }
        }
    }
}

/// The score cut that holds a false-positive budget on traffic that looks normal.
///
/// `unlabeled` are scores of traffic the model was trained on without labels (mostly normal,
/// with attacks nobody labeled among it), `labeled` scores of confirmed attacks. A row looks
/// like the confirmed attacks when its score has gone nine tenths of the way from the typical
/// unlabeled score (their median) to the typical confirmed attack (theirs): those rows are
/// set aside as the unlabeled attacks they most likely are, every other row looks normal, and
/// the cut lets through at most `budget` of them. Set aside less (half way, say) and the
/// normal traffic's own upper tail goes too, so the cut lands low and the budget is overrun
/// on new traffic; set aside nothing and the unlabeled attacks raise the cut above the
/// attacks themselves. Without labels every unlabeled row counts: a plain alert rate.
///
/// A best-F1 cut on a handful of labels instead sits wherever those few labels happen to
/// fall, usually far too high: it misses most attacks unlike them.
///
/// The cut found here is the [`BudgetCut`]'s floor; the line that sets rows aside is its
/// `set_aside`, applied to the traffic it meets.
pub fn budget_cut(unlabeled: &[f32], labeled: &[f32], budget: f64) -> BudgetCut {
    let budget = budget.clamp(0.0, 1.0);
    let median = |v: &[f32]| -> Option<f32> {
        let mut v: Vec<f32> = v.iter().copied().filter(|s| !s.is_nan()).collect();
        v.sort_by(f32::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let mut normal: Vec<f32> = unlabeled.iter().copied().filter(|s| !s.is_nan()).collect();
    let mut set_aside = f32::INFINITY;
    if let (Some(mu), Some(ma)) = (median(&normal), median(labeled))
        && ma > mu
    {
        set_aside = mu + (ma - mu) * 0.9;
        normal.retain(|&s| s < set_aside);
    }
    if normal.is_empty() {
        return BudgetCut { budget, floor: f32::INFINITY, set_aside };
    }
    normal.sort_by(|a, b| b.total_cmp(a));
    let allowed = allowed_above(normal.len(), budget);
    let floor = match normal.get(allowed) {
        Some(&s) => s.next_up(),
        None => f32::NEG_INFINITY,
    };
    BudgetCut { budget, floor, set_aside }
}

/// Confidence that a cut set on a sample of normal flows holds its budget on the traffic the
/// sample came from (see [`allowed_above`]).
const CONFIDENCE: f64 = 0.9;

/// How many of `n` normal-looking flows a cut may let through so that, with [`CONFIDENCE`], it
/// lets through at most `budget` of the traffic they were drawn from.
///
/// Letting `floor(budget * n)` through (the sample's own quantile) overruns the budget on new
/// traffic about half the time, by a lot when `n` is a few hundred: the cut then rests on the
/// sample's few highest scores. A cut at the (k+1)-th highest of `n` holds the budget when at
/// least k+1 of the sample lie above the traffic's own `1 - budget` quantile, a count that is
/// Binomial(n, budget); so `k` is the largest count with `P(Bin(n, budget) <= k) <= 1 -
/// CONFIDENCE` (0 when even none is that unlikely: a sample too small to hold the budget
/// lets nothing through). Exact up to a variance of 1,000 (n = 101,010 at 1 %, a thousand
/// terms), past it the normal approximation with a skew correction (Cornish-Fisher), which
/// agrees with the exact count or is one lower.
pub fn allowed_above(n: usize, budget: f64) -> usize {
    let (n_f, p) = (n as f64, budget.clamp(0.0, 1.0));
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    let alpha = 1.0 - CONFIDENCE;
    let var = n_f * p * (1.0 - p);
    if var > 1000.0 {
        // z for the lower alpha tail (alpha = 0.1): P(Z <= -1.2816) = 0.1.
        const Z: f64 = -1.281_551_565_545;
        let skew = (1.0 - 2.0 * p) / var.sqrt();
        let q = n_f * p + var.sqrt() * (Z + (Z * Z - 1.0) * skew / 6.0);
        return (q - 0.5).floor().clamp(0.0, n_f) as usize;
    }
    // Exact: accumulate the binomial's terms in log space, so that (1 - p)^n does not
    // underflow, until the CDF passes alpha.
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_pmf = n_f * lq;
    let mut cdf = 0.0;
    let mut k = 0usize;
    loop {
        cdf += log_pmf.exp();
        if cdf > alpha || k == n {
            return k.saturating_sub(1);
        }
        log_pmf += ((n - k) as f64).ln() - ((k + 1) as f64).ln() + lp - lq;
        k += 1;
    }
}

/// Total order of scores as integers (NaN counts as the lowest score), for the ordered sets.
fn order_bits(s: f32) -> u32 {
    let s = if s.is_nan() { f32::NEG_INFINITY } else { s };
    let b = s.to_bits();
    if b >> 31 == 1 { !b } else { b | 0x8000_0000 }
}

fn from_order_bits(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k })
}

/// Scores in the window, each with its arrival number so that equal scores stay distinct.
type Entry = (u32, u64);

/// Turns a threshold into a cut per flow.
///
/// Each flow's cut is computed from the window ending at that flow (itself included), never
/// from how flows were batched: the pipeline's batch boundaries depend on timing, and the
/// alerts of a replay must not. The window is kept as two ordered sets, the `k` highest
/// scores and the rest, so each flow costs a few tree updates instead of a selection over
/// the whole window.
#[derive(Debug, Clone)]
pub struct ThresholdCalibrator {
    threshold: Threshold,
    /// Arrival order of the window's entries, oldest first.
    ring: std::collections::VecDeque<Entry>,
    top: std::collections::BTreeSet<Entry>,
    rest: std::collections::BTreeSet<Entry>,
    seen: u64,
    window: usize,
    current: f32,
    /// The last window length and its [`allowed_above`]: the count is worked out once per
    /// length, so only while the window fills.
    allowed: (usize, usize),
}

impl ThresholdCalibrator {
    pub fn new(threshold: Threshold, window: usize) -> ThresholdCalibrator {
        let window = window.max(1);
        let current = match threshold {
            Threshold::Score(s) => s,
            Threshold::Rate(_) => f32::INFINITY,
            Threshold::Budget(b) => b.floor,
        };
        ThresholdCalibrator {
            threshold,
            ring: std::collections::VecDeque::with_capacity(window),
            top: Default::default(),
            rest: Default::default(),
            seen: 0,
            window,
            current,
            allowed: (0, 0),
        }
    }

    /// Takes scores into the window in order and appends each one's cut to `cuts`: a score
    /// alerts when `score >= cut`. The cut of a rate is the k-th highest score of the window
    /// ending at that flow, k = ceil(rate * n): at most k of the window alert (ties aside).
    /// A budget's window holds only the flows below its `set_aside` line, and its cut is the
    /// higher of its floor and (once the window holds `min_flows`) the k-th highest + one step,
    /// k = [`allowed_above`]`(n, budget) + 1`: at most k - 1 of those flows alert.
    pub fn calibrate(&mut self, scores: &[f32], cuts: &mut Vec<f32>) {
        match self.threshold {
            Threshold::Score(_) => cuts.extend(std::iter::repeat_n(self.current, scores.len())),
            Threshold::Rate(rate) => {
                for &s in scores {
                    self.push(s);
                    let k = ((rate * self.ring.len() as f64).ceil() as usize).max(1);
                    self.current = self.kth_highest(k);
                    cuts.push(self.current);
                }
            }
            Threshold::Budget(b) => {
                for &s in scores {
                    if self.keeps(s) {
                        self.push(s);
                        let n = self.ring.len();
                        self.current = if n >= b.min_flows() {
                            if self.allowed.0 != n {
                                self.allowed = (n, allowed_above(n, b.budget));
                            }
                            let k = self.allowed.1 + 1;
                            b.floor.max(self.kth_highest(k).next_up())
                        } else {
                            b.floor
                        };
                    }
                    cuts.push(self.current);
                }
            }
        }
    }

    /// Takes one score into the window, dropping the oldest past its length.
    fn push(&mut self, s: f32) {
        let e = (order_bits(s), self.seen);
        self.seen += 1;
        if self.top.first().is_some_and(|lo| e > *lo) || self.top.is_empty() {
            self.top.insert(e);
        } else {
            self.rest.insert(e);
        }
        self.ring.push_back(e);
        if self.ring.len() > self.window {
            let old = self.ring.pop_front().expect("longer than the window");
            if !self.top.remove(&old) {
                self.rest.remove(&old);
            }
        }
    }

    /// The k-th highest score of the window (k clamped to its length; infinite when empty).
    /// `top` keeps the k highest between calls, so a steady k costs a few tree moves.
    fn kth_highest(&mut self, k: usize) -> f32 {
        let k = k.clamp(1, self.ring.len().max(1));
        while self.top.len() > k {
            let lo = self.top.pop_first().expect("top holds more than k");
            self.rest.insert(lo);
        }
        while self.top.len() < k {
            let Some(hi) = self.rest.pop_last() else { break };
            self.top.insert(hi);
        }
        self.top.first().map(|e| from_order_bits(e.0)).unwrap_or(f32::INFINITY)
    }

    /// The cut of the last flow (infinite before the first flow of a rate threshold).
    pub fn current(&self) -> f32 {
        self.current
    }

    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    /// Whether [`calibrate`](Self::calibrate) takes a flow of this score into the window: every
    /// flow of a rate, the normal-looking ones of a budget, none of a fixed score. The scorer
    /// keeps those flows' rows, so that the next model can score the window again.
    pub fn keeps(&self, score: f32) -> bool {
        match self.threshold {
            Threshold::Score(_) => false,
            Threshold::Rate(_) => true,
            Threshold::Budget(b) => score < b.set_aside,
        }
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
    fn budget_cut_sets_aside_rows_like_the_confirmed_attacks() {
        // 200 normal rows at 0.00 .. 0.199, 20 unlabeled attacks at 0.9, confirmed attacks at
        // 0.9: unlabeled median 0.11, attack median 0.9, rows at or above 0.821 set aside.
        let mut unlabeled: Vec<f32> = (0..200).map(|i| i as f32 / 1000.0).collect();
        unlabeled.extend([0.9; 20]);
        let b = budget_cut(&unlabeled, &[0.9; 5], 0.01);
        assert_eq!(b.budget, 0.01);
        assert!((b.set_aside - 0.821).abs() < 1e-6, "{}", b.set_aside);
        let cut = b.floor;
        // 200 normal-looking rows are too few to let any through with 90 % confidence of
        // holding 1 % (P(Bin(200, 0.01) = 0) = 0.134): the cut is above the highest.
        assert_eq!(cut, 0.199f32.next_up());
        // Without labels the unlabeled attacks count as traffic: the cut on 220 rows lands
        // among the attacks' tied scores, just above them.
        let cold = budget_cut(&unlabeled, &[], 0.01);
        assert_eq!(cold.set_aside, f32::INFINITY);
        let cold = cold.floor;
        assert_eq!(cold, 0.9f32.next_up());
        // Confirmed attacks that score like normal traffic set nothing aside.
        assert_eq!(budget_cut(&unlabeled, &[0.01], 0.01).floor, cold);
        // Degenerate inputs give a cut, never a panic.
        assert_eq!(budget_cut(&[], &[], 0.01).floor, f32::INFINITY);
        assert_eq!(budget_cut(&[f32::NAN, 0.5], &[f32::NAN], 0.5).floor, 0.5f32.next_up());
        assert_eq!(budget_cut(&[0.5], &[], 1.0).floor, f32::NEG_INFINITY);
    }

    /// The count a cut may let through: the largest k with P(Bin(n, budget) <= k) <= 0.1,
    /// against the binomial's CDF computed by hand (Python's math.comb):
    /// P(Bin(430, .01) <= 1) = 0.071, <= 2: 0.196; P(Bin(1000, .01) <= 5) = 0.066, <= 6:
    /// 0.129; P(Bin(20, .5) <= 5) = 0.021, <= 6: 0.058, <= 7: 0.132; P(Bin(10000, .01) <= 86)
    /// = 0.085, <= 87: 0.103 (normal approximation there).
    #[test]
    fn allowed_above_holds_the_budget_with_confidence() {
        assert_eq!(allowed_above(430, 0.01), 1);
        assert_eq!(allowed_above(1000, 0.01), 5);
        assert_eq!(allowed_above(20, 0.5), 6);
        assert_eq!(allowed_above(10_000, 0.01), 86);
        // Below 388 flows, a cut at 1 % lets none through; from 388 one.
        assert_eq!(allowed_above(387, 0.01), 0);
        assert_eq!(allowed_above(388, 0.01), 1);
        assert_eq!(allowed_above(0, 0.01), 0);
        assert_eq!(allowed_above(500, 0.0), 0);
        assert_eq!(allowed_above(500, 1.0), 500);
        // Never more than the sample's own quantile, and never less as the sample grows
        // (where the exact sum hands over to the approximation, too).
        let mut last = 0;
        for n in (0..20_000).step_by(7) {
            let k = allowed_above(n, 0.01);
            assert!(k <= n / 100 && k >= last, "n {n}: {k} after {last}");
            last = k;
        }
        // Huge windows: no underflow, no overflow.
        assert_eq!(allowed_above(usize::MAX >> 12, 1e-9), 4_500_879);
    }

    #[test]
    fn parses_scores_and_rates() {
        assert_eq!("0.75".parse(), Ok(Threshold::Score(0.75)));
        assert_eq!(" 2% ".parse(), Ok(Threshold::Rate(0.02)));
        assert_eq!("100%".parse(), Ok(Threshold::Rate(1.0)));
        for bad in ["", "0%", "101%", "x%", "abc", "nan", "-1%"] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
    }

    fn cuts(c: &mut ThresholdCalibrator, scores: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        c.calibrate(scores, &mut out);
        out
    }

    #[test]
    fn fixed_score_ignores_traffic() {
        let mut c = ThresholdCalibrator::new(Threshold::Score(0.5), 10);
        assert_eq!(cuts(&mut c, &[0.9, 0.1]), vec![0.5, 0.5]);
    }

    #[test]
    fn rate_alerts_on_that_share_of_the_window() {
        let mut c = ThresholdCalibrator::new(Threshold::Rate(0.1), 1000);
        let scores: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let cut = *cuts(&mut c, &scores).last().unwrap();
        assert_eq!(scores.iter().filter(|&&s| s >= cut).count(), 100);
        // Only the window counts: after 1000 low scores, the old high ones are gone.
        let cut = *cuts(&mut c, &vec![0.5; 1000]).last().unwrap();
        assert_eq!(cut, 0.5);
    }

    /// Every cut is the k-th highest of the window ending at that flow, as a sort says, for
    /// scores with ties, NaN and negatives; and however the scores are split into batches.
    #[test]
    fn each_cut_is_the_quantile_of_its_window_in_any_batching() {
        let mut rng = crate::capture::synth::Rng::new(9);
        let scores: Vec<f32> = (0..3000)
            .map(|i| if i % 97 == 0 { f32::NAN } else { (rng.range(0, 200) as f32 - 50.0) / 7.0 })
            .collect();
        let (rate, window) = (0.03, 250);
        let mut whole = ThresholdCalibrator::new(Threshold::Rate(rate), window);
        let all = cuts(&mut whole, &scores);
        for (i, &cut) in all.iter().enumerate() {
            let mut win: Vec<f32> = scores[(i + 1).saturating_sub(window)..=i]
                .iter()
                .map(|&s| if s.is_nan() { f32::NEG_INFINITY } else { s })
                .collect();
            win.sort_by(|a, b| b.total_cmp(a));
            let k = ((rate * win.len() as f64).ceil() as usize).clamp(1, win.len());
            assert_eq!(cut, win[k - 1], "flow {i}");
        }
        let mut split = ThresholdCalibrator::new(Threshold::Rate(rate), window);
        let mut got = Vec::new();
        let mut at = 0;
        while at < scores.len() {
            let n = (rng.range(1, 60) as usize).min(scores.len() - at);
            split.calibrate(&scores[at..at + n], &mut got);
            at += n;
        }
        assert_eq!(got, all);
    }

    /// A budget holds on the traffic it meets: its floor until the window has `min_flows`
    /// normal-looking flows, then at most `budget` of the window's normal-looking flows above
    /// the cut, never below the floor; flows past `set_aside` never enter the window, so a
    /// burst of attack-like flows neither raises the bar nor pushes the normal flows out.
    #[test]
    fn budget_holds_on_recent_normal_looking_flows() {
        let b = BudgetCut { budget: 0.01, floor: 0.5, set_aside: 2.0 };
        assert_eq!(b.min_flows(), 300);
        let mut c = ThresholdCalibrator::new(Threshold::Budget(b), 5000);
        // Normal traffic that scores higher than the training traffic did: 0.0 .. 0.999.
        let drifted: Vec<f32> = (0..1000).map(|i| ((i * 389) % 1000) as f32 / 1000.0).collect();
        let got = cuts(&mut c, &drifted);
        assert!(got[..299].iter().all(|&cut| cut == 0.5), "the floor until 300 flows");
        assert!(got[299..].iter().all(|&cut| cut > 0.5), "then the window's, above the floor");
        // At 1000 flows: 5 may alert (allowed_above), so the cut is just above the 6th highest.
        assert_eq!(got[999], 0.994f32.next_up());
        assert_eq!(drifted.iter().filter(|&&x| x >= got[999]).count(), 5);
        // An attack burst past the set-aside line changes nothing and alerts throughout.
        let burst = cuts(&mut c, &[3.0; 4000]);
        assert!(burst.iter().all(|&cut| cut == got[999]));
        // Quiet normal traffic lowers the cut again, but never below the floor.
        let quiet = cuts(&mut c, &[0.1; 5000]);
        assert_eq!(*quiet.last().unwrap(), 0.5);
        // NaN scores are not counted as normal-looking and keep the current cut.
        assert_eq!(cuts(&mut c, &[f32::NAN]), vec![0.5]);
        // No budget at all: nothing past the floor ever counts.
        let none = BudgetCut { budget: 0.0, floor: 0.7, set_aside: f32::INFINITY };
        let mut c = ThresholdCalibrator::new(Threshold::Budget(none), 100);
        assert!(cuts(&mut c, &drifted).iter().all(|&cut| cut == 0.7));
    }
}
