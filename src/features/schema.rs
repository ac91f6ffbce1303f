//! Feature schemas: the repository's `features/*.toml`, read into typed form.
//!
//! A schema is the single definition of a feature vector. The flow extractor writes its
//! records in schema order, and the trainer reads published tables by the same names, one-hot
//! encodes the categorical features with the schema's categories, and stores the schema's
//! fingerprint in the model file so that a model is never applied to rows of another layout.
//!
//! The two schemas shipped with the project are compiled into the binary (so the program works
//! from any directory); `Schema::from_path` reads an edited copy.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha1::{Digest, Sha1};

/// The schemas bundled from the repository's `features/` folder.
const BUNDLED: [(&str, &str); 2] = [
    ("unsw-nb15.toml", include_str!("../../features/unsw-nb15.toml")),
    ("iot23.toml", include_str!("../../features/iot23.toml")),
];

/// Which published vocabulary a record or table follows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SchemaKind {
    /// UNSW-NB15 (Argus semantics plus the data set's ct_* windows).
    Unsw,
    /// IoT-23 / Zeek conn.log.
    Zeek,
}

impl SchemaKind {
    fn bundled_file(self) -> &'static str {
        match self {
            SchemaKind::Unsw => "unsw-nb15.toml",
            SchemaKind::Zeek => "iot23.toml",
        }
    }

    /// The bundled schema named `name` (a model file's layout name), if any.
    pub fn of_layout(name: &str) -> Option<SchemaKind> {
        [SchemaKind::Unsw, SchemaKind::Zeek].into_iter().find(|k| k.schema().name == name)
    }

    /// The rules that cut packets into this vocabulary's records: Argus's for UNSW-NB15
    /// (whose features 1-35 Argus computed), Zeek's for the IoT-23 conn.log.
    pub fn cut_policy(self) -> crate::flow::CutPolicy {
        match self {
            SchemaKind::Unsw => crate::flow::CutPolicy::Argus,
            SchemaKind::Zeek => crate::flow::CutPolicy::Zeek,
        }
    }

    /// The schema shipped with the binary for this vocabulary.
    pub fn schema(self) -> Schema {
        let file = self.bundled_file();
        let text = BUNDLED
            .iter()
            .find(|(name, _)| *name == file)
            .map(|(_, text)| *text)
            .expect("every SchemaKind names a bundled file");
        Schema::from_toml(&PathBuf::from("features").join(file), text)
            .expect("bundled schemas are checked by the test suite")
    }
}

impl fmt::Display for SchemaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SchemaKind::Unsw => "unsw",
            SchemaKind::Zeek => "zeek",
        })
    }
}

/// A feature's value type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureType {
    /// A real number, min-max scaled by the trainer.
    Numeric,
    /// One of a fixed list of strings, one-hot encoded in list order. A value outside the list
    /// encodes as all zeros (and is counted by whoever encodes it).
    Categorical(Vec<String>),
}

/// How the model prepares a numeric feature before min-max scaling (the schema's `prep`).
///
/// Preparation belongs to the model, not to the records: flow records and tables keep the
/// published values, and the model file stores which columns it took the logarithm of and
/// which it left out ([`crate::features::tables::Scaler`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prep {
    /// The value as it is (the paper's preparation for every column).
    #[default]
    Linear,
    /// `sign(x) * ln(1 + |x|)`: for sizes, rates and times that span orders of magnitude.
    Log,
    /// Not a model input (random values such as TCP base sequence numbers).
    Exclude,
}

impl Prep {
    /// The prepared value of `x`.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Prep::Log => x.signum() * x.abs().ln_1p(),
            Prep::Linear | Prep::Exclude => x,
        }
    }
}

/// Which preparation a model gets: the schema's, or the paper's plain min-max on every column.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PrepChoice {
    /// Each feature as its schema's `prep` says (log for heavy-tailed counts, random values
    /// left out).
    #[default]
    Schema,
    /// The paper's protocol: every column min-max scaled as it is.
    Paper,
}

/// One feature of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// The published name, verbatim (`sbytes`, `conn_state`).
    pub name: String,
    pub kind: FeatureType,
    /// Unit of a numeric feature (`s`, `bytes`), empty when dimensionless.
    pub unit: String,
    /// Whose semantics the value follows: `argus`, `zeek` or `unsw`.
    pub source: String,
    /// What the value means, with caveats.
    pub doc: String,
    /// How the model prepares it (numeric features only).
    pub prep: Prep,
}

impl Feature {
    /// Number of model inputs this feature becomes (1, or the number of categories).
    pub fn width(&self) -> usize {
        match &self.kind {
            FeatureType::Numeric => 1,
            FeatureType::Categorical(c) => c.len(),
        }
    }
}

/// A parsed and validated feature schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub name: String,
    pub version: u32,
    pub doc: String,
    /// Column holding the 0/1 (or benign/malicious) label in published tables.
    pub label_column: String,
    /// Column holding the attack class in published tables, if any.
    pub class_column: Option<String>,
    /// Columns of published tables that are neither features nor labels.
    pub ignore_columns: Vec<String>,
    pub features: Vec<Feature>,
}

/// Why a schema file was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Toml { path: PathBuf, source: toml::de::Error },
    #[error("{path}: feature {index} ({name:?}): {problem}")]
    BadFeature { path: PathBuf, index: usize, name: String, problem: String },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    name: String,
    version: u32,
    #[serde(default)]
    doc: String,
    label_column: String,
    class_column: Option<String>,
    #[serde(default)]
    ignore_columns: Vec<String>,
    #[serde(rename = "feature")]
    features: Vec<RawFeature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    unit: String,
    source: String,
    doc: String,
    categories: Option<Vec<String>>,
    #[serde(default)]
    prep: Prep,
}

impl Schema {
    /// Reads and validates a schema file.
    pub fn from_path(path: &Path) -> Result<Schema, SchemaError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SchemaError::Io { path: path.to_owned(), source })?;
        Schema::from_toml(path, &text)
    }

    /// Parses schema text; `path` is used in error messages only.
    pub fn from_toml(path: &Path, text: &str) -> Result<Schema, SchemaError> {
        let raw: RawSchema = toml::from_str(text)
            .map_err(|source| SchemaError::Toml { path: path.to_owned(), source })?;
        if raw.features.is_empty() {
            return Err(SchemaError::Invalid {
                path: path.to_owned(),
                problem: "no [[feature]] entries".into(),
            });
        }
        let mut features = Vec::with_capacity(raw.features.len());
        let mut seen = std::collections::HashSet::new();
        for (index, f) in raw.features.into_iter().enumerate() {
            let bad = |problem: String| SchemaError::BadFeature {
                path: path.to_owned(),
                index: index + 1,
                name: f.name.clone(),
                problem,
            };
            if f.name.is_empty() {
                return Err(bad("empty name".into()));
            }
            if !seen.insert(f.name.clone()) {
                return Err(bad("defined twice".into()));
            }
            if !matches!(f.source.as_str(), "argus" | "zeek" | "unsw") {
                return Err(bad(format!(
                    "unknown source {:?} (expected argus, zeek or unsw)",
                    f.source
                )));
            }
            let kind = match (f.kind.as_str(), &f.categories) {
                ("numeric", None) => FeatureType::Numeric,
                ("numeric", Some(_)) => {
                    return Err(bad("a numeric feature takes no categories".into()));
                }
                ("categorical", Some(c)) if !c.is_empty() => {
                    let mut uniq = std::collections::HashSet::new();
                    if let Some(dup) = c.iter().find(|v| !uniq.insert(*v)) {
                        return Err(bad(format!("category {dup:?} listed twice")));
                    }
                    FeatureType::Categorical(c.clone())
                }
                ("categorical", _) => {
                    return Err(bad(
                        "a categorical feature needs a non-empty categories list".into()
                    ));
                }
                (other, _) => {
                    return Err(bad(format!(
                        "unknown type {other:?} (expected numeric or categorical)"
                    )));
                }
            };
            if f.prep != Prep::Linear && kind != FeatureType::Numeric {
                return Err(bad(format!("prep {:?} applies to numeric features only", f.prep)));
            }
            features.push(Feature {
                name: f.name,
                kind,
                unit: f.unit,
                source: f.source,
                doc: f.doc,
                prep: f.prep,
            });
        }
        Ok(Schema {
            name: raw.name,
            version: raw.version,
            doc: raw.doc,
            label_column: raw.label_column,
            class_column: raw.class_column,
            ignore_columns: raw.ignore_columns,
            features,
        })
    }

    /// Index of a feature by its published name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }

    /// Total model input width after one-hot encoding.
    pub fn encoded_width(&self) -> usize {
        self.features.iter().map(Feature::width).sum()
    }

    /// Names of the encoded columns: numeric features by name, categorical ones as
    /// `name=category` (the convention of the reference's one-hot tables).
    pub fn encoded_names(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.encoded_width());
        for f in &self.features {
            match &f.kind {
                FeatureType::Numeric => out.push(f.name.clone()),
                FeatureType::Categorical(cats) => {
                    out.extend(cats.iter().map(|c| format!("{}={}", f.name, c)))
                }
            }
        }
        out
    }

    /// The preparation of every encoded column under `choice` (one-hot cells are linear).
    pub fn encoded_preps(&self, choice: PrepChoice) -> Vec<Prep> {
        let mut out = Vec::with_capacity(self.encoded_width());
        for f in &self.features {
            let p = if choice == PrepChoice::Paper { Prep::Linear } else { f.prep };
            out.extend(std::iter::repeat_n(p, f.width()));
        }
        out
    }

    /// A short, stable digest of everything that decides the encoded layout (name, version,
    /// feature names, types and categories, in order). Docs and units do not count.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha1::new();
        h.update(format!("{}\u{1}{}\u{1}", self.name, self.version));
        for f in &self.features {
            h.update(&f.name);
            match &f.kind {
                FeatureType::Numeric => h.update("\u{2}n"),
                FeatureType::Categorical(c) => {
                    h.update("\u{2}c");
                    for v in c {
                        h.update("\u{3}");
                        h.update(v);
                    }
                }
            }
            h.update("\u{1}");
        }
        let digest = h.finalize();
        format!("{}-v{}-{}", self.name, self.version, hex16(&digest))
    }
}

fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_schemas_parse() {
        let unsw = SchemaKind::Unsw.schema();
        assert_eq!(unsw.name, "unsw-nb15");
        // The 42 feature columns of the published 82k partition (id, attack_cat, label aside).
        assert_eq!(unsw.features.len(), 42);
        assert_eq!(unsw.features[0].name, "dur");
        assert_eq!(unsw.features.last().unwrap().name, "is_sm_ips_ports");
        let zeek = SchemaKind::Zeek.schema();
        assert_eq!(zeek.index_of("conn_state"), Some(5));
        assert_eq!(zeek.encoded_width(), zeek.encoded_names().len());
    }

    #[test]
    fn preparation_comes_from_the_schema_or_the_paper() {
        let unsw = SchemaKind::Unsw.schema();
        let names = unsw.encoded_names();
        let preps = unsw.encoded_preps(PrepChoice::Schema);
        assert_eq!(preps.len(), names.len());
        let of = |n: &str| preps[names.iter().position(|x| x == n).unwrap()];
        assert_eq!(
            (of("sbytes"), of("dur"), of("stcpb"), of("dtcpb")),
            (Prep::Log, Prep::Log, Prep::Exclude, Prep::Exclude)
        );
        assert_eq!(
            (of("sttl"), of("proto=tcp"), of("ct_srv_src")),
            (Prep::Linear, Prep::Linear, Prep::Linear)
        );
        assert!(unsw.encoded_preps(PrepChoice::Paper).iter().all(|&p| p == Prep::Linear));
        assert_eq!(Prep::Log.apply(0.0), 0.0);
        assert!((Prep::Log.apply(-(std::f32::consts::E - 1.0)) + 1.0).abs() < 1e-6);
        let p = Path::new("features/bad.toml");
        let e = Schema::from_toml(p, "name='x'\nversion=1\nlabel_column='l'\n[[feature]]\nname='a'\ntype='categorical'\ncategories=['u']\nprep='log'\nsource='zeek'\ndoc=''\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("numeric features only"), "{e}");
        let e = Schema::from_toml(p, "name='x'\nversion=1\nlabel_column='l'\n[[feature]]\nname='a'\ntype='numeric'\nprep='sqrt'\nsource='zeek'\ndoc=''\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sqrt"), "{e}");
    }

    #[test]
    fn fingerprint_changes_with_layout_only() {
        let a = SchemaKind::Unsw.schema();
        let mut b = a.clone();
        b.features[0].doc = "other words".into();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.features.swap(0, 1);
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn errors_name_file_and_feature() {
        let p = Path::new("features/bad.toml");
        let e = Schema::from_toml(p, "name='x'\nversion=1\nlabel_column='l'\n[[feature]]\nname='a'\ntype='nmeric'\nsource='zeek'\ndoc=''\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("features/bad.toml") && e.contains("\"a\"") && e.contains("nmeric"),
            "{e}"
        );
        let e = Schema::from_toml(p, "name = 'x'\nversion = [\n").unwrap_err().to_string();
        assert!(e.contains("features/bad.toml") && e.contains("line"), "{e}");
        let e = Schema::from_toml(p, "name='x'\nversion=1\nlabel_column='l'\n[[feature]]\nname='a'\ntype='categorical'\nsource='zeek'\ndoc=''\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("categories"), "{e}");
    }
}
