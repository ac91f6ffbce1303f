//! Analysts' labels and the record of scored flows they refer to.
//!
//! The sensor appends the flows it alerted on (and a bounded window of other scored flows) to
//! `flows.log` in the data directory, with their encoded feature vectors; a label given later,
//! from another process or after a restart, finds its flow there by uid or community ID and
//! keeps the feature vector, so retraining needs no traffic. Both files are [`RecordLog`]s:
//! a label is acknowledged only once it is on stable storage.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::log::{LogError, RecordLog};

/// An analyst's verdict on a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The flow is part of an attack (a labeled anomaly for training).
    Attack,
    /// The flow is normal (joins the unlabeled data with full weight).
    Benign,
    /// Withdraws the flow's earlier verdicts (an undo on the analysts' page): the latest label
    /// wins, so the flow counts as not labeled.
    Unlabeled,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Attack => "attack",
            Verdict::Benign => "benign",
            Verdict::Unlabeled => "unlabeled",
        })
    }
}

/// A scored flow as the sensor keeps it for later labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredFlow {
    pub uid: String,
    pub community_id: String,
    /// Flow start, Unix seconds.
    pub ts: f64,
    pub orig_h: String,
    pub orig_p: u16,
    pub resp_h: String,
    pub resp_p: u16,
    pub proto: u8,
    /// Fingerprint of the feature schema of `features`.
    pub schema: String,
    /// The encoded (unscaled) feature vector.
    pub features: Vec<f32>,
    pub score: f32,
}

/// One label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// The uid of the labeled flow.
    pub uid: String,
    pub community_id: String,
    pub verdict: Verdict,
    /// Who labeled it.
    pub by: String,
    /// When, Unix seconds.
    pub at: f64,
    #[serde(default)]
    pub note: String,
    pub schema: String,
    pub features: Vec<f32>,
}

impl Label {
    /// `verdict` on a scored flow the caller holds, by `by` at `at`.
    fn of_flow(flow: &ScoredFlow, verdict: Verdict, by: &str, note: &str, at: f64) -> Label {
        Label {
            uid: flow.uid.clone(),
            community_id: flow.community_id.clone(),
            verdict,
            by: by.to_owned(),
            at,
            note: note.to_owned(),
            schema: flow.schema.clone(),
            features: flow.features.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(
        "no scored flow has uid or community ID {id:?} in {store} (the sensor keeps the flows it alerted on and a window of recent scored flows)"
    )]
    UnknownFlow { id: String, store: PathBuf },
}

/// The label store and flow record of one data directory.
pub struct LabelStore {
    labels: RecordLog<Label>,
    all: Vec<Label>,
    dir: PathBuf,
}

impl LabelStore {
    pub fn open(data_dir: &Path) -> Result<LabelStore, LabelError> {
        let (labels, all) = RecordLog::open(&data_dir.join("labels.log"))?;
        Ok(LabelStore { labels, all, dir: data_dir.to_owned() })
    }

    /// Every label of a data directory, read-only (beside writers in other threads or
    /// processes).
    pub fn read(data_dir: &Path) -> Result<Vec<Label>, LogError> {
        RecordLog::read(&data_dir.join("labels.log"))
    }

    pub fn labels(&self) -> &[Label] {
        &self.all
    }

    /// Bytes of a torn last record cut off at open (a crash during a write).
    pub fn recovered_bytes(&self) -> u64 {
        self.labels.recovered_bytes
    }

    /// Labels the flow with this uid or community ID (the most recent such flow in the data
    /// directory's record).
    pub fn label(
        &mut self,
        id: &str,
        verdict: Verdict,
        by: &str,
        note: &str,
        now_secs: f64,
    ) -> Result<Label, LabelError> {
        let store = self.dir.join("flows.log");
        // The record rotates: the previous log holds older flows.
        let older = super::log::rotated(&store);
        // Read-only: a running sensor may be appending.
        let mut flows = RecordLog::<ScoredFlow>::read(&older)?;
        flows.extend(RecordLog::<ScoredFlow>::read(&store)?);
        let flow = flows
            .iter()
            .filter(|f| f.uid == id || f.community_id == id)
            .max_by(|a, b| a.ts.total_cmp(&b.ts))
            .ok_or_else(|| LabelError::UnknownFlow { id: id.to_owned(), store: store.clone() })?;
        Ok(self.label_flow(flow, verdict, by, note, now_secs)?)
    }

    /// Labels a flow the caller holds (the sensor's recent alerts); acknowledged once durable.
    pub fn label_flow(
        &mut self,
        flow: &ScoredFlow,
        verdict: Verdict,
        by: &str,
        note: &str,
        now_secs: f64,
    ) -> Result<Label, LogError> {
        let label = Label::of_flow(flow, verdict, by, note, now_secs);
        self.labels.append(&label)?;
        self.all.push(label.clone());
        Ok(label)
    }

    /// Labels several flows the caller holds with one sync (an incident on the analysts'
    /// page): one label per flow, each as [`LabelStore::label_flow`] stores it.
    pub fn label_flows(
        &mut self,
        flows: &[ScoredFlow],
        verdict: Verdict,
        by: &str,
        note: &str,
        now_secs: f64,
    ) -> Result<Vec<Label>, LogError> {
        let labels: Vec<Label> =
            flows.iter().map(|flow| Label::of_flow(flow, verdict, by, note, now_secs)).collect();
        self.labels.append_all(&labels)?;
        self.all.extend(labels.iter().cloned());
        Ok(labels)
    }

    /// The latest label of each flow, by uid (a later label wins; an
    /// [`Verdict::Unlabeled`] one is kept, and says the flow has no verdict).
    pub fn latest(&self) -> std::collections::HashMap<&str, &Label> {
        self.all.iter().map(|l| (l.uid.as_str(), l)).collect()
    }

    /// Appends a complete label (import); acknowledged once durable.
    pub fn add(&mut self, label: Label) -> Result<(), LabelError> {
        self.add_all(vec![label])
    }

    /// Appends several labels with one sync (indicator rules label in batches).
    pub fn add_all(&mut self, labels: Vec<Label>) -> Result<(), LabelError> {
        self.labels.append_all(&labels)?;
        self.all.extend(labels);
        Ok(())
    }
}

/// Appends scored flows to a data directory's flow record.
pub fn record_flows(data_dir: &Path, flows: &[ScoredFlow]) -> Result<(), LogError> {
    let (mut log, _) = RecordLog::<ScoredFlow>::open(&data_dir.join("flows.log"))?;
    log.append_all(flows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(uid: &str, ts: f64) -> ScoredFlow {
        ScoredFlow {
            uid: uid.into(),
            community_id: format!("1:{uid}="),
            ts,
            orig_h: "10.0.0.1".into(),
            orig_p: 1,
            resp_h: "10.0.0.2".into(),
            resp_p: 2,
            proto: 6,
            schema: "unsw-nb15-v1-x".into(),
            features: vec![1.0, ts as f32],
            score: 0.9,
        }
    }

    #[test]
    fn label_finds_the_flow_and_keeps_its_features() {
        let dir = tempfile::tempdir().unwrap();
        record_flows(dir.path(), &[flow("Ca", 1.0), flow("Cb", 2.0)]).unwrap();
        let mut store = LabelStore::open(dir.path()).unwrap();
        let l = store.label("1:Cb=", Verdict::Attack, "ana", "scan", 100.0).unwrap();
        assert_eq!((l.uid.as_str(), l.features.clone()), ("Cb", vec![1.0, 2.0]));
        let err = store.label("Cz", Verdict::Benign, "ana", "", 101.0).unwrap_err().to_string();
        assert!(err.contains("\"Cz\"") && err.contains("flows.log"), "{err}");
        drop(store);
        let store = LabelStore::open(dir.path()).unwrap();
        assert_eq!(store.labels().len(), 1, "the refused label was not stored");
    }
}
