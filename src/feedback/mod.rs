//! Feedback: the weakly supervised loop's state and work. Analysts' labels and the scored
//! flows they refer to ([`labels`]), the registry of promoted models ([`registry`]), both on
//! durable append-only logs ([`log`]); the sample of recent traffic ([`reservoir`]); one
//! retraining turn with its promotion rule ([`retrain`]); the analysts' web page and JSON API
//! ([`web`]), its grouping of alerts into incidents ([`incidents`]) and the numbers of its
//! pictures ([`summary`]). Plain types and functions: the threads that run them live in `pipeline`.

pub mod access;
pub mod incidents;
pub mod labels;
pub mod log;
pub mod registry;
pub mod reservoir;
pub mod retrain;
pub mod summary;
pub mod web;

pub use labels::{Label, LabelStore, ScoredFlow, Verdict};
pub use registry::{ModelEntry, Registry};
pub use reservoir::Reservoir;
pub use retrain::LearnConfig;

/// `[feedback]`: the analysts' page and the record of alerted flows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// Tokens the page and API require, `SECRET` or `NAME:SECRET` (the name signs the
    /// labels), several separated by commas. `--feedback-token` takes precedence; unset:
    /// `$MNPFLOW_FEEDBACK_TOKEN`, else one is generated at every start and printed as the
    /// page's URL. No setting turns the token off: only `--feedback-no-token`, on loopback.
    pub token: Option<String>,
    /// Host names the page may be reached by besides its IP address and `localhost` (a
    /// request naming any other host is refused, against DNS rebinding).
    pub hosts: Vec<String>,
    /// `flows.log` (alerted flows with their feature vectors, for later labels) starts afresh
    /// past this size (64 MiB), keeping the previous file: labels find flows of the newest one
    /// to two files' worth.
    pub flow_record_bytes: u64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig { token: None, hosts: Vec::new(), flow_record_bytes: 64 << 20 }
    }
}
