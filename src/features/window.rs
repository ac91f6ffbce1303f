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

/// An address's number in the window: at most `2 * WINDOW + 2` addresses are numbered at once,
/// so a byte names each, and `EMPTY` none (an empty slot matches nothing).
type AddrId = u8;
const EMPTY: AddrId = AddrId::MAX;
const _: () = assert!(2 * WINDOW + 2 <= EMPTY as usize, "every address in use needs a number");
const _: () = assert!(WINDOW <= u8::MAX as usize, "a count of the window fits a byte");

/// The last `WINDOW` records, each as the numbers of its addresses, its ports and its service,
/// in arrays that a count scans whole.
///
/// Addresses are numbered while some record of the window has them (a reference count per
/// number), so that the scan compares bytes instead of 16-byte addresses: a count is seven
/// comparisons over 100 slots the compiler turns into vector instructions, some tens of
/// nanoseconds, and a push costs two lookups of the numbering. Counting with a hash map of the
/// seven attributes per record (14 updates of 40-byte keys per push) was the largest item of the
/// flow-heavy profile, and a scan over the records' own addresses before it too.
#[derive(Debug, Clone)]
pub struct CtWindow {
    src: [AddrId; WINDOW],
    dst: [AddrId; WINDOW],
    sport: [u16; WINDOW],
    dport: [u16; WINDOW],
    service: [u8; WINDOW],
    /// The slot the next record takes (the oldest record's, once the window is full).
    next: usize,
    /// Numbering of the addresses in the window (at most 200 entries, so a fixed hash seed
    /// cannot be abused into long chains).
    ids: std::collections::HashMap<u128, AddrId, foldhash::fast::FixedState>,
    /// Per number: its address and how many address fields of the window hold it.
    addr_of: [u128; EMPTY as usize],
    refs: [u16; EMPTY as usize],
    free: Vec<AddrId>,
}

impl Default for CtWindow {
    fn default() -> CtWindow {
        CtWindow {
            src: [EMPTY; WINDOW],
            dst: [EMPTY; WINDOW],
            sport: [0; WINDOW],
            dport: [0; WINDOW],
            service: [0; WINDOW],
            next: 0,
            ids: Default::default(),
            addr_of: [0; EMPTY as usize],
            refs: [0; EMPTY as usize],
            // Popped from the end: the lowest numbers first.
            free: (0..EMPTY).rev().collect(),
        }
    }
}

impl CtWindow {
    /// Adds a record and returns its counts (itself included).
    pub fn push(&mut self, e: WindowEntry) -> CtCounts {
        let slot = self.next;
        self.next = (slot + 1) % WINDOW;
        // Numbered before the oldest record's addresses are released (so that an address in
        // both keeps its number): at most 2 * WINDOW + 2 numbers are in use at once.
        let s = self.number(addr_bits(e.src));
        let d = self.number(addr_bits(e.dst));
        let (old_src, old_dst) = (self.src[slot], self.dst[slot]);
        self.release(old_src);
        self.release(old_dst);
        self.src[slot] = s;
        self.dst[slot] = d;
        self.sport[slot] = e.sport;
        self.dport[slot] = e.dport;
        self.service[slot] = e.service as u8;
        let (sp, dp, sv) = (e.sport, e.dport, e.service as u8);
        // Counts of at most WINDOW (100) fit a byte: byte-wide sums take four times the lanes
        // of a vector register that u32 sums do.
        let mut c = [0u8; 7];
        for j in 0..WINDOW {
            let ms = self.src[j] == s;
            let md = self.dst[j] == d;
            let mv = self.service[j] == sv;
            c[0] += u8::from(mv & ms);
            c[1] += u8::from(mv & md);
            c[2] += u8::from(md);
            c[3] += u8::from(ms);
            c[4] += u8::from(ms & (self.dport[j] == dp));
            c[5] += u8::from(md & (self.sport[j] == sp));
            c[6] += u8::from(ms & md);
        }
        let c = c.map(u32::from);
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

    /// The number of an address, numbering it if new; counts one more field holding it.
    fn number(&mut self, a: u128) -> AddrId {
        let id = match self.ids.entry(a) {
            std::collections::hash_map::Entry::Occupied(o) => *o.get(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let id = self.free.pop().expect("at most 2 * WINDOW + 2 addresses are numbered");
                self.addr_of[id as usize] = a;
                *v.insert(id)
            }
        };
        self.refs[id as usize] += 1;
        id
    }

    /// One field fewer holds this number; the last one frees it.
    fn release(&mut self, id: AddrId) {
        if id == EMPTY {
            return;
        }
        let r = &mut self.refs[id as usize];
        *r -= 1;
        if *r == 0 {
            self.ids.remove(&self.addr_of[id as usize]);
            self.free.push(id);
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

    /// The counts equal a plain scan of the last 100 records: with few addresses (many
    /// matches) and with hundreds (every address number in use and reused), IPv4 and IPv6.
    #[test]
    fn matches_a_scan_of_the_window() {
        for (hosts, seed) in [(6, 5), (250, 6)] {
            scan_check(hosts, seed);
        }
    }

    fn scan_check(hosts: u64, seed: u64) {
        let mut rng = crate::capture::synth::Rng::new(seed);
        let mut w = CtWindow::default();
        let mut all: Vec<WindowEntry> = Vec::new();
        let services = [Service::Http, Service::Dns, Service::None];
        for i in 0..3000 {
            let mut x = e(
                rng.range(1, hosts) as u8,
                rng.range(1, hosts) as u8,
                rng.range(1, 4) as u16,
                rng.range(1, 4) as u16,
                services[rng.range(0, 3) as usize],
            );
            if i % 7 == 0 {
                x.src = IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, rng.range(1, hosts) as u16]);
            }
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
