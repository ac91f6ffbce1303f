//! A flow worker: owns one flow table, with the flows the shard hash gives it, and turns the
//! packet batches the capture stage sends it into ended flows. Each batch of ended flows
//! carries the worker's low mark, so that the features stage can put every worker's flows back
//! in one order. `StreamConfig::workers` of them run, one thread each.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::Backpressure;
use super::batch::{Exported, FlowBatch, PacketBatch, send_or_drop};
use crate::flow::{EndReason, FlowRecord, FlowStats, FlowTable, StreamTime};
use crate::pipeline::metrics::{Metrics, Queue, Stage};

#[allow(clippy::too_many_arguments)] // a stage's channel ends, clock and counters, wired once in `run`
pub(super) fn flow_worker(
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
    let mut exports = Exports::new(worker, out, policy);
    for mut batch in rx.iter() {
        let t0 = Instant::now();
        {
            let mut sink = |r: &FlowRecord| pending.push(Exported { rec: *r, at: Instant::now() });
            for _ in 0..batch.resets {
                table.restart_clock(&mut sink);
            }
            for p in &batch.pkts {
                let mut meta = p.meta;
                meta.payload = &batch.data[p.start as usize..(p.start + p.len) as usize];
                if p.clock > meta.ts {
                    table.advance_to(p.clock, &mut sink);
                }
                table.process(&meta, &mut sink);
            }
            if let Some(c) = batch.clock {
                table.advance_to(c, &mut sink);
            }
        }
        metrics.packets_flowed.fetch_add(batch.pkts.len() as u64, Relaxed);
        batch.clear();
        let _ = free.try_send(batch);
        busy += t0.elapsed();
        exports.send(&mut pending, table.low_mark(), metrics);
    }
    let t0 = Instant::now();
    table.flush(EndReason::EndOfInput, &mut |r: &FlowRecord| {
        pending.push(Exported { rec: *r, at: Instant::now() })
    });
    busy += t0.elapsed();
    exports.send(&mut pending, StreamTime::MAX, metrics);
    metrics.busy(Stage::Flow, busy);
    table.stats()
}

/// A worker's end of the queue to the features stage: sends its ended flows with its low
/// mark, by the back-pressure policy.
pub(super) struct Exports {
    worker: usize,
    out: Sender<FlowBatch>,
    policy: Backpressure,
    sent_mark: StreamTime,
}

impl Exports {
    pub(super) fn new(worker: usize, out: Sender<FlowBatch>, policy: Backpressure) -> Exports {
        Exports { worker, out, policy, sent_mark: StreamTime::MIN }
    }

    /// Sends `pending` (emptied) with `mark`; nothing when there are no flows and the mark
    /// has not moved.
    pub(super) fn send(
        &mut self,
        pending: &mut Vec<Exported>,
        mark: StreamTime,
        metrics: &Metrics,
    ) {
        if pending.is_empty() && mark <= self.sent_mark {
            return;
        }
        let flows = std::mem::take(pending);
        let n = flows.len() as u64;
        metrics.flows_exported.fetch_add(n, Relaxed);
        // A dropped batch loses its mark too; the next one carries a later mark.
        match send_or_drop(&self.out, FlowBatch { worker: self.worker, flows, mark }, self.policy) {
            Ok(()) => {
                self.sent_mark = mark;
                metrics.queue_len(Queue::Flows, self.out.len());
            }
            Err(Some(_)) => {
                metrics.dropped_flows.fetch_add(n, Relaxed);
            }
            Err(None) => {}
        }
    }
}
