//! The scorer: the model as it scores ([`Scoring`], what the model slot holds), and the stage
//! that takes the slot's model at each batch boundary (the one place a new model comes in,
//! with its threshold), scales and scores the rows, sets each row's alert cut and finds the
//! reasons of the rows that alert.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use sha1::{Digest, Sha1};

use super::batch::RowBatch;
use crate::alert::eve::ModelInfo;
use crate::alert::{Explanation, Threshold, ThresholdCalibrator};
use crate::features::tables::{RangeCheck, Scaler};
use crate::feedback::summary::TargetRate;
use crate::model::artifact::Artifact;
use crate::model::device::Compute;
use crate::model::mnpwad::Mnpwad;
use crate::model::reasons::{Described, Profiles, Reasons};
use crate::model::score::Scorer;
use crate::model::slot::ModelSlot;
use crate::pipeline::metrics::{Metrics, Queue, Stage};

/// The model as the scorer uses it; what [`ModelSlot`] holds.
pub struct Scoring {
    /// The hand-written CPU path, or burn on a GPU (`--backend wgpu`).
    pub scorer: Scorer,
    pub scaler: Scaler,
    pub model: ModelInfo,
    /// The score cut that comes with this model, used when the user set no threshold.
    pub cut: Option<f32>,
    /// The model's false-positive budget ([`Artifact::budget`]), preferred over `cut`.
    pub budget: Option<crate::alert::threshold::BudgetCut>,
    /// Typical inputs per prototype, for alerts' reasons ([`Artifact::profiles`]).
    pub profiles: Option<Profiles>,
    /// The layout's input names, for those reasons.
    pub columns: Vec<String>,
}

impl Scoring {
    /// An alert's reasons in the schema's words and units (`raw`: its unscaled row).
    pub fn describe(&self, why: &Explanation, raw: &[f32]) -> Vec<Described> {
        match &self.profiles {
            Some(p) => p.describe(&why.reasons, why.prototype, raw, &self.columns, &self.scaler),
            None => Vec::new(),
        }
    }
}

impl Scoring {
    /// Builds the CPU scorer for a model; `file_bytes` (the model file) name its version.
    pub fn new(
        art: &Artifact,
        model: &Mnpwad,
        file_bytes: &[u8],
        registry_version: Option<u64>,
        cut: Option<f32>,
    ) -> Scoring {
        Scoring::on(&Compute::cpu(), art, model, file_bytes, registry_version, cut)
    }

    /// Builds the scorer for a model on `compute` (the CPU, or a GPU).
    pub fn on(
        compute: &Compute,
        art: &Artifact,
        model: &Mnpwad,
        file_bytes: &[u8],
        registry_version: Option<u64>,
        cut: Option<f32>,
    ) -> Scoring {
        let h = Sha1::digest(file_bytes);
        let version =
            format!("sha1:{}", h.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>());
        Scoring {
            scorer: Scorer::new(model, compute),
            scaler: art.scaler.clone(),
            model: ModelInfo { version, schema: art.layout.name.clone(), registry_version },
            cut,
            budget: art.budget,
            profiles: art.profiles.clone(),
            columns: art.layout.columns.clone(),
        }
    }
}

/// The threshold for a model the scorer just moved to, from the run's starting threshold.
///
/// The user's threshold holds for every model. A rate (the user's or the default) stays a
/// rate, recalibrated from the new model's own scores: two models' scores are not on one
/// scale, so the window's flows are scored again by the new model ([`WindowRows`]). A model's
/// own threshold (a budget or a fixed cut) gives way to the new model's own (its budget, else
/// the learning loop's rate-matched cut, or the registry's).
fn threshold_for(scoring: &Scoring, base: Threshold, explicit: bool) -> Threshold {
    match base {
        _ if explicit => base,
        Threshold::Rate(_) => base,
        Threshold::Score(_) | Threshold::Budget(_) => scoring
            .budget
            .map(Threshold::Budget)
            .or(scoring.cut.map(Threshold::Score))
            .unwrap_or(base),
    }
}

/// The unscaled rows of the flows in the threshold's window, oldest first, kept so that the
/// next model can score that window again.
///
/// Without them every model swap (a promotion, a rollback) would start the window empty: a
/// budget would fall back to the new model's training cut until a few hundred normal-looking
/// flows were seen again, the cut that overruns the budget on a drifted network
/// (docs/detection.md), and a rate would be calibrated on the new model's first flows alone.
/// The rows are kept unscaled because each model brings its own scaler. At most one window of
/// rows (10,000 of 51 cells by default: 2 MB), filled as the calibrator fills its own.
struct WindowRows {
    width: usize,
    window: usize,
    /// `width` cells per flow, oldest flow first.
    cells: std::collections::VecDeque<f32>,
}

impl WindowRows {
    fn new(width: usize, window: usize) -> WindowRows {
        WindowRows { width: width.max(1), window, cells: Default::default() }
    }

    fn len(&self) -> usize {
        self.cells.len() / self.width
    }

    /// Keeps the rows of a scored batch that `threshold` took into its window.
    fn keep(&mut self, rows: &[f32], scores: &[f32], threshold: &ThresholdCalibrator) {
        for (row, &s) in rows.chunks_exact(self.width).zip(scores) {
            if threshold.keeps(s) {
                self.cells.extend(row.iter().copied());
            }
        }
        let over = self.len().saturating_sub(self.window);
        self.cells.drain(..over * self.width);
    }

    /// Scores the kept rows with the next model (`score`: unscaled rows in, one score per row
    /// out), feeds them to its fresh calibrator in their order, and keeps those it took in.
    fn carry(&mut self, next: &mut ThresholdCalibrator, mut score: impl FnMut(&[f32]) -> Vec<f32>) {
        const CHUNK: usize = 1024;
        let mut old = std::mem::take(&mut self.cells);
        let cells = old.make_contiguous();
        let mut cuts = Vec::with_capacity(CHUNK);
        for chunk in cells.chunks(CHUNK * self.width) {
            let scores = score(chunk);
            cuts.clear();
            next.calibrate(&scores, &mut cuts);
            self.keep(chunk, &scores, next);
        }
    }
}

#[allow(clippy::too_many_arguments)] // a stage's channel ends, clock and counters, wired once in `run`
pub(super) fn score_stage(
    slot: &ModelSlot<Scoring>,
    width: usize,
    mut threshold: ThresholdCalibrator,
    threshold_explicit: bool,
    window: usize,
    rx: Receiver<RowBatch>,
    tx: Sender<RowBatch>,
    metrics: &Metrics,
) -> (ThresholdCalibrator, RangeCheck) {
    let mut scaled: Vec<f32> = Vec::new();
    let (mut alerted, mut reasons): (Vec<usize>, Vec<Reasons>) = (Vec::new(), Vec::new());
    let mut range = RangeCheck::default();
    let mut busy = Duration::ZERO;
    let mut model = slot.reader();
    let base = threshold.threshold();
    let mut kept = WindowRows::new(width, window);
    for mut batch in rx.iter() {
        let t0 = Instant::now();
        // The batch boundary: the one place a new model is taken.
        if model.refresh() {
            let next = model.get();
            threshold =
                ThresholdCalibrator::new(threshold_for(next, base, threshold_explicit), window);
            kept.carry(&mut threshold, |rows| {
                scaled.clear();
                for row in rows.chunks_exact(width) {
                    next.scaler.transform_row(row, &mut scaled);
                }
                next.scorer.explain(&scaled).score
            });
            metrics.model_swaps.fetch_add(1, Relaxed);
            range = RangeCheck::default();
        }
        let scoring = model.get();
        let sc = &scoring.scaler;
        scaled.clear();
        for row in batch.rows.chunks_exact(width) {
            sc.transform_row(row, &mut scaled);
        }
        range.observe(&scaled, sc.width());
        let s = scoring.scorer.explain(&scaled);
        batch.cuts.clear();
        threshold.calibrate(&s.score, &mut batch.cuts);
        kept.keep(&batch.rows, &s.score, &threshold);
        metrics.cut_bits.store(threshold.current().to_bits() as u64, Relaxed);
        batch.target_rate = TargetRate::of(&threshold.threshold());
        batch.why.clear();
        for i in 0..s.score.len() {
            batch.why.push(Explanation {
                recon_error: s.recon[i],
                prototype: s.prototype[i],
                similarity: s.similarity[i],
                reasons: Reasons::default(),
            });
        }
        if let Some(profiles) = &scoring.profiles {
            alerted.clear();
            alerted.extend((0..s.score.len()).filter(|&i| s.score[i] >= batch.cuts[i]));
            profiles.reasons(
                &scoring.scorer,
                &scaled,
                &s.score,
                &s.prototype,
                &alerted,
                &mut reasons,
            );
            for (&i, r) in alerted.iter().zip(&reasons) {
                batch.why[i].reasons = *r;
            }
        }
        batch.scores = s.score;
        batch.model = Some(scoring.clone());
        metrics.rows_scored.fetch_add(batch.len() as u64, Relaxed);
        metrics.batches_scored.fetch_add(1, Relaxed);
        busy += t0.elapsed();
        if tx.send(batch).is_ok() {
            metrics.queue_len(Queue::Scored, tx.len());
        }
    }
    metrics.busy(Stage::Score, busy);
    (threshold, range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::BudgetCut;

    fn calibrated(c: &mut ThresholdCalibrator, scores: &[f32]) -> Vec<f32> {
        let mut cuts = Vec::new();
        c.calibrate(scores, &mut cuts);
        cuts
    }

    /// After a swap the new model's budget holds on the recent traffic from its first flow:
    /// its calibrator is where it would be had it scored the window's flows itself, not at
    /// its training floor; flows it finds attack-like leave the window, and the window stays
    /// one window long.
    #[test]
    fn a_new_model_scores_the_window_again() {
        // Rows of two cells; model A scores a row by its first cell, model B twice that.
        let a = BudgetCut { budget: 0.01, floor: 0.5, set_aside: 2.0 };
        let b = BudgetCut { budget: 0.01, floor: 1.0, set_aside: 3.5 };
        let score_a = |rows: &[f32]| rows.chunks_exact(2).map(|r| r[0]).collect::<Vec<f32>>();
        let score_b = |rows: &[f32]| rows.chunks_exact(2).map(|r| 2.0 * r[0]).collect::<Vec<_>>();
        // Drifted normal traffic (0.0 .. 0.999), 50 attack-like flows for both models (5.0)
        // and 20 that only model B finds attack-like (1.9: 3.8 under B).
        let mut rows = Vec::new();
        for i in 0..1000 {
            rows.extend([((i * 389) % 1000) as f32 / 1000.0, 0.0]);
            if i % 20 == 0 {
                rows.extend([5.0, 0.0]);
            }
            if i % 50 == 0 {
                rows.extend([1.9, 0.0]);
            }
        }
        let mut first = ThresholdCalibrator::new(Threshold::Budget(a), 5000);
        let mut kept = WindowRows::new(2, 5000);
        for batch in rows.chunks(2 * 37) {
            let s = score_a(batch);
            calibrated(&mut first, &s);
            kept.keep(batch, &s, &first);
        }
        assert_eq!(kept.len(), 1020, "the normal-looking flows, not the attack-like");

        let mut next = ThresholdCalibrator::new(Threshold::Budget(b), 5000);
        assert_eq!(next.current(), 1.0, "a fresh calibrator starts at the floor");
        kept.carry(&mut next, score_b);
        assert_eq!(kept.len(), 1000, "flows B sets aside left the window");
        // The same as B having scored the normal-looking traffic itself.
        let mut direct = ThresholdCalibrator::new(Threshold::Budget(b), 5000);
        let scores_b = score_b(&rows);
        let kept_b: Vec<f32> = scores_b.iter().copied().filter(|&s| s < b.set_aside).collect();
        assert_eq!(calibrated(&mut direct, &kept_b).last().copied(), Some(next.current()));
        assert_eq!(next.current(), (2.0 * 0.994f32).next_up());
        // The next flow is judged on that window: a drifted normal score under the cut does
        // not alert, where the floor alone would have let it.
        assert!(calibrated(&mut next, &[1.5]) == vec![next.current()] && 1.5 < next.current());

        // A window shorter than the traffic keeps only its last flows, for both.
        let mut short = WindowRows::new(2, 300);
        let mut c = ThresholdCalibrator::new(Threshold::Rate(0.1), 300);
        let s = score_a(&rows);
        calibrated(&mut c, &s);
        short.keep(&rows, &s, &c);
        assert_eq!(short.len(), 300);
        assert_eq!(short.cells.iter().step_by(2).copied().collect::<Vec<_>>(), s[s.len() - 300..]);
        // A fixed score keeps nothing.
        let fixed = ThresholdCalibrator::new(Threshold::Score(0.5), 300);
        let mut none = WindowRows::new(2, 300);
        none.keep(&rows, &s, &fixed);
        assert_eq!(none.len(), 0);
    }
}
