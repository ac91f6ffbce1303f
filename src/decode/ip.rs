//! IP and transport headers, sliced with etherparse's lax parser.

use std::net::IpAddr;

use etherparse::{Icmpv4Slice, Icmpv6Slice, LaxIpSlice, TcpSlice, UdpSlice, err};

use super::{DecodeError, Fragment, PacketMeta, TcpFlags, TcpMeta};
use crate::capture::Timestamp;

// IP protocol numbers (IANA). Defined here, where headers are read; `flow::key` re-exports
// the ones later stages match on.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// Byte offset of `inner` within `outer` (both slices of the same frame).
fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

/// Decodes an IP packet starting at `ip`. `wire_extra` is how many bytes of the frame the
/// capture did not keep; used only when the IP header gives no length (TSO, jumbograms).
pub fn decode_ip(
    ts: Timestamp,
    vlan: u32,
    ip: &[u8],
    wire_extra: u32,
) -> Result<PacketMeta<'_>, DecodeError> {
    decode_layer(ts, vlan, ip, wire_extra, false)
}

fn decode_layer(
    ts: Timestamp,
    vlan: u32,
    ip: &[u8],
    wire_extra: u32,
    tunneled: bool,
) -> Result<PacketMeta<'_>, DecodeError> {
    // The IP layer alone (not `LaxSlicedPacket`, whose large value showed in profiles as
    // copies); the transport is sliced below by protocol.
    let (sliced, _) = LaxIpSlice::from_slice(ip).map_err(|e| match e {
        err::ip::LaxHeaderSliceError::Len(_) => DecodeError::TruncatedIp,
        err::ip::LaxHeaderSliceError::Content(_) => DecodeError::MalformedIp,
    })?;
    let captured_or_wire = ip.len() as u32 + wire_extra;
    let (src, dst, ttl, ip_len, frag, payload) = match &sliced {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            let total = h.total_len() as u32;
            let ip_len = if total == 0 { captured_or_wire } else { total };
            let off = h.fragments_offset().value();
            let frag = match (h.more_fragments(), off) {
                (false, 0) => Fragment::Whole,
                (true, 0) => Fragment::First { id: h.identification() as u32 },
                _ => Fragment::Later { id: h.identification() as u32 },
            };
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                h.ttl(),
                ip_len,
                frag,
                v4.payload(),
            )
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            let plen = h.payload_length() as u32;
            let ip_len = if plen == 0 { captured_or_wire } else { 40 + plen };
            let frag = if v6.is_payload_fragmented() { ipv6_fragment(ip) } else { Fragment::Whole };
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                h.hop_limit(),
                ip_len,
                frag,
                v6.payload(),
            )
        }
    };
    let proto = payload.ip_number.0;
    let ip_payload_len = ip_len.saturating_sub(offset_in(ip, payload.payload) as u32);

    // Tunnels: decapsulate once (see the module doc).
    if !tunneled && matches!(frag, Fragment::Whole) && matches!(proto, IPPROTO_IPV6 | IPPROTO_IPIP)
    {
        let inner_extra = ip_payload_len.saturating_sub(payload.payload.len() as u32);
        if let Ok(mut inner) = decode_layer(ts, vlan, payload.payload, inner_extra, true) {
            inner.tunneled = true;
            return Ok(inner);
        }
    }

    let mut meta = PacketMeta {
        ts,
        vlan,
        src,
        dst,
        proto,
        sport: 0,
        dport: 0,
        wire_len: ip_len,
        ip_len,
        payload_len: ip_payload_len,
        ttl,
        tcp: TcpMeta::default(),
        frag,
        tunneled,
        payload: payload.payload,
    };
    let bytes = payload.payload;
    let first = matches!(frag, Fragment::First { .. });
    let hdr_len = match (frag, proto) {
        (Fragment::Later { .. }, _) => 0,
        (_, IPPROTO_TCP) => match TcpSlice::from_slice(bytes) {
            Ok(t) => {
                meta.sport = t.source_port();
                meta.dport = t.destination_port();
                meta.tcp = TcpMeta {
                    seq: t.sequence_number(),
                    ack: t.acknowledgment_number(),
                    flags: TcpFlags(t.header_slice()[13]),
                    window: t.window_size(),
                    wscale: if t.syn() { window_scale(t.options()) } else { None },
                };
                meta.payload = t.payload();
                t.header_len() as u32
            }
            // A first fragment may cut the TCP header: take what it has.
            Err(_) if first => first_fragment_transport(&mut meta),
            Err(err::tcp::HeaderSliceError::Len(_)) => return Err(DecodeError::TruncatedTransport),
            Err(err::tcp::HeaderSliceError::Content(_)) => {
                return Err(DecodeError::MalformedTransport);
            }
        },
        (_, IPPROTO_UDP) => match UdpSlice::from_slice_lax(bytes) {
            Ok(u) => {
                meta.sport = u.source_port();
                meta.dport = u.destination_port();
                meta.payload = u.payload();
                8
            }
            Err(_) if first => first_fragment_transport(&mut meta),
            Err(_) => return Err(DecodeError::TruncatedTransport),
        },
        (_, IPPROTO_ICMP | IPPROTO_ICMPV6) => {
            // (type, code, payload, header length), the same for both versions.
            let icmp = if proto == IPPROTO_ICMP {
                Icmpv4Slice::from_slice(bytes)
                    .map(|i| (i.type_u8(), i.code_u8(), i.payload(), i.header_len()))
                    .ok()
            } else {
                Icmpv6Slice::from_slice(bytes)
                    .map(|i| (i.type_u8(), i.code_u8(), i.payload(), i.header_len()))
                    .ok()
            };
            match icmp {
                Some((icmp_type, code, payload, hdr)) => {
                    meta.sport = icmp_type as u16;
                    meta.dport = code as u16;
                    meta.payload = payload;
                    hdr as u32
                }
                None if first => first_fragment_transport(&mut meta),
                None => return Err(DecodeError::TruncatedTransport),
            }
        }
        // Other protocols (GRE, ESP, SCTP, IGMP...): a flow keyed by protocol alone.
        _ => 0,
    };
    meta.payload_len = ip_payload_len.saturating_sub(hdr_len);
    Ok(meta)
}

/// The fragment header of an IPv6 packet, found by walking its extension headers in the raw
/// bytes, every step bounds-checked. (etherparse's extension iterator aborted on a fuzzed
/// packet in its unchecked slicing, so we do not iterate it.)
fn ipv6_fragment(ip: &[u8]) -> Fragment {
    let mut next = match ip.get(6) {
        Some(n) => *n,
        None => return Fragment::Whole,
    };
    let mut at = 40usize;
    // At most a handful of headers in any real packet; the bound stops loops on garbage.
    for _ in 0..16 {
        let Some(h) = ip.get(at..at + 8) else { return Fragment::Whole };
        match next {
            44 => {
                let off_flags = u16::from_be_bytes([h[2], h[3]]);
                let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                return match (off_flags & 1 == 1, off_flags >> 3) {
                    (false, 0) => Fragment::Whole,
                    (true, 0) => Fragment::First { id },
                    _ => Fragment::Later { id },
                };
            }
            0 | 43 | 60 | 135 | 139 | 140 => {
                next = h[0];
                at += (h[1] as usize + 1) * 8;
            }
            51 => {
                next = h[0];
                at += (h[1] as usize + 2) * 4;
            }
            _ => return Fragment::Whole,
        }
    }
    Fragment::Whole
}

/// The window scale shift from TCP options (kind 3), walking the option list by hand so a
/// malformed list ends the walk instead of failing the packet.
fn window_scale(options: &[u8]) -> Option<u8> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = *options.get(i + 1)? as usize;
                if len < 2 {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return options.get(i + 2).map(|s| (*s).min(14));
                }
                i += len;
            }
        }
    }
    None
}

/// Reads ports (and TCP header fields when present) from the start of a first fragment.
/// Returns the transport header length consumed from the payload.
fn first_fragment_transport(meta: &mut PacketMeta<'_>) -> u32 {
    let p = meta.payload;
    match meta.proto {
        IPPROTO_TCP | IPPROTO_UDP if p.len() >= 4 => {
            meta.sport = u16::from_be_bytes([p[0], p[1]]);
            meta.dport = u16::from_be_bytes([p[2], p[3]]);
            if meta.proto == IPPROTO_UDP {
                meta.payload = p.get(8..).unwrap_or(&[]);
                return 8;
            }
            if p.len() >= 20 {
                let hlen = ((p[12] >> 4) as usize * 4).max(20);
                meta.tcp = TcpMeta {
                    seq: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                    ack: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
                    flags: TcpFlags(p[13]),
                    window: u16::from_be_bytes([p[14], p[15]]),
                    wscale: None,
                };
                meta.payload = p.get(hlen..).unwrap_or(&[]);
                return hlen as u32;
            }
            0
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if p.len() >= 2 => {
            meta.sport = p[0] as u16;
            meta.dport = p[1] as u16;
            meta.payload = p.get(8..).unwrap_or(&[]);
            8
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_v4(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1234, 80, 1000, 65535)
            .syn()
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn tcp_fields_and_lengths() {
        let b = tcp_v4(b"GET / HTTP/1.1\r\n");
        let m = decode_ip(Timestamp(5), 0, &b, 0).unwrap();
        assert_eq!((m.proto, m.sport, m.dport, m.ttl), (6, 1234, 80, 64));
        assert_eq!((m.ip_len, m.payload_len), (20 + 20 + 16, 16));
        assert_eq!(m.tcp.seq, 1000);
        assert!(m.tcp.flags.syn() && !m.tcp.flags.ack());
        assert_eq!(m.payload, b"GET / HTTP/1.1\r\n");
        assert_eq!(m.frag, Fragment::Whole);
    }

    #[test]
    fn snaplen_truncated_payload_keeps_wire_lengths() {
        let b = tcp_v4(&[7u8; 1000]);
        let m = decode_ip(Timestamp(0), 0, &b[..60], 0).unwrap();
        assert_eq!((m.ip_len, m.payload_len, m.payload.len()), (1040, 1000, 20));
    }

    #[test]
    fn every_truncation_of_the_headers_is_an_error() {
        let b = tcp_v4(b"");
        for cut in 0..40 {
            let r = decode_ip(Timestamp(0), 0, &b[..cut], 0);
            assert!(r.is_err(), "cut {cut}: {r:?}");
        }
    }

    #[test]
    fn udp_v6_and_icmp_type_code() {
        let mut out = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 33)
            .udp(53, 5353)
            .write(&mut out, &[1, 2, 3])
            .unwrap();
        let m = decode_ip(Timestamp(0), 0, &out, 0).unwrap();
        assert_eq!(
            (m.proto, m.sport, m.dport, m.ip_len, m.payload_len, m.ttl),
            (17, 53, 5353, 51, 3, 33)
        );
        let mut out = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9)
            .icmpv4_echo_request(7, 1)
            .write(&mut out, &[0; 4])
            .unwrap();
        let m = decode_ip(Timestamp(0), 0, &out, 0).unwrap();
        assert_eq!((m.proto, m.sport, m.dport, m.payload_len), (1, 8, 0, 4));
    }

    #[test]
    fn ipv4_fragments_first_carries_ports_later_does_not() {
        let whole = {
            let mut out = Vec::new();
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(5000, 53)
                .write(&mut out, &[9u8; 100])
                .unwrap();
            out
        };
        // First fragment: MF set, offset 0, keep 20 IP + 8 UDP + 16 payload bytes.
        let mut first = whole[..44].to_vec();
        first[2..4].copy_from_slice(&44u16.to_be_bytes());
        first[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        first[6] = 0x20;
        let m = decode_ip(Timestamp(0), 0, &first, 0).unwrap();
        assert_eq!(
            (m.frag, m.sport, m.dport, m.payload_len),
            (Fragment::First { id: 0x1234 }, 5000, 53, 16)
        );
        // A later fragment: offset 3 (24 bytes), no transport header.
        let mut later = whole[..20].to_vec();
        later.extend_from_slice(&[9u8; 84]);
        later[2..4].copy_from_slice(&104u16.to_be_bytes());
        later[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        later[6..8].copy_from_slice(&3u16.to_be_bytes());
        let m = decode_ip(Timestamp(0), 0, &later, 0).unwrap();
        assert_eq!(
            (m.frag, m.sport, m.dport, m.payload_len),
            (Fragment::Later { id: 0x1234 }, 0, 0, 84)
        );
    }

    /// Regression (fuzzing, capture_file target): extension headers whose lengths run past
    /// the packet end the walk; a real fragment header behind a hop-by-hop header is found.
    #[test]
    fn ipv6_extension_walk_is_bounded() {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        p.extend_from_slice(&[0; 32]);
        for len in [0u8, 1, 200, 255] {
            let mut q = p.clone();
            q[6] = 0;
            q.extend_from_slice(&[44, len, 0, 0, 0, 0, 0, 0]);
            for cut in 0..q.len() + 8 {
                let _ = ipv6_fragment(&q[..cut.min(q.len())]);
            }
        }
        let mut q = p.clone();
        q[6] = 0;
        q.extend_from_slice(&[44, 0, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0x12, 0x34]);
        assert_eq!(ipv6_fragment(&q), Fragment::First { id: 0x1234 });
        let n = q.len();
        q[n - 6] = 0x08;
        assert_eq!(ipv6_fragment(&q), Fragment::Later { id: 0x1234 });
    }

    #[test]
    fn six_in_four_is_decapsulated() {
        let mut inner = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 60)
            .tcp(4000, 443, 1, 100)
            .write(&mut inner, &[0; 10])
            .unwrap();
        let mut outer = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .write(&mut outer, etherparse::IpNumber(41), &inner)
            .unwrap();
        let m = decode_ip(Timestamp(0), 0, &outer, 0).unwrap();
        assert!(m.tunneled);
        assert_eq!((m.proto, m.sport, m.dport, m.ip_len, m.payload_len), (6, 4000, 443, 70, 10));
        assert_eq!(m.src, IpAddr::from([1u8; 16]));
    }
}
