//! A model for a capture that came without one: the capture's own flows, through the same
//! features the detector serves, train a short MNPWAD run.
//!
//! MNPWAD is weakly supervised: it needs a few labeled anomalies besides the unlabeled bulk.
//! They come from a truth file (`label,kind,proto,orig_h,orig_p,resp_h,resp_p,...`, as
//! `mnpflow synth` writes): flows matching a row labeled 1 are the labeled anomalies, every
//! other flow is unlabeled. Without labels there is nothing to train on, and we say so.
//!
//! The run is deliberately short ([`BootstrapConfig`]): it exists so that the first command a
//! user types gives alerts within seconds, not to replace `mnpflow train` on a real table.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::offline;
use crate::capture::CaptureError;
use crate::features::encode::{EncodeStats, RowEncoder};
use crate::features::tables::Scaler;
use crate::features::{self, SchemaKind};
use crate::flow::{FlowConfig, FlowRecord};
use crate::model::artifact::{Artifact, DataSummary, Layout};
use crate::model::train::{TrainConfig, TrainData, TrainError, train};

/// `[bootstrap]`: the short training run of `replay` without `--model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Joint training epochs at most (15; `mnpflow train` defaults to 200).
    pub max_epochs: usize,
    /// Epochs at most per pretraining stage (15).
    pub pretrain_epochs: usize,
    /// Mini-batches per epoch (32).
    pub batches_per_epoch: usize,
    /// Number of prototypes (3; unset: chosen by silhouette, slower).
    pub n_prototypes: Option<usize>,
    /// Training seed (42).
    pub seed: u64,
    /// Most unlabeled flows trained on; a larger capture is subsampled evenly (50000).
    pub max_rows: usize,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig { max_epochs: 15, pretrain_epochs: 15, batches_per_epoch: 32, n_prototypes: Some(3), seed: 42, max_rows: 50_000 }
    }
}

/// Labels of conversations: the attack 5-tuples of a truth file.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    attacks: HashSet<(u8, IpAddr, u16, IpAddr, u16)>,
    /// Rows read, and rows labeled 1.
    pub rows: usize,
    pub attack_rows: usize,
}

/// Why a truth file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: line {line}: {problem}")]
    Bad { path: PathBuf, line: usize, problem: String },
}

impl Truth {
    /// Reads a truth CSV with a header naming at least `label,proto,orig_h,orig_p,resp_h,resp_p`.
    pub fn read(path: &Path) -> Result<Truth, TruthError> {
        let text = std::fs::read_to_string(path).map_err(|source| TruthError::Io { path: path.to_owned(), source })?;
        Truth::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Truth, TruthError> {
        let bad = |line: usize, problem: String| TruthError::Bad { path: path.to_owned(), line, problem };
        let mut lines = text.lines().enumerate();
        let header: Vec<&str> = match lines.next() {
            Some((_, h)) => h.split(',').map(str::trim).collect(),
            None => return Err(bad(1, "empty file".into())),
        };
        let col = |name: &str| header.iter().position(|h| *h == name).ok_or_else(|| bad(1, format!("no column {name:?} in the header")));
        let (c_label, c_proto, c_oh, c_op, c_rh, c_rp) =
            (col("label")?, col("proto")?, col("orig_h")?, col("orig_p")?, col("resp_h")?, col("resp_p")?);
        let mut t = Truth::default();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let get = |c: usize| f.get(c).copied().ok_or_else(|| bad(i + 1, format!("{} fields, expected {}", f.len(), header.len())));
            let num = |c: usize, what: &str| -> Result<u64, TruthError> {
                let v = get(c)?;
                v.parse().map_err(|_| bad(i + 1, format!("{what} {v:?} is not a number")))
            };
            let addr = |c: usize| -> Result<IpAddr, TruthError> {
                let v = get(c)?;
                v.parse().map_err(|_| bad(i + 1, format!("{v:?} is not an IP address")))
            };
            let label = num(c_label, "label")?;
            let proto = u8::try_from(num(c_proto, "proto")?).map_err(|_| bad(i + 1, "proto above 255".into()))?;
            let port = |c: usize| -> Result<u16, TruthError> { u16::try_from(num(c, "port")?).map_err(|_| bad(i + 1, "port above 65535".into())) };
            let key = (proto, addr(c_oh)?, port(c_op)?, addr(c_rh)?, port(c_rp)?);
            t.rows += 1;
            if label != 0 {
                t.attack_rows += 1;
                t.attacks.insert(key);
            }
        }
        Ok(t)
    }

    /// Whether a flow is a labeled attack (matched in either direction, since a flow's
    /// originator is whoever sent first).
    pub fn is_attack(&self, r: &FlowRecord) -> bool {
        self.attacks.contains(&(r.proto, r.orig_addr, r.orig_port, r.resp_addr, r.resp_port))
            || self.attacks.contains(&(r.proto, r.resp_addr, r.resp_port, r.orig_addr, r.orig_port))
    }
}

/// Why no model could be trained.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(
        "no labeled attack among the capture's {flows} flows: MNPWAD trains on a few labeled anomalies; \
         pass --truth FILE with attacks in this capture, or a trained model with --model"
    )]
    NoLabels { flows: usize },
    #[error("training: {0}")]
    Train(#[from] TrainError),
}

/// A trained model and what it saw.
pub struct Bootstrapped {
    pub artifact: Artifact,
    /// The score cut with the best F1 against the labels on the training flows: the alert
    /// threshold `replay` uses for this model unless told otherwise.
    pub best_f1_cut: f32,
    pub best_f1: f64,
    pub flows: usize,
    pub anomalies: usize,
    pub elapsed: Duration,
}

/// Trains on the flows of `captures`, labeled by `truth`.
pub fn train_on_captures(
    captures: &[PathBuf],
    flow: &FlowConfig,
    kind: SchemaKind,
    truth: Option<&Truth>,
    cfg: &BootstrapConfig,
    show_progress: bool,
) -> Result<Bootstrapped, BootstrapError> {
    let started = Instant::now();
    let mut extractor = features::extractor(kind, flow.community_id_seed);
    let schema = extractor.schema().clone();
    let encoder = RowEncoder::new(&schema);
    let d = encoder.width();
    let columns = extractor.columns().to_vec();
    let mut cells = Vec::new();
    let mut values: Vec<f32> = Vec::new();
    let mut attack: Vec<bool> = Vec::new();
    let mut stats = EncodeStats::default();
    offline::run_files(captures, flow, |rec| {
        extractor.extract(rec, &mut cells);
        let at = values.len();
        values.resize(at + d, 0.0);
        encoder.encode(&columns, &cells, &mut values[at..], &mut stats);
        attack.push(truth.is_some_and(|t| t.is_attack(rec)));
    })?;
    let n = attack.len();
    let anomalies_idx: Vec<usize> = (0..n).filter(|&i| attack[i]).collect();
    if anomalies_idx.is_empty() {
        return Err(BootstrapError::NoLabels { flows: n });
    }
    let mut unlabeled_idx: Vec<usize> = (0..n).filter(|&i| !attack[i]).collect();
    if unlabeled_idx.len() > cfg.max_rows.max(1) {
        let step = unlabeled_idx.len() as f64 / cfg.max_rows.max(1) as f64;
        unlabeled_idx = (0..cfg.max_rows.max(1)).map(|k| unlabeled_idx[(k as f64 * step) as usize]).collect();
    }
    let all: Vec<usize> = (0..n).collect();
    let scaler = Scaler::fit(&values, d, &all, &all);
    let unlabeled = scaler.transform(&values, d, &unlabeled_idx);
    let anomalies = scaler.transform(&values, d, &anomalies_idx);
    let tc = TrainConfig {
        max_epochs: cfg.max_epochs,
        pretrain_epochs: cfg.pretrain_epochs,
        batches_per_epoch: cfg.batches_per_epoch,
        n_prototypes: cfg.n_prototypes,
        seed: cfg.seed,
        ..TrainConfig::default()
    };
    let w = scaler.width();
    let trained = train(&TrainData { d: w, unlabeled: &unlabeled, anomalies: &anomalies, trusted_normal: 0, val: None }, &tc, &Device::flex(), show_progress)?;
    let scorer = crate::model::score::CpuScorer::new(&trained.model);
    let mut scores = vec![0.0f32; n];
    scorer.score_into(&scaler.transform(&values, d, &all), &mut scores);
    let (best_f1_cut, best_f1) = best_f1_cut(&scores, &attack);
    let source = captures.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ");
    let artifact = Artifact::new(
        &trained.model,
        Layout { name: schema.name.clone(), fingerprint: schema.fingerprint(), columns: schema.encoded_names() },
        scaler,
        tc,
        trained.report.clone(),
        DataSummary { source, unlabeled_rows: unlabeled_idx.len(), labeled_anomalies: anomalies_idx.len(), validation_rows: 0 },
    );
    Ok(Bootstrapped { artifact, best_f1_cut, best_f1, flows: n, anomalies: anomalies_idx.len(), elapsed: started.elapsed() })
}

/// The cut `score >= cut` with the highest F1 against `labels`, and that F1.
pub fn best_f1_cut(scores: &[f32], labels: &[bool]) -> (f32, f64) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let positives = labels.iter().filter(|&&l| l).count();
    let (mut tp, mut best, mut cut) = (0usize, 0.0f64, f32::INFINITY);
    for (k, &i) in order.iter().enumerate() {
        tp += labels[i] as usize;
        // Only between distinct scores: a cut cannot split ties.
        if k + 1 < order.len() && scores[order[k + 1]] == scores[i] {
            continue;
        }
        let f1 = 2.0 * tp as f64 / ((k + 1) + positives) as f64;
        if f1 > best {
            (best, cut) = (f1, scores[i]);
        }
    }
    (cut, best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_f1_cut_by_hand() {
        let (cut, f1) = best_f1_cut(&[0.9, 0.8, 0.7, 0.1], &[true, true, false, false]);
        assert_eq!((cut, f1), (0.8, 1.0));
        let (cut, f1) = best_f1_cut(&[0.5, 0.5, 0.1], &[true, false, false]);
        assert_eq!(cut, 0.5);
        assert!((f1 - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn truth_rows_and_errors() {
        let p = Path::new("t.csv");
        let t = Truth::parse(p, "label,kind,proto,orig_h,orig_p,resp_h,resp_p,start\n1,scan,6,10.0.0.1,4000,10.0.0.2,22,1.0\n0,web,6,10.0.0.1,4001,10.0.0.2,80,2.0\n").unwrap();
        assert_eq!((t.rows, t.attack_rows), (2, 1));
        let e = Truth::parse(p, "label,proto\n").unwrap_err().to_string();
        assert!(e.contains("orig_h"), "{e}");
        let e = Truth::parse(p, "label,proto,orig_h,orig_p,resp_h,resp_p\n1,6,10.0.0.x,1,10.0.0.2,2\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("10.0.0.x"), "{e}");
        let e = Truth::parse(p, "label,proto,orig_h,orig_p,resp_h,resp_p\n1,6,10.0.0.1\n").unwrap_err().to_string();
        assert!(e.contains("fields"), "{e}");
    }
}
