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
/// scale, so the old window is dropped. A model's own threshold (a budget or a fixed cut) gives
/// way to the new model's own (its budget, else the learning loop's rate-matched cut, or the
/// registry's).
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
    for mut batch in rx.iter() {
        let t0 = Instant::now();
        // The batch boundary: the one place a new model is taken.
        if model.refresh() {
            threshold = ThresholdCalibrator::new(
                threshold_for(model.get(), base, threshold_explicit),
                window,
            );
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
