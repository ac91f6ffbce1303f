//! Capture: packets with their capture timestamps, from files or from the generator.
//!
//! A source yields [`RawPacket`]s that borrow the source's buffer: nothing is allocated per
//! packet. The clock of everything downstream is the packet timestamp ([`Timestamp`]), never
//! the wall clock, so replaying a capture gives the same flows at any speed.

#[cfg(all(feature = "live", target_os = "linux"))]
pub mod fanout;
pub mod file;
#[cfg(feature = "live")]
pub mod live;
pub mod source;
pub mod synth;
pub mod writer;

use std::fmt;

pub use file::{CaptureError, CaptureFile};

/// Capture time in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_secs_f64(secs: f64) -> Timestamp {
        Timestamp((secs * 1e9).round() as i64)
    }

    /// The wall clock now (for live capture and for stamps on files and labels; capture
    /// time everywhere else comes from packets).
    pub fn wall_now() -> Timestamp {
        let d =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    pub fn from_nanos(ns: i64) -> Timestamp {
        Timestamp(ns)
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// `self - earlier` in nanoseconds, saturating.
    pub fn since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    pub fn add_nanos(self, ns: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ns))
    }

    /// The UTC calendar date and time: (year, month, day, hour, minute, second, microsecond).
    /// Howard Hinnant's days-to-civil algorithm; for log stamps, no time zone database needed.
    pub fn civil(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let secs = self.0.div_euclid(1_000_000_000);
        let micros = (self.0.rem_euclid(1_000_000_000) / 1000) as u32;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + (m <= 2) as i64;
        (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60, micros)
    }
}

impl fmt::Display for Timestamp {
    /// Seconds with microsecond precision, as Zeek writes `ts`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000_000);
        let micros = self.0.rem_euclid(1_000_000_000) / 1000;
        write!(f, "{secs}.{micros:06}")
    }
}

/// Link-layer header types we decode (tcpdump's LINKTYPE_* values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1): Ethernet II, with 802.1Q / 802.1ad VLAN tags.
    Ethernet,
    /// LINKTYPE_RAW (101, also DLT 12 and 14 on some systems): an IPv4 or IPv6 header first.
    Raw,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_LINUX_SLL (113): Linux cooked capture v1, 16-byte header.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): Linux cooked capture v2, 20-byte header.
    LinuxSll2,
    /// LINKTYPE_NULL (0): BSD loopback, 4-byte address family in the writer's byte order.
    Null,
    /// LINKTYPE_LOOP (108): OpenBSD loopback, 4-byte address family in network byte order.
    Loop,
}

impl LinkType {
    /// Maps a LINKTYPE_/DLT_ value; `None` for link types we do not decode.
    pub fn from_code(code: u32) -> Option<LinkType> {
        Some(match code {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }

    /// The LINKTYPE_ value written to files.
    pub fn code(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Raw => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
        }
    }
}

/// A human name for a LINKTYPE_ value, for error messages about types we do not decode.
pub fn link_type_name(code: u32) -> &'static str {
    match code {
        0 => "NULL",
        1 => "ETHERNET",
        6 => "IEEE802_5",
        9 => "PPP",
        10 => "FDDI",
        12 | 14 | 101 => "RAW",
        104 => "C_HDLC",
        105 => "IEEE802_11",
        108 => "LOOP",
        113 => "LINUX_SLL",
        119 => "PRISM_HEADER",
        127 => "IEEE802_11_RADIOTAP",
        147..=162 => "USER",
        187 => "BLUETOOTH_HCI_H4",
        189 => "USB_LINUX",
        195 => "IEEE802_15_4",
        220 => "USB_LINUX_MMAPPED",
        228 => "IPV4",
        229 => "IPV6",
        249 => "NETLINK",
        276 => "LINUX_SLL2",
        _ => "unknown",
    }
}

/// One captured frame. `data` may be shorter than `wire_len` when the capture's snap length
/// cut it; downstream stages count such packets with their wire length.
#[derive(Debug, Clone, Copy)]
pub struct RawPacket<'a> {
    pub ts: Timestamp,
    pub link: LinkType,
    /// Length of the frame on the wire (the record's original length).
    pub wire_len: u32,
    pub data: &'a [u8],
}
