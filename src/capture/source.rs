//! Packet sources for the streaming pipeline: a sequence of capture files, or (feature
//! `live`) an interface. A source is polled: it returns a packet, says it has none right now
//! (a live interface on a quiet network, so the caller can move the flow clock on the wall
//! clock), or says it is finished.

use std::path::PathBuf;

use super::file::FileStats;
use super::{CaptureError, CaptureFile, RawPacket};

/// What a source has next.
#[derive(Debug)]
pub enum Next<'a> {
    Packet(RawPacket<'a>),
    /// Nothing now; ask again (live capture only).
    Idle,
    /// The source is finished.
    End,
}

/// Counters a source keeps about packets it could not deliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceDrops {
    /// Packets the kernel dropped because the capture buffer was full (libpcap `ps_drop`).
    pub kernel: u64,
    /// Packets the interface or driver dropped (libpcap `ps_ifdrop`).
    pub interface: u64,
}

/// A stream of packets with capture timestamps.
pub trait PacketSource: Send {
    fn next_packet(&mut self) -> Next<'_>;
    /// Whether the clock of this source is the wall clock (live capture): flows then time out
    /// on the wall clock while no packet arrives.
    fn is_live(&self) -> bool;
    /// Time [`next_packet`](Self::next_packet) spent waiting for packets since the last call
    /// (live sources): idle time, which a stage's busy time leaves out.
    fn take_waited(&mut self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Which part of the source the last packet came from (a fanout group read as one: the
    /// socket, so that a recording can be replayed to the worker that socket feeds); 0 for a
    /// source of one part.
    fn origin(&self) -> usize {
        0
    }
    /// Drop counters of the capture below us (zero for files).
    fn drops(&mut self) -> SourceDrops {
        SourceDrops::default()
    }
    /// Problems met on the way that did not stop the stream (a file cut short part-way).
    fn take_warnings(&mut self) -> Vec<String>;
    /// Reader statistics (files only).
    fn file_stats(&self) -> FileStats {
        FileStats::default()
    }
}

/// How a live interface is read.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMethod {
    /// One AF_PACKET socket per flow worker, in a PACKET_FANOUT group (hash mode): the kernel
    /// shards the packets by flow, each worker reads its own ring (Linux; the default there).
    Fanout,
    /// One libpcap handle; one capture thread decodes every packet and shards it among the
    /// workers (any system).
    Pcap,
}

impl CaptureMethod {
    /// Fanout where the kernel offers it.
    pub const DEFAULT: CaptureMethod =
        if cfg!(target_os = "linux") { CaptureMethod::Fanout } else { CaptureMethod::Pcap };
}

/// `[live]`: how the interface is opened (feature `live`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// `fanout` (Linux default) or `pcap`.
    pub capture: CaptureMethod,
    /// Bytes kept per packet (262144, libpcap's default: whole frames). Lengths count in full
    /// either way; service detection and HTTP fields need payload.
    pub snaplen: u32,
    /// Promiscuous mode: see traffic not addressed to this host (true).
    pub promisc: bool,
    /// Kernel capture buffer in bytes (16 MiB; with fanout, each socket's); a larger buffer
    /// rides out bursts.
    pub buffer_size: u32,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            capture: CaptureMethod::DEFAULT,
            snaplen: 262_144,
            promisc: true,
            buffer_size: 16 << 20,
        }
    }
}

/// Capture files read in order as one stream, as the `flows` command reads them.
pub struct FileSource {
    files: Vec<CaptureFile>,
    current: usize,
    warnings: Vec<String>,
    stats: FileStats,
}

impl FileSource {
    /// Opens every file first, so that a missing or unreadable file is refused before any
    /// work starts.
    pub fn open(paths: &[PathBuf]) -> Result<FileSource, CaptureError> {
        let files = paths.iter().map(CaptureFile::open).collect::<Result<Vec<_>, _>>()?;
        Ok(FileSource { files, current: 0, warnings: Vec::new(), stats: FileStats::default() })
    }

    fn close_current(&mut self) {
        let fs = self.files[self.current].stats();
        self.stats.packets += fs.packets;
        self.stats.caplen_over_wirelen += fs.caplen_over_wirelen;
        self.stats.other_blocks += fs.other_blocks;
        self.current += 1;
    }
}

impl PacketSource for FileSource {
    fn next_packet(&mut self) -> Next<'_> {
        loop {
            if self.current >= self.files.len() {
                return Next::End;
            }
            // Decide first, then borrow: the returned packet borrows the file's buffer.
            let outcome = match self.files[self.current].next_packet() {
                Ok(Some(_)) => None,
                Ok(None) => Some(None),
                Err(e) => Some(Some(e.to_string())),
            };
            match outcome {
                None => break,
                Some(warning) => {
                    if let Some(w) = warning {
                        self.warnings.push(w);
                    }
                    self.close_current();
                }
            }
        }
        // The packet was read above; the reader keeps it until the next call.
        match self.files[self.current].last_packet() {
            Some(p) => Next::Packet(p),
            None => Next::End,
        }
    }

    fn is_live(&self) -> bool {
        false
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    fn file_stats(&self) -> FileStats {
        let mut s = self.stats;
        if let Some(f) = self.files.get(self.current) {
            let fs = f.stats();
            s.packets += fs.packets;
            s.caplen_over_wirelen += fs.caplen_over_wirelen;
            s.other_blocks += fs.other_blocks;
        }
        s
    }
}
