//! Capture files to flow records on the calling thread.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::capture::file::FileStats;
use crate::capture::{CaptureError, CaptureFile};
use crate::decode::{DecodeError, DecodeStats, decode};
use crate::features::encode::{EncodeStats, RowEncoder};
use crate::flow::order::ReorderStats;
use crate::flow::{EndReason, FlowConfig, FlowRecord, FlowStats, FlowTable, OrderKey, Reorder};

/// What a run saw.
#[derive(Debug, Clone, Default)]
pub struct OfflineStats {
    pub files: usize,
    /// Frames read and their wire bytes.
    pub packets: u64,
    pub wire_bytes: u64,
    pub file: FileStats,
    pub decode: DecodeStats,
    pub flow: FlowStats,
    pub order: ReorderStats,
    /// Files that ended early or were corrupt part-way: everything before the problem was used.
    pub warnings: Vec<String>,
    pub elapsed: Duration,
}

impl OfflineStats {
    /// A human summary, several lines.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "input     {} file(s), {} packets, {} bytes in {:.3} s ({:.0} packets/s)\n",
            self.files,
            self.packets,
            self.wire_bytes,
            secs,
            self.packets as f64 / secs
        );
        let skipped: Vec<String> = DecodeError::ALL
            .iter()
            .filter(|e| self.decode.errors[e.index()] > 0)
            .map(|e| format!("{} {}", e.name(), self.decode.errors[e.index()]))
            .collect();
        s += &format!(
            "decoded   {} packets ({} tunneled); skipped {}{}\n",
            self.decode.decoded,
            self.decode.tunneled,
            self.decode.skipped() + self.flow.orphan_fragments,
            if skipped.is_empty() && self.flow.orphan_fragments == 0 {
                String::new()
            } else {
                let mut all = skipped;
                if self.flow.orphan_fragments > 0 {
                    all.push(format!("orphan_fragment {}", self.flow.orphan_fragments));
                }
                format!(": {}", all.join(", "))
            }
        );
        let reasons: Vec<String> = EndReason::ALL
            .iter()
            .filter(|r| self.flow.exported[**r as usize] > 0)
            .map(|r| format!("{} {}", r.as_str(), self.flow.exported[*r as usize]))
            .collect();
        s += &format!(
            "flows     {} exported ({}); peak {} live, {} bytes per flow\n",
            self.flow.exported_total(),
            reasons.join(", "),
            self.flow.peak_flows,
            FlowTable::bytes_per_flow()
        );
        s += &format!(
            "time      {} packets older than the clock, {} clock resets\n",
            self.flow.time_backwards, self.flow.clock_resets
        );
        if self.flow.fragments_joined_late + self.flow.orphan_fragments > 0 {
            s += &format!(
                "fragments {} arrived before their first fragment and joined its flow, {} orphans (first fragment never seen)\n",
                self.flow.fragments_joined_late, self.flow.orphan_fragments
            );
        }
        if self.file.caplen_over_wirelen > 0 {
            s += &format!(
                "oddities  {} records with captured length above wire length\n",
                self.file.caplen_over_wirelen
            );
        }
        if self.order.released_early + self.order.late > 0 {
            s += &format!(
                "order     {} records released before their turn ([flow] max_held_records reached, {} held at peak), {} behind one already released: their ct_* counts may differ from an unhurried run\n",
                self.order.released_early, self.order.peak_held, self.order.late
            );
        }
        for w in &self.warnings {
            s += &format!("warning   {w}\n");
        }
        s
    }
}

/// Reads `paths` in order through one flow table, handing every exported flow to `on_flow` in
/// window order ([`crate::flow::order`]), the order the streaming pipeline releases them in for
/// any number of workers. A file that cannot be opened is an error; a file that breaks
/// part-way is a warning (the packets before the break count).
pub fn run_files(
    paths: &[PathBuf],
    config: &FlowConfig,
    on_flow: impl FnMut(&FlowRecord),
) -> Result<OfflineStats, CaptureError> {
    run_captures(paths.iter().map(CaptureFile::open), config, on_flow)
}

/// [`run_files`] over captures already opened, or opened as they are reached (a capture
/// made in memory, such as the generator's attack library, needs no file).
pub fn run_captures(
    captures: impl IntoIterator<Item = Result<CaptureFile, CaptureError>>,
    config: &FlowConfig,
    mut on_flow: impl FnMut(&FlowRecord),
) -> Result<OfflineStats, CaptureError> {
    let start = Instant::now();
    let mut stats = OfflineStats::default();
    let mut table = FlowTable::new(config.clone());
    let mut order: Reorder<FlowRecord> = Reorder::new(1, config.max_held_records);
    for file in captures {
        let mut file = file?;
        stats.files += 1;
        loop {
            match file.next_packet() {
                Ok(Some(raw)) => {
                    stats.packets += 1;
                    stats.wire_bytes += raw.wire_len as u64;
                    let decoded = decode(&raw);
                    stats.decode.record(&decoded);
                    if let Ok(meta) = decoded {
                        table.process(&meta, &mut |r| order.push(OrderKey::of(r), *r));
                        release_ready(&table, &mut order, &mut on_flow);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    stats.warnings.push(e.to_string());
                    break;
                }
            }
        }
        let fs = file.stats();
        stats.file.packets += fs.packets;
        stats.file.caplen_over_wirelen += fs.caplen_over_wirelen;
        stats.file.other_blocks += fs.other_blocks;
    }
    table.flush(EndReason::EndOfInput, &mut |r| order.push(OrderKey::of(r), *r));
    while let Some(r) = order.pop_any() {
        on_flow(&r);
    }
    stats.flow = table.stats();
    stats.order = order.stats();
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Every flow of `captures` as a row of `kind`'s model input (encoded, unscaled), in window
/// order: `on_row` gets each record with its row. The rows `train` learns from when the sensor
/// trains on a capture, made as the streaming features stage makes the rows it scores.
pub fn encoded_rows(
    captures: impl IntoIterator<Item = Result<CaptureFile, CaptureError>>,
    kind: crate::features::SchemaKind,
    config: &FlowConfig,
    mut on_row: impl FnMut(&FlowRecord, &[f32]),
) -> Result<OfflineStats, CaptureError> {
    let mut rows = RowMaker::new(kind);
    run_captures(captures, &config.for_cut(kind.cut_policy()), |rec| on_row(rec, rows.row(rec)))
}

/// Hands `on_flow` the records the window order holds up to the table's low mark, in order:
/// after each packet, as the streaming pipeline releases them.
pub fn release_ready(
    table: &FlowTable,
    order: &mut Reorder<FlowRecord>,
    on_flow: &mut impl FnMut(&FlowRecord),
) {
    if !order.is_empty() {
        order.advance(0, table.low_mark());
        order.drain_ready(|r| on_flow(r));
    }
}

/// Flow records made into `kind`'s model rows (encoded, unscaled), as the streaming features
/// stage makes the rows it scores.
pub struct RowMaker {
    extractor: Box<dyn crate::features::RecordExtractor>,
    encoder: RowEncoder,
    columns: Vec<crate::features::Column>,
    cells: Vec<crate::features::Cell>,
    row: Vec<f32>,
    stats: EncodeStats,
}

impl RowMaker {
    pub fn new(kind: crate::features::SchemaKind) -> RowMaker {
        // Rows only: the uid and community ID (and so its seed) are not model inputs.
        let mut extractor = crate::features::extractor(kind, 0);
        extractor.write_identity_text(false);
        let encoder = RowEncoder::new(extractor.schema());
        let columns = extractor.columns().to_vec();
        let row = vec![0.0; encoder.width()];
        RowMaker {
            extractor,
            encoder,
            columns,
            cells: Vec::new(),
            row,
            stats: EncodeStats::default(),
        }
    }

    /// `rec`'s row, valid until the next call.
    pub fn row(&mut self, rec: &FlowRecord) -> &[f32] {
        self.extractor.extract(rec, &mut self.cells);
        self.encoder.encode(&self.columns, &self.cells, &mut self.row, &mut self.stats);
        &self.row
    }
}
