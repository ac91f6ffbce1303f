//! Flow identity: the bidirectional key, ICMP's port equivalents, and the community ID.

use std::net::IpAddr;

use base64::Engine;
use sha1::{Digest, Sha1};

pub use crate::decode::ip::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// A bidirectional flow key: both directions of a conversation map to the same key. The
/// endpoint with the smaller (address, port) is `lo`. Ports of ICMP are the type and the
/// counterpart type (or code), so that a request and its reply share a key, as in Zeek.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub lo_addr: IpAddr,
    pub hi_addr: IpAddr,
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    pub vlan: u32,
}

impl FlowKey {
    /// The key of a packet from `src:sport` to `dst:dport`, and whether `src` is the `lo` side.
    /// For ICMP, `sport`/`dport` are the packet's type and code.
    pub fn new(
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        proto: u8,
        vlan: u32,
    ) -> (FlowKey, bool) {
        let (sport, dport) = match proto {
            IPPROTO_ICMP | IPPROTO_ICMPV6 => {
                let (s, d, _) = icmp_port_equivalents(proto, sport as u8, dport as u8);
                (s, d)
            }
            _ => (sport, dport),
        };
        if (src, sport) <= (dst, dport) {
            (
                FlowKey { lo_addr: src, hi_addr: dst, lo_port: sport, hi_port: dport, proto, vlan },
                true,
            )
        } else {
            (
                FlowKey { lo_addr: dst, hi_addr: src, lo_port: dport, hi_port: sport, proto, vlan },
                false,
            )
        }
    }
}

fn addr_u128(a: &IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

/// Hashes the key as three integer writes rather than field by field (the derived impl makes
/// a write per discriminant, length and byte array: it showed in the flow table's profile).
/// IPv4 and IPv6 keys cannot collide as equal: equality still compares the enums.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u128(addr_u128(&self.lo_addr));
        h.write_u128(addr_u128(&self.hi_addr));
        h.write_u64(
            (self.lo_port as u64) << 48
                | (self.hi_port as u64) << 32
                | (self.proto as u64) << 24
                | (self.vlan as u64 & 0xff_ffff),
        );
    }
}

/// Zeek's mapping of an ICMP type and code to a port pair: request and reply types map to
/// each other; other messages are one-way, with the code as the second port.
/// Returns (port-like source, port-like destination, one-way).
pub fn icmp_port_equivalents(proto: u8, icmp_type: u8, code: u8) -> (u16, u16, bool) {
    let counterpart = if proto == IPPROTO_ICMP {
        match icmp_type {
            8 => Some(0),
            0 => Some(8),
            13 => Some(14),
            14 => Some(13),
            15 => Some(16),
            16 => Some(15),
            10 => Some(9),
            9 => Some(10),
            17 => Some(18),
            18 => Some(17),
            _ => None,
        }
    } else {
        match icmp_type {
            128 => Some(129),
            129 => Some(128),
            130 => Some(131),
            131 => Some(130),
            133 => Some(134),
            134 => Some(133),
            135 => Some(136),
            136 => Some(135),
            139 => Some(140),
            140 => Some(139),
            144 => Some(145),
            145 => Some(144),
            _ => None,
        }
    };
    match counterpart {
        Some(c) => (icmp_type as u16, c, false),
        None => (icmp_type as u16, code as u16, true),
    }
}

fn addr_bytes(a: &IpAddr, out: &mut [u8; 16]) -> usize {
    match a {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            out.copy_from_slice(&v6.octets());
            16
        }
    }
}

/// Community ID v1 (corelight/community-id-spec) of a flow seen from its originator:
/// `1:` + base64(SHA1(seed . addr . addr . proto . 0 . port . port)), endpoints ordered so the
/// smaller (address, port) comes first, except for one-way ICMP messages. Ports are omitted
/// for protocols other than TCP, UDP, SCTP and ICMP. For ICMP pass the type and code as ports.
pub fn community_id(
    seed: u16,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    proto: u8,
) -> super::ShortText {
    let (mut sport, mut dport, mut one_way) = (sport, dport, false);
    if matches!(proto, IPPROTO_ICMP | IPPROTO_ICMPV6) {
        (sport, dport, one_way) = icmp_port_equivalents(proto, sport as u8, dport as u8);
    }
    let mut a = ([0u8; 16], 0);
    a.1 = addr_bytes(&src, &mut a.0);
    let mut b = ([0u8; 16], 0);
    b.1 = addr_bytes(&dst, &mut b.0);
    if !one_way && (&a.0[..a.1], sport) > (&b.0[..b.1], dport) {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut sport, &mut dport);
    }
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(&a.0[..a.1]);
    h.update(&b.0[..b.1]);
    h.update([proto, 0]);
    if matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_ICMP | IPPROTO_ICMPV6) {
        h.update(sport.to_be_bytes());
        h.update(dport.to_be_bytes());
    }
    let mut out = [0u8; super::ShortText::CAPACITY];
    out[..2].copy_from_slice(b"1:");
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(h.finalize(), &mut out[2..])
        .expect("a SHA-1 is 28 base64 characters");
    super::ShortText::from_ascii(&out[..2 + n]).expect("base64 is ASCII and fits")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Expected values computed with the reference implementation, pycommunityid 1.5.0
    /// (`CommunityID().calc(FlowTuple.make_tcp(...))` and friends).
    #[test]
    fn community_id_matches_pycommunityid() {
        let cases = [
            (0, "10.0.0.1", 1234, "127.0.0.1", 80, IPPROTO_TCP, "1:F/BCgQTUT/FXrTnSBgdsKwJ26iE="),
            (0, "127.0.0.1", 80, "10.0.0.1", 1234, IPPROTO_TCP, "1:F/BCgQTUT/FXrTnSBgdsKwJ26iE="),
            (
                0,
                "192.168.0.89",
                8,
                "192.168.0.1",
                0,
                IPPROTO_ICMP,
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
            ),
            (
                0,
                "192.168.0.1",
                0,
                "192.168.0.89",
                0,
                IPPROTO_ICMP,
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
            ),
            (
                0,
                "192.168.0.89",
                3,
                "192.168.0.1",
                3,
                IPPROTO_ICMP,
                "1:dPRpNwuTNOTQEtM23HPAdlCnrwc=",
            ),
            (
                0,
                "192.168.0.1",
                3,
                "192.168.0.89",
                3,
                IPPROTO_ICMP,
                "1:ZouhgnVac3AK62b9tKlLG4N+dVQ=",
            ),
            (0, "fe80::1", 53, "fe80::2", 5353, IPPROTO_UDP, "1:K1gRBG7QLdxJnzb4Vr7fkh3ITeI="),
            (
                0,
                "fe80::200:86ff:fe05:80da",
                135,
                "fe80::260:97ff:fe07:69ea",
                0,
                IPPROTO_ICMPV6,
                "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
            ),
            (0, "10.1.1.1", 0, "10.1.1.2", 0, 47, "1:6bVMFPWneS3bg49/6T1HieDmRMQ="),
            (0, "10.0.0.1", 80, "10.0.0.1", 1234, IPPROTO_TCP, "1:WaobEo3Uyp/JjlL9QX3lvrl1Oag="),
            (
                0,
                "2001:db8::2",
                5353,
                "2001:db8::1",
                53,
                IPPROTO_UDP,
                "1:tajKKCYPX5Fr60+44RSdKtpFb4s=",
            ),
            (1, "10.0.0.1", 1234, "127.0.0.1", 80, IPPROTO_TCP, "1:KXW93/jAcpeBncylgsTkLvvHFIU="),
        ];
        for (seed, s, sp, d, dp, proto, want) in cases {
            assert_eq!(
                community_id(seed, ip(s), sp, ip(d), dp, proto).as_str(),
                want,
                "{s}:{sp} -> {d}:{dp} proto {proto}"
            );
        }
    }

    #[test]
    fn key_is_the_same_both_ways() {
        let (k1, lo1) = FlowKey::new(ip("10.0.0.2"), 5000, ip("10.0.0.1"), 80, IPPROTO_TCP, 3);
        let (k2, lo2) = FlowKey::new(ip("10.0.0.1"), 80, ip("10.0.0.2"), 5000, IPPROTO_TCP, 3);
        assert_eq!(k1, k2);
        assert_ne!(lo1, lo2);
        // An echo request and its reply share a key; a different VLAN does not.
        let (e1, _) = FlowKey::new(ip("1.1.1.1"), 8, ip("2.2.2.2"), 0, IPPROTO_ICMP, 0);
        let (e2, _) = FlowKey::new(ip("2.2.2.2"), 0, ip("1.1.1.1"), 0, IPPROTO_ICMP, 0);
        assert_eq!(e1, e2);
        let (k3, _) = FlowKey::new(ip("10.0.0.2"), 5000, ip("10.0.0.1"), 80, IPPROTO_TCP, 4);
        assert_ne!(k1, k3);
    }
}
