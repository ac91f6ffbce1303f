//! Pipeline: runs the stages. [`offline`] drives capture -> decode -> flow on one thread,
//! for the `flows` command and for tests that need every record in order.

pub mod offline;
