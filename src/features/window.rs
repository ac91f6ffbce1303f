//! UNSW-NB15's `ct_*` counts: among the last 100 exported records (the current one
//! included), how many share an attribute with the current one.
//!
//! The data set's authors ordered records by last time; we count over export order, which is
//! last-activity order for idle expiry and end of input (the bulk of records) and can differ
//! by up to the close linger or the active timeout for the others.

use std::net::IpAddr;

use crate::flow::Service;

/// Window length of the published features.
pub const WINDOW: usize = 100;

/// What the windowed counts compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowEntry {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub service: Service,
}

/// The counts for one record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCounts {
    pub srv_src: u32,
    pub srv_dst: u32,
    pub dst_ltm: u32,
    pub src_ltm: u32,
    pub src_dport_ltm: u32,
    pub dst_sport_ltm: u32,
    pub dst_src_ltm: u32,
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A ring of the last `WINDOW` records, stored column by column (addresses as integers, IPv4
/// mapped into IPv6) so that the scan compiles to straight comparisons over arrays.
#[derive(Debug, Clone)]
pub struct CtWindow {
    src: [u128; WINDOW],
    dst: [u128; WINDOW],
    sport: [u16; WINDOW],
    dport: [u16; WINDOW],
    service: [Service; WINDOW],
    len: usize,
    next: usize,
}

impl Default for CtWindow {
    fn default() -> Self {
        CtWindow {
            src: [0; WINDOW],
            dst: [0; WINDOW],
            sport: [0; WINDOW],
            dport: [0; WINDOW],
            service: [Service::None; WINDOW],
            len: 0,
            next: 0,
        }
    }
}

impl CtWindow {
    /// Adds a record and returns its counts (itself included).
    pub fn push(&mut self, e: WindowEntry) -> CtCounts {
        let (src, dst) = (addr_bits(e.src), addr_bits(e.dst));
        let at = self.next;
        self.src[at] = src;
        self.dst[at] = dst;
        self.sport[at] = e.sport;
        self.dport[at] = e.dport;
        self.service[at] = e.service;
        self.next = (at + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        let n = self.len;
        let mut c = CtCounts::default();
        for i in 0..n {
            let same_src = self.src[i] == src;
            let same_dst = self.dst[i] == dst;
            let same_srv = self.service[i] == e.service;
            c.srv_src += (same_srv & same_src) as u32;
            c.srv_dst += (same_srv & same_dst) as u32;
            c.dst_ltm += same_dst as u32;
            c.src_ltm += same_src as u32;
            c.src_dport_ltm += (same_src & (self.dport[i] == e.dport)) as u32;
            c.dst_sport_ltm += (same_dst & (self.sport[i] == e.sport)) as u32;
            c.dst_src_ltm += (same_src & same_dst) as u32;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(src: u8, dst: u8, sport: u16, dport: u16, service: Service) -> WindowEntry {
        WindowEntry { src: IpAddr::from([10, 0, 0, src]), dst: IpAddr::from([10, 0, 1, dst]), sport, dport, service }
    }

    /// Hand-computed: five records, the counts of the fifth.
    #[test]
    fn counts_by_hand() {
        let mut w = CtWindow::default();
        w.push(e(1, 1, 1000, 80, Service::Http));
        w.push(e(1, 2, 1001, 80, Service::Http));
        w.push(e(2, 1, 1000, 22, Service::Ssh));
        w.push(e(1, 1, 1002, 22, Service::Ssh));
        let c = w.push(e(1, 1, 1000, 80, Service::Http));
        assert_eq!(
            c,
            CtCounts { srv_src: 3, srv_dst: 2, dst_ltm: 4, src_ltm: 4, src_dport_ltm: 3, dst_sport_ltm: 3, dst_src_ltm: 3 }
        );
    }

    #[test]
    fn only_the_last_hundred_count() {
        let mut w = CtWindow::default();
        for _ in 0..150 {
            w.push(e(1, 1, 1, 1, Service::None));
        }
        let c = w.push(e(1, 1, 1, 1, Service::None));
        assert_eq!(c.dst_src_ltm, 100);
        for _ in 0..99 {
            w.push(e(2, 2, 2, 2, Service::None));
        }
        assert_eq!(w.push(e(1, 1, 1, 1, Service::None)).src_ltm, 1);
    }
}
