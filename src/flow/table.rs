//! The flow table: bidirectional lookup, timeouts, eviction, and export exactly once.
//!
//! Flows live in a slab (`Vec` of slots, reused through a free list) indexed by a hash table
//! of slot numbers under a keyed hash; nothing is allocated per packet once the slab has grown to the working set. Each flow
//! is on one of seven intrusive lists, one per timeout class (TCP, UDP, ICMP, other, closing,
//! and for Zeek's rules TCP attempts and DNS sessions), ordered by the time its timer started
//! (`since`); since every flow on a list shares one timeout, expiry only ever looks at list
//! heads.
//!
//! Where one flow ends and the next begins is the [`CutPolicy`]'s: Argus's (idle timeouts per
//! protocol, the active timeout, FIN both ways or a RST plus a linger; `since` is the last
//! packet) or Zeek's (the timers of `init-bare.zeek` and the TCP analyzer's rules, each named
//! where it is applied below; `since` is when Zeek would have started the timer).
//!
//! Time is the capture clock: the largest packet timestamp seen. A packet older than the
//! clock (reordering, `ndpi/malware.pcap`) updates its flow but never moves the clock back;
//! one older by more than `max_time_regression` (concatenated captures, `ndpi/sites.pcapng`)
//! exports every open flow and restarts the clock. Both cases are counted.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;

use super::config::{CutPolicy, FlowConfig};
use super::key::{FlowKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use super::order::StreamTime;
use super::record::{EndReason, FlowRecord};
use super::tcp_state::EndpointState;
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
    /// TCP flows that ended, waiting out the close linger (Argus) or `tcp_close_delay` (Zeek).
    Closing,
    /// Zeek: a TCP connection whose originator sent a SYN and whose responder has sent nothing,
    /// timed from that first SYN (`tcp_attempt_delay`).
    Attempt,
    /// Zeek: a UDP connection on a port of the DNS analyzer, checked every
    /// `dns_session_timeout` from its start.
    DnsSession,
}

const CLASSES: usize = 7;

/// UDP ports Zeek gives to its DNS analyzer (`DNS::ports` in `base/protocols/dns/main.zeek`:
/// DNS, NetBIOS name service, mDNS, LLMNR); that analyzer's session timer cuts their
/// connections.
const ZEEK_DNS_UDP_PORTS: [u16; 4] = [53, 137, 5353, 5355];

/// Zeek's `likely_server_ports`: the ports its base protocol scripts register for their
/// analyzers (`redef likely_server_ports += { ports }` in each `base/protocols/*/main.zeek` of
/// the Zeek 2.6 that wrote IoT-23). When a connection's first packet is not a SYN, Zeek makes
/// a likely server port the responder (`NetSessions::WantConnection`).
const ZEEK_LIKELY_SERVER_TCP: [u16; 42] = [
    21, 22, 25, 53, 80, 81, 88, 110, 135, 139, 143, 443, 445, 502, 563, 585, 587, 614, 631, 636,
    989, 990, 992, 993, 995, 1080, 1434, 2811, 3128, 3306, 3389, 5222, 5223, 5269, 6666, 6667,
    6668, 6669, 8000, 8080, 8888, 20000,
];
const ZEEK_LIKELY_SERVER_UDP: [u16; 20] = [
    53, 67, 68, 88, 137, 161, 162, 443, 514, 750, 1812, 2123, 2152, 3544, 4789, 5060, 5072, 5353,
    5355, 20000,
];

fn zeek_likely_server(proto: u8, port: u16) -> bool {
    match proto {
        IPPROTO_TCP => ZEEK_LIKELY_SERVER_TCP.contains(&port),
        IPPROTO_UDP => ZEEK_LIKELY_SERVER_UDP.contains(&port),
        _ => false,
    }
}

/// Zeek's choice of originator for a new connection (`NetSessions::WantConnection`): a TCP
/// connection that does not begin with a plain SYN, or a UDP one, is turned around when its
/// source port is a likely server port and its destination port is not; when both are, TCP is
/// turned around only if the packet is not a SYN-ACK and the source port is the lower.
fn zeek_flip(m: &PacketMeta<'_>, sport: u16, dport: u16) -> bool {
    match m.proto {
        IPPROTO_TCP => {
            let f = m.tcp.flags;
            if f.syn() && !f.ack() || !zeek_likely_server(IPPROTO_TCP, sport) {
                return false;
            }
            !zeek_likely_server(IPPROTO_TCP, dport) || (!f.syn() && sport < dport)
        }
        IPPROTO_UDP => {
            zeek_likely_server(IPPROTO_UDP, sport) && !zeek_likely_server(IPPROTO_UDP, dport)
        }
        _ => false,
    }
}

/// Where Zeek's TCP analyzer has a connection: closed and waiting for `tcp_close_delay`
/// (`TCP_Analyzer::ConnectionClosed`: the closing endpoint sent a RST, or its peer had already
/// closed, or its peer never sent anything), an attempt waiting for `tcp_attempt_delay`
/// (`AttemptTimer`: the originator is in SYN_SENT or SYN_ACK_SENT and the responder inactive),
/// or under `tcp_inactivity_timeout`.
fn zeek_tcp_class(rec: &FlowRecord) -> Class {
    use EndpointState::{Inactive, Reset, SynAckSent, SynSent};
    let (oc, rc) = rec.did_close();
    let (o, r) = (rec.tcp.orig, rec.tcp.resp);
    if (oc && rc) || o == Reset || r == Reset || (oc && r == Inactive) || (rc && o == Inactive) {
        Class::Closing
    } else if matches!(o, SynSent | SynAckSent) && r == Inactive {
        Class::Attempt
    } else {
        Class::Tcp
    }
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
    /// The record; its `last_clock.clock` is the capture clock at the flow's last packet
    /// (never decreases), its epoch set at export.
    rec: FlowRecord,
    /// The key's ports (ICMP's port equivalents, not the record's type and code); the rest of
    /// the key is the record's ([`Slot::has_key`]): a copy of the addresses cost 40 bytes a flow.
    lo_port: u16,
    hi_port: u16,
    /// Whether the originator is the key's `lo` endpoint.
    orig_is_lo: bool,
    class: Class,
    /// When the flow's timer on its list started: its last packet under Argus's rules; under
    /// Zeek's, the first SYN (attempts), the packet that closed it (closing), the last check
    /// (DNS sessions) or the last packet (the rest).
    since: Timestamp,
    prev: u32,
    next: u32,
    live: bool,
}

impl Slot {
    /// Whether this is the flow of `key`.
    fn has_key(&self, key: &FlowKey) -> bool {
        self.key() == *key
    }

    /// The flow's key, rebuilt: the record's addresses, protocol and VLAN, the slot's ports,
    /// the sides as `orig_is_lo` says.
    fn key(&self) -> FlowKey {
        let r = &self.rec;
        let (lo, hi) =
            if self.orig_is_lo { (r.orig_addr, r.resp_addr) } else { (r.resp_addr, r.orig_addr) };
        FlowKey {
            lo_addr: lo,
            hi_addr: hi,
            lo_port: self.lo_port,
            hi_port: self.hi_port,
            proto: r.proto,
            vlan: r.vlan,
        }
    }

    /// Capture clock at the flow's last packet.
    fn activity(&self) -> Timestamp {
        self.rec.last_clock.clock
    }
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
    /// Slot numbers of the live flows, found by their key's hash: a packet hashes its key
    /// once, an export rebuilds and hashes it (storing the hash cost 8 bytes a flow).
    index: hashbrown::HashTable<u32>,
    hasher: Hasher,
    slots: Vec<Slot>,
    free: Vec<u32>,
    lists: [List; CLASSES],
    timeouts_ns: [i64; CLASSES],
    /// Zeek: a DNS session idle this long at a check ends (`dns_session_timeout - 1.0`).
    dns_idle_ns: i64,
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
    /// The least of the list heads' timers as [`FlowTable::low_mark`] counts them (`None`:
    /// no flow), or stale: the heads change on a small share of packets, and the mark is
    /// asked for after every one.
    oldest_head: std::cell::Cell<Option<Option<Timestamp>>>,
}

fn ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl FlowTable {
    pub fn new(config: FlowConfig) -> FlowTable {
        let z = &config.zeek;
        let (timeouts_ns, active_ns) = match config.cut {
            CutPolicy::Argus => (
                [
                    ns(config.tcp_idle),
                    ns(config.udp_idle),
                    ns(config.icmp_idle),
                    ns(config.other_idle),
                    ns(config.close_linger),
                    0,
                    0,
                ],
                ns(config.active_timeout),
            ),
            // Zeek's timer manager fires a timer once network time reaches it (`Time() <=
            // new_t`), where the Argus lists expire strictly after: one nanosecond less makes
            // the same comparison fire at the deadline. Zeek has no active timeout.
            CutPolicy::Zeek => (
                [
                    ns(z.tcp_inactivity_timeout),
                    ns(z.udp_inactivity_timeout),
                    ns(z.icmp_inactivity_timeout),
                    ns(z.unknown_ip_inactivity_timeout),
                    ns(z.tcp_close_delay),
                    ns(z.tcp_attempt_delay),
                    ns(z.dns_session_timeout),
                ]
                .map(|t| (t - 1).max(0)),
                0,
            ),
        };
        let dns_idle_ns = ns(z.dns_session_timeout).saturating_sub(1_000_000_000).max(0);
        let initial = config.max_flows.min(1 << 16);
        FlowTable {
            index: hashbrown::HashTable::with_capacity(initial),
            hasher: Hasher::default(),
            slots: Vec::with_capacity(initial),
            free: Vec::new(),
            lists: [List { head: NIL, tail: NIL }; CLASSES],
            timeouts_ns,
            dns_idle_ns,
            active_ns,
            regression_ns: ns(config.max_time_regression),
            clock: None,
            epoch: 0,
            next_expiry: Timestamp(i64::MIN),
            next_id: 0,
            id_stride: 1,
            frags: HashMap::with_hasher(Hasher::default()),
            stats: FlowStats::default(),
            oldest_head: std::cell::Cell::new(None),
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

    /// Memory per held flow: the slot plus the index entry (slot number, control byte).
    pub fn bytes_per_flow() -> usize {
        std::mem::size_of::<Slot>() + std::mem::size_of::<u32>() + 1
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
        let oldest = match self.oldest_head.get() {
            Some(oldest) => {
                debug_assert_eq!(oldest, self.oldest_head_now(), "a list head changed unseen");
                oldest
            }
            None => {
                let oldest = self.oldest_head_now();
                self.oldest_head.set(Some(oldest));
                oldest
            }
        };
        StreamTime { epoch: self.epoch, clock: oldest.unwrap_or(clock).min(clock) }
    }

    /// The least list head timer, counted afresh. A DNS session's last packet may precede its
    /// last check by up to the check interval; every other list's `since` is at most its
    /// flows' activity.
    fn oldest_head_now(&self) -> Option<Timestamp> {
        self.lists
            .iter()
            .enumerate()
            .filter(|(_, l)| l.head != NIL)
            .map(|(c, l)| {
                let since = self.slots[l.head as usize].since;
                if c == Class::DnsSession as usize {
                    Timestamp(since.0.saturating_sub(self.timeouts_ns[c] + 1))
                } else {
                    since
                }
            })
            .min()
    }

    /// Slot `i`'s timer moved where it stays in its list: if it heads the list, the low mark
    /// must be counted again.
    fn since_moved_in_place(&self, i: u32) {
        if self.lists[self.slots[i as usize].class as usize].head == i {
            self.oldest_head.set(None);
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, class) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next, s.class as usize)
        };
        if prev == NIL {
            self.lists[class].head = next;
            self.oldest_head.set(None);
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
        // A flow entering a list can expire no earlier than its timer's start plus the timeout.
        let expires = self.slots[i as usize].since.add_nanos(self.timeouts_ns[class as usize]);
        self.next_expiry = self.next_expiry.min(expires);
        let tail = self.lists[class as usize].tail;
        {
            let s = &mut self.slots[i as usize];
            s.class = class;
            s.prev = tail;
            s.next = NIL;
        }
        if tail == NIL {
            self.lists[class as usize].head = i;
            self.oldest_head.set(None);
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
        slot.rec.last_clock.epoch = self.epoch;
        let hash = self.hasher.hash_one(slot.key());
        if let Ok(entry) = self.index.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
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
        for class in [
            Class::Tcp,
            Class::Udp,
            Class::Icmp,
            Class::Other,
            Class::Closing,
            Class::Attempt,
            Class::DnsSession,
        ] {
            let timeout = self.timeouts_ns[class as usize];
            loop {
                let head = self.lists[class as usize].head;
                if head == NIL {
                    break;
                }
                let since = self.slots[head as usize].since;
                if now.since(since) <= timeout {
                    next = next.min(since.add_nanos(timeout));
                    break;
                }
                // Zeek's DNS analyzer (`DNS_Analyzer::ExpireTimer`) removes its connection
                // only once idle for `dns_session_timeout - 1.0`; otherwise it checks again
                // one interval later.
                if class == Class::DnsSession
                    && now.since(self.slots[head as usize].activity()) < self.dns_idle_ns
                {
                    self.unlink(head);
                    self.slots[head as usize].since = now;
                    self.push_tail(head, class);
                    continue;
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
            .iter()
            .map(|&i| (self.slots[i as usize].activity(), self.slots[i as usize].rec.id, i))
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
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        let found = self.index.find(hash, |&j| slots[j as usize].has_key(&key)).copied();
        if self.config.cut == CutPolicy::Zeek {
            if let Some(i) = found {
                let slot = &self.slots[i as usize];
                let from_orig = src_is_lo == slot.orig_is_lo;
                if !slot.rec.zeek_is_reuse(m) {
                    self.zeek_update(i, m, from_orig, now);
                    return (i, from_orig);
                }
                self.export(i, EndReason::TcpClose, sink);
            }
            return self.create(key, hash, src_is_lo, sport, dport, m, now, sink);
        }
        if let Some(i) = found {
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
                slot.rec.last_clock.clock = now;
                slot.since = now;
                let class = if slot.rec.tcp_finished() { Class::Closing } else { slot.class };
                // Bursts hit the flow at the tail already: skip touching its neighbours.
                if class != slot.class || self.lists[class as usize].tail != i {
                    self.unlink(i);
                    self.push_tail(i, class);
                } else {
                    self.since_moved_in_place(i);
                }
                return (i, from_orig);
            }
            let reason = if aged { EndReason::Active } else { EndReason::TcpClose };
            self.export(i, reason, sink);
        }
        self.create(key, hash, src_is_lo, sport, dport, m, now, sink)
    }

    /// Adds a packet to a known connection under Zeek's rules and moves it between timers
    /// as Zeek's would: an attempt keeps its first SYN's timer until the responder answers; a
    /// connection that closes waits `tcp_close_delay` from the packet that closed it (re-armed
    /// when the other side closes too, `TCP_Analyzer::ConnectionClosed`); a DNS session keeps
    /// its check schedule; everything else restarts its inactivity timer.
    fn zeek_update(&mut self, i: u32, m: &PacketMeta<'_>, from_orig: bool, now: Timestamp) {
        let slot = &mut self.slots[i as usize];
        let closed_before = slot.rec.did_close();
        slot.rec.update(m, from_orig);
        slot.rec.last_clock.clock = now;
        let (class, since) = match slot.class {
            Class::Tcp | Class::Attempt => match zeek_tcp_class(&slot.rec) {
                Class::Attempt if slot.class == Class::Attempt => (Class::Attempt, slot.since),
                Class::Closing => (Class::Closing, now),
                _ => (Class::Tcp, now),
            },
            Class::Closing if slot.rec.did_close() != closed_before => (Class::Closing, now),
            Class::Closing | Class::DnsSession => return,
            Class::Udp | Class::Icmp | Class::Other => (slot.class, now),
        };
        if class == slot.class {
            if since == slot.since {
                return;
            }
            if self.lists[class as usize].tail == i {
                // Already last: a later start keeps the list in order.
                slot.since = since;
                self.since_moved_in_place(i);
                return;
            }
        }
        self.unlink(i);
        self.slots[i as usize].since = since;
        self.push_tail(i, class);
    }

    #[allow(clippy::too_many_arguments)] // a new flow's key parts and first packet, all on the hot path: no struct to build per flow
    fn create(
        &mut self,
        key: FlowKey,
        hash: u64,
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
        let flip = match self.config.cut {
            // A first packet that is a SYN-ACK was sent by the responder: flip (Zeek's '^').
            CutPolicy::Argus => m.proto == IPPROTO_TCP && m.tcp.flags.syn() && m.tcp.flags.ack(),
            CutPolicy::Zeek => zeek_flip(m, sport, dport),
        };
        let mut meta = *m;
        meta.sport = sport;
        meta.dport = dport;
        let mut rec = FlowRecord::new(self.next_id, &meta, flip);
        rec.last_clock.clock = now;
        rec.zeek_rules = self.config.cut == CutPolicy::Zeek;
        self.next_id += self.id_stride;
        let slot = Slot {
            rec,
            lo_port: key.lo_port,
            hi_port: key.hi_port,
            orig_is_lo: src_is_lo != flip,
            class: Class::Other,
            since: now,
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
        let class = match self.config.cut {
            CutPolicy::Argus if rec.tcp_finished() => Class::Closing,
            CutPolicy::Argus => Class::of(m.proto),
            CutPolicy::Zeek => match m.proto {
                IPPROTO_TCP => zeek_tcp_class(rec),
                IPPROTO_UDP if ZEEK_DNS_UDP_PORTS.contains(&rec.resp_port) => Class::DnsSession,
                p => Class::of(p),
            },
        };
        self.push_tail(i, class);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, i, |&j| hasher.hash_one(slots[j as usize].key()));
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
            .min_by_key(|&h| (self.slots[h as usize].since, self.slots[h as usize].rec.id));
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

    /// The low mark kept between packets equals one counted afresh after every packet, under
    /// both cut policies, on the bundled capture (600 s of many protocols) and on a shared one
    /// with DNS sessions; short timeouts make flows end and list heads change often.
    #[test]
    fn the_kept_low_mark_equals_a_recount_after_every_packet() {
        let root = env!("CARGO_MANIFEST_DIR");
        for path in [
            format!("{root}/captures/demo.pcap"),
            format!("{root}/../shared/data/zeek/iot23-42-1-benign.pcap"),
        ] {
            assert!(std::path::Path::new(&path).exists(), "capture missing: {path}");
            for cut in [CutPolicy::Argus, CutPolicy::Zeek] {
                let mut config = FlowConfig::default().for_cut(cut);
                config.udp_idle = Duration::from_secs(5);
                config.tcp_idle = Duration::from_secs(20);
                let mut t = FlowTable::new(config);
                let mut file = crate::capture::CaptureFile::open(&path).expect("capture opens");
                let mut checked = 0;
                while let Ok(Some(raw)) = file.next_packet() {
                    if let Ok(m) = crate::decode::decode(&raw) {
                        t.process(&m, &mut |_| {});
                        // The value kept since the last packet where still valid, then one
                        // counted afresh (and kept for the next packet).
                        let kept = t.low_mark();
                        t.oldest_head.set(None);
                        assert_eq!(kept, t.low_mark(), "{path} {cut:?} packet {checked}");
                        checked += 1;
                    }
                }
                assert!(checked > 1000, "{path}: {checked} packets");
            }
        }
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

    fn zeek() -> FlowTable {
        FlowTable::new(FlowConfig::default().for_cut(CutPolicy::Zeek))
    }

    fn seq(mut p: PacketMeta<'static>, seq: u32) -> PacketMeta<'static> {
        p.tcp.seq = seq;
        p
    }

    #[test]
    fn zeek_unanswered_attempt_ends_at_tcp_attempt_delay_and_a_later_syn_starts_anew() {
        // Linux retries a SYN at 1, 3, 7 s on the same 5-tuple with the same ISN.
        let syn = |ms| pkt(ms, A, 5000, B, 80, 6, TcpFlags::SYN, 0);
        let out = run(&mut zeek(), &[syn(0), syn(1000), syn(3000), syn(7000), syn(15_000)]);
        let rows: Vec<_> = out.iter().map(|f| (f.orig.pkts, f.history.as_str())).collect();
        assert_eq!(rows, vec![(3, "S"), (1, "S"), (1, "S")]);
        assert_eq!(out[0].conn_state().as_str(), "S0");
        // Under Argus's rules the same packets are one flow.
        assert_eq!(run(&mut FlowTable::new(FlowConfig::default()), &[syn(0), syn(7000)]).len(), 1);
    }

    #[test]
    fn zeek_new_syn_on_a_known_5_tuple_is_a_new_connection_a_resent_one_is_not() {
        let syn = |ms, s| seq(pkt(ms, A, 5000, B, 80, 6, TcpFlags::SYN, 0), s);
        let synack = seq(pkt(1, B, 80, A, 5000, 6, TcpFlags::SYN | TcpFlags::ACK, 0), 900);
        // Answered, then a SYN with the same ISN (a resend): same connection.
        let out = run(&mut zeek(), &[syn(0, 100), synack, syn(2, 100)]);
        assert_eq!(out.len(), 1);
        // A SYN with another ISN: a new connection, even while the first is open.
        let out = run(&mut zeek(), &[syn(0, 100), synack, syn(2, 7777)]);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn zeek_closed_connection_ends_tcp_close_delay_after_the_close() {
        let p = |ms, src, sp, dst, dp, f| pkt(ms, src, sp, dst, dp, 6, f, 0);
        const SA: u8 = TcpFlags::SYN | TcpFlags::ACK;
        const FA: u8 = TcpFlags::FIN | TcpFlags::ACK;
        let out = run(
            &mut zeek(),
            &[
                p(0, A, 1, B, 80, TcpFlags::SYN),
                p(1, B, 80, A, 1, SA),
                p(2, A, 1, B, 80, TcpFlags::ACK),
                p(3, A, 1, B, 80, FA),
                p(4, B, 80, A, 1, FA),
                // After both sides closed: counted, but Zeek's duration stops at the close.
                p(3000, A, 1, B, 80, TcpFlags::ACK),
                // 5 s after the close: a new connection.
                p(5004, A, 1, B, 80, TcpFlags::ACK),
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].orig.pkts, out[0].end_reason), (4, EndReason::TcpClose));
        assert!((out[0].zeek_duration_secs() - 0.004).abs() < 1e-9);
        assert_eq!(out[0].conn_state().as_str(), "SF");
    }

    #[test]
    fn zeek_dns_session_timer_and_udp_inactivity() {
        let q = |ms| pkt(ms, A, 5353, B, 53, 17, 0, 30);
        // Idle 12 s on a DNS port: the DNS analyzer's 10 s check ends it (idle >= 9 s).
        assert_eq!(run(&mut zeek(), &[q(0), q(12_000)]).len(), 2);
        // The same gap on another UDP port stays within udp_inactivity_timeout (1 min).
        let u = |ms| pkt(ms, A, 5000, B, 9999, 17, 0, 30);
        assert_eq!(run(&mut zeek(), &[u(0), u(12_000), u(71_000)]).len(), 1);
        assert_eq!(run(&mut zeek(), &[u(0), u(60_000)]).len(), 2);
    }

    #[test]
    fn zeek_likely_server_port_is_the_responder() {
        // A DNS reply seen first: Zeek makes port 53 the responder ('^').
        let out = run(&mut zeek(), &[pkt(0, B, 53, A, 40000, 17, 0, 60)]);
        assert_eq!((out[0].orig_addr, out[0].resp_port), (IpAddr::from(A), 53));
        assert_eq!(out[0].history.as_str(), "^d");
    }

    /// A slot rebuilds the key it was filed under, whichever side the record calls the
    /// originator (a SYN-ACK seen first flips it) and for ICMP's port equivalents; and a flow
    /// costs no more than the 601 bytes it did before Zeek's bookkeeping grew the record.
    #[test]
    fn slots_rebuild_their_keys_and_stay_small() {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = Vec::new();
        let pkts = [
            pkt(0, A, 1000, B, 80, 6, 0x02, 0),
            pkt(1, B, 443, A, 2000, 6, 0x12, 0),
            pkt(2, A, 8, B, 0, 1, 0, 56),
            pkt(3, B, 0, A, 0, 1, 0, 56),
            pkt(4, B, 53, A, 3000, 17, 0, 40),
        ];
        for p in &pkts {
            t.process(p, &mut |r| out.push(*r));
        }
        assert_eq!(t.len(), 4, "echo request and reply share a flow");
        for (i, slot) in t.slots.iter().enumerate() {
            let hash = t.hasher.hash_one(slot.key());
            assert_eq!(t.index.find(hash, |&j| j as usize == i), Some(&(i as u32)));
            assert!(slot.has_key(&slot.key()));
        }
        assert!(FlowTable::bytes_per_flow() <= 601, "{}", FlowTable::bytes_per_flow());
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
