//! Metrics and the paper's evaluation protocol (spec, "Evaluation protocol of the reference").
//!
//! AUC-PR is the trapezoid area under the precision-recall curve, as scikit-learn's
//! `auc(recall, precision)` on `precision_recall_curve` output, which is what the reference
//! reports; average precision (the step sum) is reported beside it because it is the
//! better-behaved estimator. Both are computed over distinct score thresholds, ties together.

use std::path::{Path, PathBuf};

use crate::features::schema::PrepChoice;
use rand::Rng;
use rand::seq::SliceRandom;

/// AUC-ROC, AUC-PR (trapezoid) and average precision of one scoring.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub auc_roc: f64,
    pub auc_pr: f64,
    pub average_precision: f64,
}

/// Computes the three metrics; `labels` are 0/1. With no positives or no negatives the
/// curves are undefined and NaN is returned for the affected metrics.
pub fn metrics(scores: &[f32], labels: &[u8]) -> Metrics {
    let (pos, neg) = class_counts(labels);
    // Previous curve points: ROC starts at (0, 0); PR starts at (recall 0, precision 1),
    // the point scikit-learn appends.
    let (mut prev_fpr, mut prev_tpr) = (0.0, 0.0);
    let (mut prev_r, mut prev_p) = (0.0, 1.0);
    let (mut roc, mut pr, mut ap) = (0.0, 0.0, 0.0);
    for (tp, fp) in cut_points(scores, labels) {
        let (fpr, tpr) = (fp / neg, tp / pos);
        roc += (fpr - prev_fpr) * (tpr + prev_tpr) / 2.0;
        let (r, p) = (tp / pos, tp / (tp + fp));
        pr += (r - prev_r) * (p + prev_p) / 2.0;
        ap += (r - prev_r) * p;
        (prev_fpr, prev_tpr, prev_r, prev_p) = (fpr, tpr, r, p);
    }
    Metrics { auc_roc: roc, auc_pr: pr, average_precision: ap }
}

/// Positives and negatives among 0/1 labels.
fn class_counts(labels: &[u8]) -> (f64, f64) {
    let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    (pos, labels.len() as f64 - pos)
}

/// (true positives, false positives) at every cut between distinct scores, from the highest
/// score down: ties alert together, so a cut never splits them.
fn cut_points(scores: &[f32], labels: &[u8]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let mut out = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]].total_cmp(&s).is_eq() {
            if labels[order[i]] == 1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        out.push((tp, fp));
    }
    out
}

/// The true-positive rate at the lowest cut whose false-positive rate is at most `fpr`.
pub fn tpr_at_fpr(scores: &[f32], labels: &[u8], fpr: f64) -> f64 {
    let (pos, neg) = class_counts(labels);
    cut_points(scores, labels)
        .into_iter()
        .take_while(|&(_, fp)| fp / neg <= fpr)
        .last()
        .map_or(0.0, |(tp, _)| tp / pos)
}

/// Which part of the data a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Val,
    Test,
}

/// A protocol split: row indices (into the table's rows) per part, training rows in split
/// order, and which training rows are labeled anomalies.
#[derive(Debug, Clone)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
    /// Parallel to `train`: true for a labeled anomaly (semi_y = 1).
    pub labeled: Vec<bool>,
}

/// Why a split file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {problem}")]
    Malformed { path: PathBuf, line: u64, problem: String },
}

/// The paper's split: stratified by label, `fractions` (train, test) of each class with the
/// rest validation (60/35/5), shuffled by `seed`; then the first ceil(`labeled_ratio` x
/// training anomalies) anomalies in split order are labeled. Rows of `unseen` (indices of an
/// attack class) are moved to the test part, so that class is never seen in training.
pub fn protocol_split(
    labels: &[u8],
    seed: u64,
    labeled_ratio: f64,
    unseen: Option<&[bool]>,
) -> Split {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for class in [0u8, 1] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        idx.shuffle(&mut rng);
        let n = idx.len();
        let n_train = (n as f64 * 0.60).round() as usize;
        let n_test = (n as f64 * 0.35).round() as usize;
        train.extend_from_slice(&idx[..n_train]);
        test.extend_from_slice(&idx[n_train..(n_train + n_test).min(n)]);
        val.extend_from_slice(&idx[(n_train + n_test).min(n)..]);
    }
    train.shuffle(&mut rng);
    val.shuffle(&mut rng);
    test.shuffle(&mut rng);
    if let Some(unseen) = unseen {
        let moved: Vec<usize> = train.iter().chain(&val).copied().filter(|&i| unseen[i]).collect();
        train.retain(|&i| !unseen[i]);
        val.retain(|&i| !unseen[i]);
        test.extend(moved);
    }
    let labeled = label_first(&train, labels, labeled_ratio);
    Split { train, val, test, labeled }
}

/// Marks the first ceil(ratio x anomalies) anomalies of `train`, in order, as labeled.
fn label_first(train: &[usize], labels: &[u8], ratio: f64) -> Vec<bool> {
    let anomalies = train.iter().filter(|&&i| labels[i] == 1).count();
    let mut budget = (anomalies as f64 * ratio).ceil() as usize;
    train
        .iter()
        .map(|&i| {
            if labels[i] == 1 && budget > 0 {
                budget -= 1;
                true
            } else {
                false
            }
        })
        .collect()
}

/// Reads a reference split file (columns `row,split,pos,y,semi_y`). `row_ids` maps the
/// table's rows to file data-row numbers; `labels` are checked against the file's `y`, so a
/// split written for another table is refused.
pub fn read_split(path: &Path, row_ids: &[usize], labels: &[u8]) -> Result<Split, SplitError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| SplitError::Io { path: path.to_owned(), source })?;
    let bad =
        |line: u64, problem: String| SplitError::Malformed { path: path.to_owned(), line, problem };
    let max_row = row_ids.iter().copied().max().unwrap_or(0);
    let mut index = vec![usize::MAX; max_row + 1];
    for (i, &r) in row_ids.iter().enumerate() {
        index[r] = i;
    }
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').map(str::trim).collect();
    let col = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| bad(1, format!("no column {name:?}")))
    };
    let (c_row, c_split, c_pos, c_y, c_semi) =
        (col("row")?, col("split")?, col("pos")?, col("y")?, col("semi_y")?);
    let mut parts: [Vec<(usize, usize, bool)>; 3] = Default::default();
    for (n, line) in lines.enumerate() {
        let lno = n as u64 + 2;
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < header.len() {
            return Err(bad(lno, format!("{} fields, the header has {}", f.len(), header.len())));
        }
        let num = |c: usize| {
            f[c].parse::<i64>().map_err(|_| bad(lno, format!("{:?} is not an integer", f[c])))
        };
        let row = num(c_row)?;
        let i = usize::try_from(row)
            .ok()
            .and_then(|r| index.get(r).copied())
            .filter(|&i| i != usize::MAX);
        let i = i.ok_or_else(|| {
            bad(lno, format!("row {row} is not a row of the table (or was skipped as malformed)"))
        })?;
        if num(c_y)? != labels[i] as i64 {
            return Err(bad(
                lno,
                format!(
                    "row {row}: y = {} but the table's label is {}; is this the split of another table?",
                    f[c_y], labels[i]
                ),
            ));
        }
        let part = match f[c_split] {
            "train" => 0,
            "val" => 1,
            "test" => 2,
            other => return Err(bad(lno, format!("unknown split {other:?}"))),
        };
        parts[part].push((num(c_pos)? as usize, i, num(c_semi)? == 1));
    }
    for p in &mut parts {
        p.sort_by_key(|&(pos, _, _)| pos);
    }
    let [train, val, test] = parts;
    Ok(Split {
        labeled: train.iter().map(|&(_, _, l)| l).collect(),
        train: train.into_iter().map(|(_, i, _)| i).collect(),
        val: val.into_iter().map(|(_, i, _)| i).collect(),
        test: test.into_iter().map(|(_, i, _)| i).collect(),
    })
}

/// Mean and (population, as numpy's default) standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// A random subset helper used by the protocol's callers.
pub fn sample_indices(rng: &mut impl Rng, n: usize, k: usize) -> Vec<usize> {
    rand::seq::index::sample(rng, n, k.min(n)).into_vec()
}

/// The outcome of one protocol run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    pub seed: u64,
    pub metrics: Metrics,
    pub fit_seconds: f64,
    /// Fit seconds by step: pretraining, prototypes, joint training.
    pub stage_seconds: [f64; 3],
    pub score_seconds: f64,
    pub n_prototypes: usize,
    pub joint_epochs: usize,
}

/// Matrices for one split of a table: preprocessing fit as the reference does (constant
/// columns judged on the whole table, min-max on training rows), then train/val/test scaled.
pub struct Prepared {
    pub scaler: crate::features::tables::Scaler,
    pub unlabeled: Vec<f32>,
    pub anomalies: Vec<f32>,
    pub val: Vec<f32>,
    pub val_labels: Vec<u8>,
    pub test: Vec<f32>,
    pub test_labels: Vec<u8>,
}

/// Scales a table's rows for a split. `constant_rows` decides which columns are constant;
/// `prep` how the table's schema features are prepared.
pub fn prepare(
    table: &crate::features::tables::Table,
    split: &Split,
    constant_rows: &[usize],
    prep: PrepChoice,
) -> Prepared {
    let d = table.width();
    let scaler = crate::features::tables::Scaler::fit(
        &table.values,
        d,
        constant_rows,
        &split.train,
        &table.encoded_preps(prep),
    );
    let pick = |want: bool| -> Vec<usize> {
        split
            .train
            .iter()
            .zip(&split.labeled)
            .filter(|(_, l)| **l == want)
            .map(|(i, _)| *i)
            .collect()
    };
    let labels = |rows: &[usize]| rows.iter().map(|&i| table.labels[i]).collect::<Vec<u8>>();
    Prepared {
        unlabeled: scaler.transform(&table.values, d, &pick(false)),
        anomalies: scaler.transform(&table.values, d, &pick(true)),
        val: scaler.transform(&table.values, d, &split.val),
        val_labels: labels(&split.val),
        test: scaler.transform(&table.values, d, &split.test),
        test_labels: labels(&split.test),
        scaler,
    }
}

/// A model trained the way `mnpflow train` trains one, with the data it was fit on.
pub struct Fit {
    pub model: super::mnpwad::Mnpwad,
    pub report: super::train::TrainReport,
    pub prepared: Prepared,
}

impl Fit {
    /// The alert cut that holds `budget` on the rows the model trained on
    /// ([`crate::alert::threshold::budget_cut`]). `labels_are_attacks` says whether the labeled
    /// rows are confirmed attacks (false for cold start's synthetic ones, which say nothing
    /// about how real attacks score).
    pub fn cut(&self, budget: f64, labels_are_attacks: bool) -> crate::alert::threshold::BudgetCut {
        let scorer = super::score::CpuScorer::new(&self.model);
        let anomalies =
            if labels_are_attacks { scorer.scores(&self.prepared.anomalies) } else { Vec::new() };
        crate::alert::threshold::budget_cut(
            &scorer.scores(&self.prepared.unlabeled),
            &anomalies,
            budget,
        )
    }
}

impl Fit {
    /// The typical inputs per normal prototype over the unlabeled training rows, for reasons
    /// in traffic terms ([`super::reasons`]).
    pub fn profiles(&self) -> Option<super::reasons::Profiles> {
        let d = self.prepared.scaler.width();
        super::reasons::Profiles::fit(
            &super::score::CpuScorer::new(&self.model),
            &self.prepared.unlabeled,
            d,
        )
    }
}

/// `mnpflow train` on a table: `val_fraction` of each class held out for early stopping,
/// `labeled_ratio` of the training anomalies labeled, constant columns judged on the training
/// rows (a deployed model sees only those), features prepared as `cfg.prep` says.
pub fn fit_table(
    table: &crate::features::tables::Table,
    cfg: &super::train::TrainConfig,
    val_fraction: f64,
    labeled_ratio: f64,
    device: &burn::tensor::Device,
    progress: bool,
) -> Result<Fit, super::train::TrainError> {
    let split = train_val_split(&table.labels, cfg.seed, val_fraction, labeled_ratio);
    let p = prepare(table, &split, &split.train, cfg.prep);
    let data = super::train::TrainData {
        d: p.scaler.width(),
        unlabeled: &p.unlabeled,
        anomalies: &p.anomalies,
        trusted_normal: 0,
        val: Some((&p.val, &p.val_labels)),
    };
    let trained = super::train::train(&data, cfg, device, progress)?;
    Ok(Fit { model: trained.model, report: trained.report, prepared: p })
}

/// Trains on a prepared split with `cfg` and scores the test rows (hand-written CPU path).
pub fn run_once(
    p: &Prepared,
    cfg: &super::train::TrainConfig,
    device: &burn::tensor::Device,
    progress: bool,
) -> Result<RunResult, super::train::TrainError> {
    let d = p.scaler.width();
    let data = super::train::TrainData {
        d,
        unlabeled: &p.unlabeled,
        anomalies: &p.anomalies,
        trusted_normal: 0,
        val: Some((&p.val, &p.val_labels)),
    };
    let trained = super::train::train(&data, cfg, device, progress)?;
    let started = std::time::Instant::now();
    let scorer = super::score::CpuScorer::new(&trained.model);
    let mut scores = vec![0.0; p.test_labels.len()];
    scorer.score_into(&p.test, &mut scores);
    let score_seconds = started.elapsed().as_secs_f64();
    Ok(RunResult {
        seed: cfg.seed,
        metrics: metrics(&scores, &p.test_labels),
        fit_seconds: trained.report.fit_seconds,
        stage_seconds: trained.report.stage_seconds,
        score_seconds,
        n_prototypes: trained.report.n_prototypes,
        joint_epochs: trained.report.joint_epochs,
    })
}

/// A stratified train/validation split for the `train` command: `val_fraction` of each class
/// to validation, the rest to training (shuffled by `seed`); the first ceil(`labeled_ratio` x
/// training anomalies) anomalies are labeled.
pub fn train_val_split(labels: &[u8], seed: u64, val_fraction: f64, labeled_ratio: f64) -> Split {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for class in [0u8, 1] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        idx.shuffle(&mut rng);
        let n_val = (idx.len() as f64 * val_fraction).round() as usize;
        val.extend_from_slice(&idx[..n_val]);
        train.extend_from_slice(&idx[n_val..]);
    }
    train.shuffle(&mut rng);
    let labeled = label_first(&train, labels, labeled_ratio);
    Split { train, val, test: Vec::new(), labeled }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn metrics_known_values() {
        // scikit-learn: y = [0,0,1,1], s = [0.1,0.4,0.35,0.8]:
        // roc_auc_score = 0.75; average_precision_score = 0.8333...;
        // precision_recall_curve -> P = [0.5,0.667,0.5,1,1], R = [1,1,0.5,0.5,0]; auc = 0.7916...
        let m = metrics(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]);
        close(m.auc_roc, 0.75);
        close(m.average_precision, 0.5 * 1.0 + 0.5 * (2.0 / 3.0));
        close(m.auc_pr, 0.5 * 1.0 + 0.5 * (0.5 + 2.0 / 3.0) / 2.0);
        // Perfect ranking.
        let m = metrics(&[0.9, 0.8, 0.1], &[1, 1, 0]);
        close(m.auc_roc, 1.0);
        close(m.auc_pr, 1.0);
        close(m.average_precision, 1.0);
        // All tied: ROC 0.5, PR trapezoid from (0,1) to (1, prevalence).
        let m = metrics(&[0.5; 4], &[1, 0, 0, 0]);
        close(m.auc_roc, 0.5);
        close(m.auc_pr, (1.0 + 0.25) / 2.0);
        close(m.average_precision, 0.25);
    }

    #[test]
    fn tpr_at_fpr_by_hand() {
        // 100 benign at 0..0.99, 4 attacks at 2, 1.5, 0.995, 0.5.
        let mut scores: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let mut labels = vec![0u8; 100];
        scores.extend([2.0, 1.5, 0.995, 0.5]);
        labels.extend([1, 1, 1, 1]);
        // At most 1 false positive of 100: cut just above 0.98, catching 3 of 4.
        assert_eq!(tpr_at_fpr(&scores, &labels, 0.01), 0.75);
        assert_eq!(tpr_at_fpr(&scores, &labels, 0.0), 0.75);
        assert_eq!(tpr_at_fpr(&scores, &labels, 0.5), 1.0);
    }

    #[test]
    fn protocol_split_is_stratified_and_labels_first_anomalies() {
        let labels: Vec<u8> = (0..1000).map(|i| (i % 10 == 0) as u8).collect();
        let s = protocol_split(&labels, 2024, 0.01, None);
        let count = |v: &[usize]| v.iter().filter(|&&i| labels[i] == 1).count();
        assert_eq!((s.train.len(), s.test.len(), s.val.len()), (600, 350, 50));
        assert_eq!((count(&s.train), count(&s.test), count(&s.val)), (60, 35, 5));
        assert_eq!(s.labeled.iter().filter(|&&l| l).count(), 1);
        let first_anomaly = s.train.iter().position(|&i| labels[i] == 1).unwrap();
        assert!(s.labeled[first_anomaly]);
        let unseen: Vec<bool> = (0..1000).map(|i| i % 20 == 0).collect();
        let s = protocol_split(&labels, 2024, 0.01, Some(&unseen));
        assert!(s.train.iter().chain(&s.val).all(|&i| !unseen[i]));
        assert_eq!(s.test.iter().filter(|&&i| unseen[i]).count(), 50);
    }

    #[test]
    fn reference_split_file_reads() {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/splits/thyroid.split.csv"
        ));
        assert!(p.exists(), "shared data missing: {}", p.display());
        let text = std::fs::read_to_string(p).unwrap();
        let n = text.lines().count() - 1;
        // Labels from the file itself (y per row) so this test needs only the split.
        let mut labels = vec![0u8; n];
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split(',').collect();
            labels[f[0].parse::<usize>().unwrap()] = f[3].parse().unwrap();
        }
        let ids: Vec<usize> = (0..n).collect();
        let s = read_split(p, &ids, &labels).unwrap();
        assert_eq!(s.train.len() + s.val.len() + s.test.len(), 3772);
        assert_eq!(s.labeled.iter().filter(|&&l| l).count(), 1);
        assert_eq!(s.test.iter().filter(|&&i| labels[i] == 1).count(), 33);
        labels[s.train[0]] ^= 1;
        let e = read_split(p, &ids, &labels).unwrap_err().to_string();
        assert!(e.contains("thyroid.split.csv") && e.contains("another table"), "{e}");
    }
}
