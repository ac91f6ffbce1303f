//! One turn of the learning loop: train a candidate on recent traffic and analysts' labels,
//! validate it against the model in service, and decide whether it replaces it.
//!
//! The data (spec: U unlabeled, A labeled anomalies):
//!
//! - U = the reservoir's recent flows (presumed mostly normal, as MNPWAD assumes of unlabeled
//!   data) plus confirmed-benign flows, which weigh fully (their normal likelihood is 1).
//! - A = flows labeled as attacks (by analysts or indicator rules).
//!
//! Validation must be data the candidate never saw, or the rule would always promote:
//! a fixed share of the labels is held back, chosen by a hash of each flow's uid (so a label
//! stays on the same side from one turn to the next), and a slice of the recent flows is held
//! back as presumed normals. Both models score those rows; the candidate is promoted only when
//! its AUC-PR is not worse than the current model's (within `tolerance`), and only when at
//! least `min_validation_attacks` held-back attacks make that comparison meaningful. The rule
//! and its numbers go into the decision's text, which the loop logs.
//!
//! The candidate keeps the alert volume of the model it replaces: its score cut is chosen so
//! that it alerts on the same share of the recent flows as the current model at its current
//! cut (scores of two models are not on one scale). The sensor uses that cut when its
//! threshold is a fixed score; a rate threshold simply recalibrates on the new model.

use std::time::Duration;

use burn::tensor::Device;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::labels::{Label, Verdict};
use crate::features::SchemaKind;
use crate::features::tables::Scaler;
use crate::flow::config::secs;
use crate::model::artifact::{Artifact, DataSummary};
use crate::model::eval::{Metrics, metrics};
use crate::model::mnpwad::Mnpwad;
use crate::model::near_attacks::{self, NearAttacks};
use crate::model::reasons::Profiles;
use crate::model::score::CpuScorer;
use crate::model::train::{TrainConfig, TrainData, TrainError, train, train_warm};

/// `[learn]`: the learning loop of `live` and `replay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnConfig {
    /// Run the loop (false; `--learn` turns it on for one run).
    pub enabled: bool,
    /// Retrain this often (600 s) when there is anything new to learn from.
    #[serde(with = "secs")]
    pub interval: Duration,
    /// ... or as soon as this many new labels arrived (10).
    pub after_labels: usize,
    /// Recent flows kept for retraining (50000; memory: rows x features x 4 bytes).
    pub reservoir_rows: usize,
    /// How far back the reservoir reaches (3600 s of capture time).
    #[serde(with = "secs")]
    pub reservoir_horizon: Duration,
    /// Start from the current model's weights (true) or train from scratch (false).
    pub warm_start: bool,
    /// Joint training epochs of a retrain (30; from scratch also each pretraining stage).
    pub max_epochs: usize,
    /// Mini-batches per epoch (32).
    pub batches_per_epoch: usize,
    /// Share of the labels held back for validation (0.3).
    pub holdout: f64,
    /// Recent flows held back for validation as presumed normals (2000).
    pub validation_rows: usize,
    /// Held-back attack labels needed before any candidate is promoted (1).
    pub min_validation_attacks: usize,
    /// A candidate is promoted when its AUC-PR >= the current model's - tolerance (0.0).
    pub tolerance: f64,
    /// Cores training may use (1): scoring keeps the rest.
    pub threads: usize,
    /// Recent flows needed before a retrain (200).
    pub min_rows: usize,
    /// Seed of the retraining runs (42).
    pub seed: u64,
    /// Recent unlabeled flows that lie as close to a confirmed attack as recent flows lie to
    /// each other (`drop`: left out of what a retrain learns as normal traffic, as the rest of
    /// an attack analysts confirmed a few flows of; `keep`: learned as normal, as the paper
    /// trains). `model::near_attacks`.
    pub unlabeled_near_attacks: NearAttacks,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            enabled: false,
            interval: Duration::from_secs(600),
            after_labels: 10,
            reservoir_rows: 50_000,
            reservoir_horizon: Duration::from_secs(3600),
            warm_start: true,
            max_epochs: 30,
            batches_per_epoch: 32,
            holdout: 0.3,
            validation_rows: 2000,
            min_validation_attacks: 1,
            tolerance: 0.0,
            threads: 1,
            min_rows: 200,
            seed: 42,
            unlabeled_near_attacks: NearAttacks::Drop,
        }
    }
}

/// Unlabeled rows a retrain keeps at least when it leaves out rows near confirmed attacks (it
/// leaves none out rather than train on fewer): more than the most prototypes (10) it places.
const MIN_KEPT_ROWS: usize = 32;

/// A request, from another process, to retrain now: `<data-dir>/retrain.request` holding
/// `warm` or `scratch` (`mnpflow models retrain [--scratch]` writes it; the running sensor's
/// loop takes it within a second and removes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrainRequest {
    Warm,
    Scratch,
}

impl RetrainRequest {
    pub fn path(data_dir: &std::path::Path) -> std::path::PathBuf {
        data_dir.join("retrain.request")
    }

    /// Leaves a request for the sensor using `data_dir` (atomically: written, then renamed).
    pub fn write(self, data_dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let tmp = data_dir.join("retrain.request.tmp");
        std::fs::write(&tmp, if self == RetrainRequest::Scratch { "scratch\n" } else { "warm\n" })?;
        std::fs::rename(tmp, Self::path(data_dir))
    }

    /// Takes a pending request (removing it); an unreadable one counts as `warm`.
    pub fn take(data_dir: &std::path::Path) -> Option<RetrainRequest> {
        let p = Self::path(data_dir);
        let text = std::fs::read_to_string(&p).ok()?;
        std::fs::remove_file(&p).ok()?;
        Some(if text.trim() == "scratch" { RetrainRequest::Scratch } else { RetrainRequest::Warm })
    }
}

/// The model in service.
pub struct Current<'a> {
    pub artifact: &'a Artifact,
    /// Its network on the plain CPU device.
    pub model: &'a Mnpwad,
    /// Its score cut now (infinite before a rate threshold has seen any traffic).
    pub cut: f32,
}

/// Validation figures of one model on the held-back rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub auc_pr: f64,
    pub auc_roc: f64,
}

impl From<Metrics> for Figures {
    fn from(m: Metrics) -> Figures {
        Figures { auc_pr: m.auc_pr, auc_roc: m.auc_roc }
    }
}

/// The outcome of the promotion rule, with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub promote: bool,
    /// Held-back attack labels, and held-back normal rows (benign labels and recent flows).
    pub attacks: usize,
    pub normals: usize,
    pub current: Option<Figures>,
    pub candidate: Option<Figures>,
    /// The rule as applied, in words.
    pub rule: String,
}

/// A trained candidate and the decision about it.
pub struct Retrained {
    pub artifact: Artifact,
    pub model: Mnpwad,
    /// Its rate-matched score cut.
    pub cut: f32,
    pub decision: Decision,
    /// Rows trained on: unlabeled (of which confirmed benign), attacks.
    pub unlabeled: usize,
    pub benign: usize,
    pub attacks: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    #[error(
        "no attack label for this model's schema outside the validation share: nothing to train on"
    )]
    NoAttacks,
    #[error("{got} recent flows, at least {needed} needed")]
    TooFewRows { needed: usize, got: usize },
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// The latest verdict per flow, for labels of this schema and width, in a stable order.
fn usable_labels<'a>(labels: &'a [Label], fingerprint: &str, width: usize) -> Vec<&'a Label> {
    let mut latest: std::collections::BTreeMap<&str, &Label> = std::collections::BTreeMap::new();
    for l in labels {
        if l.schema == fingerprint
            && l.features.len() == width
            && l.features.iter().all(|v| v.is_finite())
        {
            latest.insert(&l.uid, l);
        }
    }
    // An undo's `unlabeled` withdraws the flow's verdict.
    latest.into_values().filter(|l| l.verdict != Verdict::Unlabeled).collect()
}

/// Splits labels into (train, held back): the held-back share by a hash of the uid, at least
/// one on each side when there are two or more.
fn hold_back(mut labels: Vec<&Label>, share: f64) -> (Vec<&Label>, Vec<&Label>) {
    labels.sort_by_key(|l| (crc32fast::hash(l.uid.as_bytes()), l.uid.clone()));
    let n = labels.len();
    let mut h = (share.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    if n >= 2 {
        h = h.clamp(1, n - 1);
    } else {
        h = 0;
    }
    let held = labels.split_off(n - h);
    (labels, held)
}

fn rows_of(labels: &[&Label]) -> Vec<f32> {
    labels.iter().flat_map(|l| l.features.iter().copied()).collect()
}

fn score(model: &Mnpwad, scaler: &Scaler, raw: &[f32], d: usize) -> Vec<f32> {
    let n = raw.len() / d;
    let all: Vec<usize> = (0..n).collect();
    let mut out = vec![0.0; n];
    CpuScorer::new(model).score_into(&scaler.transform(raw, d, &all), &mut out);
    out
}

/// The cut at which `scores` alert on `rate` of the rows (at least one row).
fn cut_at_rate(scores: &[f32], rate: f64) -> f32 {
    let mut s: Vec<f32> = scores.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return f32::INFINITY;
    }
    s.sort_by(|a, b| b.total_cmp(a));
    let k = ((rate * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[k - 1]
}

/// Trains a candidate from `recent` (encoded rows, schema width, unscaled) and `labels`, and
/// applies the promotion rule. Deterministic for given inputs and config.
pub fn retrain(
    current: &Current<'_>,
    recent: &[f32],
    labels: &[Label],
    cfg: &LearnConfig,
    device: &Device,
) -> Result<Retrained, RetrainError> {
    let art = current.artifact;
    let d = art.layout.columns.len();
    let n_recent = recent.len() / d.max(1);
    if n_recent < cfg.min_rows.max(2) {
        return Err(RetrainError::TooFewRows { needed: cfg.min_rows.max(2), got: n_recent });
    }
    let usable = usable_labels(labels, &art.layout.fingerprint, d);
    let (attacks, benign): (Vec<&Label>, Vec<&Label>) =
        usable.into_iter().partition(|l| l.verdict == Verdict::Attack);
    let (train_attacks, held_attacks) = hold_back(attacks, cfg.holdout);
    let (train_benign, held_benign) = hold_back(benign, cfg.holdout);
    if train_attacks.is_empty() {
        return Err(RetrainError::NoAttacks);
    }

    // Recent flows: a seeded shuffle, the first slice held back as presumed normals.
    let mut order: Vec<usize> = (0..n_recent).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
    let n_val = cfg.validation_rows.min(n_recent / 4);
    let (val_idx, train_idx) = order.split_at(n_val);

    // U: confirmed benign first (they weigh fully), then recent flows. A: attack labels.
    let mut unlabeled_raw = rows_of(&train_benign);
    for &i in train_idx {
        unlabeled_raw.extend_from_slice(&recent[i * d..(i + 1) * d]);
    }
    let anomalies_raw = rows_of(&train_attacks);
    let n_u = unlabeled_raw.len() / d;
    let n_a = anomalies_raw.len() / d;
    let scaler = if cfg.warm_start {
        art.scaler.clone()
    } else {
        let mut all = unlabeled_raw.clone();
        all.extend_from_slice(&anomalies_raw);
        let rows: Vec<usize> = (0..n_u + n_a).collect();
        // The preparation the model in service chose, column by column.
        let preps = SchemaKind::of_layout(&art.layout.name)
            .map(|k| k.schema().encoded_preps(art.train.prep))
            .unwrap_or_default();
        Scaler::fit(&all, d, &rows, &rows, &preps)
    };
    let mut unlabeled = scaler.transform(&unlabeled_raw, d, &(0..n_u).collect::<Vec<_>>());
    let anomalies = scaler.transform(&anomalies_raw, d, &(0..n_a).collect::<Vec<_>>());
    // The rest of the confirmed attacks is not learned as normal traffic (the confirmed benign
    // rows at the front always are).
    let mut left_out = 0;
    if cfg.unlabeled_near_attacks == NearAttacks::Drop
        && let Some((rows, n)) = near_attacks::leave_out(
            &unlabeled,
            &anomalies,
            scaler.width(),
            train_benign.len(),
            MIN_KEPT_ROWS,
        )
    {
        (unlabeled, left_out) = (rows, n);
    }
    let mut tc = TrainConfig {
        max_epochs: cfg.max_epochs.max(1),
        pretrain_epochs: cfg.max_epochs.max(1),
        batches_per_epoch: cfg.batches_per_epoch.max(1),
        seed: cfg.seed,
        // What the loop did, for the candidate's record.
        unlabeled_near_attacks: cfg.unlabeled_near_attacks,
        ..art.train.clone()
    };
    if !cfg.warm_start {
        tc.n_prototypes = Some(current.model.config.n_prototypes);
    }
    // Left out above for warm and cold starts alike: training must not leave rows out again
    // (a model in service trained with `drop` would have had it done twice from scratch).
    let fit_cfg = TrainConfig { unlabeled_near_attacks: NearAttacks::Keep, ..tc.clone() };
    let data = TrainData {
        d: scaler.width(),
        unlabeled: &unlabeled,
        anomalies: &anomalies,
        trusted_normal: train_benign.len(),
        val: None,
    };
    let mut trained = if cfg.warm_start {
        train_warm(&data, &fit_cfg, current.model, device)?
    } else {
        train(&data, &fit_cfg, device, false)?
    };
    trained.report.dropped_near_attacks += left_out;

    // Validation on what neither model trained on here.
    let mut val_raw = rows_of(&held_attacks);
    let mut val_y = vec![1u8; held_attacks.len()];
    val_raw.extend(rows_of(&held_benign));
    for &i in val_idx {
        val_raw.extend_from_slice(&recent[i * d..(i + 1) * d]);
    }
    val_y.resize(val_raw.len() / d, 0);
    let cur_scores = score(current.model, &art.scaler, &val_raw, d);
    let cand_scores = score(&trained.model, &scaler, &val_raw, d);
    let normals = val_y.len() - held_attacks.len();
    let decision = if held_attacks.len() < cfg.min_validation_attacks.max(1) || normals == 0 {
        Decision {
            promote: false,
            attacks: held_attacks.len(),
            normals,
            current: None,
            candidate: None,
            rule: format!(
                "kept the current model: {} held-back attack labels and {} held-back normal rows; the rule needs at least {} and 1",
                held_attacks.len(),
                normals,
                cfg.min_validation_attacks.max(1)
            ),
        }
    } else {
        let cur: Figures = metrics(&cur_scores, &val_y).into();
        let cand: Figures = metrics(&cand_scores, &val_y).into();
        let promote = cand.auc_pr >= cur.auc_pr - cfg.tolerance;
        Decision {
            promote,
            attacks: held_attacks.len(),
            normals,
            current: Some(cur),
            candidate: Some(cand),
            rule: format!(
                "{}: candidate AUC-PR {:.4} {} current {:.4} - tolerance {} on {} held-back attacks and {} normal rows (AUC-ROC {:.4} vs {:.4})",
                if promote { "promoted" } else { "kept the current model" },
                cand.auc_pr,
                if promote { ">=" } else { "<" },
                cur.auc_pr,
                cfg.tolerance,
                held_attacks.len(),
                normals,
                cand.auc_roc,
                cur.auc_roc
            ),
        }
    };

    // Same alert volume as the current model on the recent flows.
    let cur_recent = score(current.model, &art.scaler, recent, d);
    let rate = cur_recent.iter().filter(|&&s| s >= current.cut).count() as f64 / n_recent as f64;
    let cut = cut_at_rate(&score(&trained.model, &scaler, recent, d), rate);

    let summary = DataSummary {
        source: format!(
            "learning loop ({}): {} recent flows, {} benign and {} attack labels",
            if cfg.warm_start { "warm start" } else { "from scratch" },
            train_idx.len(),
            train_benign.len(),
            n_a
        ),
        unlabeled_rows: n_u,
        labeled_anomalies: n_a,
        validation_rows: val_y.len(),
    };
    let mut artifact =
        Artifact::new(&trained.model, art.layout.clone(), scaler, tc, trained.report, summary);
    artifact.profiles =
        Profiles::fit(&CpuScorer::new(&trained.model), &unlabeled, artifact.scaler.width());
    Ok(Retrained {
        artifact,
        model: trained.model,
        cut,
        decision,
        unlabeled: n_u,
        benign: train_benign.len(),
        attacks: n_a,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::artifact::Layout;
    use rand::Rng;

    const D: usize = 6;

    /// Normal traffic in two modes (kind 0); attack kinds 1 and 2.
    fn rows(rng: &mut ChaCha8Rng, n: usize, kind: u8) -> Vec<f32> {
        let mut v = Vec::with_capacity(n * D);
        for i in 0..n {
            for _ in 0..D {
                let c = match kind {
                    0 => {
                        if i % 2 == 0 {
                            0.2
                        } else {
                            0.6
                        }
                    }
                    1 => 0.95,
                    // Between the two normal modes: easy to reconstruct, so a model that never
                    // saw it labeled scores it low.
                    _ => 0.4,
                };
                v.push((c + rng.random_range(-0.04f32..0.04)).clamp(0.0, 1.0));
            }
        }
        v
    }

    fn label(uid: String, verdict: Verdict, features: &[f32]) -> Label {
        Label {
            uid,
            community_id: String::new(),
            verdict,
            by: "test".into(),
            at: 0.0,
            note: String::new(),
            schema: "fp".into(),
            features: features.to_vec(),
        }
    }

    /// Attack labels for rows of `D` features, one per row (uids C0, C1, ...).
    fn attack_labels(rows: &[f32]) -> Vec<Label> {
        rows.chunks(D)
            .enumerate()
            .map(|(i, r)| label(format!("C{i}"), Verdict::Attack, r))
            .collect()
    }

    fn small() -> LearnConfig {
        LearnConfig {
            max_epochs: 8,
            batches_per_epoch: 16,
            min_rows: 50,
            validation_rows: 200,
            ..LearnConfig::default()
        }
    }

    /// A model that knows attack kind 1 only.
    fn current_model(rng: &mut ChaCha8Rng) -> (Artifact, Mnpwad) {
        let u = rows(rng, 400, 0);
        let a = rows(rng, 10, 1);
        let tc = TrainConfig {
            max_epochs: 10,
            pretrain_epochs: 10,
            batches_per_epoch: 16,
            n_prototypes: Some(2),
            ..TrainConfig::default()
        };
        let t = train(
            &TrainData { d: D, unlabeled: &u, anomalies: &a, trusted_normal: 0, val: None },
            &tc,
            &Device::flex(),
            false,
        )
        .unwrap();
        let scaler = Scaler::identity(D);
        let layout = Layout {
            name: "t".into(),
            fingerprint: "fp".into(),
            columns: (0..D).map(|j| format!("c{j}")).collect(),
            encoding: Default::default(),
        };
        (Artifact::new(&t.model, layout, scaler, tc, t.report, DataSummary::default()), t.model)
    }

    #[test]
    fn labels_of_a_new_attack_make_a_better_model_that_is_promoted() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (art, model) = current_model(&mut rng);
        let recent = rows(&mut rng, 600, 0);
        let new_attack = rows(&mut rng, 12, 2);
        let labels = attack_labels(&new_attack);
        let cur = Current { artifact: &art, model: &model, cut: 0.5 };
        let r = retrain(&cur, &recent, &labels, &small(), &Device::flex()).unwrap();
        let (c, k) = (r.decision.current.unwrap(), r.decision.candidate.unwrap());
        assert!(r.decision.promote, "{}", r.decision.rule);
        assert!(k.auc_pr > c.auc_pr + 0.1, "{}", r.decision.rule);
        assert_eq!(r.decision.attacks, 4, "30 % of 12 held back");
        assert_eq!(r.attacks, 8);
        assert!(r.cut.is_finite());
        // Deterministic.
        let again = retrain(&cur, &recent, &labels, &small(), &Device::flex()).unwrap();
        assert_eq!(again.artifact.weights, r.artifact.weights);
        assert_eq!(again.cut, r.cut);
    }

    /// Recent flows like the confirmed attack (the rest of it, unlabeled) are not learned as
    /// normal traffic, unless the configuration keeps them.
    #[test]
    fn the_rest_of_a_confirmed_attack_is_not_learned_as_normal() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (art, model) = current_model(&mut rng);
        let confirmed = rows(&mut rng, 12, 2);
        let mut recent = rows(&mut rng, 600, 0);
        // The attack's other flows: near copies of the confirmed ones, as a flood's are.
        for copy in 0..2 {
            recent.extend(confirmed.iter().map(|&v| v + 0.001 * (copy as f32 + 1.0)));
        }
        let labels = attack_labels(&confirmed);
        let cur = Current { artifact: &art, model: &model, cut: 0.5 };
        let r = retrain(&cur, &recent, &labels, &small(), &Device::flex()).unwrap();
        let left_out = r.artifact.report.dropped_near_attacks;
        // Of the 24 copies, those not held back for validation; no normal flow.
        assert!((10..=24).contains(&left_out), "{left_out} of the 24 unconfirmed rows left out");
        let keep = LearnConfig { unlabeled_near_attacks: NearAttacks::Keep, ..small() };
        let r = retrain(&cur, &recent, &labels, &keep, &Device::flex()).unwrap();
        assert_eq!(r.artifact.report.dropped_near_attacks, 0);
    }

    #[test]
    fn no_promotion_without_held_back_attacks_or_training_attacks() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (art, model) = current_model(&mut rng);
        let recent = rows(&mut rng, 300, 0);
        let cur = Current { artifact: &art, model: &model, cut: 0.5 };
        let one = rows(&mut rng, 1, 2);
        let r = retrain(
            &cur,
            &recent,
            &[label("C1".into(), Verdict::Attack, &one)],
            &small(),
            &Device::flex(),
        )
        .unwrap();
        assert!(!r.decision.promote);
        assert!(r.decision.rule.contains("0 held-back attack labels"), "{}", r.decision.rule);
        // Labels of another schema, or only benign ones: nothing to train on.
        let mut other = label("C2".into(), Verdict::Attack, &one);
        other.schema = "other".into();
        assert!(matches!(
            retrain(&cur, &recent, &[other], &small(), &Device::flex()),
            Err(RetrainError::NoAttacks)
        ));
        let benign = label("C3".into(), Verdict::Benign, &one);
        assert!(matches!(
            retrain(&cur, &recent, &[benign], &small(), &Device::flex()),
            Err(RetrainError::NoAttacks)
        ));
        assert!(matches!(
            retrain(&cur, &recent[..10 * D], &[], &small(), &Device::flex()),
            Err(RetrainError::TooFewRows { .. })
        ));
    }

    #[test]
    fn the_latest_verdict_wins_and_holdout_is_stable() {
        let f = [0.1f32; D];
        let mut ls = vec![
            label("A".into(), Verdict::Attack, &f),
            label("B".into(), Verdict::Attack, &f),
            label("A".into(), Verdict::Benign, &f),
        ];
        let u = usable_labels(&ls, "fp", D);
        assert_eq!(
            u.iter().map(|l| (l.uid.as_str(), l.verdict)).collect::<Vec<_>>(),
            vec![("A", Verdict::Benign), ("B", Verdict::Attack)]
        );
        // An undo: `unlabeled` after a verdict withdraws it; a later verdict wins again.
        ls.push(label("B".into(), Verdict::Unlabeled, &f));
        assert_eq!(usable_labels(&ls, "fp", D).len(), 1);
        ls.push(label("B".into(), Verdict::Attack, &f));
        assert_eq!(usable_labels(&ls, "fp", D).len(), 2);
        for i in 0..20 {
            ls.push(label(format!("X{i}"), Verdict::Attack, &f));
        }
        let (t1, h1) = hold_back(usable_labels(&ls, "fp", D), 0.3);
        let (n_train, h1): (usize, Vec<String>) =
            (t1.len(), h1.iter().map(|l| l.uid.clone()).collect());
        ls.push(label("Y".into(), Verdict::Attack, &f));
        let (_, h2) = hold_back(usable_labels(&ls, "fp", D), 0.3);
        assert_eq!(h1.len(), 7);
        assert_eq!(n_train + h1.len(), 22);
        // Most held-back flows stay held back as labels arrive.
        let kept = h1.iter().filter(|u| h2.iter().any(|m| &m.uid == *u)).count();
        assert!(kept >= 5, "{kept}");
    }

    #[test]
    fn retrain_requests_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RetrainRequest::take(dir.path()), None);
        RetrainRequest::Scratch.write(dir.path()).unwrap();
        assert_eq!(RetrainRequest::take(dir.path()), Some(RetrainRequest::Scratch));
        assert_eq!(RetrainRequest::take(dir.path()), None);
        RetrainRequest::Warm.write(dir.path()).unwrap();
        assert_eq!(RetrainRequest::take(dir.path()), Some(RetrainRequest::Warm));
    }

    #[test]
    fn rate_matched_cut() {
        let s = [0.1, 0.9, 0.5, 0.7, 0.3];
        assert_eq!(cut_at_rate(&s, 0.4), 0.7);
        assert_eq!(cut_at_rate(&s, 0.0), 0.9);
        assert_eq!(cut_at_rate(&s, 1.0), 0.1);
    }
}
