//! What the stages hand each other: packet batches (capture -> flow worker), flow batches
//! (flow workers -> features), row batches (features -> scorer -> writer), and the send that
//! applies the back-pressure policy to them. Emptied packet and row batches travel back on
//! their own queues to be filled again.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};

use super::{Backpressure, Scoring};
use crate::alert::Explanation;
use crate::capture::Timestamp;
use crate::decode::PacketMeta;
use crate::features::Cell;
use crate::flow::{FlowRecord, StreamTime};

/// A packet the capture stage decoded: the flow worker takes the decoded fields as they are
/// (no second decode) and its payload from the batch's arena.
#[derive(Debug, Clone, Copy)]
pub(super) struct PktRef {
    /// The decoded packet, its payload left out (empty; [`PacketMeta::detached`]).
    pub(super) meta: PacketMeta<'static>,
    /// The stream's capture clock after this packet.
    pub(super) clock: Timestamp,
    /// The payload's place in the arena.
    pub(super) start: u32,
    pub(super) len: u32,
}

/// Packets for one worker: decoded fields, their payloads copied into one arena (headers are
/// not copied: the flow table reads only the decoded fields and the payload).
#[derive(Debug, Default)]
pub(super) struct PacketBatch {
    pub(super) data: Vec<u8>,
    pub(super) pkts: Vec<PktRef>,
    /// Restart the flow clock this many times before these packets (the stream's clock jumped
    /// back; a worker that got no packets between two jumps is told of both, so that every
    /// worker counts the same clock epochs).
    pub(super) resets: u32,
    /// The stream's clock when the batch was sent: the worker expires flows up to it.
    pub(super) clock: Option<Timestamp>,
}

impl PacketBatch {
    pub(super) fn clear(&mut self) {
        self.data.clear();
        self.pkts.clear();
        self.resets = 0;
        self.clock = None;
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Exported {
    pub(super) rec: FlowRecord,
    pub(super) at: Instant,
}

/// Ended flows from one worker, with the worker's low mark after them: it will export nothing
/// that sorts before `mark` ([`FlowTable::low_mark`]; [`StreamTime::MAX`] when it has ended).
/// Sent also with no flows when the mark moves, so that a quiet worker holds nobody back.
///
/// [`FlowTable::low_mark`]: crate::flow::FlowTable::low_mark
pub(super) struct FlowBatch {
    pub(super) worker: usize,
    pub(super) flows: Vec<Exported>,
    pub(super) mark: StreamTime,
}

/// Rows on their way to the scorer and the writer.
#[derive(Default)]
pub(super) struct RowBatch {
    pub(super) recs: Vec<FlowRecord>,
    pub(super) at: Vec<Instant>,
    /// Encoded rows, schema width.
    pub(super) rows: Vec<f32>,
    /// Every column's cell per row, only when every flow is written.
    pub(super) cells: Vec<Cell>,
    pub(super) scores: Vec<f32>,
    pub(super) why: Vec<Explanation>,
    /// Each row's alert cut ([`crate::alert::ThresholdCalibrator::calibrate`]).
    pub(super) cuts: Vec<f32>,
    /// The model that scored this batch.
    pub(super) model: Option<Arc<Scoring>>,
    /// The alert rate its threshold aims at (none for a fixed score), for the page.
    pub(super) target_rate: Option<crate::feedback::summary::TargetRate>,
}

impl RowBatch {
    pub(super) fn len(&self) -> usize {
        self.recs.len()
    }
    pub(super) fn clear(&mut self) {
        self.recs.clear();
        self.at.clear();
        self.rows.clear();
        self.cells.clear();
        self.scores.clear();
        self.why.clear();
        self.cuts.clear();
        self.model = None;
        self.target_rate = None;
    }
}

/// Sends by the policy; returns false when the batch was dropped (and hands it back).
pub(super) fn send_or_drop<T>(
    tx: &Sender<T>,
    item: T,
    policy: Backpressure,
) -> Result<(), Option<T>> {
    match policy {
        Backpressure::Block => tx.send(item).map_err(|_| None),
        Backpressure::Drop => match tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(item)) => Err(Some(item)),
            Err(TrySendError::Disconnected(_)) => Err(None),
        },
    }
}
