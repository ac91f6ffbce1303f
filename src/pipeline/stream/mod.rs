//! The streaming detector: capture -> N flow workers -> features and batcher -> scorer ->
//! alert writer, each stage on its own thread, joined by bounded queues that carry batches.
//!
//! ```text
//!            packets (per worker)          flow records         row batches      scored batches
//!  capture ──[batch ring]──> flow worker 0 ─┐
//!  (decode,  ──[batch ring]──> flow worker 1 ─┼──> features ──> scorer ──> alert writer
//!   shard)   ──[batch ring]──> flow worker N ─┘   (+ batcher)   (CPU)      (rules, EVE, flows)
//!      ^─────── emptied packet batches ────────┘
//! ```
//!
//! One file per stage, in the order of the data path: `capture.rs` (read, decode, shard, the
//! stream's clock) -> `flow_worker.rs` (one flow table each) -> `features.rs` (window order,
//! features, batcher) -> `score.rs` (the model slot, alert cuts, reasons) -> `writer.rs`
//! (rules, alerts, the outputs, the learning loop's samples). `batch.rs` holds what they hand
//! each other; this file the public types and [`run`], which builds the queues, spawns the
//! stages and joins them. Live capture on Linux has no capture stage: each flow worker reads
//! its own `PACKET_FANOUT` socket (`capture_worker.rs`, [`Input::PerWorker`]), the kernel
//! having sharded the packets by flow.
//!
//! What it guarantees:
//!
//! - **The same flows as the single-table engine** ([`super::offline`]). Packets are sharded
//!   by a symmetric hash of the address pair, protocol and VLAN ([`super::shard`]), so both
//!   directions of a conversation and every fragment of a datagram meet in one worker. Each
//!   packet carries the stream's capture clock (the largest timestamp so far), and the capture
//!   stage decides clock resets for the whole stream and tells every worker; so each worker
//!   expires its flows at the clock the single table would have had, and a worker whose own
//!   packets are sparse exports at the same clock, only later in wall time. Flow ids are
//!   `k * workers + w`, unique across workers. (The only difference: `max_flows` is divided
//!   among the workers, so evictions can differ when the table is full.)
//! - **Nothing in flight is lost at shutdown**: when the source ends or the stop flag is set
//!   (Ctrl-C), the capture stage stops reading, and every stage drains its queue, flushes and
//!   closes in order: workers export every open flow (`end_of_input`), which is scored and
//!   written before the outputs close.
//! - **Back-pressure by policy**: `block` waits for room (offline default, nothing lost);
//!   `drop` discards the batch that did not fit and counts every packet or record in it
//!   (live default, so the capture never stalls behind the scorer).
//! - **Prompt alerts on a quiet network**: the batcher closes a batch at `batch_rows` rows or
//!   `batch_deadline` after its first row, whichever comes first; the capture stage passes
//!   partial packet batches on every `tick`, and in live mode moves the flow clock on the
//!   wall clock while no packet arrives, so idle flows are exported and scored.
//! - **One window order for any number of workers** ([`crate::flow::order`]): the features
//!   stage releases ended flows by their last time once every worker's low mark has passed
//!   them. Every packet batch (also an empty one on a tick) moves a worker's clock, and the
//!   worker sends its mark even with no flows, so a worker that sees no packets holds nothing
//!   back: on replay its clock is the stream's, on a live interface the wall clock less 1 s.
//!   The cost is latency: a record waits until no open flow can still end before it, up to
//!   the longest idle timeout of capture time (docs/stream.md measures it).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use serde::{Deserialize, Serialize};

use super::metrics::Metrics;
use super::shard::Sharder;
use crate::alert::{RuleSet, ThresholdCalibrator};
use crate::capture::file::FileStats;
use crate::capture::source::PacketSource;
use crate::decode::DecodeStats;
use crate::features::RecordExtractor;
use crate::features::encode::{EncodeStats, RowEncoder};
use crate::features::tables::RangeCheck;
use crate::feedback::web::AlertFeed;
use crate::feedback::{self, log::RecordLog};
use crate::flow::config::secs;
use crate::flow::order::ReorderStats;
use crate::flow::{FlowConfig, FlowRecord, FlowStats, FlowTable};
use crate::model::slot::ModelSlot;
use crate::output::RecordWriter;

mod batch;
mod capture;
mod capture_worker;
mod features;
mod flow_worker;
mod score;
mod writer;

use batch::{FlowBatch, PacketBatch, RowBatch};
use capture::{Capture, WorkerLink, capture_stage};
use capture_worker::capture_worker;
use features::features_stage;
use flow_worker::flow_worker;
pub use score::Scoring;
use score::score_stage;
pub use writer::scored_columns;
use writer::writer_stage;

/// What to do when the next stage's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backpressure {
    /// Wait for room: nothing is lost, the capture slows down (replay default).
    Block,
    /// Discard the batch that does not fit and count it (live default).
    Drop,
}

/// `[stream]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Flow workers (flow table), 2. Packets are sharded among them by address pair.
    pub workers: usize,
    /// Packets per batch handed from capture to a worker (512).
    pub packet_batch: usize,
    /// Batches each queue holds before back-pressure applies (64).
    pub queue_batches: usize,
    /// Batches of ended flows queued between the flow workers and the features stage. Unset:
    /// 2 under `block` (a deeper queue only makes ended flows wait longer for their alert:
    /// the packet queues absorb bursts before packets become flows), `queue_batches` under
    /// `drop` (depth there saves flow records from being dropped in a burst).
    pub flow_queue_batches: Option<usize>,
    /// Rows per scorer batch at most (1024).
    pub batch_rows: usize,
    /// A scorer batch closes this long after its first row even when not full (0.002 s).
    #[serde(with = "secs")]
    pub batch_deadline: Duration,
    /// How often the capture stage hands on partial packet batches and the clock (0.001 s).
    #[serde(with = "secs")]
    pub tick: Duration,
    /// `block` or `drop`; unset: `block` for replay, `drop` for live capture.
    pub backpressure: Option<Backpressure>,
    /// Seed of the shard hash; unset: random per run (keyed, so that crafted addresses cannot
    /// pile every flow onto one worker).
    pub shard_seed: Option<u64>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            workers: 2,
            packet_batch: 512,
            queue_batches: 64,
            flow_queue_batches: None,
            batch_rows: 1024,
            batch_deadline: Duration::from_millis(2),
            tick: Duration::from_millis(1),
            backpressure: None,
            shard_seed: None,
        }
    }
}

/// Where the packets come from.
pub enum Input<'a> {
    /// One source, read by the capture stage, which decodes every packet and shards it among
    /// `StreamConfig::workers` flow workers (capture files, a libpcap handle).
    Shared(&'a mut dyn PacketSource),
    /// One source per flow worker, sharded below us (the kernel's `PACKET_FANOUT` sockets,
    /// [`crate::capture::fanout`]): each worker reads its own, and there are as many workers
    /// as sources. The stream has no shared clock then: each worker's is its own packets'
    /// (live capture only; replay pace does not apply).
    PerWorker(Vec<Box<dyn PacketSource + 'a>>),
}

/// Replay pace: as fast as possible, or the capture's own timing times a factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    Max,
    Factor(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Speed, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "max" {
            return Ok(Speed::Max);
        }
        let num = t.strip_suffix('x').unwrap_or(&t);
        match num.parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => Ok(Speed::Factor(v)),
            _ => Err(format!("speed {s:?}: expected max, 1x, 10x or 0.5x")),
        }
    }
}

/// What the learning loop hears from the writer: a copy of each scored batch's encoded rows,
/// for the reservoir.
pub struct Sample {
    /// Capture time of the batch's last flow end, Unix seconds.
    pub t: i64,
    pub rows: Vec<f32>,
}

/// The run's links to the learning loop and the analysts' page (all optional).
#[derive(Default)]
pub struct LoopLinks<'a> {
    /// Recent alerts for the page.
    pub feed: Option<&'a AlertFeed>,
    /// Samples for the learning loop (never blocks: a loop busy training misses samples,
    /// counted in `learn_rows_skipped`).
    pub learn: Option<Sender<Sample>>,
    /// Reloaded rule sets, taken at the writer's next batch.
    pub rules: Option<Receiver<RuleSet>>,
}

/// Where results go.
pub struct Outputs {
    /// `alerts.jsonl`.
    pub alerts: Box<dyn Write + Send>,
    /// Every scored flow, with its score and whether it alerted.
    pub flows: Option<RecordWriter<Box<dyn Write + Send>>>,
    pub rules: RuleSet,
    pub threshold: ThresholdCalibrator,
    /// Keep every flow's identity and score for the report (evaluation against a truth file;
    /// memory grows with the flows, so replay only).
    pub keep_scores: bool,
    /// The data directory's record of alerted flows (with their feature vectors, so that a
    /// later `mnpflow label` finds them), and the schema fingerprint of those vectors.
    pub flow_log: Option<(RecordLog<feedback::ScoredFlow>, String)>,
    /// `flow_log` rotates past this size.
    pub flow_log_max_bytes: u64,
    /// Where indicator rules' weak labels go (the data directory's label store).
    pub weak_labels: Option<feedback::LabelStore>,
    /// Whether the user chose the threshold (then it holds for every model; a rate is
    /// recalibrated after a swap), or each model brings its own cut.
    pub threshold_explicit: bool,
    /// How alerts are named, and what goes to Kafka.
    pub publish: Publish,
}

/// What the writer publishes besides the files: the alert format, event ids and the sensor
/// id, the queue to Kafka, and the flows topic with the columns of its records.
#[derive(Debug, Default)]
pub struct Publish {
    pub format: crate::kafka::AlertFormat,
    /// The sensor's name, in every event when set.
    pub sensor_id: Option<String>,
    /// Event ids: set when events carry an `event_id` (Kafka on, or a sensor id given).
    pub ids: Option<crate::kafka::EventIds>,
    /// The queue to the producer thread (Kafka on).
    pub sink: Option<crate::kafka::EventSink>,
    /// The flows topic and the columns of its records, when every scored flow is published.
    pub flows: Option<(String, Vec<crate::features::Column>)>,
}

/// A scored flow, as kept for evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredFlow {
    pub rec: FlowRecord,
    pub score: f32,
    pub alerted: bool,
}

/// Everything a run produced besides its outputs.
#[derive(Debug, Default)]
pub struct StreamReport {
    pub decode: DecodeStats,
    pub flow: FlowStats,
    pub file: FileStats,
    pub encode: EncodeStats,
    pub warnings: Vec<String>,
    /// Rules with their hit counts.
    pub rules: RuleSet,
    /// Whether the run ended because the stop flag was set.
    pub interrupted: bool,
    /// Flows per worker (load balance).
    pub worker_flows: Vec<u64>,
    /// What putting the workers' flows in window order took.
    pub order: ReorderStats,
    /// The alert cut of the last batch.
    pub last_cut: f32,
    /// Scored rows outside the training ranges of the model that scored them (counted
    /// afresh when a new model comes in).
    pub range: RangeCheck,
    pub write_error: Option<String>,
    /// Every scored flow, when `Outputs::keep_scores`.
    pub scored: Vec<ScoredFlow>,
}

// ---------------------------------------------------------------------------------------
// The whole pipeline

/// How to run.
pub struct Setup<'a> {
    pub stream: &'a StreamConfig,
    pub flow: &'a FlowConfig,
    pub speed: Speed,
    /// Used when `stream.backpressure` is unset.
    pub default_backpressure: Backpressure,
    pub stats_interval: Option<Duration>,
    pub metrics_listener: Option<std::net::TcpListener>,
}

/// Runs `input` through the pipeline until it ends or `stop` is set; returns when every
/// stage has drained and the outputs are flushed.
#[allow(clippy::too_many_arguments)] // the pipeline's parts, each owned by a different caller
pub fn run(
    input: Input<'_>,
    setup: Setup<'_>,
    extractor: Box<dyn RecordExtractor>,
    slot: &ModelSlot<Scoring>,
    outputs: Outputs,
    loop_links: LoopLinks<'_>,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> StreamReport {
    let cfg = setup.stream;
    let (mut shared, own_sources) = match input {
        Input::Shared(s) => (Some(s), None),
        Input::PerWorker(v) => (None, Some(v)),
    };
    let n = match &own_sources {
        Some(v) => v.len().max(1),
        None => cfg.workers.max(1),
    };
    let policy = cfg.backpressure.unwrap_or(setup.default_backpressure);
    let q = cfg.queue_batches.max(1);
    let width = RowEncoder::new(extractor.schema()).width();
    let n_cells = extractor.columns().len();
    // The extractor computes each flow's community ID for its row; the writer takes it from
    // there when rows are kept instead of hashing again.
    let cid_column = extractor.columns().iter().position(|c| c.name == "community_id");
    let keep_cells = outputs.flows.is_some() || outputs.publish.flows.is_some();
    let community_seed = setup.flow.community_id_seed;
    let fingerprint = extractor.schema().fingerprint();
    let sharder = Sharder::new(cfg.shard_seed);
    let mut per_worker = setup.flow.clone();
    per_worker.max_flows = setup.flow.max_flows.div_ceil(n).max(1);

    let (free_pkt_tx, free_pkt_rx) = bounded::<PacketBatch>(n * (q + 2));
    let qf = cfg.flow_queue_batches.unwrap_or(match policy {
        Backpressure::Block => 2,
        Backpressure::Drop => q,
    });
    let (flow_tx, flow_rx) = bounded::<FlowBatch>(qf.max(1));
    let (row_tx, row_rx) = bounded::<RowBatch>(q);
    let (free_row_tx, free_row_rx) = bounded::<RowBatch>(q + 4);
    let (scored_tx, scored_rx) = bounded::<RowBatch>(q);
    // Packet queues from the capture stage, one per worker; none when each worker reads its
    // own source.
    let shared_workers = if own_sources.is_some() { 0 } else { n };
    let mut links = Vec::with_capacity(shared_workers);
    let mut worker_rx = Vec::with_capacity(shared_workers);
    for _ in 0..shared_workers {
        let (tx, rx) = bounded::<PacketBatch>(q);
        links.push(WorkerLink { tx, current: PacketBatch::default(), last_sent_clock: None });
        worker_rx.push(rx);
    }
    let done = AtomicBool::new(false);

    let mut report = StreamReport::default();
    std::thread::scope(|s| {
        let listener = setup.metrics_listener;
        let done = &done;
        let monitor = s.spawn(move || {
            if let Some(l) = listener {
                std::thread::scope(|s2| {
                    s2.spawn(|| super::metrics::serve(l, metrics, done));
                    stats_loop(setup.stats_interval, metrics, done);
                });
            } else {
                stats_loop(setup.stats_interval, metrics, done);
            }
        });
        let table = |w: usize| FlowTable::with_ids(per_worker.clone(), w as u64, n as u64);
        let mut workers = Vec::new();
        let mut capture_workers = Vec::new();
        match own_sources {
            Some(sources) => {
                for (w, source) in sources.into_iter().enumerate() {
                    let (table, out) = (table(w), flow_tx.clone());
                    let tick = cfg.tick;
                    capture_workers.push(
                        std::thread::Builder::new()
                            .name(format!("mnpflow-capture-{w}"))
                            .spawn_scoped(s, move || {
                                capture_worker(w, table, source, out, policy, tick, stop, metrics)
                            })
                            .expect("spawning a capture worker"),
                    );
                }
            }
            None => {
                for (w, rx) in worker_rx.into_iter().enumerate() {
                    let (table, free, out) = (table(w), free_pkt_tx.clone(), flow_tx.clone());
                    workers.push(
                        std::thread::Builder::new()
                            .name(format!("mnpflow-flow-{w}"))
                            .spawn_scoped(s, move || {
                                flow_worker(w, table, rx, free, out, policy, metrics)
                            })
                            .expect("spawning a flow worker"),
                    );
                }
            }
        }
        drop(flow_tx);
        drop(free_pkt_tx);
        let features = std::thread::Builder::new()
            .name("mnpflow-features".into())
            .spawn_scoped(s, move || {
                features_stage(
                    extractor,
                    flow_rx,
                    n,
                    setup.flow.max_held_records,
                    row_tx,
                    free_row_rx,
                    cfg.batch_rows,
                    cfg.batch_deadline,
                    keep_cells,
                    metrics,
                )
            })
            .expect("spawning the features stage");
        // The calibrator travels to the scorer; the rest of the outputs to the writer.
        let threshold = outputs.threshold.clone();
        let explicit = outputs.threshold_explicit;
        let window = outputs.threshold.window();
        let scorer = std::thread::Builder::new()
            .name("mnpflow-score".into())
            .spawn_scoped(s, move || {
                score_stage(slot, width, threshold, explicit, window, row_rx, scored_tx, metrics)
            })
            .expect("spawning the scorer");
        let fingerprint = &fingerprint;
        let writer = std::thread::Builder::new()
            .name("mnpflow-output".into())
            .spawn_scoped(s, move || {
                writer_stage(
                    outputs,
                    loop_links,
                    fingerprint,
                    (n_cells, cid_column),
                    community_seed,
                    scored_rx,
                    free_row_tx,
                    metrics,
                )
            })
            .expect("spawning the writer");

        if let Some(source) = shared.as_deref_mut() {
            let cap = Capture {
                links,
                free: free_pkt_rx,
                policy,
                batch_size: cfg.packet_batch.max(1),
                metrics,
            };
            let (decode_stats, interrupted) = capture_stage(
                source,
                cap,
                &sharder,
                setup.flow,
                setup.speed,
                cfg.tick,
                stop,
                metrics,
            );
            report.decode = decode_stats;
            report.interrupted = interrupted;
        }
        for w in workers {
            let st = w.join().expect("a flow worker panicked");
            report.worker_flows.push(st.exported_total());
            report.flow.merge(&st);
        }
        for w in capture_workers {
            let end = w.join().expect("a capture worker panicked");
            report.worker_flows.push(end.flow.exported_total());
            report.flow.merge(&end.flow);
            report.decode.merge(&end.decode);
            report.interrupted |= end.interrupted;
            report.warnings.extend(end.warnings);
        }
        (report.encode, report.order) = features.join().expect("the features stage panicked");
        let (thr, range) = scorer.join().expect("the scorer panicked");
        report.range = range;
        report.last_cut = thr.current();
        let (flows, mut alerts, res) = writer.join().expect("the writer panicked");
        let mut error = res.error;
        if let Some(f) = flows
            && let Err(e) = f.finish()
            && error.is_none()
        {
            error = Some(format!("writing flows: {e}"));
        }
        if let Err(e) = alerts.flush()
            && error.is_none()
        {
            error = Some(format!("writing alerts: {e}"));
        }
        report.write_error = error;
        report.rules = res.rules;
        report.scored = res.scored;
        done.store(true, Relaxed);
        monitor.join().expect("the monitor panicked");
    });
    if let Some(source) = shared {
        // Each worker counted the resets it was told of; the stream had them once.
        report.flow.clock_resets /= n as u64;
        report.file = source.file_stats();
        report.warnings = source.take_warnings();
    }
    report
}

fn stats_loop(interval: Option<Duration>, metrics: &Metrics, done: &AtomicBool) {
    let mut next = interval.map(|i| Instant::now() + i);
    while !done.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(25));
        if let (Some(i), Some(t)) = (interval, next)
            && Instant::now() >= t
        {
            eprintln!("{}", metrics.line());
            next = Some(t + i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds() {
        assert_eq!("max".parse(), Ok(Speed::Max));
        assert_eq!("1x".parse(), Ok(Speed::Factor(1.0)));
        assert_eq!("2.5X".parse(), Ok(Speed::Factor(2.5)));
        assert_eq!("10".parse(), Ok(Speed::Factor(10.0)));
        for bad in ["0x", "-1x", "fast", "", "infx"] {
            assert!(bad.parse::<Speed>().is_err(), "{bad}");
        }
    }
}
