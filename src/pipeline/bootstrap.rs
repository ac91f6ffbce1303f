//! A model for a capture that came without one: the capture's own flows, through the same
//! features the detector serves, train MNPWAD as `mnpflow train` would.
//!
//! MNPWAD is weakly supervised: it needs a few labeled anomalies besides the unlabeled bulk.
//! They come from a truth file (`label,kind,proto,orig_h,orig_p,resp_h,resp_p,...`, as
//! `mnpflow synth` writes): flows matching a row labeled 1 are the labeled anomalies, every
//! other flow is unlabeled. Without a single label the sensor starts cold: it trains against
//! the attacks of the project's traffic generator ([`attack_library`]), says so, and the
//! learning loop moves to the weakly supervised model once analysts label.
//!
//! Either way the model carries its alert cut: the score that holds the false-positive budget
//! on the traffic it trained on ([`crate::alert::threshold::budget_cut`]).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::offline;
use crate::alert::BudgetCut;
use crate::capture::{CaptureError, CaptureFile};
use crate::features::SchemaKind;
use crate::features::tables::Table;
use crate::flow::{FlowConfig, FlowRecord};
use crate::model::artifact::{Artifact, DataSummary, Layout};
use crate::model::eval::fit_table;
use crate::model::train::{TrainConfig, TrainError};

/// `[bootstrap]`: how `replay` without `--model` trains its model on the capture.
///
/// The defaults are `mnpflow train`'s: on the capture benchmark (`mnpflow eval --scenario`) a
/// shortened run ranked attacks visibly worse than the full one, and the full run on a few
/// thousand flows takes seconds. Lower the epochs for a quicker, weaker model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Joint training epochs at most (200, early stopping on held-out flows).
    pub max_epochs: usize,
    /// Epochs at most per pretraining stage (200).
    pub pretrain_epochs: usize,
    /// Mini-batches per epoch (64).
    pub batches_per_epoch: usize,
    /// Number of prototypes (unset: chosen by silhouette).
    pub n_prototypes: Option<usize>,
    /// Training seed (42).
    pub seed: u64,
    /// Most unlabeled flows trained on; a larger capture is subsampled evenly (50000).
    pub max_rows: usize,
    /// Share of the flows held out for early stopping (0.05).
    pub val_fraction: f64,
    /// With no labeled attack at all (cold start): attack conversations of the generator's
    /// library trained on as the labeled anomalies, at most (200).
    pub library_rows: usize,
    /// `live` with no model (cold start) learns from the interface's first flows: this many
    /// (2000), or what arrives in `warmup_seconds` (600), or until `warmup_bytes` of packets
    /// (256 MiB) are held for the detector to replay, whichever comes first.
    pub warmup_flows: usize,
    pub warmup_seconds: f64,
    pub warmup_bytes: usize,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        let t = TrainConfig::default();
        BootstrapConfig {
            max_epochs: t.max_epochs,
            pretrain_epochs: t.pretrain_epochs,
            batches_per_epoch: t.batches_per_epoch,
            n_prototypes: t.n_prototypes,
            seed: t.seed,
            max_rows: 50_000,
            val_fraction: 0.05,
            library_rows: 200,
            warmup_flows: 2000,
            warmup_seconds: 600.0,
            warmup_bytes: 256 << 20,
        }
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
        let text = std::fs::read_to_string(path)
            .map_err(|source| TruthError::Io { path: path.to_owned(), source })?;
        Truth::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Truth, TruthError> {
        let bad =
            |line: usize, problem: String| TruthError::Bad { path: path.to_owned(), line, problem };
        let mut lines = text.lines().enumerate();
        let header: Vec<&str> = match lines.next() {
            Some((_, h)) => h.split(',').map(str::trim).collect(),
            None => return Err(bad(1, "empty file".into())),
        };
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| bad(1, format!("no column {name:?} in the header")))
        };
        let (c_label, c_proto, c_oh, c_op, c_rh, c_rp) = (
            col("label")?,
            col("proto")?,
            col("orig_h")?,
            col("orig_p")?,
            col("resp_h")?,
            col("resp_p")?,
        );
        let mut t = Truth::default();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let get = |c: usize| {
                f.get(c).copied().ok_or_else(|| {
                    bad(i + 1, format!("{} fields, expected {}", f.len(), header.len()))
                })
            };
            let num = |c: usize, what: &str| -> Result<u64, TruthError> {
                let v = get(c)?;
                v.parse().map_err(|_| bad(i + 1, format!("{what} {v:?} is not a number")))
            };
            let addr = |c: usize| -> Result<IpAddr, TruthError> {
                let v = get(c)?;
                v.parse().map_err(|_| bad(i + 1, format!("{v:?} is not an IP address")))
            };
            let label = num(c_label, "label")?;
            let proto = u8::try_from(num(c_proto, "proto")?)
                .map_err(|_| bad(i + 1, "proto above 255".into()))?;
            let port = |c: usize| -> Result<u16, TruthError> {
                u16::try_from(num(c, "port")?).map_err(|_| bad(i + 1, "port above 65535".into()))
            };
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
        "the captures hold {flows} flows: too few to learn what this network's traffic looks like (at least {MIN_FLOWS}); pass a trained model with --model"
    )]
    TooFewFlows { flows: usize },
    #[error("training: {0}")]
    Train(#[from] TrainError),
}

/// A trained model and what it saw.
pub struct Bootstrapped {
    pub artifact: Artifact,
    /// The score cut that holds the false-positive budget on the training flows
    /// ([`crate::model::eval::Fit::cut`]): the alert threshold `replay` uses unless told
    /// otherwise: the floor of `budget`.
    pub cut: f32,
    /// The threshold that holds the budget on the traffic the model meets.
    pub budget: BudgetCut,
    /// Trained with no labeled attack, against the generator's attack library.
    pub cold_start: bool,
    /// Attacks of the generator's library trained against (cold start only).
    pub library: usize,
    pub flows: usize,
    pub anomalies: usize,
    pub elapsed: Duration,
}

/// Trains on the flows of `captures`, labeled by `truth` (none: cold start).
pub fn train_on_captures(
    captures: &[PathBuf],
    flow: &FlowConfig,
    kind: SchemaKind,
    truth: Option<&Truth>,
    cfg: &BootstrapConfig,
    fpr_budget: f64,
    show_progress: bool,
) -> Result<Bootstrapped, BootstrapError> {
    let started = Instant::now();
    let mut values: Vec<f32> = Vec::new();
    let mut attack: Vec<bool> = Vec::new();
    offline::encoded_rows(captures.iter().map(CaptureFile::open), kind, flow, |rec, row| {
        values.extend_from_slice(row);
        attack.push(truth.is_some_and(|t| t.is_attack(rec)));
    })?;
    if attack.len() < MIN_FLOWS {
        return Err(BootstrapError::TooFewFlows { flows: attack.len() });
    }
    let source = captures.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ");
    let mut b =
        train_on_rows(&values, &attack, kind, flow, &source, cfg, fpr_budget, show_progress)?;
    b.elapsed = started.elapsed();
    Ok(b)
}

/// Fewest flows a capture must have to train on.
pub const MIN_FLOWS: usize = 20;

/// Trains on rows in `kind`'s encoded layout (unscaled), `labeled` marking the labeled
/// attacks; every other row is unlabeled. This is `mnpflow train` on those rows, with the
/// alert cut of the false-positive budget ([`crate::model::eval::Fit::cut`]) stored in the
/// model.
///
/// With no labeled attack (cold start) MNPWAD still needs anomalies to learn against: it gets
/// the attack conversations of `mnpflow synth` ([`attack_library`]: a port scan, a SYN flood
/// from spoofed sources, an SSH brute force, a C&C beacon, a bulk exfiltration), extracted
/// with the same flow settings. They are not this network's attacks, but they teach the model
/// what attack traffic does in these features (one-sided, short, repeated, many ports or
/// sources), where an unsupervised score on a network whose traffic is a quarter attacks finds
/// nothing (docs/detection.md). The first real labels replace them.
#[allow(clippy::too_many_arguments)] // `mnpflow train`'s inputs, as `train_on_captures` passes them on
pub fn train_on_rows(
    values: &[f32],
    labeled: &[bool],
    kind: SchemaKind,
    flow: &FlowConfig,
    source: &str,
    cfg: &BootstrapConfig,
    fpr_budget: f64,
    show_progress: bool,
) -> Result<Bootstrapped, TrainError> {
    let started = Instant::now();
    let schema = kind.schema();
    let d = schema.encoded_width();
    let n = labeled.len();
    let anomalies_idx: Vec<usize> = (0..n).filter(|&i| labeled[i]).collect();
    let unlabeled: Vec<usize> = (0..n).filter(|&i| !labeled[i]).collect();
    let unlabeled_idx: Vec<usize> =
        evenly(unlabeled.len(), cfg.max_rows.max(1)).into_iter().map(|k| unlabeled[k]).collect();
    let mut rows: Vec<f32> = Vec::with_capacity((unlabeled_idx.len() + anomalies_idx.len()) * d);
    let mut labels: Vec<u8> = Vec::new();
    for (&i, l) in
        unlabeled_idx.iter().map(|i| (i, 0u8)).chain(anomalies_idx.iter().map(|i| (i, 1u8)))
    {
        rows.extend_from_slice(&values[i * d..(i + 1) * d]);
        labels.push(l);
    }
    let cold_start = anomalies_idx.is_empty();
    let library = if cold_start {
        let rows_of_library = attack_library(kind, flow, cfg.seed, cfg.library_rows);
        let k = rows_of_library.len() / d;
        rows.extend_from_slice(&rows_of_library);
        labels.extend(std::iter::repeat_n(1u8, k));
        k
    } else {
        0
    };
    let tc = TrainConfig {
        max_epochs: cfg.max_epochs,
        pretrain_epochs: cfg.pretrain_epochs,
        batches_per_epoch: cfg.batches_per_epoch,
        n_prototypes: cfg.n_prototypes,
        seed: cfg.seed,
        ..TrainConfig::default()
    };
    let table = Table::from_rows(kind, rows, labels);
    let fit = fit_table(&table, &tc, cfg.val_fraction, 1.0, &Device::flex(), show_progress)?;
    let scaler = fit.prepared.scaler.clone();
    // The library's attacks stand for the confirmed ones: rows that score like them are set
    // aside before the budget is counted.
    let budget = fit.cut(fpr_budget, true);
    let mut artifact = Artifact::new(
        &fit.model,
        Layout {
            name: schema.name.clone(),
            fingerprint: schema.fingerprint(),
            columns: schema.encoded_names(),
            encoding: Default::default(),
        },
        scaler,
        tc,
        fit.report.clone(),
        DataSummary {
            source: if cold_start {
                format!(
                    "{source} (cold start: no labels; {library} attacks of the generator's library)"
                )
            } else {
                source.to_string()
            },
            unlabeled_rows: fit.prepared.unlabeled.len() / fit.prepared.scaler.width().max(1),
            labeled_anomalies: anomalies_idx.len(),
            validation_rows: fit.prepared.val_labels.len(),
        },
    );
    artifact.cut = Some(budget.floor);
    artifact.budget = Some(budget);
    artifact.profiles = fit.profiles();
    Ok(Bootstrapped {
        artifact,
        cut: budget.floor,
        budget,
        cold_start,
        library,
        flows: n,
        anomalies: anomalies_idx.len(),
        elapsed: started.elapsed(),
    })
}

/// The attack conversations of the project's traffic generator (`mnpflow synth`, default
/// settings, `seed`) as rows of `kind`, at most `max` of them spread evenly over the capture.
/// Made in memory, through the same flow engine and extractor as any capture.
pub fn attack_library(kind: SchemaKind, flow: &FlowConfig, seed: u64, max: usize) -> Vec<f32> {
    use crate::capture::synth::{SynthConfig, generate};
    let name = Path::new("(attack library)");
    let (mut pcap, mut truth) = (Vec::new(), Vec::new());
    generate(&SynthConfig { seed, ..SynthConfig::default() }, &mut pcap, &mut truth)
        .expect("writing to memory cannot fail");
    let truth = Truth::parse(name, &String::from_utf8_lossy(&truth))
        .expect("the generator writes a valid truth file");
    let d = kind.schema().encoded_width();
    let mut rows = Vec::new();
    let capture = CaptureFile::from_reader(name, Box::new(std::io::Cursor::new(pcap)));
    offline::encoded_rows([capture], kind, flow, |rec, row| {
        if truth.is_attack(rec) {
            rows.extend_from_slice(row);
        }
    })
    .expect("the generator's capture reads");
    evenly(rows.len() / d, max)
        .into_iter()
        .flat_map(|k| rows[k * d..(k + 1) * d].iter().copied())
        .collect()
}

/// `max` of the positions `0..n` spread evenly from the first (all of them when `n <= max`).
fn evenly(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let step = n as f64 / max as f64;
    (0..max).map(|k| (k as f64 * step) as usize).collect()
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
    fn the_attack_library_holds_every_generated_attack_kind() {
        let flow = FlowConfig::default();
        let all = attack_library(SchemaKind::Unsw, &flow, 7, usize::MAX);
        let d = SchemaKind::Unsw.schema().encoded_width();
        // The bundled capture is `synth` with seed 7: its truth file names 569 attack flows.
        assert_eq!(all.len() / d, 569);
        let some = attack_library(SchemaKind::Unsw, &flow, 7, 100);
        assert_eq!(some.len() / d, 100);
        assert_eq!(&some[..d], &all[..d], "spread evenly from the first");
        assert_eq!(
            attack_library(SchemaKind::Zeek, &flow, 7, 50).len(),
            50 * SchemaKind::Zeek.schema().encoded_width()
        );
    }

    /// The cold-start switch: no labeled attack trains against the attack library and says so;
    /// one labeled attack trains the weakly supervised model with none.
    #[test]
    fn no_labels_means_cold_start_with_the_attack_library() {
        use rand::{Rng, SeedableRng};
        let kind = SchemaKind::Zeek;
        let d = kind.schema().encoded_width();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 300;
        let values: Vec<f32> = (0..n * d).map(|_| rng.random_range(0.0..100.0f32)).collect();
        let cfg = BootstrapConfig {
            max_epochs: 2,
            pretrain_epochs: 2,
            batches_per_epoch: 2,
            n_prototypes: Some(2),
            ..BootstrapConfig::default()
        };
        let cold = train_on_rows(
            &values,
            &vec![false; n],
            kind,
            &FlowConfig::default(),
            "rows",
            &cfg,
            0.01,
            false,
        )
        .unwrap();
        assert!(cold.cold_start);
        assert_eq!(cold.library, cfg.library_rows);
        assert_eq!(cold.anomalies, 0);
        assert!(cold.artifact.data.source.contains("cold start"));
        assert_eq!(cold.artifact.cut, Some(cold.cut));
        let mut labeled = vec![false; n];
        labeled[7] = true;
        let warm = train_on_rows(
            &values,
            &labeled,
            kind,
            &FlowConfig::default(),
            "rows",
            &cfg,
            0.01,
            false,
        )
        .unwrap();
        assert!(!warm.cold_start);
        assert_eq!((warm.library, warm.anomalies), (0, 1));
    }

    #[test]
    fn truth_rows_and_errors() {
        let p = Path::new("t.csv");
        let t = Truth::parse(p, "label,kind,proto,orig_h,orig_p,resp_h,resp_p,start\n1,scan,6,10.0.0.1,4000,10.0.0.2,22,1.0\n0,web,6,10.0.0.1,4001,10.0.0.2,80,2.0\n").unwrap();
        assert_eq!((t.rows, t.attack_rows), (2, 1));
        let e = Truth::parse(p, "label,proto\n").unwrap_err().to_string();
        assert!(e.contains("orig_h"), "{e}");
        let e =
            Truth::parse(p, "label,proto,orig_h,orig_p,resp_h,resp_p\n1,6,10.0.0.x,1,10.0.0.2,2\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("line 2") && e.contains("10.0.0.x"), "{e}");
        let e = Truth::parse(p, "label,proto,orig_h,orig_p,resp_h,resp_p\n1,6,10.0.0.1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fields"), "{e}");
    }
}
