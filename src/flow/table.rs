//! The flow table: bidirectional lookup, timeouts, eviction, and export exactly once.
//!
//! Flows live in a slab (`Vec` of slots, reused through a free list) indexed by a keyed hash
//! map; nothing is allocated per packet once the slab has grown to the working set. Each flow
//! is on one of five intrusive lists, one per timeout class (TCP, UDP, ICMP, other, closing),
//! ordered by last activity; since every flow on a list shares one timeout, expiry only ever
//! looks at list heads.
//!
//! Time is the capture clock: the largest packet timestamp seen. A packet older than the
//! clock (reordering, `ndpi/malware.pcap`) updates its flow but never moves the clock back;
//! one older by more than `max_time_regression` (concatenated captures, `ndpi/sites.pcapng`)
//! exports every open flow and restarts the clock. Both cases are counted.

use std::collections::HashMap;
use std::net::IpAddr;

use super::config::FlowConfig;
use super::key::{FlowKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use super::order::StreamTime;
use super::record::{EndReason, FlowRecord};
use crate::capture::Timestamp;
use crate::decode::{Fragment, PacketMeta};

const NIL: u32 = u32::MAX;

/// Timeout classes, each with its own activity-ordered list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Tcp = 0,
    Udp,
    Icmp,
    Other,
    /// TCP flows that ended, waiting out the close linger.
    Closing,
}

impl Class {
    fn of(proto: u8) -> Class {
        match proto {
            IPPROTO_TCP => Class::Tcp,
            IPPROTO_UDP => Class::Udp,
            IPPROTO_ICMP | IPPROTO_ICMPV6 => Class::Icmp,
            _ => Class::Other,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

#[derive(Debug, Clone)]
struct Slot {
    rec: FlowRecord,
    key: FlowKey,
    /// Whether the originator is the key's `lo` endpoint.
    orig_is_lo: bool,
    class: Class,
    /// Capture clock at the flow's last packet (never decreases).
    activity: Timestamp,
    prev: u32,
    next: u32,
    live: bool,
}

/// Counters of the flow stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    pub flows_created: u64,
    /// Flows exported, by [`EndReason`] (indexed as `EndReason::ALL`).
    pub exported: [u64; 6],
    /// Packets older than the capture clock (clock held).
    pub time_backwards: u64,
    /// Backward jumps beyond `max_time_regression` (all flows exported, clock restarted).
    pub clock_resets: u64,
    /// Later IP fragments whose first fragment never came (within the fragment timeout):
    /// counted here, in no flow.
    pub orphan_fragments: u64,
    /// Later IP fragments that arrived before their first fragment and were held, then added
    /// to the flow when the first fragment came.
    pub fragments_joined_late: u64,
    /// Times the fragment memory was full and old entries were dropped.
    pub fragment_overflows: u64,
    /// Most flows held at once.
    pub peak_flows: u64,
}

impl FlowStats {
    pub fn exported_total(&self) -> u64 {
        self.exported.iter().sum()
    }

    pub fn merge(&mut self, o: &FlowStats) {
        self.packets += o.packets;
        self.flows_created += o.flows_created;
        for (a, b) in self.exported.iter_mut().zip(o.exported) {
            *a += b;
        }
        self.time_backwards += o.time_backwards;
        self.clock_resets += o.clock_resets;
        self.orphan_fragments += o.orphan_fragments;
        self.fragments_joined_late += o.fragments_joined_late;
        self.fragment_overflows += o.fragment_overflows;
        self.peak_flows = self.peak_flows.max(o.peak_flows);
    }
}

type FragKey = (IpAddr, IpAddr, u8, u32);

/// Later fragments that came before their first fragment: counted, waiting for their ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldFragments {
    pub pkts: u64,
    pub wire_bytes: u64,
    pub ip_bytes: u64,
    pub payload_bytes: u64,
    first_seen: Timestamp,
}

/// What the fragment memory knows of a datagram.
#[derive(Debug, Clone, Copy)]
enum FragState {
    /// The first fragment's ports.
    Ports { sport: u16, dport: u16, seen: Timestamp },
    /// Later fragments seen first.
    Held(HeldFragments),
}

/// Where a packet goes, fragment-wise.
enum FragRoute {
    /// To the flow with these ports; with held later fragments to add to it.
    Flow(u16, u16, Option<HeldFragments>),
    /// A later fragment held until its first fragment comes.
    Held,
}
type Hasher = foldhash::quality::RandomState;

/// Bidirectional flow table. Feed it packets with [`FlowTable::process`]; each flow reaches
/// the sink exactly once, with its [`EndReason`].
pub struct FlowTable {
    config: FlowConfig,
    index: HashMap<FlowKey, u32, Hasher>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    lists: [List; 5],
    timeouts_ns: [i64; 5],
    active_ns: i64,
    regression_ns: i64,
    clock: Option<Timestamp>,
    /// Clock restarts so far: records of a later epoch sort after every earlier one.
    epoch: u32,
    /// No flow expires before this time (a lower bound, so most packets skip the expiry scan
    /// and its cache misses on list heads).
    next_expiry: Timestamp,
    next_id: u64,
    /// Step between flow ids: tables that share a stream (the pipeline's workers) number
    /// their flows `first, first + stride, ...` so that ids stay unique across them.
    id_stride: u64,
    frags: HashMap<FragKey, FragState, Hasher>,
    stats: FlowStats,
}

fn ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl FlowTable {
    pub fn new(config: FlowConfig) -> FlowTable {
        let timeouts_ns = [
            ns(config.tcp_idle),
            ns(config.udp_idle),
            ns(config.icmp_idle),
            ns(config.other_idle),
            ns(config.close_linger),
        ];
        let initial = config.max_flows.min(1 << 16);
        FlowTable {
            index: HashMap::with_capacity_and_hasher(initial, Hasher::default()),
            slots: Vec::with_capacity(initial),
            free: Vec::new(),
            lists: [List { head: NIL, tail: NIL }; 5],
            timeouts_ns,
            active_ns: ns(config.active_timeout),
            regression_ns: ns(config.max_time_regression),
            clock: None,
            epoch: 0,
            next_expiry: Timestamp(i64::MIN),
            next_id: 0,
            id_stride: 1,
            frags: HashMap::with_hasher(Hasher::default()),
            stats: FlowStats::default(),
            config,
        }
    }

    /// A table whose flow ids are `first, first + stride, first + 2 * stride, ...`: worker
    /// `w` of `n` uses `(w, n)`, so ids of flows exported by different workers never collide.
    pub fn with_ids(config: FlowConfig, first: u64, stride: u64) -> FlowTable {
        let mut t = FlowTable::new(config);
        t.next_id = first;
        t.id_stride = stride.max(1);
        t
    }

    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// Flows currently held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Memory per held flow: the slot plus the index entry (key, slot number, control byte).
    pub fn bytes_per_flow() -> usize {
        std::mem::size_of::<Slot>() + std::mem::size_of::<(FlowKey, u32)>() + 1
    }

    /// The capture clock.
    pub fn clock(&self) -> Option<Timestamp> {
        self.clock
    }

    /// No record this table exports from now on sorts before this [`StreamTime`]: every held
    /// flow's last activity is at least the oldest list head's, and a flow not yet created
    /// will have the clock's. The pipeline's window order waits for every worker's mark.
    pub fn low_mark(&self) -> StreamTime {
        let Some(clock) = self.clock else {
            return StreamTime { epoch: self.epoch, clock: Timestamp(i64::MIN) };
        };
        let oldest = self
            .lists
            .iter()
            .filter(|l| l.head != NIL)
            .map(|l| self.slots[l.head as usize].activity)
            .min()
            .unwrap_or(clock);
        StreamTime { epoch: self.epoch, clock: oldest.min(clock) }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, class) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next, s.class as usize)
        };
        if prev == NIL {
            self.lists[class].head = next
        } else {
            self.slots[prev as usize].next = next
        }
        if next == NIL {
            self.lists[class].tail = prev
        } else {
            self.slots[next as usize].prev = prev
        }
    }

    fn push_tail(&mut self, i: u32, class: Class) {
        // A flow entering a list can expire no earlier than its activity plus the timeout.
        let expires = self.slots[i as usize].activity.add_nanos(self.timeouts_ns[class as usize]);
        self.next_expiry = self.next_expiry.min(expires);
        let tail = self.lists[class as usize].tail;
        {
            let s = &mut self.slots[i as usize];
            s.class = class;
            s.prev = tail;
            s.next = NIL;
        }
        if tail == NIL {
            self.lists[class as usize].head = i
        } else {
            self.slots[tail as usize].next = i
        }
        self.lists[class as usize].tail = i;
    }

    fn export(&mut self, i: u32, reason: EndReason, sink: &mut impl FnMut(&FlowRecord)) {
        self.unlink(i);
        let slot = &mut self.slots[i as usize];
        slot.live = false;
        slot.rec.end_reason = reason;
        slot.rec.last_clock = StreamTime { epoch: self.epoch, clock: slot.activity };
        self.index.remove(&slot.key);
        self.stats.exported[reason as usize] += 1;
        sink(&slot.rec);
        self.free.push(i);
    }

    /// Exports flows idle past their class's timeout at the current clock.
    fn expire(&mut self, now: Timestamp, sink: &mut impl FnMut(&FlowRecord)) {
        if now <= self.next_expiry {
            return;
        }
        let mut next = Timestamp(i64::MAX);
        for class in [Class::Tcp, Class::Udp, Class::Icmp, Class::Other, Class::Closing] {
            let timeout = self.timeouts_ns[class as usize];
            loop {
                let head = self.lists[class as usize].head;
                if head == NIL {
                    break;
                }
                let activity = self.slots[head as usize].activity;
                if now.since(activity) <= timeout {
                    next = next.min(activity.add_nanos(timeout));
                    break;
                }
                let reason =
                    if class == Class::Closing { EndReason::TcpClose } else { EndReason::Idle };
                self.export(head, reason, sink);
            }
        }
        self.next_expiry = next;
    }

    /// Advances the flow clock without a packet (live capture on a quiet network).
    pub fn advance_to(&mut self, now: Timestamp, sink: &mut impl FnMut(&FlowRecord)) {
        if self.clock.is_none_or(|c| now > c) {
            self.clock = Some(now);
        }
        if let Some(c) = self.clock {
            self.expire(c, sink);
        }
    }

    /// A clock reset decided elsewhere: exports every open flow (`clock_reset`) and forgets the
    /// clock, so the next packet starts it again. The pipeline's capture stage detects resets
    /// on the whole stream and tells every worker, so that a worker whose own packets show no
    /// jump still ends its flows where the single-table engine would.
    pub fn restart_clock(&mut self, sink: &mut impl FnMut(&FlowRecord)) {
        self.stats.clock_resets += 1;
        self.flush(EndReason::ClockReset, sink);
        self.epoch = self.epoch.saturating_add(1);
        self.clock = None;
    }

    /// Exports every open flow, least recently active first. Held fragments whose first
    /// fragment never came are counted as orphans.
    pub fn flush(&mut self, reason: EndReason, sink: &mut impl FnMut(&FlowRecord)) {
        let mut live: Vec<(Timestamp, u64, u32)> = self
            .index
            .values()
            .map(|&i| (self.slots[i as usize].activity, self.slots[i as usize].rec.id, i))
            .collect();
        live.sort_unstable();
        for (_, _, i) in live {
            self.export(i, reason, sink);
        }
        self.drop_fragments(|_| true);
    }

    /// Forgets fragment entries for which `drop` holds, counting held ones as orphans.
    fn drop_fragments(&mut self, mut drop: impl FnMut(&FragState) -> bool) {
        let mut orphans = 0;
        self.frags.retain(|_, v| {
            let gone = drop(v);
            if gone && let FragState::Held(h) = v {
                orphans += h.pkts;
            }
            !gone
        });
        self.stats.orphan_fragments += orphans;
    }

    /// Routes a packet by its fragment position: whole packets and first fragments to their
    /// flow, later fragments to their first fragment's flow, or held until it comes.
    fn fragment_route(&mut self, m: &PacketMeta<'_>) -> FragRoute {
        let limit = ns(self.config.fragment_timeout) as u64;
        let fresh = |seen: Timestamp| m.ts.since(seen).unsigned_abs() <= limit;
        let key = match m.frag {
            Fragment::Whole => return FragRoute::Flow(m.sport, m.dport, None),
            Fragment::First { id } | Fragment::Later { id } => (m.src, m.dst, m.proto, id),
        };
        if !self.frags.contains_key(&key) && self.frags.len() >= self.config.max_fragments {
            self.stats.fragment_overflows += 1;
            let now = m.ts;
            self.drop_fragments(|v| match v {
                FragState::Ports { seen, .. } => now.since(*seen).unsigned_abs() > limit,
                FragState::Held(h) => now.since(h.first_seen).unsigned_abs() > limit,
            });
            if self.frags.len() >= self.config.max_fragments {
                self.drop_fragments(|_| true);
            }
        }
        match (m.frag, self.frags.get(&key).copied()) {
            (Fragment::First { .. }, previous) => {
                self.frags
                    .insert(key, FragState::Ports { sport: m.sport, dport: m.dport, seen: m.ts });
                let held = match previous {
                    Some(FragState::Held(h)) if fresh(h.first_seen) => Some(h),
                    Some(FragState::Held(h)) => {
                        self.stats.orphan_fragments += h.pkts;
                        None
                    }
                    _ => None,
                };
                FragRoute::Flow(m.sport, m.dport, held)
            }
            (_, Some(FragState::Ports { sport, dport, seen })) if fresh(seen) => {
                FragRoute::Flow(sport, dport, None)
            }
            (_, state) => {
                let mut h = match state {
                    Some(FragState::Held(h)) => h,
                    Some(FragState::Ports { .. }) | None => HeldFragments {
                        pkts: 0,
                        wire_bytes: 0,
                        ip_bytes: 0,
                        payload_bytes: 0,
                        first_seen: m.ts,
                    },
                };
                h.pkts += 1;
                h.wire_bytes += m.wire_len as u64;
                h.ip_bytes += m.ip_len as u64;
                h.payload_bytes += m.payload_len as u64;
                self.frags.insert(key, FragState::Held(h));
                FragRoute::Held
            }
        }
    }

    /// Adds one packet, exporting whatever its time makes expire.
    pub fn process(&mut self, m: &PacketMeta<'_>, sink: &mut impl FnMut(&FlowRecord)) {
        self.stats.packets += 1;
        match self.clock {
            None => self.clock = Some(m.ts),
            Some(c) if m.ts >= c => self.clock = Some(m.ts),
            Some(c) if c.since(m.ts) > self.regression_ns => {
                self.stats.clock_resets += 1;
                self.flush(EndReason::ClockReset, sink);
                self.epoch = self.epoch.saturating_add(1);
                self.clock = Some(m.ts);
            }
            Some(_) => self.stats.time_backwards += 1,
        }
        let now = self.clock.expect("set above");
        self.expire(now, sink);

        let (sport, dport, held) = match self.fragment_route(m) {
            FragRoute::Flow(s, d, held) => (s, d, held),
            FragRoute::Held => return,
        };
        let (i, from_orig) = self.route(m, sport, dport, now, sink);
        if let Some(h) = held {
            self.slots[i as usize].rec.add_fragments(
                from_orig,
                h.pkts,
                h.wire_bytes,
                h.ip_bytes,
                h.payload_bytes,
            );
            self.stats.fragments_joined_late += h.pkts;
        }
    }

    /// Adds a packet to its flow, creating the flow if needed; returns the slot and whether
    /// the packet came from the originator.
    fn route(
        &mut self,
        m: &PacketMeta<'_>,
        sport: u16,
        dport: u16,
        now: Timestamp,
        sink: &mut impl FnMut(&FlowRecord),
    ) -> (u32, bool) {
        let (key, src_is_lo) = FlowKey::new(m.src, sport, m.dst, dport, m.proto, m.vlan);
        if let Some(&i) = self.index.get(&key) {
            let slot = &self.slots[i as usize];
            let from_orig = src_is_lo == slot.orig_is_lo;
            let rec = &slot.rec;
            let aged = self.active_ns > 0 && m.ts.since(rec.first_ts) >= self.active_ns;
            // A fresh SYN from the originator on a finished connection opens a new one.
            let reopened = slot.class == Class::Closing
                && from_orig
                && m.tcp.flags.syn()
                && !m.tcp.flags.ack();
            if !aged && !reopened {
                let slot = &mut self.slots[i as usize];
                slot.rec.update(m, from_orig);
                slot.activity = now;
                let class = if slot.rec.tcp_finished() { Class::Closing } else { slot.class };
                // Bursts hit the flow at the tail already: skip touching its neighbours.
                if class != slot.class || self.lists[class as usize].tail != i {
                    self.unlink(i);
                    self.push_tail(i, class);
                }
                return (i, from_orig);
            }
            let reason = if aged { EndReason::Active } else { EndReason::TcpClose };
            self.export(i, reason, sink);
        }
        self.create(key, src_is_lo, sport, dport, m, now, sink)
    }

    #[allow(clippy::too_many_arguments)] // a new flow's key parts and first packet, all on the hot path: no struct to build per flow
    fn create(
        &mut self,
        key: FlowKey,
        src_is_lo: bool,
        sport: u16,
        dport: u16,
        m: &PacketMeta<'_>,
        now: Timestamp,
        sink: &mut impl FnMut(&FlowRecord),
    ) -> (u32, bool) {
        if self.index.len() >= self.config.max_flows.max(1) {
            self.evict_oldest(sink);
        }
        // A first packet that is a SYN-ACK was sent by the responder: flip (Zeek's '^').
        let flip = m.proto == IPPROTO_TCP && m.tcp.flags.syn() && m.tcp.flags.ack();
        let mut meta = *m;
        meta.sport = sport;
        meta.dport = dport;
        let rec = FlowRecord::new(self.next_id, &meta, flip);
        self.next_id += self.id_stride;
        let slot = Slot {
            rec,
            key,
            orig_is_lo: src_is_lo != flip,
            class: Class::Other,
            activity: now,
            prev: NIL,
            next: NIL,
            live: true,
        };
        // Build the record in its slot: it is large, and copies of it showed in profiles.
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let rec = &mut self.slots[i as usize].rec;
        rec.update(&meta, !flip);
        let class = if rec.tcp_finished() { Class::Closing } else { Class::of(m.proto) };
        self.push_tail(i, class);
        self.index.insert(key, i);
        self.stats.flows_created += 1;
        self.stats.peak_flows = self.stats.peak_flows.max(self.index.len() as u64);
        (i, !flip)
    }

    fn evict_oldest(&mut self, sink: &mut impl FnMut(&FlowRecord)) {
        let oldest = self
            .lists
            .iter()
            .filter(|l| l.head != NIL)
            .map(|l| l.head)
            .min_by_key(|&h| (self.slots[h as usize].activity, self.slots[h as usize].rec.id));
        if let Some(i) = oldest {
            debug_assert!(self.slots[i as usize].live);
            self.export(i, EndReason::Evicted, sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{TcpFlags, TcpMeta};
    use std::time::Duration;

    #[allow(clippy::too_many_arguments)] // a packet's fields, one per argument, read as a row
    fn pkt(
        ts_ms: i64,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        proto: u8,
        flags: u8,
        len: u32,
    ) -> PacketMeta<'static> {
        PacketMeta {
            ts: Timestamp(ts_ms * 1_000_000),
            vlan: 0,
            src: IpAddr::from(src),
            dst: IpAddr::from(dst),
            proto,
            sport,
            dport,
            wire_len: 54 + len,
            ip_len: 40 + len,
            payload_len: len,
            ttl: 64,
            tcp: TcpMeta { seq: 1, ack: 0, flags: TcpFlags(flags), window: 1024, wscale: None },
            frag: Fragment::Whole,
            tunneled: false,
            payload: &[],
        }
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];

    fn run(table: &mut FlowTable, pkts: &[PacketMeta<'_>]) -> Vec<FlowRecord> {
        let mut out = Vec::new();
        for p in pkts {
            table.process(p, &mut |r| out.push(*r));
        }
        table.flush(EndReason::EndOfInput, &mut |r| out.push(*r));
        out
    }

    #[test]
    fn both_directions_meet_and_first_packet_decides_originator() {
        let mut t = FlowTable::new(FlowConfig::default());
        let out =
            run(&mut t, &[pkt(0, B, 80, A, 5000, 17, 0, 10), pkt(1, A, 5000, B, 80, 17, 0, 20)]);
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(
            (f.orig_addr, f.orig_port, f.orig.pkts, f.resp.pkts),
            (IpAddr::from(B), 80, 1, 1)
        );
        assert_eq!((f.orig.payload_bytes, f.resp.payload_bytes), (10, 20));
        assert_eq!(f.end_reason, EndReason::EndOfInput);
    }

    #[test]
    fn idle_timeout_per_protocol() {
        let mut t = FlowTable::new(FlowConfig::default());
        let out = run(
            &mut t,
            &[
                pkt(0, A, 1, B, 53, 17, 0, 1),
                pkt(0, A, 2, B, 80, 6, TcpFlags::ACK, 1),
                // 31 s later: the UDP flow (30 s) has expired, the TCP one (60 s) has not.
                pkt(31_000, A, 3, B, 53, 17, 0, 1),
            ],
        );
        let reasons: Vec<_> = out.iter().map(|f| (f.orig_port, f.end_reason)).collect();
        assert_eq!(
            reasons,
            vec![(1, EndReason::Idle), (2, EndReason::EndOfInput), (3, EndReason::EndOfInput)]
        );
    }

    #[test]
    fn active_timeout_splits_long_flows() {
        let mut t = FlowTable::new(FlowConfig {
            active_timeout: Duration::from_secs(10),
            ..FlowConfig::default()
        });
        let pkts: Vec<_> = (0..25).map(|s| pkt(s * 1000, A, 1, B, 2, 17, 0, 1)).collect();
        let out = run(&mut t, &pkts);
        let counts: Vec<_> = out.iter().map(|f| (f.orig.pkts, f.end_reason)).collect();
        assert_eq!(
            counts,
            vec![(10, EndReason::Active), (10, EndReason::Active), (5, EndReason::EndOfInput)]
        );
    }

    #[test]
    fn tcp_close_lingers_then_exports() {
        let mut t = FlowTable::new(FlowConfig::default());
        let out = run(
            &mut t,
            &[
                pkt(0, A, 1, B, 80, 6, TcpFlags::SYN, 0),
                pkt(1, B, 80, A, 1, 6, TcpFlags::SYN | TcpFlags::ACK, 0),
                pkt(2, A, 1, B, 80, 6, TcpFlags::ACK, 0),
                pkt(3, A, 1, B, 80, 6, TcpFlags::FIN | TcpFlags::ACK, 0),
                pkt(4, B, 80, A, 1, 6, TcpFlags::FIN | TcpFlags::ACK, 0),
                // The last ACK, within the linger, belongs to the same flow.
                pkt(5, A, 1, B, 80, 6, TcpFlags::ACK, 0),
                pkt(5000, A, 9, B, 9, 17, 0, 1),
            ],
        );
        assert_eq!(out[0].end_reason, EndReason::TcpClose);
        assert_eq!((out[0].orig.pkts, out[0].resp.pkts), (4, 2));
        assert_eq!(out[0].conn_state().as_str(), "SF");
    }

    #[test]
    fn eviction_is_counted_and_oldest_goes_first() {
        let mut t = FlowTable::new(FlowConfig { max_flows: 2, ..FlowConfig::default() });
        let out = run(
            &mut t,
            &[
                pkt(0, A, 1, B, 1, 17, 0, 1),
                pkt(1, A, 2, B, 2, 17, 0, 1),
                pkt(2, A, 3, B, 3, 17, 0, 1),
            ],
        );
        assert_eq!((out[0].orig_port, out[0].end_reason), (1, EndReason::Evicted));
        assert_eq!(t.stats().exported[EndReason::Evicted as usize], 1);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn time_going_backwards_holds_the_clock_and_corrupts_nothing() {
        let mut t = FlowTable::new(FlowConfig::default());
        let out = run(
            &mut t,
            &[
                pkt(10_000, A, 1, B, 2, 17, 0, 1),
                pkt(9_000, B, 2, A, 1, 17, 0, 1),
                pkt(10_500, A, 1, B, 2, 17, 0, 1),
            ],
        );
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!((f.orig.pkts, f.resp.pkts), (2, 1));
        assert!(f.duration_secs() >= 0.0 && (f.duration_secs() - 1.5).abs() < 1e-9);
        assert_eq!(t.stats().time_backwards, 1);
        assert_eq!(t.clock(), Some(Timestamp(10_500_000_000)));
    }

    #[test]
    fn a_large_backward_jump_is_a_new_capture() {
        let mut t = FlowTable::new(FlowConfig::default());
        let year_ms = 365 * 86_400_000;
        let out = run(&mut t, &[pkt(year_ms, A, 1, B, 2, 17, 0, 1), pkt(0, A, 1, B, 2, 17, 0, 1)]);
        assert_eq!(
            out.iter().map(|f| f.end_reason).collect::<Vec<_>>(),
            vec![EndReason::ClockReset, EndReason::EndOfInput]
        );
        assert_eq!(t.stats().clock_resets, 1);
    }

    #[test]
    fn syn_ack_first_flips_the_direction() {
        let mut t = FlowTable::new(FlowConfig::default());
        let out = run(
            &mut t,
            &[
                pkt(0, B, 80, A, 1, 6, TcpFlags::SYN | TcpFlags::ACK, 0),
                pkt(1, A, 1, B, 80, 6, TcpFlags::ACK, 0),
            ],
        );
        assert_eq!((out[0].orig_addr, out[0].resp_port), (IpAddr::from(A), 80));
        assert_eq!(out[0].history.as_str(), "^hA");
    }

    #[test]
    fn later_fragments_join_their_flow_orphans_are_counted() {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut first = pkt(0, A, 5000, B, 53, 17, 0, 100);
        first.frag = Fragment::First { id: 7 };
        let mut later = pkt(1, A, 0, B, 0, 17, 0, 200);
        later.frag = Fragment::Later { id: 7 };
        let mut orphan = later;
        orphan.frag = Fragment::Later { id: 8 };
        let out = run(&mut t, &[first, later, orphan]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].orig.pkts, out[0].orig.payload_bytes), (2, 300));
        assert_eq!(t.stats().orphan_fragments, 1);
    }

    #[test]
    fn later_fragments_before_their_first_are_held_then_joined() {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut later = pkt(0, A, 0, B, 0, 17, 0, 200);
        later.frag = Fragment::Later { id: 9 };
        let mut first = pkt(1, A, 5000, B, 53, 17, 0, 100);
        first.frag = Fragment::First { id: 9 };
        let out = run(&mut t, &[later, first]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].orig.pkts, out[0].orig.payload_bytes), (2, 300));
        assert_eq!((t.stats().fragments_joined_late, t.stats().orphan_fragments), (1, 0));
    }

    #[test]
    fn every_flow_is_exported_exactly_once() {
        let mut t = FlowTable::new(FlowConfig { max_flows: 50, ..FlowConfig::default() });
        let pkts: Vec<_> = (0..2000)
            .map(|i| pkt(i * 37 % 100_000, A, (i % 300) as u16, B, 80, 17, 0, 1))
            .collect();
        let out = run(&mut t, &pkts);
        let total: u64 = out.iter().map(|f| f.orig.pkts).sum();
        assert_eq!(total, 2000);
        let mut ids: Vec<_> = out.iter().map(|f| f.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), out.len());
        assert_eq!(t.stats().exported_total() as usize, out.len());
        assert!(t.is_empty());
    }
}
