//! The capture stage: the one reader of the source. It decodes each frame to find its flow
//! worker (the symmetric shard hash, `pipeline::shard`), keeps the stream's one capture clock
//! (it decides clock resets for every worker, and on a live interface moves the clock on the
//! wall clock while no packet arrives), keeps the replay pace (`--speed`), and puts each
//! packet's decoded fields and a copy of its payload into its worker's packet batch (the
//! worker does not decode again; headers are not copied), handed on when full and on every
//! tick.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::batch::{PacketBatch, PktRef, send_or_drop};
use super::{Backpressure, Speed};
use crate::capture::Timestamp;
use crate::capture::source::{Next, PacketSource};
use crate::decode::{DecodeStats, decode};
use crate::flow::FlowConfig;
use crate::pipeline::metrics::{Metrics, Queue, Stage};
use crate::pipeline::shard::Sharder;

pub(super) struct WorkerLink {
    pub(super) tx: Sender<PacketBatch>,
    pub(super) current: PacketBatch,
    pub(super) last_sent_clock: Option<Timestamp>,
}

pub(super) struct Capture<'a> {
    pub(super) links: Vec<WorkerLink>,
    pub(super) free: Receiver<PacketBatch>,
    pub(super) policy: Backpressure,
    pub(super) batch_size: usize,
    pub(super) metrics: &'a Metrics,
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
///
/// [`FlowTable::process`]: crate::flow::FlowTable::process
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
pub(super) const LIVE_CLOCK_SLACK_NS: i64 = 1_000_000_000;

#[allow(clippy::too_many_arguments)] // a stage's channel ends, clock and counters, wired once in `run`
pub(super) fn capture_stage(
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
                busy += busy_from.elapsed().saturating_sub(source.take_waited());
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
        link.current.data.extend_from_slice(meta.payload);
        link.current.pkts.push(PktRef {
            meta: meta.detached(),
            clock: now_clock,
            start: start as u32,
            len: meta.payload.len() as u32,
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
    busy += busy_from.elapsed().saturating_sub(source.take_waited());
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

#[cfg(test)]
mod tests {
    use super::*;

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
