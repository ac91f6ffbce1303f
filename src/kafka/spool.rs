//! The spool: every event handed to Kafka and not yet acknowledged by the broker, on disk in
//! the data directory (`kafka-spool/`), so that nothing is lost while the broker is away, nor
//! when the sensor stops or crashes before the broker acknowledged it.
//!
//! Events are numbered in order (`seq`) and appended to segment files named by their first
//! number (`kafka-spool/00000000000000000001.log`), in the label store's framing
//! ([`RecordLog`]: one line per event, CRC-32, JSON, newline; `fsync`ed per batch; a torn last
//! line cut off at open). The spool is acknowledged event by event; a segment is deleted once
//! every event in it is acknowledged, and when nothing at all is pending the files start
//! afresh, so a restart resends little beyond what was really pending. What a previous run
//! left is pending at [`Spool::open`]: sent again, with the same event ids.
//!
//! The bound is on the spool's bytes: an event that would take it past `max_bytes` is not
//! spooled (the caller drops and counts it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Event;
use crate::feedback::log::{LogError, RecordLog};

/// One spooled event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolEntry {
    pub seq: u64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Events in it not yet acknowledged.
    pending: usize,
}

/// The spool of one data directory.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// By first sequence number.
    segments: BTreeMap<u64, Segment>,
    /// The segment appended to, by its first sequence number.
    current: Option<(u64, RecordLog<SpoolEntry>)>,
    /// Pending events and their segment.
    pending: BTreeMap<u64, u64>,
    next_seq: u64,
    bytes: u64,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

/// The framed size of an entry (as [`RecordLog`] writes it: 8 hex digits, a space, the JSON,
/// a newline).
#[cfg(test)]
fn framed_len(e: &SpoolEntry) -> u64 {
    crate::feedback::log::line_len(&serde_json::to_string(e).unwrap())
}

impl Spool {
    /// Opens (creating) the spool in `dir`; what an earlier run left there is pending.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, LogError> {
        let io_err = |source| LogError::Io { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(64 << 10, 16 << 20),
            segments: BTreeMap::new(),
            current: None,
            pending: BTreeMap::new(),
            next_seq: 1,
            bytes: 0,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(first) = name.strip_suffix(".log").and_then(|n| n.parse::<u64>().ok()) {
                names.push((first, entry.path()));
            }
        }
        names.sort();
        for (first, path) in names {
            // Opening repairs a torn tail (a crash mid-append).
            let (log, entries) = RecordLog::<SpoolEntry>::open(&path)?;
            let bytes = log.len_bytes();
            drop(log);
            if entries.is_empty() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            for e in &entries {
                spool.pending.insert(e.seq, first);
                spool.next_seq = spool.next_seq.max(e.seq + 1);
            }
            spool.bytes += bytes;
            spool.segments.insert(first, Segment { path, bytes, pending: entries.len() });
        }
        Ok(spool)
    }

    /// Appends events with one `fsync`; returns those spooled (with their numbers) and how
    /// many did not fit under the bound.
    pub fn append(&mut self, events: Vec<Event>) -> Result<(Vec<SpoolEntry>, u64), LogError> {
        let mut kept = Vec::with_capacity(events.len());
        // Each entry serialized once: its JSON sizes it against the bound and is what is
        // written.
        let mut jsons = Vec::with_capacity(events.len());
        let mut dropped = 0;
        let mut batch_bytes = 0;
        for event in events {
            let e = SpoolEntry { seq: self.next_seq, event };
            let json = serde_json::to_string(&e)
                .map_err(|source| LogError::Encode { path: self.dir.clone(), source })?;
            let len = crate::feedback::log::line_len(&json);
            if self.bytes + batch_bytes + len > self.max_bytes {
                dropped += 1;
                continue;
            }
            self.next_seq += 1;
            batch_bytes += len;
            kept.push(e);
            jsons.push(json);
        }
        if kept.is_empty() {
            return Ok((kept, dropped));
        }
        let rotate = self.current.as_ref().is_some_and(|(first, _)| {
            self.segments.get(first).is_some_and(|s| s.bytes >= self.segment_bytes)
        });
        if rotate {
            self.current = None;
            // The full segment may be acknowledged already.
            self.drop_done_segments();
        }
        if self.current.is_none() {
            let first = kept[0].seq;
            let path = self.dir.join(segment_name(first));
            let (log, _) = RecordLog::<SpoolEntry>::open(&path)?;
            self.segments.insert(first, Segment { path, bytes: 0, pending: 0 });
            self.current = Some((first, log));
        }
        let Some((first, log)) = self.current.as_mut() else { unreachable!("opened above") };
        let first = *first;
        let before = log.len_bytes();
        log.append_json(jsons.iter().map(String::as_str))?;
        let added = log.len_bytes().saturating_sub(before);
        if let Some(s) = self.segments.get_mut(&first) {
            s.bytes += added;
            s.pending += kept.len();
        }
        self.bytes += added;
        for e in &kept {
            self.pending.insert(e.seq, first);
        }
        Ok((kept, dropped))
    }

    /// The broker acknowledged event `seq`: forget it (and its segment once all of it is
    /// acknowledged).
    pub fn ack(&mut self, seq: u64) {
        let Some(first) = self.pending.remove(&seq) else { return };
        if let Some(s) = self.segments.get_mut(&first) {
            s.pending = s.pending.saturating_sub(1);
        }
        if self.pending.is_empty() {
            // Nothing pending: start afresh (a restart then resends nothing).
            self.current = None;
        }
        self.drop_done_segments();
    }

    /// Deletes the segments (other than the one appended to) with nothing pending.
    fn drop_done_segments(&mut self) {
        let current = self.current.as_ref().map(|(f, _)| *f);
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(f, s)| s.pending == 0 && Some(**f) != current)
            .map(|(f, _)| *f)
            .collect();
        for f in done {
            if let Some(s) = self.segments.remove(&f) {
                // A file that cannot be removed is read again at the next start: its events
                // are sent twice, never lost.
                let _ = std::fs::remove_file(&s.path);
                self.bytes = self.bytes.saturating_sub(s.bytes);
            }
        }
    }

    /// Reads back, in order, up to `limit` pending events among `wanted` (events to send
    /// again: a failed delivery, a full producer queue, or an earlier run's).
    pub fn read(&self, wanted: &BTreeSet<u64>, limit: usize) -> Result<Vec<SpoolEntry>, LogError> {
        let mut out = Vec::new();
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for (i, first) in firsts.iter().enumerate() {
            let end = firsts.get(i + 1).copied().unwrap_or(u64::MAX);
            if wanted.range(*first..end).next().is_none() {
                continue;
            }
            let s = &self.segments[first];
            for e in RecordLog::<SpoolEntry>::read(&s.path)? {
                if wanted.contains(&e.seq) && self.pending.contains_key(&e.seq) {
                    out.push(e);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every pending event's number, in order.
    pub fn pending(&self) -> BTreeSet<u64> {
        self.pending.keys().copied().collect()
    }

    /// Whether event `seq` is still waiting for the broker's acknowledgement.
    pub fn is_pending(&self, seq: u64) -> bool {
        self.pending.contains_key(&seq)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of the spool's files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u32) -> Event {
        Event {
            topic: "alerts".into(),
            key: format!("1:{i}"),
            id: format!("id-{i}"),
            payload: format!("{{\"n\":{i}}}"),
        }
    }

    #[test]
    fn pending_events_survive_a_restart_and_acknowledged_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let (kept, dropped) = s.append((0..5).map(ev).collect()).unwrap();
        assert_eq!((kept.len(), dropped), (5, 0));
        s.ack(kept[0].seq);
        s.ack(kept[2].seq);
        drop(s);
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        let left = s.read(&s.pending(), 100).unwrap();
        let ids: Vec<&str> = left.iter().map(|e| e.event.id.as_str()).collect();
        // Acknowledgements are not written: a restart sends the unacknowledged ones and,
        // at worst, some acknowledged ones again (same ids), never fewer.
        assert!(["id-1", "id-3", "id-4"].iter().all(|i| ids.contains(i)), "{ids:?}");
        // Numbers go on after the earlier run's.
        let mut s = s;
        let (more, _) = s.append(vec![ev(9)]).unwrap();
        assert!(more[0].seq > 5);
    }

    #[test]
    fn all_acknowledged_leaves_no_file_and_the_bound_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let (kept, _) = s.append((0..3).map(ev).collect()).unwrap();
        for e in &kept {
            s.ack(e.seq);
        }
        assert_eq!((s.pending_len(), s.bytes()), (0, 0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A bound of about two events.
        let one = framed_len(&SpoolEntry { seq: 10, event: ev(1) });
        let mut s = Spool::open(dir.path(), 2 * one + 1).unwrap();
        let (kept, dropped) = s.append((0..5).map(ev).collect()).unwrap();
        assert_eq!((kept.len(), dropped), (2, 3));
        s.ack(kept[0].seq);
        s.ack(kept[1].seq);
        let (kept, dropped) = s.append((0..1).map(ev).collect()).unwrap();
        assert_eq!((kept.len(), dropped), (1, 0), "room again once acknowledged");
    }

    #[test]
    fn segments_rotate_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB segments.
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut all = Vec::new();
        for _ in 0..40 {
            let (kept, _) = s.append((0..100).map(ev).collect()).unwrap();
            all.extend(kept);
        }
        assert!(s.segments.len() > 1);
        // Acknowledge the first half: its segments go.
        let files_before = std::fs::read_dir(dir.path()).unwrap().count();
        for e in &all[..2000] {
            s.ack(e.seq);
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().count() < files_before);
        let back = s.read(&s.pending(), usize::MAX).unwrap();
        assert_eq!(back.len(), 2000);
        assert!(back.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(back[0], all[2000]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append((0..3).map(ev).collect()).unwrap();
        drop(s);
        let f = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        let mut text = std::fs::read(&f).unwrap();
        text.extend_from_slice(b"0000abcd {\"seq\":");
        std::fs::write(&f, text).unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.pending_len(), 3);
    }
}
