//! MNPWAD, the detector's model: multi-normal prototypes for weakly supervised anomaly
//! detection (Dong et al., arXiv 2408.14498), as specified in `../shared/spec/mnpwad.md`.
//!
//! The model sees `f32` rows of a fixed width and nothing of packets or flows. `mnpwad` holds
//! the network (burn modules), `loss` the training losses, `kmeans` the prototype
//! initialisation, `train` the training procedure, `score` batched inference with
//! explanations, `reasons` those explanations in traffic terms, `artifact` the self-describing model file, `eval` the metrics and the
//! paper's evaluation protocol, `slot` the swap point where the learning loop publishes a
//! new scorer while the pipeline keeps scoring, and `device` the CPU or GPU backend (opening a
//! GPU fallibly, with a fallback to the CPU), and `denormal` the flush-to-zero mode that keeps
//! subnormal floats from slowing training and scoring tenfold.
//!
//! Deliberately not here: reading tables (`features::tables`) and choosing the backend for
//! the user (the CLI's `--backend` does that).

pub mod artifact;
pub mod denormal;
pub mod device;
pub mod eval;
pub mod gemm;
pub mod kmeans;
pub mod loss;
pub mod mnpwad;
pub mod near_attacks;
pub mod reasons;
pub mod score;
pub mod slot;
pub mod train;
