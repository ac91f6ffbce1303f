//! The model file: one self-describing JSON document.
//!
//! It holds the format version, the input layout (schema name, fingerprint and the encoded
//! column list), the preprocessing (kept columns, min-max), the network recipe and training
//! hyperparameters, the training report and data summary, and every weight (little-endian
//! f32, base64, so values round-trip exactly). JSON keeps it readable with standard tools;
//! the weights of a 200-feature model are a few hundred kilobytes.
//!
//! Guarantees: a file is written whole or not at all (write to a temporary file in the same
//! folder, sync, rename); a file of another format version, or scored against input of another
//! layout, is refused with an error naming both sides, never scored.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::mnpwad::{Mnpwad, ModelConfig, linear_from, to_vec};
use super::train::{TrainConfig, TrainReport};
use crate::features::categories::TextEncoding;
use crate::features::tables::Scaler;

/// The format's name, checked before anything else is parsed.
pub const FORMAT: &str = "mnpflow-mnpwad";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;

/// Which input rows a model accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Schema name (`unsw-nb15`, `iot23`) or `table` for a plain table.
    pub name: String,
    /// Schema fingerprint, or the digest of a plain table's column names; opaque here.
    pub fingerprint: String,
    /// Encoded input columns, before constant columns are dropped.
    pub columns: Vec<String>,
    /// For a plain table: its text columns' training categories and the identifier columns
    /// left out, so that `score` encodes a table as training did. Empty for schemas, for
    /// tables of numbers, and in model files written before categories existed (which read
    /// every column as a number, as those models were trained).
    #[serde(default, skip_serializing_if = "TextEncoding::is_empty")]
    pub encoding: TextEncoding,
}

/// What the model was trained on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    pub source: String,
    pub unlabeled_rows: usize,
    pub labeled_anomalies: usize,
    pub validation_rows: usize,
}

/// One weight tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// Little-endian f32, base64.
    pub data: String,
}

/// The whole model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub format: String,
    pub version: u32,
    pub layout: Layout,
    pub scaler: Scaler,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub report: TrainReport,
    pub data: DataSummary,
    pub weights: Vec<StoredTensor>,
    /// The alert cut that holds the false-positive budget on the training traffic
    /// ([`crate::alert::threshold::budget_cut`]), used when the user sets no threshold.
    /// Absent from model files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<f32>,
    /// The threshold that holds the false-positive budget on the traffic the model meets
    /// (`cut` is its floor): preferred over `cut` when present. Absent from model files
    /// written before it existed and from the learning loop's models (their cut matches the
    /// alert rate of the model they replace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::alert::threshold::BudgetCut>,
    /// Typical inputs per normal prototype, for alerts' reasons in traffic terms
    /// ([`super::reasons`]). Absent from model files written before them: those alerts give
    /// MNPWAD's own explanation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<super::reasons::Profiles>,
}

/// Why a model file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a model file: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{path}: format {found:?}, expected {expected:?}")]
    WrongFormat { path: PathBuf, found: String, expected: &'static str },
    #[error(
        "{path}: model file version {found}, this build reads version {expected}; retrain or use a matching mnpflow"
    )]
    WrongVersion { path: PathBuf, found: u32, expected: u32 },
    #[error(
        "{path}: model expects input layout {model_name} ({model_fp}), the input is {input_name} ({input_fp})"
    )]
    LayoutMismatch {
        path: PathBuf,
        model_name: String,
        model_fp: String,
        input_name: String,
        input_fp: String,
    },
    #[error("{path}: weight {name}: {problem}")]
    Corrupt { path: PathBuf, name: String, problem: String },
}

fn store<const D: usize>(name: &str, t: Tensor<D>) -> StoredTensor {
    let shape = t.dims().to_vec();
    let bytes: Vec<u8> = to_vec(t).iter().flat_map(|v| v.to_le_bytes()).collect();
    StoredTensor { name: name.into(), shape, data: B64.encode(bytes) }
}

impl Artifact {
    /// Packs a trained model with everything needed to apply it.
    pub fn new(
        model: &Mnpwad,
        layout: Layout,
        scaler: Scaler,
        train: TrainConfig,
        report: TrainReport,
        data: DataSummary,
    ) -> Artifact {
        let mut weights = Vec::new();
        let mut lin = |name: &str, l: &Linear| {
            weights.push(store(&format!("{name}.weight"), l.weight.val()));
            if let Some(b) = &l.bias {
                weights.push(store(&format!("{name}.bias"), b.val()));
            }
        };
        lin("enc1", &model.enc1);
        lin("enc2", &model.enc2);
        lin("dec1", &model.dec1);
        lin("dec2", &model.dec2);
        lin("score1", &model.score1);
        lin("score2", &model.score2);
        weights.push(store("prototypes", model.prototypes.val()));
        Artifact {
            format: FORMAT.into(),
            version: VERSION,
            layout,
            scaler,
            model: model.config.clone(),
            train,
            report,
            data,
            weights,
            cut: None,
            budget: None,
            profiles: None,
        }
    }

    /// Writes the file atomically: a temporary file beside it, synced, then renamed.
    pub fn save(&self, path: &Path) -> Result<(), ArtifactError> {
        let io = |source| ArtifactError::Io { path: path.to_owned(), source };
        let json = serde_json::to_vec_pretty(self).expect("an artifact always serialises");
        let mut tmp_name =
            path.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "model".into());
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)?;
        Ok(())
    }

    /// Reads a model file, checking format and version before the rest.
    pub fn load(path: &Path) -> Result<Artifact, ArtifactError> {
        let bytes = std::fs::read(path)
            .map_err(|source| ArtifactError::Io { path: path.to_owned(), source })?;
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
        }
        let head: Head = serde_json::from_slice(&bytes)
            .map_err(|source| ArtifactError::Parse { path: path.to_owned(), source })?;
        if head.format != FORMAT {
            return Err(ArtifactError::WrongFormat {
                path: path.to_owned(),
                found: head.format,
                expected: FORMAT,
            });
        }
        if head.version != VERSION {
            return Err(ArtifactError::WrongVersion {
                path: path.to_owned(),
                found: head.version,
                expected: VERSION,
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|source| ArtifactError::Parse { path: path.to_owned(), source })
    }

    /// Refuses input of another layout.
    pub fn check_layout(
        &self,
        path: &Path,
        name: &str,
        fingerprint: &str,
    ) -> Result<(), ArtifactError> {
        if self.layout.fingerprint != fingerprint {
            return Err(ArtifactError::LayoutMismatch {
                path: path.to_owned(),
                model_name: self.layout.name.clone(),
                model_fp: self.layout.fingerprint.clone(),
                input_name: name.into(),
                input_fp: fingerprint.into(),
            });
        }
        Ok(())
    }

    /// Rebuilds the network on `device`, checking every weight's presence and shape.
    pub fn to_model(&self, path: &Path, device: &Device) -> Result<Mnpwad, ArtifactError> {
        let c = &self.model;
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, ArtifactError> {
            let corrupt = |problem: String| ArtifactError::Corrupt {
                path: path.to_owned(),
                name: name.into(),
                problem,
            };
            let t = self
                .weights
                .iter()
                .find(|w| w.name == name)
                .ok_or_else(|| corrupt("missing".into()))?;
            if t.shape != shape {
                return Err(corrupt(format!("shape {:?}, expected {:?}", t.shape, shape)));
            }
            let bytes = B64.decode(&t.data).map_err(|e| corrupt(e.to_string()))?;
            if bytes.len() != shape.iter().product::<usize>() * 4 {
                return Err(corrupt(format!("{} bytes for shape {:?}", bytes.len(), shape)));
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let lin = |name: &str, d_in: usize, d_out: usize| -> Result<Linear, ArtifactError> {
            Ok(linear_from(
                get(&format!("{name}.weight"), &[d_in, d_out])?,
                get(&format!("{name}.bias"), &[d_out])?,
                d_in,
                d_out,
                device,
            ))
        };
        let e = c.latent;
        Ok(Mnpwad {
            enc1: lin("enc1", c.d_input, c.hidden)?,
            enc2: lin("enc2", c.hidden, e)?,
            dec1: lin("dec1", e, c.hidden)?,
            dec2: lin("dec2", c.hidden, c.d_input)?,
            score1: lin("score1", e + 2, super::mnpwad::SCORER_HIDDEN)?,
            score2: lin("score2", super::mnpwad::SCORER_HIDDEN, 1)?,
            prototypes: Param::from_tensor(Tensor::from_data(
                TensorData::new(get("prototypes", &[c.n_prototypes, e])?, [c.n_prototypes, e]),
                device,
            )),
            config: c.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::score::explain_rows;
    use rand::SeedableRng;

    fn sample() -> (Artifact, Mnpwad) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let model = ModelConfig::new(5, 8, 3).init(&mut rng, &Device::flex());
        let layout = Layout {
            name: "table".into(),
            fingerprint: "table-5cols-abc".into(),
            columns: (0..5).map(|i| format!("c{i}")).collect(),
            encoding: Default::default(),
        };
        let scaler = Scaler::identity(5);
        let a = Artifact::new(
            &model,
            layout,
            scaler,
            TrainConfig::default(),
            TrainReport::default(),
            DataSummary::default(),
        );
        (a, model)
    }

    #[test]
    fn round_trip_is_exact() {
        let (a, model) = sample();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.mnp");
        a.save(&p).unwrap();
        let b = Artifact::load(&p).unwrap();
        assert_eq!(a, b);
        let m2 = b.to_model(&p, &Device::flex()).unwrap();
        let rows: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin().abs()).collect();
        assert_eq!(explain_rows(&model, &rows, 5, 4), explain_rows(&m2, &rows, 5, 4));
        // Only the final file remains: the temporary one was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_other_version_and_layout() {
        let (mut a, _) = sample();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.mnp");
        a.version = 99;
        a.save(&p).unwrap();
        let e = Artifact::load(&p).unwrap_err().to_string();
        assert!(e.contains("version 99") && e.contains(&format!("version {VERSION}")), "{e}");
        a.version = VERSION;
        let e = a.check_layout(&p, "unsw-nb15", "unsw-nb15-v1-0123").unwrap_err().to_string();
        assert!(e.contains("table-5cols-abc") && e.contains("unsw-nb15-v1-0123"), "{e}");
        assert!(a.check_layout(&p, "table", "table-5cols-abc").is_ok());
        std::fs::write(&p, b"{\"format\":\"other\",\"version\":1}").unwrap();
        assert!(Artifact::load(&p).unwrap_err().to_string().contains("\"other\""));
        std::fs::write(&p, b"garbage").unwrap();
        assert!(Artifact::load(&p).unwrap_err().to_string().contains("not a model file"));
    }

    /// A model of a table with text columns keeps its categories; a file written before
    /// categories existed (no `encoding` key) still loads, as a table of numbers.
    #[test]
    fn categories_round_trip_and_old_files_load() {
        use crate::features::categories::CategoricalColumn;
        let (mut a, _) = sample();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.mnp");
        a.save(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("\"encoding\""), "no key for a table of numbers");
        assert_eq!(Artifact::load(&p).unwrap().layout.encoding, TextEncoding::default());
        a.layout.encoding = TextEncoding {
            categorical: vec![CategoricalColumn {
                name: "Month".into(),
                categories: vec!["Dec".into(), "Jan".into()],
            }],
            left_out: vec!["PolicyNumber".into()],
        };
        a.save(&p).unwrap();
        assert_eq!(Artifact::load(&p).unwrap(), a);
    }
}
