//! Link layers: find the IP header and the VLAN tags in a frame.

use super::{DecodeError, NotIp};
use crate::capture::LinkType;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// What the link layer wraps: the IP packet and the VLAN tag(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer3<'a> {
    pub vlan: u32,
    pub ip: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn by_ether_type(ether_type: u16, vlan: u32, ip: &[u8]) -> Result<Layer3<'_>, DecodeError> {
    match ether_type {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok(Layer3 { vlan, ip }),
        ETHERTYPE_ARP => Err(DecodeError::NotIp(NotIp::Arp)),
        _ => Err(DecodeError::NotIp(NotIp::Other)),
    }
}

/// Strips the link-layer header of `frame`.
pub fn strip(link: LinkType, frame: &[u8]) -> Result<Layer3<'_>, DecodeError> {
    match link {
        LinkType::Ethernet => ethernet(frame),
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => Ok(Layer3 { vlan: 0, ip: frame }),
        LinkType::LinuxSll => {
            // Packet type (2), ARPHRD (2), address length (2), address (8), protocol (2).
            let proto = be16(frame, 14).ok_or(DecodeError::TruncatedLink)?;
            by_ether_type(proto, 0, &frame[16..])
        }
        LinkType::LinuxSll2 => {
            // Protocol (2), reserved (2), interface index (4), ARPHRD (2), packet type (1),
            // address length (1), address (8).
            let proto = be16(frame, 0).ok_or(DecodeError::TruncatedLink)?;
            if frame.len() < 20 {
                return Err(DecodeError::TruncatedLink);
            }
            by_ether_type(proto, 0, &frame[20..])
        }
        LinkType::Null | LinkType::Loop => {
            // The address family is in the writer's byte order (NULL) or network order (LOOP):
            // accept either. AF_INET is 2 everywhere; AF_INET6 is 24, 28 or 30 by OS.
            let Some(fam) = frame.get(..4) else { return Err(DecodeError::TruncatedLink) };
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let is = |v: &[u32]| v.contains(&le) || v.contains(&be);
            if is(&[2]) || is(&[24, 28, 30]) {
                Ok(Layer3 { vlan: 0, ip: &frame[4..] })
            } else {
                Err(DecodeError::NotIp(NotIp::Other))
            }
        }
    }
}

fn ethernet(frame: &[u8]) -> Result<Layer3<'_>, DecodeError> {
    let mut ether_type = be16(frame, 12).ok_or(DecodeError::TruncatedLink)?;
    let mut at = 14;
    let mut vlan = 0u32;
    while matches!(ether_type, ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD) {
        let tci = be16(frame, at).ok_or(DecodeError::TruncatedLink)?;
        ether_type = be16(frame, at + 2).ok_or(DecodeError::TruncatedLink)?;
        // Keep the two innermost ids: outer in bits 12..24, inner in 0..12.
        vlan = ((vlan << 12) | (tci & 0x0fff) as u32) & 0x00ff_ffff;
        at += 4;
    }
    by_ether_type(ether_type, vlan, &frame[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(tags: &[(u16, u16)], ether_type: u16) -> Vec<u8> {
        let mut out = vec![0u8; 12];
        for (tpid, id) in tags {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&ether_type.to_be_bytes());
        out.extend_from_slice(&[0x45, 0, 0, 20]);
        out
    }

    #[test]
    fn ethernet_untagged_single_and_double_tags() {
        let f = eth(&[], ETHERTYPE_IPV4);
        let l = strip(LinkType::Ethernet, &f).unwrap();
        assert_eq!((l.vlan, l.ip[0]), (0, 0x45));
        let f = eth(&[(ETHERTYPE_VLAN, 100)], ETHERTYPE_IPV6);
        assert_eq!(strip(LinkType::Ethernet, &f).unwrap().vlan, 100);
        let f = eth(&[(ETHERTYPE_QINQ, 7), (ETHERTYPE_VLAN, 0x123)], ETHERTYPE_IPV4);
        assert_eq!(strip(LinkType::Ethernet, &f).unwrap().vlan, (7 << 12) | 0x123);
    }

    #[test]
    fn arp_and_others_are_not_ip() {
        assert_eq!(
            strip(LinkType::Ethernet, &eth(&[], ETHERTYPE_ARP)),
            Err(DecodeError::NotIp(NotIp::Arp))
        );
        assert_eq!(
            strip(LinkType::Ethernet, &eth(&[], 0x88cc)),
            Err(DecodeError::NotIp(NotIp::Other))
        );
    }

    #[test]
    fn every_truncation_is_refused_without_panic() {
        let f = eth(&[(ETHERTYPE_QINQ, 7), (ETHERTYPE_VLAN, 9)], ETHERTYPE_IPV4);
        for cut in 0..22 {
            assert_eq!(
                strip(LinkType::Ethernet, &f[..cut]),
                Err(DecodeError::TruncatedLink),
                "cut {cut}"
            );
        }
        for link in [LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Null, LinkType::Loop] {
            for cut in 0..4 {
                assert!(strip(link, &[0u8; 24][..cut]).is_err());
            }
        }
    }

    #[test]
    fn cooked_and_loopback_headers() {
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        sll.push(0x60);
        assert_eq!(strip(LinkType::LinuxSll, &sll).unwrap().ip, &[0x60]);
        let mut sll2 = vec![0u8; 20];
        sll2[0..2].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        sll2.push(0x45);
        assert_eq!(strip(LinkType::LinuxSll2, &sll2).unwrap().ip, &[0x45]);
        assert_eq!(strip(LinkType::Null, &[2, 0, 0, 0, 0x45]).unwrap().ip, &[0x45]);
        assert_eq!(strip(LinkType::Loop, &[0, 0, 0, 30, 0x60]).unwrap().ip, &[0x60]);
        assert_eq!(
            strip(LinkType::Null, &[7, 0, 0, 0, 0x45]),
            Err(DecodeError::NotIp(NotIp::Other))
        );
    }
}
