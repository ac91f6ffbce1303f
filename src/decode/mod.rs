//! Decode: a captured frame becomes a fixed-size [`PacketMeta`].
//!
//! The link layer (Ethernet with 802.1Q/802.1ad tags, Linux cooked v1/v2, BSD loopback, raw
//! IP) is peeled in [`link`]; IP and transport headers are sliced with `etherparse`'s lax,
//! zero-copy parser in [`ip`], which tolerates captures cut by a snap length.
//!
//! Contract: `decode` never panics and never allocates. On success every later stage works
//! from `PacketMeta` alone; the only bytes it still borrows are the transport payload, for
//! service sniffing. Lengths in `PacketMeta` are taken from the headers (what was on the
//! wire), not from what the capture kept, so truncated packets count in full.
//!
//! Tunnels: IPv6-in-IPv4 (protocol 41, "6in4") and IP-in-IP (protocol 4) are decapsulated,
//! once, to the inner packet, as Zeek does: the inner connection is what hosts exchanged, and
//! a detector keyed on the outer tunnel endpoints would see one opaque flow. `tunneled` marks
//! such packets. Malformed packets are data, not failures: [`DecodeError`] says which layer
//! failed and why, and callers count it.

pub mod ip;
pub mod link;

use std::fmt;
use std::net::IpAddr;

use crate::capture::{RawPacket, Timestamp};

/// TCP flag bits as in the header's flags byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    pub fn fin(self) -> bool {
        self.has(Self::FIN)
    }
    pub fn syn(self) -> bool {
        self.has(Self::SYN)
    }
    pub fn rst(self) -> bool {
        self.has(Self::RST)
    }
    pub fn ack(self) -> bool {
        self.has(Self::ACK)
    }
}

/// TCP header fields the flow engine uses. All zero for other protocols.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpMeta {
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    /// Window scale option of a SYN (RFC 7323), if present.
    pub wscale: Option<u8>,
}

/// Where an IP fragment sits in its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// Offset 0 with more to come: carries the transport header (ports).
    First { id: u32 },
    /// A later fragment: no transport header; the flow stage finds its ports by `id`.
    Later { id: u32 },
}

/// One decoded packet.
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta<'a> {
    pub ts: Timestamp,
    /// 802.1Q tag(s): outer id in bits 12..24, inner id in bits 0..12 for QinQ; 0 if untagged.
    pub vlan: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number of the transport (the inner one for tunnels).
    pub proto: u8,
    /// Transport ports; for ICMP and ICMPv6 the type and code (Zeek's convention).
    pub sport: u16,
    pub dport: u16,
    /// Frame length on the wire, link-layer header included (what Argus counts as bytes).
    pub wire_len: u32,
    /// IP packet length from the IP header (IPv4 total length; IPv6 40 + payload length).
    pub ip_len: u32,
    /// Transport payload length from the headers (excludes the transport header).
    pub payload_len: u32,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub tcp: TcpMeta,
    pub frag: Fragment,
    /// Decapsulated from 6in4 or IP-in-IP.
    pub tunneled: bool,
    /// The captured part of the transport payload (may be shorter than `payload_len`).
    pub payload: &'a [u8],
}

impl PacketMeta<'_> {
    /// Transport header bytes (TCP/UDP/ICMP) plus IP header bytes: `ip_len - payload_len`.
    pub fn header_len(&self) -> u32 {
        self.ip_len.saturating_sub(self.payload_len)
    }

    /// The decoded fields with no payload, free of the frame they came from: the streaming
    /// pipeline decodes a frame once and hands on these and a copy of the payload, which the
    /// flow worker puts back (`meta.payload = ...`; a `PacketMeta<'static>` is a
    /// `PacketMeta` of any lifetime).
    pub fn detached(&self) -> PacketMeta<'static> {
        PacketMeta {
            ts: self.ts,
            vlan: self.vlan,
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport: self.sport,
            dport: self.dport,
            wire_len: self.wire_len,
            ip_len: self.ip_len,
            payload_len: self.payload_len,
            ttl: self.ttl,
            tcp: self.tcp,
            frag: self.frag,
            tunneled: self.tunneled,
            payload: &[],
        }
    }
}

/// Not-IP frames: counted, not flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotIp {
    Arp,
    /// Another ether type (LLDP, STP, IPX...) or loopback address family.
    Other,
}

/// Why a frame did not become a [`PacketMeta`]. Small and `Copy`: counted per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The frame ended inside the link-layer header.
    TruncatedLink,
    /// A well-formed frame that carries no IP.
    NotIp(NotIp),
    /// The frame ended inside the IP header.
    TruncatedIp,
    /// An IP header that contradicts itself (version, header length, total length).
    MalformedIp,
    /// The frame ended inside the TCP/UDP/ICMP header (not a fragment).
    TruncatedTransport,
    /// A malformed transport header (TCP data offset below 5...).
    MalformedTransport,
}

impl DecodeError {
    /// Every variant, for reporting counters in a stable order.
    pub const ALL: [DecodeError; 7] = [
        DecodeError::TruncatedLink,
        DecodeError::NotIp(NotIp::Arp),
        DecodeError::NotIp(NotIp::Other),
        DecodeError::TruncatedIp,
        DecodeError::MalformedIp,
        DecodeError::TruncatedTransport,
        DecodeError::MalformedTransport,
    ];

    /// Index into a counter array of `ALL.len()` entries.
    pub fn index(self) -> usize {
        match self {
            DecodeError::TruncatedLink => 0,
            DecodeError::NotIp(NotIp::Arp) => 1,
            DecodeError::NotIp(NotIp::Other) => 2,
            DecodeError::TruncatedIp => 3,
            DecodeError::MalformedIp => 4,
            DecodeError::TruncatedTransport => 5,
            DecodeError::MalformedTransport => 6,
        }
    }

    /// A stable snake_case name for stats output.
    pub fn name(self) -> &'static str {
        match self {
            DecodeError::TruncatedLink => "truncated_link_header",
            DecodeError::NotIp(NotIp::Arp) => "not_ip_arp",
            DecodeError::NotIp(NotIp::Other) => "not_ip_other",
            DecodeError::TruncatedIp => "truncated_ip_header",
            DecodeError::MalformedIp => "malformed_ip_header",
            DecodeError::TruncatedTransport => "truncated_transport_header",
            DecodeError::MalformedTransport => "malformed_transport_header",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters of frames that did not decode, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub decoded: u64,
    pub tunneled: u64,
    pub errors: [u64; DecodeError::ALL.len()],
}

impl DecodeStats {
    /// Counts one decode outcome.
    pub fn record(&mut self, r: &Result<PacketMeta<'_>, DecodeError>) {
        match r {
            Ok(m) => {
                self.decoded += 1;
                self.tunneled += m.tunneled as u64;
            }
            Err(e) => self.errors[e.index()] += 1,
        }
    }

    pub fn skipped(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn merge(&mut self, o: &DecodeStats) {
        self.decoded += o.decoded;
        self.tunneled += o.tunneled;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
    }
}

/// Decodes one frame.
pub fn decode<'a>(pkt: &RawPacket<'a>) -> Result<PacketMeta<'a>, DecodeError> {
    let l3 = link::strip(pkt.link, pkt.data)?;
    let wire_extra = pkt.wire_len.saturating_sub(pkt.data.len() as u32);
    let mut meta = ip::decode_ip(pkt.ts, l3.vlan, l3.ip, wire_extra)?;
    meta.wire_len = pkt.wire_len;
    Ok(meta)
}
