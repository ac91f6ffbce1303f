//! pcap and pcapng files, read without any system library.
//!
//! Why our own reader rather than a crate: the reader is on the hot path (it must stay well
//! above the flow engine's 3 M packets/s), it must hand out frames without copying, and it must
//! accept what real captures contain. The `pcap-file` crate, for instance, refuses every
//! record whose original length exceeds the snap length, which is exactly what a
//! snaplen-truncated packet is, and does not apply pcapng's `if_tsresol`.
//!
//! Formats: classic pcap in both byte orders with micro- or nanosecond timestamps
//! (magic `a1b2c3d4` / `a1b23c4d`); pcapng sections in either byte order, interface
//! description blocks (link type, `if_tsresol`, `if_tsoffset`), enhanced, simple and obsolete
//! packet blocks. Other pcapng blocks are skipped. Either may be gzip-compressed (rotated
//! captures are kept so), read through `flate2` without a temporary file.
//!
//! Contract: no input panics the reader. A file that is not a capture, is empty, or uses a
//! link type we do not decode fails at open (or at the block that declares it) with an error
//! naming the file. A file cut short yields every complete packet, then
//! [`CaptureError::Truncated`] naming the byte where the last record starts.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use super::{LinkType, RawPacket, Timestamp, link_type_name};

/// The largest record we accept. libpcap never writes more than 256 KiB per packet; pcapng
/// blocks may carry options, so allow some slack. Anything larger is corruption, and refusing
/// it bounds the buffer.
const MAX_RECORD: usize = 16 << 20;
const INITIAL_BUFFER: usize = 1 << 20;

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;

/// Why a capture could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot open: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: empty file, not a capture")]
    Empty { path: PathBuf },
    #[error("{path}: not a pcap or pcapng file (it starts with bytes {magic})")]
    NotCapture { path: PathBuf, magic: String },
    #[error(
        "{path}: link type {code} ({name}) is not supported; supported: ETHERNET (1), RAW (101), \
         IPV4 (228), IPV6 (229), LINUX_SLL (113), LINUX_SLL2 (276), NULL (0), LOOP (108)"
    )]
    UnsupportedLinkType { path: PathBuf, code: u32, name: &'static str },
    #[error("{path}: record {record} at byte {offset}: {problem}")]
    Corrupt { path: PathBuf, record: u64, offset: u64, problem: String },
    #[error(
        "{path}: truncated: the file ends inside record {record} at byte {offset} ({have} of {need} bytes present)"
    )]
    Truncated { path: PathBuf, record: u64, offset: u64, have: usize, need: usize },
    #[error("{path}: read error at byte {offset}: {source}")]
    Io { path: PathBuf, offset: u64, source: io::Error },
}

/// Counters of oddities the reader tolerated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Packet records returned.
    pub packets: u64,
    /// Records whose captured length exceeded their original length; the captured length was
    /// taken as the wire length.
    pub caplen_over_wirelen: u64,
    /// pcapng blocks of other types (name resolution, statistics, custom...) skipped.
    pub other_blocks: u64,
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    /// `Err(code)` for a link type we do not decode; refused when a packet uses it.
    link: Result<LinkType, u32>,
    /// Timestamp units per second (`if_tsresol`), 10^6 unless the block says otherwise.
    units_per_sec: u64,
    /// `if_tsoffset`, seconds added to every timestamp.
    offset_secs: i64,
}

#[derive(Debug)]
enum Format {
    Pcap { big_endian: bool, nanos: bool, link: LinkType },
    PcapNg { big_endian: bool, interfaces: Vec<Interface> },
}

/// A pcap or pcapng file opened for sequential reading.
pub struct CaptureFile {
    path: PathBuf,
    reader: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// `buf[pos..end]` holds bytes read but not consumed; `offset` is the file offset of `pos`.
    pos: usize,
    end: usize,
    offset: u64,
    eof: bool,
    format: Format,
    records: u64,
    failed: bool,
    stats: FileStats,
    /// Where the packet last returned by `next_packet` lies in `buf`, for `last_packet`.
    last: Option<(Timestamp, LinkType, u32, usize, usize)>,
}

impl std::fmt::Debug for CaptureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFile")
            .field("path", &self.path)
            .field("format", &self.format)
            .finish()
    }
}

fn u32_at(b: &[u8], big: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
}

fn u16_at(b: &[u8], big: bool) -> u16 {
    let a = [b[0], b[1]];
    if big { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) }
}

/// One record's place in the read buffer: (timestamp, link, wire length, data start in the
/// buffer, captured length).
type RawRecord = (Timestamp, LinkType, u32, usize, usize);

impl CaptureFile {
    /// Opens a capture file and reads its header. A gzip-compressed capture (`.pcap.gz`, as
    /// rotated captures are kept; told by its magic bytes, not its name) is decompressed as it
    /// is read; byte offsets in errors are then those of the decompressed capture.
    pub fn open(path: impl AsRef<Path>) -> Result<CaptureFile, CaptureError> {
        let path = path.as_ref();
        let open = |source| CaptureError::Open { path: path.to_owned(), source };
        let mut file = io::BufReader::new(File::open(path).map_err(open)?);
        let gzip = file.fill_buf().map_err(open)?.starts_with(&[0x1f, 0x8b]);
        if gzip {
            CaptureFile::from_reader(path, Box::new(flate2::read::MultiGzDecoder::new(file)))
        } else {
            CaptureFile::from_reader(path, Box::new(file))
        }
    }

    /// Reads a capture from any byte stream; `path` names it in errors.
    pub fn from_reader(
        path: &Path,
        reader: Box<dyn Read + Send>,
    ) -> Result<CaptureFile, CaptureError> {
        let mut cf = CaptureFile {
            path: path.to_owned(),
            reader,
            buf: vec![0; INITIAL_BUFFER],
            pos: 0,
            end: 0,
            offset: 0,
            eof: false,
            format: Format::Pcap { big_endian: false, nanos: false, link: LinkType::Ethernet },
            records: 0,
            failed: false,
            stats: FileStats::default(),
            last: None,
        };
        let have = cf.fill(24)?;
        if have == 0 {
            return Err(CaptureError::Empty { path: cf.path });
        }
        let head = &cf.buf[cf.pos..cf.pos + have.min(24)];
        let magic_hex: String = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let not_capture =
            || CaptureError::NotCapture { path: path.to_owned(), magic: magic_hex.clone() };
        if have < 4 {
            return Err(not_capture());
        }
        let le = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let be = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if le == PCAPNG_SHB {
            cf.format = Format::PcapNg { big_endian: false, interfaces: Vec::new() };
            // The section header block is parsed by the block loop; it sets the byte order.
            return Ok(cf);
        }
        let (big_endian, nanos) = match (le, be) {
            (PCAP_MAGIC_US, _) => (false, false),
            (PCAP_MAGIC_NS, _) => (false, true),
            (_, PCAP_MAGIC_US) => (true, false),
            (_, PCAP_MAGIC_NS) => (true, true),
            _ => return Err(not_capture()),
        };
        if have < 24 {
            return Err(CaptureError::Truncated {
                path: cf.path,
                record: 0,
                offset: 0,
                have,
                need: 24,
            });
        }
        let code = u32_at(&head[20..24], big_endian) & 0xffff;
        let link = LinkType::from_code(code).ok_or(CaptureError::UnsupportedLinkType {
            path: path.to_owned(),
            code,
            name: link_type_name(code),
        })?;
        cf.format = Format::Pcap { big_endian, nanos, link };
        cf.consume(24);
        Ok(cf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> FileStats {
        self.stats
    }

    /// Bytes consumed so far (the file offset of the next record).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Makes at least `need` bytes available at `pos` unless the input ends first; returns how
    /// many are available (capped at what was asked for, or fewer at end of input).
    #[inline]
    fn fill(&mut self, need: usize) -> Result<usize, CaptureError> {
        // Nearly every call finds its bytes buffered: that check inline, the reading out of line.
        if self.end - self.pos >= need {
            return Ok(need);
        }
        self.fill_slow(need)
    }

    #[inline(never)]
    fn fill_slow(&mut self, need: usize) -> Result<usize, CaptureError> {
        while self.end - self.pos < need && !self.eof {
            if self.pos + need > self.buf.len() {
                // Compact, then grow if one record does not fit.
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
                if need > self.buf.len() {
                    self.buf.resize(need.next_power_of_two(), 0);
                }
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureError::Io {
                        path: self.path.clone(),
                        offset: self.offset,
                        source,
                    });
                }
            }
        }
        Ok((self.end - self.pos).min(need))
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        self.offset += n as u64;
    }

    fn corrupt(&mut self, problem: String) -> CaptureError {
        self.failed = true;
        CaptureError::Corrupt {
            path: self.path.clone(),
            record: self.records,
            offset: self.offset,
            problem,
        }
    }

    /// Ensures a whole record of `need` bytes is buffered, or reports truncation.
    #[inline]
    fn need(&mut self, need: usize) -> Result<(), CaptureError> {
        let have = self.fill(need)?;
        if have < need {
            self.failed = true;
            return Err(CaptureError::Truncated {
                path: self.path.clone(),
                record: self.records,
                offset: self.offset,
                have,
                need,
            });
        }
        Ok(())
    }

    /// The next packet, `Ok(None)` at the end of the file. After an error, every further
    /// call returns `Ok(None)`.
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        if self.failed {
            return Ok(None);
        }
        let result = match self.format {
            Format::Pcap { big_endian, nanos, link } => self.next_pcap(big_endian, nanos, link),
            Format::PcapNg { .. } => self.next_pcapng(),
        };
        self.last = None;
        match result {
            Ok(Some((ts, link, wire_len, start, len))) => {
                self.stats.packets += 1;
                self.last = Some((ts, link, wire_len, start, len));
                Ok(Some(RawPacket { ts, link, wire_len, data: &self.buf[start..start + len] }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// The packet the last call of `next_packet` returned, again (`None` if it returned none).
    /// Lets a caller decide on the result before borrowing the packet.
    pub fn last_packet(&self) -> Option<RawPacket<'_>> {
        self.last.map(|(ts, link, wire_len, start, len)| RawPacket {
            ts,
            link,
            wire_len,
            data: &self.buf[start..start + len],
        })
    }

    /// Returns (timestamp, link, wire length, data start in `buf`, captured length).
    fn next_pcap(
        &mut self,
        big: bool,
        nanos: bool,
        link: LinkType,
    ) -> Result<Option<RawRecord>, CaptureError> {
        if self.fill(16)? == 0 {
            return Ok(None);
        }
        self.need(16)?;
        let h = &self.buf[self.pos..self.pos + 16];
        let secs = u32_at(&h[0..4], big) as i64;
        let frac = u32_at(&h[4..8], big) as i64;
        let caplen = u32_at(&h[8..12], big) as usize;
        let orig = u32_at(&h[12..16], big);
        if caplen > MAX_RECORD {
            return Err(self.corrupt(format!(
                "captured length {caplen} is absurd (more than {MAX_RECORD} bytes)"
            )));
        }
        self.need(16 + caplen)?;
        let ts = Timestamp(secs * 1_000_000_000 + if nanos { frac } else { frac * 1000 });
        let wire = if (orig as usize) < caplen {
            self.stats.caplen_over_wirelen += 1;
            caplen as u32
        } else {
            orig
        };
        let start = self.pos + 16;
        self.consume(16 + caplen);
        self.records += 1;
        Ok(Some((ts, link, wire, start, caplen)))
    }

    fn next_pcapng(&mut self) -> Result<Option<RawRecord>, CaptureError> {
        loop {
            if self.fill(12)? == 0 {
                return Ok(None);
            }
            self.need(12)?;
            let Format::PcapNg { big_endian, .. } = self.format else {
                unreachable!("called for pcapng only")
            };
            let head = &self.buf[self.pos..self.pos + 12];
            let block_type = u32_at(&head[0..4], big_endian);
            let mut big = big_endian;
            if block_type == PCAPNG_SHB {
                // The byte-order magic decides how to read this section, the SHB's length included.
                let bom_le = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
                let bom_be = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
                big = match (bom_le, bom_be) {
                    (PCAPNG_BOM, _) => false,
                    (_, PCAPNG_BOM) => true,
                    _ => {
                        return Err(
                            self.corrupt("section header with a bad byte-order magic".into())
                        );
                    }
                };
            }
            let total = u32_at(&self.buf[self.pos + 4..self.pos + 8], big) as usize;
            if total < 12 || !total.is_multiple_of(4) || total > MAX_RECORD {
                return Err(self.corrupt(format!("block length {total} is invalid")));
            }
            self.need(total)?;
            let body_start = self.pos + 8;
            let body_end = self.pos + total - 4;
            let trailer = u32_at(&self.buf[body_end..body_end + 4], big) as usize;
            if trailer != total {
                return Err(self.corrupt(format!(
                    "block length {total} and trailing length {trailer} differ"
                )));
            }
            let result = match block_type {
                PCAPNG_SHB => {
                    self.format = Format::PcapNg { big_endian: big, interfaces: Vec::new() };
                    None
                }
                1 => {
                    self.read_idb(body_start, body_end, big)?;
                    None
                }
                6 | 2 => Some(self.read_epb(block_type, body_start, body_end, big)?),
                3 => Some(self.read_spb(body_start, body_end, big)?),
                _ => {
                    self.stats.other_blocks += 1;
                    None
                }
            };
            self.consume(total);
            self.records += 1;
            if let Some(p) = result {
                return Ok(Some(p));
            }
        }
    }

    fn interfaces_mut(&mut self) -> &mut Vec<Interface> {
        match &mut self.format {
            Format::PcapNg { interfaces, .. } => interfaces,
            Format::Pcap { .. } => unreachable!("pcapng blocks are read only for pcapng files"),
        }
    }

    fn read_idb(&mut self, start: usize, end: usize, big: bool) -> Result<(), CaptureError> {
        if end - start < 8 {
            return Err(self.corrupt("interface description block shorter than 8 bytes".into()));
        }
        let code = u16_at(&self.buf[start..start + 2], big) as u32;
        let mut iface = Interface {
            link: LinkType::from_code(code).ok_or(code),
            units_per_sec: 1_000_000,
            offset_secs: 0,
        };
        // Options: code (2), length (2), value padded to 4.
        let mut p = start + 8;
        while p + 4 <= end {
            let opt = u16_at(&self.buf[p..p + 2], big);
            let len = u16_at(&self.buf[p + 2..p + 4], big) as usize;
            let v = p + 4;
            if opt == 0 || v + len > end {
                break;
            }
            match (opt, len) {
                (9, 1) => {
                    let r = self.buf[v];
                    let exp = (r & 0x7f) as u32;
                    iface.units_per_sec = if r & 0x80 == 0 {
                        10u64.checked_pow(exp).unwrap_or(0)
                    } else {
                        1u64.checked_shl(exp).unwrap_or(0)
                    };
                    if iface.units_per_sec == 0 {
                        return Err(self.corrupt(format!("if_tsresol {r:#04x} is out of range")));
                    }
                }
                (14, 8) => {
                    let b = &self.buf[v..v + 8];
                    let arr = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
                    iface.offset_secs =
                        if big { i64::from_be_bytes(arr) } else { i64::from_le_bytes(arr) };
                }
                _ => {}
            }
            p = v + len.div_ceil(4) * 4;
        }
        self.interfaces_mut().push(iface);
        Ok(())
    }

    fn interface(&mut self, id: usize) -> Result<(LinkType, Interface), CaptureError> {
        let iface = match &self.format {
            Format::PcapNg { interfaces, .. } => interfaces.get(id).copied(),
            Format::Pcap { .. } => None,
        };
        let Some(iface) = iface else {
            return Err(self.corrupt(format!(
                "packet refers to interface {id}, which no interface block declared"
            )));
        };
        match iface.link {
            Ok(link) => Ok((link, iface)),
            Err(code) => {
                self.failed = true;
                Err(CaptureError::UnsupportedLinkType {
                    path: self.path.clone(),
                    code,
                    name: link_type_name(code),
                })
            }
        }
    }

    fn read_epb(
        &mut self,
        block_type: u32,
        start: usize,
        end: usize,
        big: bool,
    ) -> Result<(Timestamp, LinkType, u32, usize, usize), CaptureError> {
        if end - start < 20 {
            return Err(self.corrupt("packet block shorter than its 20-byte header".into()));
        }
        let b = &self.buf[start..start + 20];
        // The obsolete packet block (type 2) has a 16-bit interface id and a 16-bit drop count.
        let iface_id = if block_type == 2 {
            u16_at(&b[0..2], big) as usize
        } else {
            u32_at(&b[0..4], big) as usize
        };
        let ticks = ((u32_at(&b[4..8], big) as u64) << 32) | u32_at(&b[8..12], big) as u64;
        let caplen = u32_at(&b[12..16], big) as usize;
        let orig = u32_at(&b[16..20], big);
        if caplen > end - start - 20 {
            return Err(self.corrupt(format!("captured length {caplen} exceeds the block")));
        }
        let (link, iface) = self.interface(iface_id)?;
        // ticks / units_per_sec seconds, in nanoseconds, without overflow.
        let ns = (ticks as u128 * 1_000_000_000 / iface.units_per_sec as u128).min(i64::MAX as u128)
            as i64;
        let ts = Timestamp(ns.saturating_add(iface.offset_secs.saturating_mul(1_000_000_000)));
        let wire = if (orig as usize) < caplen {
            self.stats.caplen_over_wirelen += 1;
            caplen as u32
        } else {
            orig
        };
        Ok((ts, link, wire, start + 20, caplen))
    }

    fn read_spb(
        &mut self,
        start: usize,
        end: usize,
        big: bool,
    ) -> Result<(Timestamp, LinkType, u32, usize, usize), CaptureError> {
        if end - start < 4 {
            return Err(self.corrupt("simple packet block shorter than 4 bytes".into()));
        }
        let orig = u32_at(&self.buf[start..start + 4], big);
        let (link, _) = self.interface(0)?;
        // A simple packet block holds min(original length, block space) bytes and no time.
        let caplen = (orig as usize).min(end - start - 4);
        Ok((Timestamp::ZERO, link, orig.max(caplen as u32), start + 4, caplen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::writer::PcapWriter;

    fn open_bytes(bytes: Vec<u8>) -> Result<CaptureFile, CaptureError> {
        CaptureFile::from_reader(Path::new("mem.pcap"), Box::new(io::Cursor::new(bytes)))
    }

    fn sample_pcap(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = PcapWriter::new(&mut out, LinkType::Ethernet).unwrap();
        for i in 0..n {
            w.write(Timestamp(1_500_000_000_123_456_000 + i as i64 * 1000), &[i as u8; 60], 60)
                .unwrap();
        }
        out
    }

    fn count_all(cf: &mut CaptureFile) -> (usize, Option<CaptureError>) {
        let mut n = 0;
        loop {
            match cf.next_packet() {
                Ok(Some(_)) => n += 1,
                Ok(None) => return (n, None),
                Err(e) => return (n, Some(e)),
            }
        }
    }

    #[test]
    fn pcap_round_trip_keeps_time_and_bytes() {
        let mut cf = open_bytes(sample_pcap(3)).unwrap();
        let p = cf.next_packet().unwrap().unwrap();
        assert_eq!(p.ts, Timestamp(1_500_000_000_123_456_000));
        assert_eq!(p.data, &[0u8; 60][..]);
        assert_eq!(p.wire_len, 60);
        assert_eq!(count_all(&mut cf).0, 2);
    }

    /// A gzip'ed capture (`.pcap.gz`) reads as the capture itself; a broken one is an error
    /// naming the file after the packets before the damage.
    #[test]
    fn gzip_capture_reads_as_the_capture() {
        use std::io::Write;
        let plain = sample_pcap(50);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (p, z) = (dir.path().join("a.pcap"), dir.path().join("a.pcap.gz"));
        std::fs::write(&p, &plain).unwrap();
        std::fs::write(&z, &gz).unwrap();
        let (mut a, mut b) = (CaptureFile::open(&p).unwrap(), CaptureFile::open(&z).unwrap());
        loop {
            match (a.next_packet().unwrap(), b.next_packet().unwrap()) {
                (Some(x), Some(y)) => {
                    assert_eq!((x.ts, x.data, x.wire_len), (y.ts, y.data, y.wire_len))
                }
                (None, None) => break,
                (x, y) => panic!("{:?} vs {:?}", x.is_some(), y.is_some()),
            }
        }
        std::fs::write(&z, &gz[..gz.len() / 2]).unwrap();
        let mut cf = CaptureFile::open(&z).unwrap();
        let (n, e) = count_all(&mut cf);
        let e = e.expect("a cut gzip stream is an error").to_string();
        assert!(n < 50 && e.contains("a.pcap.gz"), "{n} {e}");
    }

    #[test]
    fn big_endian_nanosecond_pcap() {
        let mut b = Vec::new();
        b.extend_from_slice(&PCAP_MAGIC_NS.to_be_bytes());
        b.extend_from_slice(&[0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 101]);
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(&999_999_999u32.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&1500u32.to_be_bytes());
        b.extend_from_slice(&[0x45, 0]);
        let mut cf = open_bytes(b).unwrap();
        let p = cf.next_packet().unwrap().unwrap();
        assert_eq!(p.ts, Timestamp(7_999_999_999));
        assert_eq!(p.link, LinkType::Raw);
        assert_eq!((p.wire_len, p.data.len()), (1500, 2));
    }

    #[test]
    fn every_truncation_of_a_pcap_is_an_error_not_a_panic() {
        let full = sample_pcap(2);
        for cut in 0..full.len() {
            match open_bytes(full[..cut].to_vec()) {
                Err(_) => assert!(cut < 24),
                Ok(mut cf) => {
                    let (n, err) = count_all(&mut cf);
                    let complete = (cut - 24) / 76;
                    assert_eq!(n, complete, "cut {cut}");
                    let at_boundary = (cut - 24) % 76 == 0;
                    assert_eq!(err.is_none(), at_boundary, "cut {cut}");
                    if let Some(e) = err {
                        assert!(e.to_string().contains("mem.pcap: truncated"), "{e}");
                    }
                }
            }
        }
    }

    #[test]
    fn empty_and_foreign_files_are_refused_by_name() {
        assert!(matches!(open_bytes(vec![]), Err(CaptureError::Empty { .. })));
        let e =
            open_bytes(b"GET / HTTP/1.1\r\n\r\nhello world, this is text".to_vec()).unwrap_err();
        assert!(e.to_string().contains("mem.pcap: not a pcap or pcapng file"), "{e}");
    }

    #[test]
    fn unsupported_link_type_is_named() {
        let mut b = sample_pcap(0);
        b[20..24].copy_from_slice(&127u32.to_le_bytes());
        let e = open_bytes(b).unwrap_err().to_string();
        assert!(e.contains("link type 127 (IEEE802_11_RADIOTAP) is not supported"), "{e}");
    }

    #[test]
    fn absurd_record_length_is_corrupt() {
        let mut b = sample_pcap(1);
        b[24 + 8..24 + 12].copy_from_slice(&0xfff0_0000u32.to_le_bytes());
        let mut cf = open_bytes(b).unwrap();
        let e = cf.next_packet().unwrap_err().to_string();
        assert!(e.contains("record 0 at byte 24") && e.contains("absurd"), "{e}");
        assert!(cf.next_packet().unwrap().is_none());
    }

    fn pcapng_block(kind: u32, body: &[u8]) -> Vec<u8> {
        let total = 12 + body.len().div_ceil(4) * 4;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&(total as u32).to_le_bytes());
        b.extend_from_slice(body);
        b.resize(total - 4, 0);
        b.extend_from_slice(&(total as u32).to_le_bytes());
        b
    }

    fn pcapng_with_tsresol(tsresol: Option<u8>) -> Vec<u8> {
        let mut shb = PCAPNG_BOM.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut idb = vec![1, 0, 0, 0, 0, 0, 4, 0];
        if let Some(r) = tsresol {
            idb.extend_from_slice(&[9, 0, 1, 0, r, 0, 0, 0]);
        }
        idb.extend_from_slice(&[0, 0, 0, 0]);
        let mut epb = 0u32.to_le_bytes().to_vec();
        let ticks: u64 = 1_000_000_123;
        epb.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ticks as u32).to_le_bytes());
        epb.extend_from_slice(&3u32.to_le_bytes());
        epb.extend_from_slice(&100u32.to_le_bytes());
        epb.extend_from_slice(&[1, 2, 3]);
        let mut out = pcapng_block(PCAPNG_SHB, &shb);
        out.extend(pcapng_block(1, &idb));
        out.extend(pcapng_block(4, &[0; 8]));
        out.extend(pcapng_block(6, &epb));
        out
    }

    #[test]
    fn pcapng_applies_if_tsresol() {
        for (resol, expect_ns) in [
            (None, 1_000_000_123_000),
            (Some(9), 1_000_000_123),
            (Some(0x80 | 10), 976_562_620_117_187),
        ] {
            let mut cf = open_bytes(pcapng_with_tsresol(resol)).unwrap();
            let p = cf.next_packet().unwrap().unwrap();
            assert_eq!(p.ts, Timestamp(expect_ns), "{resol:?}");
            assert_eq!((p.data, p.wire_len), (&[1u8, 2, 3][..], 100));
            assert!(cf.next_packet().unwrap().is_none());
            assert_eq!(cf.stats().other_blocks, 1);
        }
    }

    #[test]
    fn every_truncation_of_a_pcapng_is_handled() {
        let full = pcapng_with_tsresol(Some(6));
        // Block boundaries: a file cut there is short but well formed.
        let mut boundaries = vec![0];
        while *boundaries.last().unwrap() < full.len() {
            let at = *boundaries.last().unwrap();
            boundaries
                .push(at + u32::from_le_bytes(full[at + 4..at + 8].try_into().unwrap()) as usize);
        }
        for cut in 0..full.len() {
            if let Ok(mut cf) = open_bytes(full[..cut].to_vec()) {
                let (n, err) = count_all(&mut cf);
                assert_eq!(n, 0, "cut {cut}");
                assert_eq!(err.is_none(), boundaries.contains(&cut), "cut {cut}: {err:?}");
            }
        }
    }

    #[test]
    fn pcapng_packet_on_undeclared_interface_is_corrupt() {
        let mut b = pcapng_with_tsresol(None);
        let n = b.len();
        let last = u32::from_le_bytes(b[n - 4..].try_into().unwrap()) as usize;
        // The interface id is the first field of the last block's body.
        b[n - last + 8] = 5;
        let mut cf = open_bytes(b).unwrap();
        let e = cf.next_packet().unwrap_err().to_string();
        assert!(e.contains("interface 5"), "{e}");
    }
}
