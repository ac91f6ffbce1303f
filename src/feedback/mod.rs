//! Feedback: the weakly supervised loop's state. Analysts' labels and the scored flows they
//! refer to ([`labels`]), and the registry of promoted models ([`registry`]), on durable
//! append-only logs ([`log`]). Plain types and functions:
//! threads that run them live in `pipeline`.

pub mod labels;
pub mod log;
pub mod registry;
pub mod reservoir;

pub use labels::{Label, LabelStore, ScoredFlow, Verdict};
pub use registry::{ModelEntry, Registry};
pub use reservoir::Reservoir;
