//! Feedback: the weakly supervised loop's state. Analysts' labels and the scored flows they
//! refer to ([`labels`]), on durable append-only logs ([`log`]). Plain types and functions:
//! threads that run them live in `pipeline`.

pub mod labels;
pub mod log;

pub use labels::{Label, LabelStore, ScoredFlow, Verdict};
