//! Alerts: scored flows become Suricata EVE-style JSON events.
//!
//! [`eve`] writes one `event_type: "anomaly"` line per alert with the flow's identity
//! (addresses, ports, protocol, application protocol, community ID), its score, the model
//! version, and the explanation MNPWAD gives (reconstruction error, nearest prototype,
//! similarity to it). [`rules`] holds the suppression rules of the repository's `rules/`
//! folder, applied before an alert is written; [`threshold`] decides which scores alert, from
//! a fixed score or a target alert rate calibrated on recent traffic. Nothing here knows of
//! threads, channels or burn.

pub mod ecs;
pub mod eve;
pub mod rules;
pub mod threshold;

use serde::{Deserialize, Serialize};

pub use rules::{Rule, RuleError, RuleSet};
pub use threshold::{BudgetCut, Threshold, ThresholdCalibrator};

/// Why a flow scored what it did (MNPWAD's explanation).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Explanation {
    /// Reconstruction error of the autoencoder (Huber, mean over inputs).
    pub recon_error: f32,
    /// Index of the nearest normal prototype in latent space.
    pub prototype: u32,
    /// Similarity to that prototype (Student's t kernel, 1 = on it).
    pub similarity: f32,
    /// For an alert, the inputs that move its score most against that prototype's flows
    /// ([`crate::model::reasons`]); empty for other flows and for models without profiles.
    pub reasons: crate::model::reasons::Reasons,
}

/// `[alert]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// A score (`"0.9"`) or a target alert rate (`"2%"`): the share of recent flows that
    /// alert, recalibrated per flow over the last `calibration_window` scores. Unset: a model
    /// trained by mnpflow holds its false-positive budget (`fpr_budget`) over the recent
    /// normal-looking flows, never below its training cut; a model without one `2%`.
    pub threshold: Option<String>,
    /// Recent flows a rate or a budget is calibrated on (10000). The scorer keeps their rows
    /// as well, so that a new model can score them again: about 250 bytes per flow (2.5 MB by
    /// default), and a model swap rescores them once.
    pub calibration_window: usize,
    /// The default threshold's false-positive budget: the share of normal-looking traffic
    /// that may alert (0.01, i.e. 1 %), held with 90 % confidence
    /// ([`threshold::allowed_above`]).
    pub fpr_budget: f64,
    /// Folder of suppression rules (`*.toml`); missing folder = no rules.
    pub rules: std::path::PathBuf,
}

/// The threshold when neither the command line nor the configuration names one.
pub const DEFAULT_RATE: &str = "2%";

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            threshold: None,
            calibration_window: 10_000,
            fpr_budget: 0.01,
            rules: "rules".into(),
        }
    }
}
