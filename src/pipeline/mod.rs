//! Pipeline: runs the stages, and the only place that spawns threads or creates channels.
//!
//! - [`offline`] drives capture -> decode -> flow on the calling thread, for the `flows`
//!   command and for tests that need every record in order.
//! - [`stream`] is the streaming detector: capture, N flow workers, features and batcher,
//!   scorer and alert writer on their own threads, joined by bounded batch queues, one file
//!   per stage under `stream/` and the wiring in its `mod.rs` ([`shard`] picks a packet's
//!   worker; [`metrics`] measures it all).
//! - [`learn`] is the learning loop's thread (reservoir, retraining, promotion, following
//!   the registry and the rules folder); [`web_server`] serves the analysts' page; [`sensor`]
//!   runs the stream with both beside it.
//! - [`bootstrap`] trains a model on a capture's own flows when none is given; [`warmup`]
//!   records a live interface's first flows to train on, then replays them into the stream.

pub mod bootstrap;
pub mod learn;
pub mod metrics;
pub mod offline;
pub mod sensor;
pub mod shard;
pub mod stream;
pub mod warmup;
pub mod web_server;

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first Ctrl-C (SIGINT) or SIGTERM: the capture stage stops reading and the
/// pipeline drains. A second one exits at once (status 130).
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler (once per process; later calls do nothing).
pub fn catch_interrupt() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let result = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("mnpflow: interrupted: flushing open flows (Ctrl-C again to quit at once)");
        });
        if let Err(e) = result {
            tracing::warn!("cannot catch Ctrl-C: {e}");
        }
    });
}
