//! Configuration: one typed struct, loaded from TOML (`mnpflow.toml`), every key optional with
//! its default. Each stage owns its section's type beside its code; this file assembles them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::alert::AlertConfig;
use crate::capture::source::LiveConfig;
use crate::flow::FlowConfig;
use crate::pipeline::bootstrap::BootstrapConfig;
use crate::pipeline::stream::StreamConfig;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[flow]`: flow table timeouts and bounds.
    pub flow: FlowConfig,
    /// `[stream]`: the streaming pipeline (workers, batching, back-pressure).
    pub stream: StreamConfig,
    /// `[alert]`: threshold and suppression rules.
    pub alert: AlertConfig,
    /// `[bootstrap]`: the short training run of `replay` without `--model`.
    pub bootstrap: BootstrapConfig,
    /// `[live]`: how `live` opens the interface.
    pub live: LiveConfig,
    /// `[learn]`: the learning loop (retraining and model promotion while running).
    pub learn: crate::feedback::LearnConfig,
    /// `[feedback]`: the analysts' page and the record of alerted flows.
    pub feedback: crate::feedback::FeedbackConfig,
    /// `[kafka]`: events to Kafka (feature `kafka`), the spool while the broker is away.
    pub kafka: crate::kafka::KafkaConfig,
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Toml { path: PathBuf, source: toml::de::Error },
}

impl Config {
    /// Reads a TOML file; missing keys take their defaults, unknown keys are errors.
    pub fn from_path(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Toml { path: path.to_owned(), source })
    }

    /// The default configuration as TOML, every key present (`mnpflow config`).
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).expect("the default configuration serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn partial_file_keeps_defaults() {
        let c: Config = toml::from_str("[flow]\nudp_idle = 12.5\n").unwrap();
        assert_eq!(c.flow.udp_idle, Duration::from_millis(12_500));
        assert_eq!(c.flow.tcp_idle, FlowConfig::default().tcp_idle);
    }

    #[test]
    fn default_round_trips() {
        let c: Config = toml::from_str(&Config::default_toml()).unwrap();
        assert_eq!(c, Config::default());
    }

    /// The documented `mnpflow.toml` states exactly the defaults.
    #[test]
    fn documented_file_is_the_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("mnpflow.toml");
        assert_eq!(Config::from_path(&p).unwrap(), Config::default());
        // ... and documents every key (commented out where the default is "unset").
        let text = std::fs::read_to_string(&p).unwrap();
        let all: toml::Table = toml::from_str(&Config::default_toml()).unwrap();
        for (section, keys) in &all {
            assert!(text.contains(&format!("[{section}]")), "mnpflow.toml has no [{section}]");
            for key in keys.as_table().unwrap().keys() {
                assert!(
                    text.contains(&format!("\n{key} =")) || text.contains(&format!("# {key} =")),
                    "mnpflow.toml does not document [{section}] {key}"
                );
            }
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mnpflow.toml");
        std::fs::write(&p, "[flow]\ntcp_idel = 3\n").unwrap();
        let e = Config::from_path(&p).unwrap_err().to_string();
        assert!(
            e.contains("mnpflow.toml") && e.contains("line 2") && e.contains("tcp_idel"),
            "{e}"
        );
        std::fs::write(&p, "[flow]\nudp_idle = -1\n").unwrap();
        let e = Config::from_path(&p).unwrap_err().to_string();
        assert!(e.contains("not a valid number of seconds"), "{e}");
    }
}
