//! The model registry of a data directory: every promoted model kept with its version,
//! parent, data summary and validation figures, and one of them current.
//!
//! Layout: `models/v{N}.mnp` (model files, written atomically by the artifact code),
//! `models/registry.log` (a [`RecordLog`] of entries and of every change of the current
//! model, so the history itself is durable), and the current version is the last `Promote`
//! or `Rollback` event. A reader (the sensor) polls `current()` and swaps at a batch boundary.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::log::{LogError, RecordLog};

/// A model's place in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub version: u64,
    pub parent: Option<u64>,
    /// When it was registered, Unix seconds.
    pub created: f64,
    /// What it was trained on, in words (rows, labels, source).
    pub data: String,
    /// Validation figures that justified it (name, value), e.g. ("auc_pr", 0.71).
    pub validation: Vec<(String, f64)>,
    /// The score cut that goes with it (alerts at `score >= cut`) when the user sets none.
    #[serde(default)]
    pub cut: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event {
    Register(ModelEntry),
    Promote { version: u64, at: f64 },
    Rollback { version: u64, at: f64 },
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{dir}: no model version {version} (known: {known})")]
    UnknownVersion { dir: PathBuf, version: u64, known: String },
    #[error("{path}: cannot copy the model file in: {source}")]
    Copy { path: PathBuf, source: std::io::Error },
}

pub struct Registry {
    dir: PathBuf,
    log: RecordLog<Event>,
    entries: Vec<ModelEntry>,
    current: Option<u64>,
}

impl Registry {
    pub fn open(data_dir: &Path) -> Result<Registry, RegistryError> {
        let dir = data_dir.join("models");
        let (log, events) = RecordLog::open(&dir.join("registry.log"))?;
        let mut entries = Vec::new();
        let mut current = None;
        for e in events {
            match e {
                Event::Register(m) => entries.push(m),
                Event::Promote { version, .. } | Event::Rollback { version, .. } => {
                    current = Some(version)
                }
            }
        }
        Ok(Registry { dir, log, entries, current })
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    pub fn current(&self) -> Option<&ModelEntry> {
        self.current.and_then(|v| self.entries.iter().find(|e| e.version == v))
    }

    /// The model file of a version.
    pub fn model_path(&self, version: u64) -> PathBuf {
        self.dir.join(format!("v{version}.mnp"))
    }

    fn unknown(&self, version: u64) -> RegistryError {
        RegistryError::UnknownVersion {
            dir: self.dir.clone(),
            version,
            known: self
                .entries
                .iter()
                .map(|e| e.version.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Registers a model file as the next version (copied in) and makes it current.
    pub fn promote(
        &mut self,
        model_file: &Path,
        data: String,
        validation: Vec<(String, f64)>,
        cut: Option<f32>,
        now: f64,
    ) -> Result<ModelEntry, RegistryError> {
        let version = self.entries.iter().map(|e| e.version).max().unwrap_or(0) + 1;
        let dest = self.model_path(version);
        let tmp = dest.with_extension("mnp.tmp");
        std::fs::copy(model_file, &tmp)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &dest))
            .map_err(|source| RegistryError::Copy { path: model_file.to_owned(), source })?;
        let entry =
            ModelEntry { version, parent: self.current, created: now, data, validation, cut };
        self.log
            .append_all(&[Event::Register(entry.clone()), Event::Promote { version, at: now }])?;
        self.entries.push(entry.clone());
        self.current = Some(version);
        Ok(entry)
    }

    /// Makes an older (or any registered) version current again.
    pub fn rollback(&mut self, version: u64, now: f64) -> Result<(), RegistryError> {
        if !self.entries.iter().any(|e| e.version == version) {
            return Err(self.unknown(version));
        }
        self.log.append(&Event::Rollback { version, at: now })?;
        self.current = Some(version);
        Ok(())
    }

    pub fn get(&self, version: u64) -> Result<&ModelEntry, RegistryError> {
        self.entries.iter().find(|e| e.version == version).ok_or_else(|| self.unknown(version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promote_rollback_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.mnp");
        std::fs::write(&model, b"model one").unwrap();
        let mut r = Registry::open(dir.path()).unwrap();
        assert!(r.current().is_none());
        let v1 = r
            .promote(&model, "1000 rows".into(), vec![("auc_pr".into(), 0.5)], Some(0.7), 1.0)
            .unwrap();
        std::fs::write(&model, b"model two").unwrap();
        let v2 = r.promote(&model, "2000 rows".into(), vec![], None, 2.0).unwrap();
        assert_eq!((v1.version, v2.version, v2.parent), (1, 2, Some(1)));
        assert_eq!(std::fs::read(r.model_path(1)).unwrap(), b"model one");
        r.rollback(1, 3.0).unwrap();
        let e = r.rollback(9, 4.0).unwrap_err().to_string();
        assert!(e.contains("no model version 9") && e.contains("known: 1, 2"), "{e}");
        drop(r);
        let r = Registry::open(dir.path()).unwrap();
        assert_eq!(r.current().unwrap().version, 1);
        assert_eq!(r.current().unwrap().cut, Some(0.7));
        assert_eq!(r.entries().len(), 2);
    }
}
