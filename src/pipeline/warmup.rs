//! Live cold start: a sensor with no model learns the network before it scores it.
//!
//! `mnpflow replay` with no model trains on the capture it was given, because the capture is
//! all there. `mnpflow live` has nothing yet: it records the interface's first packets
//! ([`record`]) until it has seen enough flows to learn what this network's traffic looks
//! like (the `[bootstrap] warmup_*` limits), trains on those flows as replay would on a
//! capture with no labels (cold start: against the generator's attack library), and then
//! runs the streaming detector on the recording followed by the interface ([`Replayed`]): the
//! warm-up's flows are scored like every later one, in order, with their `ct_*` windows
//! intact, and nothing the interface delivered is skipped. The kernel's capture buffer holds
//! what arrives while the model trains (seconds); what it cannot hold is counted as kernel
//! drops in the summary, as at any other time.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::capture::source::{Next, PacketSource, SourceDrops};
use crate::capture::{LinkType, RawPacket, Timestamp};
use crate::decode::decode;
use crate::features::SchemaKind;
use crate::flow::{EndReason, FlowConfig, FlowRecord, FlowTable, OrderKey, Reorder};
use crate::pipeline::offline::{RowMaker, release_ready};

/// How long the warm-up lasts: whichever limit comes first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupLimits {
    /// Flows to learn from.
    pub flows: usize,
    /// Wall-clock time at most (a quiet network may never reach `flows`).
    pub time: Duration,
    /// Packet bytes kept at most (the recording is replayed, so it is held in memory).
    pub bytes: usize,
}

/// Why the warm-up stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmupEnd {
    /// It saw `flows` flows end.
    Flows,
    /// Its time ran out.
    Time,
    /// The recording reached its byte limit.
    Bytes,
    /// The source ended (a capture file, or the interface went away).
    SourceEnded,
    /// Ctrl-C.
    Interrupted,
}

/// One recorded packet; its bytes are `data[start..start + len]` of the [`Recording`].
#[derive(Debug, Clone, Copy)]
struct Recorded {
    ts: Timestamp,
    link: LinkType,
    wire_len: u32,
    start: usize,
    len: u32,
    /// The part of the source it came from ([`PacketSource::origin`]).
    origin: u16,
}

/// The packets read during the warm-up, in order, to be replayed into the detector.
#[derive(Debug, Default)]
pub struct Recording {
    data: Vec<u8>,
    packets: Vec<Recorded>,
}

impl Recording {
    pub fn packets(&self) -> usize {
        self.packets.len()
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The recording as `n` recordings, one per origin (a fanout socket), each in its order:
    /// what each flow worker replays before it reads its own socket.
    pub fn split(self, n: usize) -> Vec<Recording> {
        let mut parts: Vec<Recording> = (0..n.max(1)).map(|_| Recording::default()).collect();
        for p in &self.packets {
            let part = &mut parts[(p.origin as usize).min(n.max(1) - 1)];
            let start = part.data.len();
            part.data.extend_from_slice(&self.data[p.start..p.start + p.len as usize]);
            part.packets.push(Recorded { start, ..*p });
        }
        parts
    }
}

/// What the warm-up saw.
#[derive(Debug)]
pub struct Warmup {
    pub recording: Recording,
    /// One encoded (unscaled) model row per flow, `width` values each: the flows that ended
    /// during the warm-up, then those still open at its end (cut there, as at the end of a
    /// capture).
    pub rows: Vec<f32>,
    pub flows: usize,
    pub ended_by: WarmupEnd,
    pub elapsed: Duration,
}

/// Reads `source` until a limit of `limits` is reached or `stop` is set, keeping every packet
/// and turning the flows into `kind`'s model rows, as [`super::offline::encoded_rows`] does
/// for a capture. `progress` hears the flows so far now and then (about once a second).
pub fn record(
    source: &mut dyn PacketSource,
    kind: SchemaKind,
    flow: &FlowConfig,
    limits: &WarmupLimits,
    stop: &AtomicBool,
    mut progress: impl FnMut(usize, Duration),
) -> Warmup {
    let started = Instant::now();
    let mut recording = Recording::default();
    // The vocabulary's cut rules, as the detector will cut these flows again.
    let flow = &flow.for_cut(kind.cut_policy());
    let mut table = FlowTable::new(flow.clone());
    let mut order: Reorder<FlowRecord> = Reorder::new(1, flow.max_held_records);
    let mut to_row = Rows::new(kind);
    let mut last_progress = Instant::now();
    let ended_by = loop {
        if stop.load(Ordering::Relaxed) {
            break WarmupEnd::Interrupted;
        }
        if started.elapsed() >= limits.time {
            break WarmupEnd::Time;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            progress(to_row.flows, started.elapsed());
            last_progress = Instant::now();
        }
        let mut kept = false;
        let step = match source.next_packet() {
            Next::Packet(raw) => {
                kept = true;
                // A packet read is kept, whatever the limit: it is lost otherwise. The limit
                // is passed by one packet at most.
                keep(&mut recording, &raw);
                feed(&mut table, &mut order, &raw, &mut to_row);
                if recording.data.len() >= limits.bytes {
                    ControlFlow::Break(WarmupEnd::Bytes)
                } else {
                    ControlFlow::Continue(())
                }
            }
            Next::Idle => {
                // A quiet network: flows time out on the wall clock, as in the detector.
                if source.is_live() {
                    let now = Timestamp::wall_now().add_nanos(-1_000_000_000);
                    if table.clock().is_some_and(|c| now > c) {
                        table.advance_to(now, &mut |r| order.push(OrderKey::of(r), *r));
                        release_ready(&table, &mut order, &mut |r| to_row.add(r));
                    }
                }
                ControlFlow::Continue(())
            }
            Next::End => ControlFlow::Break(WarmupEnd::SourceEnded),
        };
        // Where the packet came from, asked once the packet's borrow of the source has ended.
        if kept && let Some(p) = recording.packets.last_mut() {
            p.origin = u16::try_from(source.origin()).unwrap_or(u16::MAX);
        }
        if let ControlFlow::Break(end) = step {
            break end;
        }
        if to_row.flows >= limits.flows {
            break WarmupEnd::Flows;
        }
    };
    // The flows still open become rows as they stand: training needs no final record, and the
    // detector sees their packets again from the recording.
    table.flush(EndReason::EndOfInput, &mut |r| order.push(OrderKey::of(r), *r));
    while let Some(r) = order.pop_any() {
        to_row.add(&r);
    }
    Warmup {
        recording,
        rows: to_row.rows,
        flows: to_row.flows,
        ended_by,
        elapsed: started.elapsed(),
    }
}

/// The warm-up's flows as model rows.
struct Rows {
    maker: RowMaker,
    rows: Vec<f32>,
    flows: usize,
}

impl Rows {
    fn new(kind: SchemaKind) -> Rows {
        Rows { maker: RowMaker::new(kind), rows: Vec::new(), flows: 0 }
    }

    fn add(&mut self, rec: &FlowRecord) {
        self.rows.extend_from_slice(self.maker.row(rec));
        self.flows += 1;
    }
}

fn keep(recording: &mut Recording, raw: &RawPacket<'_>) {
    let start = recording.data.len();
    recording.data.extend_from_slice(raw.data);
    recording.packets.push(Recorded {
        ts: raw.ts,
        link: raw.link,
        wire_len: raw.wire_len,
        start,
        len: raw.data.len() as u32,
        origin: 0,
    });
}

fn feed(
    table: &mut FlowTable,
    order: &mut Reorder<FlowRecord>,
    raw: &RawPacket<'_>,
    to_row: &mut Rows,
) {
    if let Ok(meta) = decode(raw) {
        table.process(&meta, &mut |r| order.push(OrderKey::of(r), *r));
        release_ready(table, order, &mut |r| to_row.add(r));
    }
}

/// The warm-up's recording, then the source it was recorded from: what the detector reads
/// after a cold start.
pub struct Replayed<'a> {
    recording: Recording,
    next: usize,
    then: &'a mut dyn PacketSource,
}

impl<'a> Replayed<'a> {
    pub fn new(recording: Recording, then: &'a mut dyn PacketSource) -> Replayed<'a> {
        Replayed { recording, next: 0, then }
    }
}

impl PacketSource for Replayed<'_> {
    fn next_packet(&mut self) -> Next<'_> {
        if let Some(p) = self.recording.packets.get(self.next) {
            self.next += 1;
            return Next::Packet(RawPacket {
                ts: p.ts,
                link: p.link,
                wire_len: p.wire_len,
                data: &self.recording.data[p.start..p.start + p.len as usize],
            });
        }
        if self.next > 0 {
            // Replayed: hold on to none of it (the last packet's borrow has ended).
            self.recording = Recording::default();
            self.next = 0;
        }
        self.then.next_packet()
    }

    fn is_live(&self) -> bool {
        self.then.is_live()
    }

    fn take_waited(&mut self) -> std::time::Duration {
        self.then.take_waited()
    }

    fn drops(&mut self) -> SourceDrops {
        self.then.drops()
    }

    fn take_warnings(&mut self) -> Vec<String> {
        self.then.take_warnings()
    }

    fn file_stats(&self) -> crate::capture::file::FileStats {
        self.then.file_stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::source::FileSource;

    fn demo() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/demo.pcap")
    }

    fn count_packets(source: &mut dyn PacketSource) -> Vec<(Timestamp, u32, usize)> {
        let mut out = Vec::new();
        loop {
            match source.next_packet() {
                Next::Packet(p) => out.push((p.ts, p.wire_len, p.data.len())),
                Next::Idle => continue,
                Next::End => return out,
            }
        }
    }

    /// The warm-up stops at its flow limit with a row per flow, and the detector then reads
    /// every packet of the source exactly once: the recording, then the rest, in order.
    #[test]
    fn records_then_replays_every_packet_once() {
        let all = count_packets(&mut FileSource::open(&[demo()]).unwrap());
        let mut source = FileSource::open(&[demo()]).unwrap();
        let flow = FlowConfig::default();
        let limits = WarmupLimits { flows: 200, time: Duration::from_secs(600), bytes: 64 << 20 };
        let stop = AtomicBool::new(false);
        let w = record(&mut source, SchemaKind::Unsw, &flow, &limits, &stop, |_, _| {});
        assert_eq!(w.ended_by, WarmupEnd::Flows);
        let width = SchemaKind::Unsw.schema().encoded_width();
        assert!(w.flows >= 200, "{}", w.flows);
        assert_eq!(w.rows.len(), w.flows * width);
        assert!(w.recording.packets() > 0 && w.recording.packets() < all.len());
        let mut replayed = Replayed::new(w.recording, &mut source);
        assert_eq!(count_packets(&mut replayed), all);
    }

    /// A source of two parts (every other packet from the second): the recording keeps each
    /// packet's part, and split gives each part its own packets, in order.
    #[test]
    fn a_recording_splits_by_the_part_each_packet_came_from() {
        struct TwoParts {
            inner: FileSource,
            read: usize,
        }
        impl PacketSource for TwoParts {
            fn next_packet(&mut self) -> Next<'_> {
                self.read += 1;
                self.inner.next_packet()
            }
            fn origin(&self) -> usize {
                (self.read + 1) % 2
            }
            fn is_live(&self) -> bool {
                false
            }
            fn take_warnings(&mut self) -> Vec<String> {
                Vec::new()
            }
        }
        let all = count_packets(&mut FileSource::open(&[demo()]).unwrap());
        let mut source = TwoParts { inner: FileSource::open(&[demo()]).unwrap(), read: 0 };
        let limits = WarmupLimits { flows: 100, time: Duration::from_secs(600), bytes: 64 << 20 };
        let stop = AtomicBool::new(false);
        let w = record(
            &mut source,
            SchemaKind::Unsw,
            &FlowConfig::default(),
            &limits,
            &stop,
            |_, _| {},
        );
        let n = w.recording.packets();
        let parts = w.recording.split(2);
        assert_eq!(parts[0].packets() + parts[1].packets(), n);
        for (k, part) in parts.into_iter().enumerate() {
            let want: Vec<_> = all[..n].iter().skip(k).step_by(2).copied().collect();
            let mut empty = FileSource::open(&[]).unwrap();
            assert_eq!(count_packets(&mut Replayed::new(part, &mut empty)), want, "part {k}");
        }
    }

    /// The byte limit and the end of the source stop it too; Ctrl-C at once reads nothing.
    #[test]
    fn stops_at_bytes_end_and_interrupt() {
        let flow = FlowConfig::default();
        let stop = AtomicBool::new(false);
        let mut source = FileSource::open(&[demo()]).unwrap();
        let limits =
            WarmupLimits { flows: usize::MAX, time: Duration::from_secs(600), bytes: 10_000 };
        let w = record(&mut source, SchemaKind::Zeek, &flow, &limits, &stop, |_, _| {});
        assert_eq!(w.ended_by, WarmupEnd::Bytes);
        assert!(w.recording.bytes() >= 10_000 && w.recording.bytes() < 10_000 + 65_536);
        let mut source = FileSource::open(&[demo()]).unwrap();
        let limits = WarmupLimits { bytes: usize::MAX, ..limits };
        let w = record(&mut source, SchemaKind::Unsw, &flow, &limits, &stop, |_, _| {});
        assert_eq!(w.ended_by, WarmupEnd::SourceEnded);
        let offline = super::super::offline::run_files(&[demo()], &flow, |_| {}).unwrap();
        assert_eq!(w.flows as u64, offline.flow.exported_total());
        stop.store(true, Ordering::Relaxed);
        let mut source = FileSource::open(&[demo()]).unwrap();
        let w = record(&mut source, SchemaKind::Unsw, &flow, &limits, &stop, |_, _| {});
        assert_eq!((w.ended_by, w.recording.packets(), w.flows), (WarmupEnd::Interrupted, 0, 0));
    }
}
