//! mnpflow: a streaming network-flow anomaly detector.
//!
//! ```text
//!  capture ──> decode ──> flow ──> features ──> score ──> alert
//!  (pcap,      (link,     (bidir.   (UNSW-NB15,  (MNPWAD   (EVE JSON,
//!   pcapng,     IP, L4,    table,    Zeek conn,   in burn)  community_id)
//!   synth)      frags)     timeouts) ct_* windows)   ^
//!                                                    │ model ── learning loop
//! ```
//!
//! - [`capture`] reads packets with their capture timestamps from pcap/pcapng files (pure
//!   Rust, no system library) or generates labeled synthetic traffic.
//! - [`decode`] turns a frame into a fixed-size [`decode::PacketMeta`]: addresses, ports,
//!   protocol, TCP flags and sequence numbers, lengths. After a successful decode no later
//!   stage looks at packet bytes, except the small payload prefix kept for service sniffing.
//! - [`flow`] aggregates packets into bidirectional flows keyed by addresses, ports, protocol
//!   and VLAN, tracks TCP endpoint state as Zeek does, and exports each flow exactly once
//!   with the reason it ended.
//! - [`features`] turns exported flows into rows of a published vocabulary. A feature is
//!   defined once, in the repository's `features/*.toml`; training on a published table and
//!   scoring live traffic read the same definition.
//! - [`model`] is MNPWAD (multi-normal prototypes for weakly supervised anomaly detection).
//! - [`alert`] turns scores into Suricata EVE-style alerts, after the suppression rules of
//!   `rules/`, at a fixed score or a target alert rate.
//! - [`feedback`] holds the weakly supervised loop's state: durable label and flow records,
//!   the model registry, the retraining reservoir.
//! - [`kafka`] publishes alerts and scored flows to Kafka (feature `kafka`), through a
//!   bounded queue and a durable spool, so that capture and scoring never wait on a broker.
//! - [`output`] writes records as CSV, JSON lines or Zeek logs; [`config`] is the one typed
//!   configuration (`mnpflow.toml`); [`cli`] the command line.
//! - [`pipeline`] runs it all: single-threaded for flow records ([`pipeline::offline`]), or
//!   as the streaming detector ([`pipeline::stream`]), stage per thread, batches between.
//!
//! Imports point leftward along the path: `decode` knows nothing of flows, `flow` nothing of
//! features, `model` nothing of packets.

#![deny(unsafe_code)]

pub mod alert;
pub mod capture;
pub mod cli;
pub mod config;
pub mod decode;
pub mod features;
pub mod feedback;
pub mod flow;
pub mod kafka;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod scenario;
