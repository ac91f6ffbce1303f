//! The features stage and batcher: puts the workers' ended flows back in one window order,
//! extracts each flow's features (the `ct_*` windows are kept here, in that order) and encodes
//! them into row batches for the scorer, closed at `batch_rows` rows or `batch_deadline` after
//! their first row.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::batch::{Exported, FlowBatch, RowBatch};
use crate::features::RecordExtractor;
use crate::features::encode::{EncodeStats, RowEncoder};
use crate::flow::order::ReorderStats;
use crate::flow::{OrderKey, Reorder};
use crate::pipeline::metrics::{Metrics, Queue, Stage};

/// Puts the workers' ended flows back in window order ([`crate::flow::order`]), then extracts
/// and encodes them into scorer batches. Everything downstream (the `ct_*` window here, the
/// threshold calibrator, the reservoir, the output files) sees that one order, whatever the
/// number of workers and however their threads ran.
#[allow(clippy::too_many_arguments)] // a stage's channel ends, clock and counters, wired once in `run`
pub(super) fn features_stage(
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
    // Rows kept only for the model (no flow records written): no uid or community ID text.
    extractor.write_identity_text(keep_cells);
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
