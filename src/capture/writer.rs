//! Writing classic pcap files (microsecond timestamps, little endian), for the generator and
//! for tests that craft captures.

use std::io::{self, Write};

use super::{LinkType, Timestamp};

/// Snap length declared in the file header: the largest record libpcap writes.
pub const SNAPLEN: u32 = 262_144;

/// A pcap writer over any byte sink.
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the 24-byte file header.
    pub fn new(mut out: W, link: LinkType) -> io::Result<PcapWriter<W>> {
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&SNAPLEN.to_le_bytes())?;
        out.write_all(&link.code().to_le_bytes())?;
        Ok(PcapWriter { out })
    }

    /// Writes one record; `wire_len` may exceed `data.len()` to model snaplen truncation.
    pub fn write(&mut self, ts: Timestamp, data: &[u8], wire_len: u32) -> io::Result<()> {
        let secs = ts.0.div_euclid(1_000_000_000);
        let micros = ts.0.rem_euclid(1_000_000_000) / 1000;
        let secs = u32::try_from(secs).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "timestamp outside pcap's range")
        })?;
        self.out.write_all(&secs.to_le_bytes())?;
        self.out.write_all(&(micros as u32).to_le_bytes())?;
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        self.out.write_all(&wire_len.max(data.len() as u32).to_le_bytes())?;
        self.out.write_all(data)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}
