//! Features: flow records become rows of a published vocabulary.
//!
//! The schemas in the repository's `features/` folder define each vocabulary once; this module
//! reads them (`schema`) and computes their values from flow records.

pub mod schema;
pub mod tables;

pub use schema::{Feature, FeatureType, Schema, SchemaError, SchemaKind};
