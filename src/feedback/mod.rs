//! Feedback: the weakly supervised loop's state and work. Analysts' labels and the scored
//! flows they refer to ([`labels`]), the registry of promoted models ([`registry`]), both on
//! durable append-only logs ([`log`]); the sample of recent traffic ([`reservoir`]); one
//! retraining turn with its promotion rule ([`retrain`]); the analysts' web page and JSON API
//! ([`web`]). Plain types and functions: the threads that run them live in `pipeline`.

pub mod labels;
pub mod log;
pub mod registry;
pub mod reservoir;
pub mod retrain;
pub mod web;

pub use labels::{Label, LabelStore, ScoredFlow, Verdict};
pub use registry::{ModelEntry, Registry};
pub use reservoir::Reservoir;
pub use retrain::LearnConfig;
