//! A flow worker that captures for itself: one source's packets (a `PACKET_FANOUT` socket,
//! [`crate::capture::fanout`]) decoded and put into one flow table, in one thread. The kernel
//! has sharded the packets already, so no reader stands between the interface and the
//! workers and no packet is copied on its way to the flow table.
//!
//! Each worker keeps its own flow clock: its packets' times, and on a quiet socket the wall
//! clock less a second (as the shared capture stage does for a live interface). Ended flows
//! leave with the worker's low mark, as from [`super::flow_worker`], so the features stage puts
//! every worker's flows in one window order.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::Backpressure;
use super::batch::{Exported, FlowBatch};
use super::capture::LIVE_CLOCK_SLACK_NS;
use super::flow_worker::Exports;
use crate::capture::Timestamp;
use crate::capture::source::{Next, PacketSource};
use crate::decode::{DecodeStats, decode};
use crate::flow::{EndReason, FlowRecord, FlowStats, FlowTable, StreamTime};
use crate::pipeline::metrics::{Metrics, Stage};

/// Packets between two looks at the counters, the tick and the stop flag.
const CHECK_EVERY: u32 = 256;
/// Ended flows sent on as soon as this many wait (else on the tick).
const SEND_AT: usize = 512;
/// How often a busy socket's kernel drop counter is read (a quiet one: whenever it waits), so
/// that the metrics show drops while they happen, when the socket never goes quiet.
const DROPS_EVERY: Duration = Duration::from_millis(100);

/// What a capture worker hands back when its source ends or the stop flag is set.
pub(super) struct CaptureWorkerEnd {
    pub(super) flow: FlowStats,
    pub(super) decode: DecodeStats,
    pub(super) interrupted: bool,
    pub(super) warnings: Vec<String>,
}

#[allow(clippy::too_many_arguments)] // a stage's source, channel end, clock and counters, wired once in `run`
pub(super) fn capture_worker(
    worker: usize,
    mut table: FlowTable,
    mut source: Box<dyn PacketSource + '_>,
    out: Sender<FlowBatch>,
    policy: Backpressure,
    tick: Duration,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> CaptureWorkerEnd {
    let mut pending: Vec<Exported> = Vec::new();
    let mut exports = Exports::new(worker, out, policy);
    let mut decode_stats = DecodeStats::default();
    let mut busy = Duration::ZERO;
    let mut busy_from = Instant::now();
    let mut last_tick = Instant::now();
    let mut last_drops = Instant::now();
    // Counted here, added to the shared counters every CHECK_EVERY packets.
    let (mut read, mut bytes, mut skipped) = (0u64, 0u64, 0u64);
    let mut since_check = 0u32;
    let mut interrupted = false;
    let publish = |read: &mut u64, bytes: &mut u64, skipped: &mut u64| {
        metrics.packets_flowed.fetch_add(*read - *skipped, Relaxed);
        metrics.packets_read.fetch_add(std::mem::take(read), Relaxed);
        metrics.bytes_read.fetch_add(std::mem::take(bytes), Relaxed);
        metrics.packets_skipped.fetch_add(std::mem::take(skipped), Relaxed);
    };
    loop {
        let mut sink = |r: &FlowRecord| pending.push(Exported { rec: *r, at: Instant::now() });
        match source.next_packet() {
            Next::Packet(raw) => {
                read += 1;
                bytes += raw.wire_len as u64;
                let decoded = decode(&raw);
                decode_stats.record(&decoded);
                match decoded {
                    Ok(meta) => table.process(&meta, &mut sink),
                    Err(_) => skipped += 1,
                }
                since_check += 1;
                if since_check < CHECK_EVERY && pending.len() < SEND_AT {
                    continue;
                }
                since_check = 0;
                publish(&mut read, &mut bytes, &mut skipped);
                if pending.len() >= SEND_AT || last_tick.elapsed() >= tick {
                    exports.send(&mut pending, table.low_mark(), metrics);
                    last_tick = Instant::now();
                    if last_tick.duration_since(last_drops) >= DROPS_EVERY {
                        metrics.socket_drops(worker, source.drops());
                        last_drops = last_tick;
                    }
                }
            }
            Next::Idle => {
                // The source waited inside next_packet: idle time, not work.
                busy += busy_from.elapsed().saturating_sub(source.take_waited());
                // The wall clock, less a second: packets reach us a little after the kernel
                // stamped them, and a clock ahead of them would count them as reordered.
                let now = Timestamp::wall_now().add_nanos(-LIVE_CLOCK_SLACK_NS);
                table.advance_to(now, &mut sink);
                publish(&mut read, &mut bytes, &mut skipped);
                exports.send(&mut pending, table.low_mark(), metrics);
                last_tick = Instant::now();
                metrics.socket_drops(worker, source.drops());
                busy_from = Instant::now();
            }
            Next::End => break,
        }
        if stop.load(Relaxed) {
            interrupted = true;
            break;
        }
    }
    publish(&mut read, &mut bytes, &mut skipped);
    metrics.socket_drops(worker, source.drops());
    table.flush(EndReason::EndOfInput, &mut |r: &FlowRecord| {
        pending.push(Exported { rec: *r, at: Instant::now() })
    });
    exports.send(&mut pending, StreamTime::MAX, metrics);
    busy += busy_from.elapsed().saturating_sub(source.take_waited());
    metrics.busy(Stage::Flow, busy);
    CaptureWorkerEnd {
        flow: table.stats(),
        decode: decode_stats,
        interrupted,
        warnings: source.take_warnings(),
    }
}
