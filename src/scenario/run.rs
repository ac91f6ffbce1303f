//! Methods on a scenario's split, and what they are judged by.
//!
//! Every method trains on the split's training rows (seeing only which of them are labeled)
//! and scores the test rows; it also says where it would alert (its default threshold).
//! [`Judged`] is what an analyst would ask of it: ranking quality (AUC-PR, AUC-ROC), the share
//! of attacks caught at a 1 % false-positive rate, and what its own alerts catch and cost.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use burn::tensor::Device;

use super::{BENIGN, Split};
use crate::alert::{AlertConfig, BudgetCut, Threshold, ThresholdCalibrator};
use crate::features::SchemaKind;
use crate::features::schema::PrepChoice;
use crate::features::tables::Table;
use crate::model::eval::{self, Metrics, metrics, tpr_at_fpr};
use crate::model::score::CpuScorer;
use crate::model::train::{TrainConfig, TrainError};
use crate::pipeline::bootstrap::{self, BootstrapConfig};

/// A way to train on a split and score its test half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Method {
    /// What `replay`/`live` do with no `--model`: the model the sensor trains on its own
    /// traffic and the few labels it has.
    Default,
    /// `mnpflow train` with its defaults (the schema's feature preparation).
    Train,
    /// `mnpflow train --prep paper`: the paper's plain min-max preparation.
    Paper,
    /// The default path with no label at all (cold start: the generator's attack library).
    Cold,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Default => "mnpflow default (replay, no --model)",
            Method::Train => "mnpflow train",
            Method::Paper => "mnpflow train --prep paper",
            Method::Cold => "mnpflow default, no labels (cold start)",
        }
    }
}

/// A method's output on one split.
#[derive(Debug, Clone)]
pub struct Scored {
    /// One score per test row, higher is more anomalous.
    pub scores: Vec<f32>,
    /// The model's threshold: its false-positive budget ([`BudgetCut`]).
    pub budget: BudgetCut,
    /// Each test row's cut (alert at `score >= cut`), as the stream's calibrator sets it for
    /// the test rows in their order (scenario order: capture by capture, each in time).
    pub cuts: Vec<f32>,
}

impl Scored {
    /// The cut on the training traffic alone (what a fixed cut would be).
    pub fn floor(&self) -> f32 {
        self.budget.floor
    }
}

/// Trains `method` on the split's training rows and scores its test rows.
pub fn score(
    method: Method,
    split: &Split,
    schema: SchemaKind,
    flow: &crate::flow::FlowConfig,
    seed: u64,
    alert: &AlertConfig,
    device: &Device,
) -> Result<Scored, TrainError> {
    let (fpr_budget, window) = (alert.fpr_budget, alert.calibration_window);
    let (model, scaler, budget) = match method {
        Method::Train | Method::Paper => {
            let prep = if method == Method::Paper { PrepChoice::Paper } else { PrepChoice::Schema };
            let cfg = TrainConfig { seed, prep, ..TrainConfig::default() };
            let labels = split.train_labeled.iter().map(|&l| l as u8).collect();
            let fit = eval::fit_table(
                &Table::from_rows(schema, split.train.clone(), labels),
                &cfg,
                0.05,
                1.0,
                device,
                false,
            )?;
            let budget = fit.cut(fpr_budget, true);
            (fit.model, fit.prepared.scaler, budget)
        }
        Method::Default | Method::Cold => {
            let cfg = BootstrapConfig { seed, ..BootstrapConfig::default() };
            let no_labels = vec![false; split.n_train()];
            let labeled = if method == Method::Cold { &no_labels } else { &split.train_labeled };
            let b = bootstrap::train_on_rows(
                &split.train,
                labeled,
                schema,
                flow,
                "scenario",
                &cfg,
                fpr_budget,
                false,
            )?;
            let model = b
                .artifact
                .to_model(Path::new("(bootstrap)"), &Device::flex())
                .expect("a model just trained loads");
            (model, b.artifact.scaler, b.budget)
        }
    };
    let n = split.n_test();
    let scores = CpuScorer::new(&model).scores(&scaler.transform(
        &split.test,
        split.width,
        &(0..n).collect::<Vec<_>>(),
    ));
    let mut cuts = Vec::with_capacity(n);
    ThresholdCalibrator::new(Threshold::Budget(budget), window).calibrate(&scores, &mut cuts);
    Ok(Scored { scores, budget, cuts })
}

/// What a scoring achieved on a split's test half.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Judged {
    pub metrics: Metrics,
    /// Share of the attacks caught at the cut that flags 1 % of the benign test flows.
    pub tpr_at_1pct_fpr: f64,
    /// At the method's own cut.
    pub precision: f64,
    pub recall: f64,
    pub fpr: f64,
    /// False alerts per 1,000 benign flows.
    pub false_alerts_per_1k: f64,
    /// Recall per attack kind at the cut, and whether the kind was unseen in training.
    pub recall_by_kind: BTreeMap<String, (f64, bool)>,
}

/// Judges `scores` (row i alerts at `>= cuts[i]`) against the split's test truth.
pub fn judge(split: &Split, scores: &[f32], cuts: &[f32]) -> Judged {
    let labels: Vec<u8> = split.test_attack.iter().map(|&a| a as u8).collect();
    let pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut by_kind: BTreeMap<String, (f64, f64, bool)> = BTreeMap::new();
    for (i, (&score, &cut)) in scores.iter().zip(cuts).enumerate() {
        let alert = score >= cut;
        if split.test_attack[i] {
            tp += alert as u8 as f64;
            let k = by_kind.entry(split.test_kind[i].clone()).or_insert((
                0.0,
                0.0,
                split.test_unseen[i],
            ));
            k.0 += alert as u8 as f64;
            k.1 += 1.0;
        } else {
            fp += alert as u8 as f64;
        }
    }
    Judged {
        metrics: metrics(scores, &labels),
        tpr_at_1pct_fpr: tpr_at_fpr(scores, &labels, 0.01),
        precision: if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 },
        recall: tp / pos,
        fpr: fp / neg,
        false_alerts_per_1k: 1000.0 * fp / neg,
        recall_by_kind: by_kind.into_iter().map(|(k, (c, n, u))| (k, (c / n, u))).collect(),
    }
}

/// Writes the split as two CSV files (`PREFIX.train.csv`, `PREFIX.test.csv`) for peers outside
/// the project: the encoded feature columns unscaled, then `labeled` (train: the labels a
/// method may use), `label` (truth), `kind` and `unseen`.
pub fn export(split: &Split, names: &[String], prefix: &Path) -> std::io::Result<()> {
    let d = split.width;
    let write = |suffix: &str,
                 rows: &[f32],
                 labeled: Option<&[bool]>,
                 attack: &[bool],
                 kind: &[String],
                 unseen: &[bool]|
     -> std::io::Result<()> {
        let mut name = prefix.as_os_str().to_owned();
        name.push(format!(".{suffix}"));
        let path = std::path::PathBuf::from(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(f, "{},labeled,label,kind,unseen", names.join(","))?;
        for i in 0..attack.len() {
            for v in &rows[i * d..(i + 1) * d] {
                write!(f, "{v},")?;
            }
            writeln!(
                f,
                "{},{},{},{}",
                labeled.is_some_and(|l| l[i]) as u8,
                attack[i] as u8,
                kind[i],
                unseen[i] as u8
            )?;
        }
        f.flush()
    };
    let no_unseen = vec![false; split.n_train()];
    write(
        "train.csv",
        &split.train,
        Some(&split.train_labeled),
        &split.train_attack,
        &split.train_kind,
        &no_unseen,
    )?;
    write("test.csv", &split.test, None, &split.test_attack, &split.test_kind, &split.test_unseen)
}

/// Mean and standard deviation of one figure over seeds, as `0.812 ± 0.034`.
pub fn mean_std_text(v: &[f64]) -> String {
    let (m, s) = eval::mean_std(v);
    format!("{m:.3} ± {s:.3}")
}

/// The attack kinds of a split, seen ones first.
pub fn kinds(split: &Split) -> Vec<(String, bool)> {
    let mut k: std::collections::BTreeSet<(bool, String)> = Default::default();
    for i in 0..split.n_test() {
        if split.test_kind[i] != BENIGN {
            k.insert((split.test_unseen[i], split.test_kind[i].clone()));
        }
    }
    k.into_iter().map(|(u, n)| (n, u)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_counts_alerts_by_kind() {
        let split = Split {
            width: 1,
            test_attack: vec![false, false, true, true, true],
            test_kind: ["benign", "benign", "scan", "scan", "flood"].map(String::from).to_vec(),
            test_unseen: vec![false, false, false, false, true],
            ..Split::default()
        };
        let j = judge(&split, &[0.1, 0.9, 0.8, 0.2, 0.95], &[0.5; 5]);
        assert_eq!((j.precision, j.recall, j.fpr), (2.0 / 3.0, 2.0 / 3.0, 0.5));
        assert_eq!(j.false_alerts_per_1k, 500.0);
        assert_eq!(j.recall_by_kind["scan"], (0.5, false));
        assert_eq!(j.recall_by_kind["flood"], (1.0, true));
    }
}
