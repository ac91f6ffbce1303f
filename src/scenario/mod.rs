//! Detection on traffic a model never saw: scenarios of real captures, cut into a training
//! and a test half.
//!
//! A scenario file (TOML, `scenarios/*.toml`) names benign captures and attack captures, each
//! attack capture with its kind. [`Scenario::build`] turns it into one train/test split per
//! seed, the way an analyst would meet the traffic:
//!
//! 1. Every capture goes through the flow engine and the feature extractor on its own, exactly
//!    as `mnpflow flows` would (so the `ct_*` windows see the capture's own neighbours).
//! 2. A capture keeps at most `cap` of its conversations (flow records), a random sample by
//!    seed, so that one flood does not drown the rest.
//! 3. Each capture is cut at its middle conversation by start time: the first half trains,
//!    the second half is scored. Training happens before the test traffic exists.
//! 4. Attack kinds marked `unseen` lose their training half: they appear only in the test.
//! 5. Of each seen kind's training conversations, `labeled_share` (at least one) are labeled,
//!    as an analyst confirms a few; every other training conversation, attacks included, is
//!    unlabeled.
//!
//! Every method ([`run`]) then sees the very same rows, and peers outside the project get them
//! as CSV (`--export`).

pub mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::capture::CaptureFile;
use crate::features::SchemaKind;
use crate::flow::FlowConfig;
use crate::pipeline::offline;

/// The kind that marks a benign capture.
pub const BENIGN: &str = "benign";

/// A scenario file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Short name, used in reports.
    pub name: String,
    /// What the scenario is meant to show.
    #[serde(default)]
    pub doc: String,
    /// Folder that capture paths are relative to, itself relative to the scenario file
    /// (default: the scenario file's folder).
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// Conversations kept at most per capture (200).
    #[serde(default = "default_cap")]
    pub cap: usize,
    /// Share of each seen attack kind's training conversations that are labeled (0.2).
    #[serde(default = "default_labeled_share")]
    pub labeled_share: f64,
    /// Vocabulary of the records (unsw).
    #[serde(default = "default_schema")]
    pub schema: SchemaKind,
    #[serde(rename = "capture")]
    pub captures: Vec<CaptureEntry>,
}

fn default_cap() -> usize {
    200
}
fn default_labeled_share() -> f64 {
    0.2
}
fn default_schema() -> SchemaKind {
    SchemaKind::Unsw
}

/// One capture of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureEntry {
    pub path: PathBuf,
    /// `benign`, or the attack kind (`scan`, `flood`, `beacon`, ...): every conversation of
    /// the capture is of this kind.
    pub kind: String,
    /// The kind appears in the test half only (attacks only).
    #[serde(default)]
    pub unseen: bool,
    /// This capture's own cap (default: the scenario's).
    #[serde(default)]
    pub cap: Option<usize>,
}

/// Why a scenario could not be built. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Toml { path: PathBuf, source: toml::de::Error },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("{scenario}: capture {capture}: {source}")]
    Capture { scenario: PathBuf, capture: PathBuf, source: crate::capture::CaptureError },
}

/// The conversations of one capture, extracted once and reused by every seed.
#[derive(Debug, Clone)]
pub struct CaptureRows {
    pub path: PathBuf,
    pub kind: String,
    pub unseen: bool,
    pub cap: usize,
    /// Encoded feature rows (unscaled), `n * width`, in start-time order.
    pub values: Vec<f32>,
    /// Conversations in the capture.
    pub n: usize,
}

/// A scenario with its captures' records extracted.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub file: PathBuf,
    pub spec: ScenarioFile,
    /// Encoded column names.
    pub names: Vec<String>,
    pub captures: Vec<CaptureRows>,
}

/// One seed's split: rows in the encoded layout, unscaled.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub width: usize,
    pub train: Vec<f32>,
    /// Per training row: labeled as an attack (what a method may use).
    pub train_labeled: Vec<bool>,
    /// Per training row: an attack (truth, for reporting only).
    pub train_attack: Vec<bool>,
    pub test: Vec<f32>,
    /// Per test row: an attack.
    pub test_attack: Vec<bool>,
    /// Per test row: its kind (`benign` or the attack kind).
    pub test_kind: Vec<String>,
    /// Per test row: of a kind that is in the test half only.
    pub test_unseen: Vec<bool>,
    pub train_kind: Vec<String>,
}

impl Split {
    pub fn n_train(&self) -> usize {
        self.train_labeled.len()
    }
    pub fn n_test(&self) -> usize {
        self.test_attack.len()
    }
}

impl ScenarioFile {
    /// Reads and checks a scenario file.
    pub fn read(path: &Path) -> Result<ScenarioFile, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Io { path: path.to_owned(), source })?;
        ScenarioFile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<ScenarioFile, ScenarioError> {
        let spec: ScenarioFile = toml::from_str(text)
            .map_err(|source| ScenarioError::Toml { path: path.to_owned(), source })?;
        let bad = |problem: String| ScenarioError::Invalid { path: path.to_owned(), problem };
        if !(spec.labeled_share > 0.0 && spec.labeled_share <= 1.0) {
            return Err(bad(format!("labeled_share {} is not in (0, 1]", spec.labeled_share)));
        }
        if spec.cap < 2 || spec.captures.iter().any(|c| c.cap.is_some_and(|k| k < 2)) {
            return Err(bad("cap must be at least 2 (a capture is cut into two halves)".into()));
        }
        if !spec.captures.iter().any(|c| c.kind == BENIGN) {
            return Err(bad("no capture of kind \"benign\"".into()));
        }
        if !spec.captures.iter().any(|c| c.kind != BENIGN && !c.unseen) {
            return Err(bad("no seen attack capture: MNPWAD and the supervised peers need a few labeled attacks".into()));
        }
        for c in &spec.captures {
            if c.kind.is_empty() || c.kind.contains([',', '"', '\n']) {
                return Err(bad(format!(
                    "capture {}: kind {:?} must be a plain word",
                    c.path.display(),
                    c.kind
                )));
            }
            if c.unseen && c.kind == BENIGN {
                return Err(bad(format!(
                    "capture {}: only attack kinds can be unseen",
                    c.path.display()
                )));
            }
        }
        // One kind is seen or unseen, never both: the split would contradict itself.
        let mut unseen_of: BTreeMap<&str, bool> = BTreeMap::new();
        for c in &spec.captures {
            if *unseen_of.entry(&c.kind).or_insert(c.unseen) != c.unseen {
                return Err(bad(format!(
                    "kind {:?} is marked unseen on some captures and not on others",
                    c.kind
                )));
            }
        }
        Ok(spec)
    }

    /// Where a capture entry's file is.
    pub fn capture_path(&self, file: &Path, entry: &CaptureEntry) -> PathBuf {
        let here = file.parent().unwrap_or(Path::new(""));
        let base = match &self.data {
            Some(d) => here.join(d),
            None => here.to_path_buf(),
        };
        base.join(&entry.path)
    }
}

impl Scenario {
    /// Reads a scenario file and extracts every capture's records.
    pub fn load(file: &Path, flow: &FlowConfig) -> Result<Scenario, ScenarioError> {
        let spec = ScenarioFile::read(file)?;
        let mut captures = Vec::new();
        for entry in &spec.captures {
            let path = spec.capture_path(file, entry);
            let mut rows: Vec<(crate::capture::Timestamp, Vec<f32>)> = Vec::new();
            offline::encoded_rows([CaptureFile::open(&path)], spec.schema, flow, |rec, row| {
                rows.push((rec.first_ts, row.to_vec()))
            })
            .map_err(|source| ScenarioError::Capture {
                scenario: file.to_owned(),
                capture: path.clone(),
                source,
            })?;
            if rows.len() < 2 {
                return Err(ScenarioError::Invalid {
                    path: file.to_owned(),
                    problem: format!(
                        "capture {} has {} flows: at least 2 are needed to cut it in two",
                        path.display(),
                        rows.len()
                    ),
                });
            }
            // Start-time order; records that start together keep the window order (stable sort).
            rows.sort_by_key(|r| r.0);
            captures.push(CaptureRows {
                path,
                kind: entry.kind.clone(),
                unseen: entry.unseen,
                cap: entry.cap.unwrap_or(spec.cap),
                n: rows.len(),
                values: rows.into_iter().flat_map(|r| r.1).collect(),
            });
        }
        Ok(Scenario {
            file: file.to_owned(),
            names: spec.schema.schema().encoded_names(),
            spec,
            captures,
        })
    }

    pub fn width(&self) -> usize {
        self.names.len()
    }

    /// The split for `seed` (see the module's steps 2-5).
    pub fn split(&self, seed: u64) -> Split {
        let d = self.width();
        let mut s = Split { width: d, ..Split::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Training conversations of each seen attack kind, by position in `s.train_labeled`.
        let mut train_of_kind: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for c in &self.captures {
            let kept = sample_sorted(&mut rng, c.n, c.cap);
            let (first, second) = kept.split_at(kept.len() / 2);
            let attack = c.kind != BENIGN;
            if !c.unseen {
                for &i in first {
                    if attack {
                        train_of_kind.entry(&c.kind).or_default().push(s.train_labeled.len());
                    }
                    s.train.extend_from_slice(&c.values[i * d..(i + 1) * d]);
                    s.train_labeled.push(false);
                    s.train_attack.push(attack);
                    s.train_kind.push(c.kind.clone());
                }
            }
            for &i in second {
                s.test.extend_from_slice(&c.values[i * d..(i + 1) * d]);
                s.test_attack.push(attack);
                s.test_kind.push(c.kind.clone());
                s.test_unseen.push(c.unseen);
            }
        }
        for rows in train_of_kind.values_mut() {
            let k = ((self.spec.labeled_share * rows.len() as f64).ceil() as usize)
                .clamp(1, rows.len());
            rows.shuffle(&mut rng);
            for &r in &rows[..k] {
                s.train_labeled[r] = true;
            }
        }
        s
    }
}

/// `k` of `0..n` drawn at random (all of them when `k >= n`), in increasing order.
fn sample_sorted(rng: &mut ChaCha8Rng, n: usize, k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if k < n {
        idx.shuffle(rng);
        idx.truncate(k);
        idx.sort_unstable();
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name = "t"
cap = 4
labeled_share = 0.5
[[capture]]
path = "b.pcap"
kind = "benign"
[[capture]]
path = "s.pcap"
kind = "scan"
[[capture]]
path = "f.pcap"
kind = "flood"
unseen = true
"#;

    /// A scenario whose captures are given rows: capture c's row i holds the value 100c + i.
    fn scenario(sizes: &[usize]) -> Scenario {
        let spec = ScenarioFile::parse(Path::new("t.toml"), FILE).unwrap();
        let captures = spec
            .captures
            .iter()
            .zip(sizes)
            .enumerate()
            .map(|(c, (e, &n))| CaptureRows {
                path: e.path.clone(),
                kind: e.kind.clone(),
                unseen: e.unseen,
                cap: e.cap.unwrap_or(spec.cap),
                n,
                values: (0..n).map(|i| (100 * c + i) as f32).collect(),
            })
            .collect();
        Scenario { file: "t.toml".into(), spec, names: vec!["x".into()], captures }
    }

    #[test]
    fn halves_caps_unseen_kinds_and_labels() {
        // benign 3 rows (under the cap), scan 10 rows (capped to 4), flood 6 rows (capped to 4).
        let sc = scenario(&[3, 10, 6]);
        let s = sc.split(7);
        // Benign: 3 rows cut at the middle, 1 train, 2 test, in start order.
        assert_eq!(&s.train[..1], &[0.0]);
        assert_eq!(&s.test[..2], &[1.0, 2.0]);
        // Scan: 4 of its 10 rows, the two earliest kept to train, the two latest to test.
        let scan_train: Vec<f32> = s.train[1..].to_vec();
        let scan_test: Vec<f32> = s.test[2..4].to_vec();
        assert_eq!(scan_train.len(), 2);
        assert!(scan_train.iter().chain(&scan_test).all(|&v| (100.0..110.0).contains(&v)));
        assert!(
            scan_train[0] < scan_train[1]
                && scan_train[1] < scan_test[0]
                && scan_test[0] < scan_test[1]
        );
        // Flood is unseen: nothing in training, its test half (2 of 4 kept) in the test.
        assert_eq!(s.n_train(), 3);
        assert_eq!(s.n_test(), 6);
        assert_eq!(s.test_unseen, [false, false, false, false, true, true]);
        assert!(s.test[4..].iter().all(|&v| (200.0..206.0).contains(&v)));
        assert_eq!(s.test_attack, [false, false, true, true, true, true]);
        assert_eq!(s.test_kind[5], "flood");
        // Labels: half of the scan's 2 training rows, rounded up: 1; benign rows never.
        assert_eq!(s.train_labeled.iter().filter(|&&l| l).count(), 1);
        assert!(!s.train_labeled[0]);
        assert_eq!(s.train_attack, [false, true, true]);
        // Deterministic by seed; another seed samples other rows.
        assert_eq!(sc.split(7).test, s.test);
        assert!((0..20).any(|seed| sc.split(seed).train != s.train));
    }

    #[test]
    fn at_least_one_label_per_seen_kind() {
        let mut sc = scenario(&[4, 4, 4]);
        sc.spec.labeled_share = 0.01;
        let s = sc.split(1);
        assert_eq!(s.train_labeled.iter().filter(|&&l| l).count(), 1);
    }

    #[test]
    fn file_errors_name_the_file_and_the_problem() {
        let p = Path::new("scenarios/x.toml");
        let err = |text: &str| ScenarioFile::parse(p, text).unwrap_err().to_string();
        let e = err("name = 'x'\n[[capture]]\npath = 'a'\nkind = 'scan'\n");
        assert!(e.contains("scenarios/x.toml") && e.contains("benign"), "{e}");
        let e = err(
            "name = 'x'\n[[capture]]\npath = 'a'\nkind = 'benign'\n[[capture]]\npath = 'b'\nkind = 'scan'\nunseen = true\n",
        );
        assert!(e.contains("no seen attack"), "{e}");
        let e = err("name = 'x'\nlabeled_share = 0\n[[capture]]\npath = 'a'\nkind = 'benign'\n");
        assert!(e.contains("labeled_share"), "{e}");
        let e = err(
            "name = 'x'\n[[capture]]\npath = 'a'\nkind = 'benign'\nunseen = true\n[[capture]]\npath = 'b'\nkind = 'scan'\n",
        );
        assert!(e.contains("only attack kinds"), "{e}");
        let e = err(
            "name = 'x'\n[[capture]]\npath = 'a'\nkind = 'benign'\n[[capture]]\npath = 'b'\nkind = 'scan'\n[[capture]]\npath = 'c'\nkind = 'scan'\nunseen = true\n",
        );
        assert!(e.contains("\"scan\" is marked unseen on some"), "{e}");
        let e = err("name = 'x'\n[[capture]]\npath = 'a'\nknd = 'benign'\n");
        assert!(e.contains("scenarios/x.toml") && e.contains("knd"), "{e}");
    }
}
