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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::metrics::{Metrics, Queue, Stage};
use super::shard::Sharder;
use crate::alert::eve::{self, ModelInfo};
use crate::alert::rules::FlowIdentity;
use crate::alert::{Explanation, RuleSet, Threshold, ThresholdCalibrator};
use crate::capture::file::FileStats;
use crate::capture::source::{Next, PacketSource};
use crate::capture::{LinkType, RawPacket, Timestamp};
use crate::decode::{DecodeStats, decode};
use crate::features::encode::{EncodeStats, RowEncoder};
use crate::features::tables::{RangeCheck, Scaler};
use crate::features::{Cell, Column, RecordExtractor};
use crate::feedback::web::{AlertFeed, AlertView};
use crate::feedback::{self, log::RecordLog};
use crate::flow::config::secs;
use crate::flow::order::ReorderStats;
use crate::flow::{
    EndReason, FlowConfig, FlowRecord, FlowStats, FlowTable, OrderKey, Reorder, StreamTime,
    community_id,
};
use crate::model::artifact::Artifact;
use crate::model::device::Compute;
use crate::model::mnpwad::Mnpwad;
use crate::model::reasons::{self, Described, Profiles, Reasons};
use crate::model::score::Scorer;
use crate::model::slot::ModelSlot;
use crate::output::RecordWriter;

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
    /// Flow workers (decode and flow table), 2. Packets are sharded among them by address pair.
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

/// The model as the scorer uses it; what [`ModelSlot`] holds.
pub struct Scoring {
    /// The hand-written CPU path, or burn on a GPU (`--backend wgpu`).
    pub scorer: Scorer,
    pub scaler: Scaler,
    pub model: ModelInfo,
    /// The score cut that comes with this model, used when the user set no threshold.
    pub cut: Option<f32>,
    /// The model's false-positive budget ([`Artifact::budget`]), preferred over `cut`.
    pub budget: Option<crate::alert::threshold::BudgetCut>,
    /// Typical inputs per prototype, for alerts' reasons ([`Artifact::profiles`]).
    pub profiles: Option<Profiles>,
    /// The layout's input names, for those reasons.
    pub columns: Vec<String>,
}

impl Scoring {
    /// An alert's reasons in the schema's words and units (`raw`: its unscaled row).
    pub fn describe(&self, why: &Explanation, raw: &[f32]) -> Vec<Described> {
        match &self.profiles {
            Some(p) => p.describe(&why.reasons, why.prototype, raw, &self.columns, &self.scaler),
            None => Vec::new(),
        }
    }
}

impl Scoring {
    /// Builds the CPU scorer for a model; `file_bytes` (the model file) name its version.
    pub fn new(
        art: &Artifact,
        model: &Mnpwad,
        file_bytes: &[u8],
        registry_version: Option<u64>,
        cut: Option<f32>,
    ) -> Scoring {
        Scoring::on(&Compute::cpu(), art, model, file_bytes, registry_version, cut)
    }

    /// Builds the scorer for a model on `compute` (the CPU, or a GPU).
    pub fn on(
        compute: &Compute,
        art: &Artifact,
        model: &Mnpwad,
        file_bytes: &[u8],
        registry_version: Option<u64>,
        cut: Option<f32>,
    ) -> Scoring {
        let h = Sha1::digest(file_bytes);
        let version =
            format!("sha1:{}", h.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>());
        Scoring {
            scorer: Scorer::new(model, compute),
            scaler: art.scaler.clone(),
            model: ModelInfo { version, schema: art.layout.name.clone(), registry_version },
            cut,
            budget: art.budget,
            profiles: art.profiles.clone(),
            columns: art.layout.columns.clone(),
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
}

/// A scored flow, as kept for evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredFlow {
    pub rec: FlowRecord,
    pub score: f32,
    pub alerted: bool,
}

/// The columns of the every-flow output: the extractor's, then `score` and `alert`.
pub fn scored_columns(extractor: &dyn RecordExtractor) -> Vec<Column> {
    let mut c = extractor.columns().to_vec();
    c.push(Column { name: "score".into(), zeek_type: "double", feature: None });
    c.push(Column { name: "alert".into(), zeek_type: "count", feature: None });
    c
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
// Batches

#[derive(Debug, Clone, Copy)]
struct PktRef {
    ts: Timestamp,
    /// The stream's capture clock after this packet.
    clock: Timestamp,
    wire_len: u32,
    link: LinkType,
    start: u32,
    len: u32,
}

/// Packets for one worker: frames copied into one arena.
#[derive(Debug, Default)]
struct PacketBatch {
    data: Vec<u8>,
    pkts: Vec<PktRef>,
    /// Restart the flow clock this many times before these packets (the stream's clock jumped
    /// back; a worker that got no packets between two jumps is told of both, so that every
    /// worker counts the same clock epochs).
    resets: u32,
    /// The stream's clock when the batch was sent: the worker expires flows up to it.
    clock: Option<Timestamp>,
}

impl PacketBatch {
    fn clear(&mut self) {
        self.data.clear();
        self.pkts.clear();
        self.resets = 0;
        self.clock = None;
    }
}

#[derive(Debug, Clone, Copy)]
struct Exported {
    rec: FlowRecord,
    at: Instant,
}

/// Ended flows from one worker, with the worker's low mark after them: it will export nothing
/// that sorts before `mark` ([`FlowTable::low_mark`]; [`StreamTime::MAX`] when it has ended).
/// Sent also with no flows when the mark moves, so that a quiet worker holds nobody back.
struct FlowBatch {
    worker: usize,
    flows: Vec<Exported>,
    mark: StreamTime,
}

/// Rows on their way to the scorer and the writer.
#[derive(Default)]
struct RowBatch {
    recs: Vec<FlowRecord>,
    at: Vec<Instant>,
    /// Encoded rows, schema width.
    rows: Vec<f32>,
    /// Every column's cell per row, only when every flow is written.
    cells: Vec<Cell>,
    scores: Vec<f32>,
    why: Vec<Explanation>,
    /// Each row's alert cut ([`ThresholdCalibrator::calibrate`]).
    cuts: Vec<f32>,
    /// The model that scored this batch.
    model: Option<Arc<Scoring>>,
}

impl RowBatch {
    fn len(&self) -> usize {
        self.recs.len()
    }
    fn clear(&mut self) {
        self.recs.clear();
        self.at.clear();
        self.rows.clear();
        self.cells.clear();
        self.scores.clear();
        self.why.clear();
        self.cuts.clear();
        self.model = None;
    }
}

/// Sends by the policy; returns false when the batch was dropped (and hands it back).
fn send_or_drop<T>(tx: &Sender<T>, item: T, policy: Backpressure) -> Result<(), Option<T>> {
    match policy {
        Backpressure::Block => tx.send(item).map_err(|_| None),
        Backpressure::Drop => match tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(item)) => Err(Some(item)),
            Err(TrySendError::Disconnected(_)) => Err(None),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Capture stage

struct WorkerLink {
    tx: Sender<PacketBatch>,
    current: PacketBatch,
    last_sent_clock: Option<Timestamp>,
}

struct Capture<'a> {
    links: Vec<WorkerLink>,
    free: Receiver<PacketBatch>,
    policy: Backpressure,
    batch_size: usize,
    metrics: &'a Metrics,
}

impl Capture<'_> {
    /// Sends worker `w`'s current batch (also when empty, if it carries news: a reset or a
    /// later clock).
    fn send(&mut self, w: usize, clock: Option<Timestamp>) {
        let link = &mut self.links[w];
        if link.current.pkts.is_empty() && link.current.resets == 0 && link.last_sent_clock >= clock
        {
            return;
        }
        let mut batch = std::mem::take(&mut link.current);
        batch.clock = clock;
        let n = batch.pkts.len() as u64;
        match send_or_drop(&link.tx, batch, self.policy) {
            Ok(()) => {
                link.last_sent_clock = clock;
                self.metrics.queue_len(Queue::Packets, link.tx.len());
                link.current = self.free.try_recv().unwrap_or_default();
            }
            Err(Some(mut back)) => {
                self.metrics.dropped_packets.fetch_add(n, Relaxed);
                // A dropped reset still has to reach the worker.
                let resets = back.resets;
                back.clear();
                back.resets = resets;
                link.current = back;
            }
            Err(None) => link.current = self.free.try_recv().unwrap_or_default(),
        }
    }

    fn send_all(&mut self, clock: Option<Timestamp>) {
        for w in 0..self.links.len() {
            self.send(w, clock);
        }
    }
}

/// The capture clock rule of [`FlowTable::process`], for the whole stream: returns whether
/// this packet restarts the clock.
fn advance_clock(clock: &mut Option<Timestamp>, ts: Timestamp, regression_ns: i64) -> bool {
    match *clock {
        None => {
            *clock = Some(ts);
            false
        }
        Some(c) if ts >= c => {
            *clock = Some(ts);
            false
        }
        Some(c) if c.since(ts) > regression_ns => {
            *clock = Some(ts);
            true
        }
        Some(_) => false,
    }
}

/// How far behind the wall clock the live flow clock is held (1 s).
const LIVE_CLOCK_SLACK_NS: i64 = 1_000_000_000;

#[allow(clippy::too_many_arguments)] // a stage's channel ends, clock and counters, wired once in `run`
fn capture_stage(
    source: &mut dyn PacketSource,
    mut cap: Capture<'_>,
    sharder: &Sharder,
    flow: &FlowConfig,
    speed: Speed,
    tick: Duration,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> (DecodeStats, bool) {
    let regression_ns = i64::try_from(flow.max_time_regression.as_nanos()).unwrap_or(i64::MAX);
    let live = source.is_live();
    let n = cap.links.len();
    let mut decode_stats = DecodeStats::default();
    let mut clock: Option<Timestamp> = None;
    let mut last_tick = Instant::now();
    let (mut read, mut bytes, mut skipped) = (0u64, 0u64, 0u64);
    let mut pace: Option<(Timestamp, Instant)> = None;
    let mut busy = Duration::ZERO;
    let mut busy_from = Instant::now();
    let mut interrupted = false;
    let mut since_check = 0u32;
    loop {
        if stop.load(Relaxed) {
            interrupted = true;
            break;
        }
        let raw = match source.next_packet() {
            Next::Packet(p) => p,
            Next::Idle => {
                if live {
                    // The wall clock, less a second: packets reach us a little after the
                    // kernel stamped them, and a clock ahead of them would count them as
                    // reordered. Timeouts are seconds long; a second late is still prompt.
                    let now = Timestamp::wall_now().add_nanos(-LIVE_CLOCK_SLACK_NS);
                    if clock.is_none_or(|c| now > c) {
                        clock = Some(now);
                    }
                }
                // The source waited inside next_packet: that is idle time, not work.
                cap.send_all(clock);
                last_tick = Instant::now();
                let d = source.drops();
                metrics.kernel_drops.store(d.kernel, Relaxed);
                metrics.interface_drops.store(d.interface, Relaxed);
                busy_from = Instant::now();
                continue;
            }
            Next::End => break,
        };
        read += 1;
        bytes += raw.wire_len as u64;
        let decoded = decode(&raw);
        decode_stats.record(&decoded);
        let meta = match decoded {
            Ok(m) => m,
            Err(_) => {
                skipped += 1;
                continue;
            }
        };
        let before = clock;
        if advance_clock(&mut clock, meta.ts, regression_ns) {
            // A new capture. Every worker first expires up to the clock before the jump (as the
            // single table did at the last packet), then ends its flows before any packet
            // after the jump.
            for w in 0..n {
                cap.send(w, before);
                cap.links[w].current.resets += 1;
            }
            pace = None;
        }
        let now_clock = clock.expect("set by advance_clock");
        if let Speed::Factor(f) = speed {
            let (t0, w0) = *pace.get_or_insert((now_clock, Instant::now()));
            let due = w0 + Duration::from_secs_f64((now_clock.since(t0).max(0) as f64 / 1e9) / f);
            let now = Instant::now();
            if due > now {
                busy += busy_from.elapsed();
                cap.send_all(clock);
                last_tick = Instant::now();
                // Sleep in slices so that a stop request is seen promptly.
                while Instant::now() < due && !stop.load(Relaxed) {
                    std::thread::sleep((due - Instant::now()).min(Duration::from_millis(20)));
                }
                busy_from = Instant::now();
            }
        }
        let w = sharder.worker(&meta, n);
        let link = &mut cap.links[w];
        let start = link.current.data.len();
        link.current.data.extend_from_slice(raw.data);
        link.current.pkts.push(PktRef {
            ts: raw.ts,
            clock: now_clock,
            wire_len: raw.wire_len,
            link: raw.link,
            start: start as u32,
            len: raw.data.len() as u32,
        });
        if link.current.pkts.len() >= cap.batch_size {
            cap.send(w, clock);
        }
        since_check += 1;
        if since_check >= 256 {
            since_check = 0;
            metrics.packets_read.store(read, Relaxed);
            metrics.bytes_read.store(bytes, Relaxed);
            metrics.packets_skipped.store(skipped, Relaxed);
            if last_tick.elapsed() >= tick {
                cap.send_all(clock);
                last_tick = Instant::now();
            }
        }
    }
    cap.send_all(clock);
    busy += busy_from.elapsed();
    metrics.busy(Stage::Capture, busy);
    metrics.packets_read.store(read, Relaxed);
    metrics.bytes_read.store(bytes, Relaxed);
    metrics.packets_skipped.store(skipped, Relaxed);
    let d = source.drops();
    metrics.kernel_drops.store(d.kernel, Relaxed);
    metrics.interface_drops.store(d.interface, Relaxed);
    // Dropping `cap` closes the workers' queues: they flush and finish.
    (decode_stats, interrupted)
}

// ---------------------------------------------------------------------------------------
// Flow workers

#[allow(clippy::too_many_arguments)] // a stage's channel ends, clock and counters, wired once in `run`
fn flow_worker(
    worker: usize,
    mut table: FlowTable,
    rx: Receiver<PacketBatch>,
    free: Sender<PacketBatch>,
    out: Sender<FlowBatch>,
    policy: Backpressure,
    metrics: &Metrics,
) -> FlowStats {
    let mut pending: Vec<Exported> = Vec::new();
    let mut busy = Duration::ZERO;
    let mut sent_mark = StreamTime::MIN;
    let mut send = |pending: &mut Vec<Exported>, mark: StreamTime| {
        if pending.is_empty() && mark <= sent_mark {
            return;
        }
        let flows = std::mem::take(pending);
        let n = flows.len() as u64;
        metrics.flows_exported.fetch_add(n, Relaxed);
        // A dropped batch loses its mark too; the next one carries a later mark.
        match send_or_drop(&out, FlowBatch { worker, flows, mark }, policy) {
            Ok(()) => {
                sent_mark = mark;
                metrics.queue_len(Queue::Flows, out.len());
            }
            Err(Some(_)) => {
                metrics.dropped_flows.fetch_add(n, Relaxed);
            }
            Err(None) => {}
        }
    };
    for mut batch in rx.iter() {
        let t0 = Instant::now();
        {
            let mut sink = |r: &FlowRecord| pending.push(Exported { rec: *r, at: Instant::now() });
            for _ in 0..batch.resets {
                table.restart_clock(&mut sink);
            }
            for p in &batch.pkts {
                let raw = RawPacket {
                    ts: p.ts,
                    link: p.link,
                    wire_len: p.wire_len,
                    data: &batch.data[p.start as usize..(p.start + p.len) as usize],
                };
                // The capture stage decoded this frame already; the same bytes decode the same.
                if let Ok(meta) = decode(&raw) {
                    if p.clock > meta.ts {
                        table.advance_to(p.clock, &mut sink);
                    }
                    table.process(&meta, &mut sink);
                }
            }
            if let Some(c) = batch.clock {
                table.advance_to(c, &mut sink);
            }
        }
        metrics.packets_flowed.fetch_add(batch.pkts.len() as u64, Relaxed);
        batch.clear();
        let _ = free.try_send(batch);
        busy += t0.elapsed();
        send(&mut pending, table.low_mark());
    }
    let t0 = Instant::now();
    table.flush(EndReason::EndOfInput, &mut |r: &FlowRecord| {
        pending.push(Exported { rec: *r, at: Instant::now() })
    });
    busy += t0.elapsed();
    send(&mut pending, StreamTime::MAX);
    metrics.busy(Stage::Flow, busy);
    table.stats()
}

// ---------------------------------------------------------------------------------------
// Features and batcher

/// Puts the workers' ended flows back in window order ([`crate::flow::order`]), then extracts
/// and encodes them into scorer batches. Everything downstream (the `ct_*` window here, the
/// threshold calibrator, the reservoir, the output files) sees that one order, whatever the
/// number of workers and however their threads ran.
#[allow(clippy::too_many_arguments)] // a stage's channel ends, clock and counters, wired once in `run`
fn features_stage(
    mut extractor: Box<dyn RecordExtractor>,
    rx: Receiver<FlowBatch>,
    workers: usize,
    hold_limit: usize,
    tx: Sender<RowBatch>,
    free: Receiver<RowBatch>,
    batch_rows: usize,
    deadline: Duration,
    keep_cells: bool,
    metrics: &Metrics,
) -> (EncodeStats, ReorderStats) {
    let mut order: Reorder<Exported> = Reorder::new(workers, hold_limit);
    let encoder = RowEncoder::new(extractor.schema());
    let width = encoder.width();
    let columns = extractor.columns().to_vec();
    let mut stats = EncodeStats::default();
    let mut cells = Vec::new();
    let mut batch = RowBatch::default();
    let mut opened: Option<Instant> = None;
    let mut busy = Duration::ZERO;
    let batch_rows = batch_rows.max(1);
    let close = |batch: &mut RowBatch, opened: &mut Option<Instant>| {
        *opened = None;
        if batch.len() == 0 {
            return;
        }
        let next = free.try_recv().unwrap_or_default();
        let full = std::mem::replace(batch, next);
        metrics.rows_built.fetch_add(full.len() as u64, Relaxed);
        // Rows are never dropped here: the flow -> features hand-off already applied the
        // policy, and a full scorer queue slows this stage, which fills that hand-off.
        if tx.send(full).is_ok() {
            metrics.queue_len(Queue::Rows, tx.len());
        }
    };
    loop {
        let msg = match opened {
            Some(t) => {
                let left = (t + deadline).saturating_duration_since(Instant::now());
                if left.is_zero() {
                    close(&mut batch, &mut opened);
                    continue;
                }
                rx.recv_timeout(left)
            }
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let ended = matches!(msg, Err(RecvTimeoutError::Disconnected));
        match msg {
            Ok(FlowBatch { worker, flows, mark }) => {
                for e in flows {
                    order.push(OrderKey::of(&e.rec), e);
                }
                order.advance(worker, mark);
                metrics.flows_held.store(order.len() as u64, Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => close(&mut batch, &mut opened),
            Err(RecvTimeoutError::Disconnected) => {}
        }
        let t0 = Instant::now();
        while let Some(e) = if ended { order.pop_any() } else { order.pop_ready() } {
            extractor.extract(&e.rec, &mut cells);
            let at = batch.rows.len();
            batch.rows.resize(at + width, 0.0);
            encoder.encode(&columns, &cells, &mut batch.rows[at..], &mut stats);
            batch.recs.push(e.rec);
            batch.at.push(e.at);
            if keep_cells {
                batch.cells.append(&mut cells);
            }
            if opened.is_none() {
                opened = Some(Instant::now());
            }
            if batch.len() >= batch_rows {
                close(&mut batch, &mut opened);
            }
        }
        busy += t0.elapsed();
        if ended {
            close(&mut batch, &mut opened);
            break;
        }
    }
    metrics.busy(Stage::Features, busy);
    metrics.flows_held.store(0, Relaxed);
    (stats, order.stats())
}

// ---------------------------------------------------------------------------------------
// Scorer

/// The threshold for a model the scorer just moved to, from the run's starting threshold.
///
/// The user's threshold holds for every model. A rate (the user's or the default) stays a
/// rate, recalibrated from the new model's own scores: two models' scores are not on one
/// scale, so the old window is dropped. A model's own threshold (a budget or a fixed cut) gives
/// way to the new model's own (its budget, else the learning loop's rate-matched cut, or the
/// registry's).
fn threshold_for(scoring: &Scoring, base: Threshold, explicit: bool) -> Threshold {
    match base {
        _ if explicit => base,
        Threshold::Rate(_) => base,
        Threshold::Score(_) | Threshold::Budget(_) => scoring
            .budget
            .map(Threshold::Budget)
            .or(scoring.cut.map(Threshold::Score))
            .unwrap_or(base),
    }
}

#[allow(clippy::too_many_arguments)] // a stage's channel ends, clock and counters, wired once in `run`
fn score_stage(
    slot: &ModelSlot<Scoring>,
    width: usize,
    mut threshold: ThresholdCalibrator,
    threshold_explicit: bool,
    window: usize,
    rx: Receiver<RowBatch>,
    tx: Sender<RowBatch>,
    metrics: &Metrics,
) -> (ThresholdCalibrator, RangeCheck) {
    let mut scaled: Vec<f32> = Vec::new();
    let (mut alerted, mut reasons): (Vec<usize>, Vec<Reasons>) = (Vec::new(), Vec::new());
    let mut range = RangeCheck::default();
    let mut busy = Duration::ZERO;
    let mut model = slot.reader();
    let base = threshold.threshold();
    for mut batch in rx.iter() {
        let t0 = Instant::now();
        // The batch boundary: the one place a new model is taken.
        if model.refresh() {
            threshold = ThresholdCalibrator::new(
                threshold_for(model.get(), base, threshold_explicit),
                window,
            );
            metrics.model_swaps.fetch_add(1, Relaxed);
            range = RangeCheck::default();
        }
        let scoring = model.get();
        let sc = &scoring.scaler;
        scaled.clear();
        for row in batch.rows.chunks_exact(width) {
            sc.transform_row(row, &mut scaled);
        }
        range.observe(&scaled, sc.width());
        let s = scoring.scorer.explain(&scaled);
        batch.cuts.clear();
        threshold.calibrate(&s.score, &mut batch.cuts);
        metrics.cut_bits.store(threshold.current().to_bits() as u64, Relaxed);
        batch.why.clear();
        for i in 0..s.score.len() {
            batch.why.push(Explanation {
                recon_error: s.recon[i],
                prototype: s.prototype[i],
                similarity: s.similarity[i],
                reasons: Reasons::default(),
            });
        }
        if let Some(profiles) = &scoring.profiles {
            alerted.clear();
            alerted.extend((0..s.score.len()).filter(|&i| s.score[i] >= batch.cuts[i]));
            profiles.reasons(
                &scoring.scorer,
                &scaled,
                &s.score,
                &s.prototype,
                &alerted,
                &mut reasons,
            );
            for (&i, r) in alerted.iter().zip(&reasons) {
                batch.why[i].reasons = *r;
            }
        }
        batch.scores = s.score;
        batch.model = Some(scoring.clone());
        metrics.rows_scored.fetch_add(batch.len() as u64, Relaxed);
        metrics.batches_scored.fetch_add(1, Relaxed);
        busy += t0.elapsed();
        if tx.send(batch).is_ok() {
            metrics.queue_len(Queue::Scored, tx.len());
        }
    }
    metrics.busy(Stage::Score, busy);
    (threshold, range)
}

// ---------------------------------------------------------------------------------------
// Alert writer

struct WriterResult {
    rules: RuleSet,
    error: Option<String>,
    scored: Vec<ScoredFlow>,
}

/// A flow as the data directory and the analysts' page keep it.
fn scored_record(
    rec: &FlowRecord,
    cid: &str,
    schema: &str,
    features: &[f32],
    score: f32,
) -> feedback::ScoredFlow {
    feedback::ScoredFlow {
        uid: crate::features::uid(rec),
        community_id: cid.to_owned(),
        ts: rec.first_ts.as_secs_f64(),
        orig_h: rec.orig_addr.to_string(),
        orig_p: rec.orig_port,
        resp_h: rec.resp_addr.to_string(),
        resp_p: rec.resp_port,
        proto: rec.proto,
        schema: schema.to_owned(),
        features: features.to_vec(),
        score,
    }
}

/// What the writer hands back when it ends: the record writer, the alert sink, its counts.
type WriterEnd = (Option<RecordWriter<Box<dyn Write + Send>>>, Box<dyn Write + Send>, WriterResult);

#[allow(clippy::too_many_arguments)] // the writer's ends of the channels and the outputs it owns
fn writer_stage(
    mut outputs: Outputs,
    links: LoopLinks<'_>,
    fingerprint: &str,
    n_cells: usize,
    community_seed: u16,
    rx: Receiver<RowBatch>,
    free: Sender<RowBatch>,
    metrics: &Metrics,
) -> WriterEnd {
    let mut line = String::new();
    let mut cells: Vec<Cell> = Vec::with_capacity(n_cells + 2);
    let (mut lat, mut lat_flush): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    let mut error: Option<String> = None;
    let mut scored = Vec::new();
    let mut busy = Duration::ZERO;
    let mut to_log: Vec<feedback::ScoredFlow> = Vec::new();
    let mut indicated: Vec<feedback::Label> = Vec::new();
    let keep_records = outputs.flow_log.is_some() || links.feed.is_some();
    for mut batch in rx.iter() {
        let t0 = Instant::now();
        if let Some(new) = links.rules.as_ref().and_then(|r| r.try_iter().last()) {
            let mut new = new;
            new.carry_hits_from(&outputs.rules);
            outputs.rules = new;
        }
        let need_cid = outputs.rules.needs_community_id();
        let check_indicators = !outputs.rules.indicators.is_empty();
        let scoring = batch.model.take().expect("the scorer names the model of every batch");
        let model = &scoring.model;
        let mut alerts = 0u64;
        let mut suppressed = 0u64;
        let mut by_indicator = 0u64;
        let width = batch.rows.len() / batch.len().max(1);
        for i in 0..batch.len() {
            let rec = &batch.recs[i];
            let score = batch.scores[i];
            let cut = batch.cuts[i];
            let mut alert = score >= cut;
            let mut wrote_alert = false;
            if alert || check_indicators {
                let cid_of = || {
                    community_id(
                        community_seed,
                        rec.orig_addr,
                        rec.orig_port,
                        rec.resp_addr,
                        rec.resp_port,
                        rec.proto,
                    )
                };
                // The community ID costs a SHA-1: only for alerts and rules that name one.
                let mut cid = if alert || need_cid { cid_of() } else { String::new() };
                let who = FlowIdentity {
                    src: rec.orig_addr,
                    src_port: rec.orig_port,
                    dest: rec.resp_addr,
                    dest_port: rec.resp_port,
                    proto: rec.proto,
                    community_id: Some(&cid),
                };
                let indicator = if check_indicators { outputs.rules.indicate(&who) } else { None };
                let suppress =
                    alert && indicator.is_none() && outputs.rules.suppress(&who).is_some();
                let indicator = indicator.map(|k| &outputs.rules.indicators[k]);
                if let Some(rule) = indicator {
                    // An indicator makes an alert whatever the score, and a weak label.
                    alert = true;
                    by_indicator += 1;
                    if cid.is_empty() {
                        cid = cid_of();
                    }
                    if outputs.weak_labels.is_some() {
                        let f = scored_record(
                            rec,
                            &cid,
                            fingerprint,
                            &batch.rows[i * width..(i + 1) * width],
                            score,
                        );
                        indicated.push(feedback::Label {
                            uid: f.uid,
                            community_id: f.community_id,
                            verdict: feedback::Verdict::Attack,
                            by: format!("rule:{}", rule.origin),
                            at: Timestamp::wall_now().as_secs_f64(),
                            note: rule.reason.clone(),
                            schema: f.schema,
                            features: f.features,
                        });
                    }
                }
                // (A flow that neither scored high nor matched an indicator ends here.)
                if alert && suppress {
                    suppressed += 1;
                } else if alert {
                    line.clear();
                    let described =
                        scoring.describe(&batch.why[i], &batch.rows[i * width..(i + 1) * width]);
                    eve::write_alert(
                        &mut line,
                        rec,
                        &cid,
                        score,
                        cut,
                        &eve::Why { explanation: &batch.why[i], reasons: &described },
                        model,
                        indicator,
                    );
                    line.push('\n');
                    if error.is_none()
                        && let Err(e) = outputs.alerts.write_all(line.as_bytes())
                    {
                        error = Some(format!("writing alerts: {e}"));
                    }
                    alerts += 1;
                    wrote_alert = true;
                    if keep_records {
                        let f = scored_record(
                            rec,
                            &cid,
                            fingerprint,
                            &batch.rows[i * width..(i + 1) * width],
                            score,
                        );
                        if let Some(feed) = links.feed {
                            let why = &batch.why[i];
                            feed.push(AlertView {
                                seq: 0,
                                time: eve::eve_timestamp(rec.last_ts),
                                flow_id: rec.id,
                                flow: f.clone(),
                                threshold: cut,
                                model: model.version.clone(),
                                recon_error: why.recon_error,
                                prototype: why.prototype,
                                similarity: why.similarity,
                                reason: reasons::text(&described),
                                reasons: described,
                                indicator: indicator
                                    .map(|r| format!("{} ({})", r.reason, r.origin)),
                                label: None,
                            });
                        }
                        if outputs.flow_log.is_some() {
                            to_log.push(f);
                        }
                    }
                }
            }
            if outputs.keep_scores {
                scored.push(ScoredFlow { rec: *rec, score, alerted: wrote_alert });
            }
            if let Some(w) = outputs.flows.as_mut()
                && error.is_none()
            {
                cells.clear();
                cells.extend_from_slice(&batch.cells[i * n_cells..(i + 1) * n_cells]);
                cells.push(Cell::Num(score as f64));
                cells.push(Cell::Count(wrote_alert as u64));
                if let Err(e) = w.write(&cells) {
                    error = Some(format!("writing flows: {e}"));
                }
            }
        }
        if error.is_none()
            && let Err(e) = outputs.alerts.flush()
        {
            error = Some(format!("writing alerts: {e}"));
        }
        if let Some((log, _)) = outputs.flow_log.as_mut()
            && !to_log.is_empty()
            && error.is_none()
        {
            // One fsync per batch; the alerts above are already written.
            if let Err(e) = log.append_all(&to_log) {
                error = Some(format!("recording alerted flows: {e}"));
            } else if log.len_bytes() > outputs.flow_log_max_bytes
                && let Err(e) = log.rotate()
            {
                error = Some(format!("rotating the record of alerted flows: {e}"));
            }
        }
        to_log.clear();
        if let Some(store) = outputs.weak_labels.as_mut()
            && !indicated.is_empty()
            && error.is_none()
            && let Err(e) = store.add_all(std::mem::take(&mut indicated))
        {
            error = Some(format!("storing indicator labels: {e}"));
        }
        indicated.clear();
        if let Some(feed) = links.feed {
            feed.push_recent(&batch.recs, &batch.rows, &batch.scores);
        }
        if let Some(tx) = &links.learn {
            let t = batch.recs.last().map(|r| r.last_ts.as_secs_f64() as i64).unwrap_or(0);
            if tx.try_send(Sample { t, rows: batch.rows.clone() }).is_err() {
                metrics.learn_rows_skipped.fetch_add(batch.len() as u64, Relaxed);
            }
        }
        let now = Instant::now();
        lat.clear();
        lat_flush.clear();
        for (r, t) in batch.recs.iter().zip(&batch.at) {
            let us = now.saturating_duration_since(*t).as_micros() as u64;
            if r.end_reason == EndReason::EndOfInput { lat_flush.push(us) } else { lat.push(us) }
        }
        metrics.record_latencies(&lat, &lat_flush);
        metrics.alerts.fetch_add(alerts, Relaxed);
        metrics.suppressed.fetch_add(suppressed, Relaxed);
        metrics.indicator_alerts.fetch_add(by_indicator, Relaxed);
        drop(scoring);
        batch.clear();
        let _ = free.try_send(batch);
        busy += t0.elapsed();
    }
    metrics.busy(Stage::Output, busy);
    (outputs.flows, outputs.alerts, WriterResult { rules: outputs.rules, error, scored })
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

/// Runs `source` through the pipeline until it ends or `stop` is set; returns when every
/// stage has drained and the outputs are flushed.
#[allow(clippy::too_many_arguments)] // the pipeline's parts, each owned by a different caller
pub fn run(
    source: &mut dyn PacketSource,
    setup: Setup<'_>,
    extractor: Box<dyn RecordExtractor>,
    slot: &ModelSlot<Scoring>,
    outputs: Outputs,
    loop_links: LoopLinks<'_>,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> StreamReport {
    let cfg = setup.stream;
    let n = cfg.workers.max(1);
    let policy = cfg.backpressure.unwrap_or(setup.default_backpressure);
    let q = cfg.queue_batches.max(1);
    let width = RowEncoder::new(extractor.schema()).width();
    let n_cells = extractor.columns().len();
    let keep_cells = outputs.flows.is_some();
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
    let mut links = Vec::with_capacity(n);
    let mut worker_rx = Vec::with_capacity(n);
    for _ in 0..n {
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
        let workers: Vec<_> = worker_rx
            .into_iter()
            .enumerate()
            .map(|(w, rx)| {
                let table = FlowTable::with_ids(per_worker.clone(), w as u64, n as u64);
                let free = free_pkt_tx.clone();
                let out = flow_tx.clone();
                std::thread::Builder::new()
                    .name(format!("mnpflow-flow-{w}"))
                    .spawn_scoped(s, move || flow_worker(w, table, rx, free, out, policy, metrics))
                    .expect("spawning a flow worker")
            })
            .collect();
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
                    n_cells,
                    community_seed,
                    scored_rx,
                    free_row_tx,
                    metrics,
                )
            })
            .expect("spawning the writer");

        let cap = Capture {
            links,
            free: free_pkt_rx,
            policy,
            batch_size: cfg.packet_batch.max(1),
            metrics,
        };
        let (decode_stats, interrupted) =
            capture_stage(source, cap, &sharder, setup.flow, setup.speed, cfg.tick, stop, metrics);
        report.decode = decode_stats;
        report.interrupted = interrupted;
        for w in workers {
            let st = w.join().expect("a flow worker panicked");
            report.worker_flows.push(st.exported_total());
            report.flow.merge(&st);
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
    // Each worker counted the resets it was told of; the stream had them once.
    report.flow.clock_resets /= n as u64;
    let file_stats = source.file_stats();
    report.file = file_stats;
    report.warnings = source.take_warnings();
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

    #[test]
    fn clock_rule_matches_the_flow_table() {
        let mut c = None;
        let r = 300_000_000_000;
        assert!(!advance_clock(&mut c, Timestamp(1000), r));
        assert!(!advance_clock(&mut c, Timestamp(500), r));
        assert_eq!(c, Some(Timestamp(1000)));
        assert!(!advance_clock(&mut c, Timestamp(400_000_000_000), r));
        assert!(advance_clock(&mut c, Timestamp(1), r));
        assert_eq!(c, Some(Timestamp(1)));
    }
}
