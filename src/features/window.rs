//! UNSW-NB15's `ct_*` counts: among the last 100 exported records (the current one
//! included), how many share an attribute with the current one.
//!
//! The data set's authors ordered records by last time, and so do we: the window is fed in the
//! order of [`crate::flow::order`] (last time, then a stable tie), which the offline engine and
//! the streaming pipeline both restore whatever order the flow tables exported in, so the
//! counts are the same for any number of flow workers and on every run.

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

/// The attributes a window counts by (addresses as integers, IPv4 mapped into IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CtKey {
    Src(u128),
    Dst(u128),
    SrcDst(u128, u128),
    SrcDport(u128, u16),
    DstSport(u128, u16),
    SrvSrc(Service, u128),
    SrvDst(Service, u128),
}

fn keys(e: &WindowEntry) -> [CtKey; 7] {
    let (src, dst) = (addr_bits(e.src), addr_bits(e.dst));
    [
        CtKey::SrvSrc(e.service, src),
        CtKey::SrvDst(e.service, dst),
        CtKey::Dst(dst),
        CtKey::Src(src),
        CtKey::SrcDport(src, e.dport),
        CtKey::DstSport(dst, e.sport),
        CtKey::SrcDst(src, dst),
    ]
}

/// The last `WINDOW` records and, for every attribute value among them, how many records
/// have it (at most 700 keys, so a fixed hash seed cannot be abused into long chains): a push adds the new record's seven attributes and removes the evicted one's, so
/// the counts cost a few hash updates instead of a scan of the window (a scan was the largest
/// item of the engine's instruction profile).
#[derive(Debug, Clone, Default)]
pub struct CtWindow {
    ring: std::collections::VecDeque<[CtKey; 7]>,
    counts: std::collections::HashMap<CtKey, u32, foldhash::fast::FixedState>,
}

impl CtWindow {
    /// Adds a record and returns its counts (itself included).
    pub fn push(&mut self, e: WindowEntry) -> CtCounts {
        if self.ring.len() == WINDOW {
            let old = self.ring.pop_front().expect("the window is full");
            for k in old {
                if let std::collections::hash_map::Entry::Occupied(mut o) = self.counts.entry(k) {
                    *o.get_mut() -= 1;
                    if *o.get() == 0 {
                        o.remove();
                    }
                }
            }
        }
        let ks = keys(&e);
        let mut c = [0u32; 7];
        for (n, k) in c.iter_mut().zip(ks) {
            let v = self.counts.entry(k).or_insert(0);
            *v += 1;
            *n = *v;
        }
        self.ring.push_back(ks);
        CtCounts {
            srv_src: c[0],
            srv_dst: c[1],
            dst_ltm: c[2],
            src_ltm: c[3],
            src_dport_ltm: c[4],
            dst_sport_ltm: c[5],
            dst_src_ltm: c[6],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(src: u8, dst: u8, sport: u16, dport: u16, service: Service) -> WindowEntry {
        WindowEntry {
            src: IpAddr::from([10, 0, 0, src]),
            dst: IpAddr::from([10, 0, 1, dst]),
            sport,
            dport,
            service,
        }
    }

    /// The incremental counts equal a plain scan of the last 100 records.
    #[test]
    fn matches_a_scan_of_the_window() {
        let mut rng = crate::capture::synth::Rng::new(5);
        let mut w = CtWindow::default();
        let mut all: Vec<WindowEntry> = Vec::new();
        let services = [Service::Http, Service::Dns, Service::None];
        for _ in 0..2000 {
            let x = e(
                rng.range(1, 6) as u8,
                rng.range(1, 6) as u8,
                rng.range(1, 4) as u16,
                rng.range(1, 4) as u16,
                services[rng.range(0, 3) as usize],
            );
            all.push(x);
            let got = w.push(x);
            let win = &all[all.len().saturating_sub(WINDOW)..];
            let count =
                |f: &dyn Fn(&WindowEntry) -> bool| win.iter().filter(|o| f(o)).count() as u32;
            let want = CtCounts {
                srv_src: count(&|o| o.service == x.service && o.src == x.src),
                srv_dst: count(&|o| o.service == x.service && o.dst == x.dst),
                dst_ltm: count(&|o| o.dst == x.dst),
                src_ltm: count(&|o| o.src == x.src),
                src_dport_ltm: count(&|o| o.src == x.src && o.dport == x.dport),
                dst_sport_ltm: count(&|o| o.dst == x.dst && o.sport == x.sport),
                dst_src_ltm: count(&|o| o.src == x.src && o.dst == x.dst),
            };
            assert_eq!(got, want);
        }
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
            CtCounts {
                srv_src: 3,
                srv_dst: 2,
                dst_ltm: 4,
                src_ltm: 4,
                src_dport_ltm: 3,
                dst_sport_ltm: 3,
                dst_src_ltm: 3
            }
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
