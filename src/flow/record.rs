//! Per-flow state: a fixed-size record updated by each packet and read once at export.
//!
//! Everything here is running sums, first/last values and Welford moments: no buffers grow
//! with the packet count. `FlowRecord` fields are final when the table hands a flow to its
//! sink. Derived values (Zeek's conn_state, Argus's state) are computed from it by pure
//! functions at export.

use std::fmt;
use std::net::IpAddr;

use super::app::{AppState, Service};
use super::history::{History, Scaled};
use super::key::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use super::order::StreamTime;
use super::tcp_state::{ConnState, EndpointState, TcpEndpoints, tcp_conn_state, udp_conn_state};
use crate::capture::Timestamp;
use crate::decode::{Fragment, PacketMeta, TcpFlags};

/// Why a flow was exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// No packet for the protocol's idle timeout.
    #[default]
    Idle,
    /// Active for the active timeout; the conversation continues in a new record.
    Active,
    /// TCP ended (FIN both ways or RST) and the close linger passed.
    TcpClose,
    /// The table was full and this flow was the least recently active.
    Evicted,
    /// The input ended.
    EndOfInput,
    /// The capture clock jumped backwards beyond the allowed regression (a new capture).
    ClockReset,
}

impl EndReason {
    pub const ALL: [EndReason; 6] = [
        EndReason::Idle,
        EndReason::Active,
        EndReason::TcpClose,
        EndReason::Evicted,
        EndReason::EndOfInput,
        EndReason::ClockReset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Active => "active",
            EndReason::TcpClose => "tcp_close",
            EndReason::Evicted => "evicted",
            EndReason::EndOfInput => "end_of_input",
            EndReason::ClockReset => "clock_reset",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Running mean and variance (Welford's algorithm).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Welford {
    pub n: u64,
    pub mean: f64,
    m2: f64,
}

impl Welford {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Sample standard deviation (n - 1); 0 below two values.
    pub fn std(&self) -> f64 {
        if self.n < 2 { 0.0 } else { (self.m2 / (self.n - 1) as f64).sqrt() }
    }

    /// Population standard deviation (n), as Argus computes jitter; 0 below two values.
    pub fn pop_std(&self) -> f64 {
        if self.n < 2 { 0.0 } else { (self.m2 / self.n as f64).sqrt() }
    }
}

/// Sequence-space tracking for one TCP direction: Argus's retransmissions (its loss), and
/// Zeek's view of the same direction (`TCP_Endpoint` and its `TCP_Reassembler`): the last
/// sequence number, the peer's acknowledgments, retransmissions (history `T`), content gaps
/// (history `G`, `missed_bytes`) and the byte count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTrack {
    started: bool,
    /// Sequence number of the first packet (Argus's stcpb/dtcpb), SYN or not.
    pub first_seq: u32,
    /// Origin of the relative sequence space: the SYN's number, or one before the first
    /// segment when no SYN was seen (as Zeek assumes).
    pub base: u32,
    /// Highest offset reached by data (unwrapped 64-bit sequence space).
    end: u64,
    /// Data segments entirely below `end` (Argus's retransmissions).
    pub retransmits: u32,
    /// Zeek's `LastSeq`: one past the highest segment, SYN and FIN counted (offset).
    last: u64,
    /// Zeek's `AckSeq`: the highest acknowledgment the peer sent for this direction (offset).
    acked: u64,
    /// Zeek's `FIN_seq`: one past this direction's FIN, 0 before any FIN (offset).
    fin_end: u64,
    /// Zeek's reassembly point (`last_reassem_seq`): data below it was delivered or given up
    /// as a gap (offset; 1 is the first data byte after the SYN).
    contig: u64,
    /// Data seen above `contig`, waiting for the hole below it (lo, hi; hi 0 when none).
    /// Several out-of-order blocks merge into one range: fixed-size state.
    above: (u64, u64),
    /// Zeek's `missed_bytes`: bytes the peer acknowledged that were never seen.
    pub missed_bytes: u64,
}

/// What a TCP segment did to its direction's sequence space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    New,
    Retransmit,
}

/// Zeek's `TOO_LARGE_SEQ_DELTA`: SYN and RST sequence numbers this far off are not trusted.
const TOO_LARGE_SEQ_DELTA: i64 = 1_048_576;

impl SeqTrack {
    /// Unwraps a 32-bit offset near the current end.
    fn unwrap(&self, seq: u32) -> u64 {
        let rel = seq.wrapping_sub(self.base) as u64;
        let hi = self.end & !0xffff_ffff;
        let cand = hi | rel;
        if cand + (1 << 31) < self.end {
            cand + (1 << 32)
        } else if cand > self.end + (1 << 31) && cand >= 1 << 32 {
            cand - (1 << 32)
        } else {
            cand
        }
    }

    /// Observes a segment; returns its unwrapped offset and what it did (Argus's view).
    pub fn observe(&mut self, seq: u32, flags: TcpFlags, payload_len: u32) -> (u64, SeqEvent) {
        if !self.started {
            self.started = true;
            self.first_seq = seq;
            self.base = seq;
            self.end = 1;
            self.contig = 1;
            // Zeek's init_endpoint: after a SYN the last sequence number is the SYN's; without
            // one, the first segment's, as though a SYN had preceded it.
            self.last = if flags.syn() { 0 } else { 1 };
            if !flags.syn() {
                // No SYN seen: pretend one preceded this segment, as Zeek does.
                self.base = seq.wrapping_sub(1);
            }
        }
        let rel = self.unwrap(seq);
        if flags.rst() || payload_len == 0 {
            return (rel, SeqEvent::New);
        }
        let start = rel + flags.syn() as u64;
        let seg_end = start + payload_len as u64;
        if seg_end <= self.end {
            self.retransmits += 1;
            (rel, SeqEvent::Retransmit)
        } else {
            self.end = seg_end;
            (rel, SeqEvent::New)
        }
    }

    /// Zeek's view of the segment at offset `rel` (after [`SeqTrack::observe`]): the TCP
    /// analyzer's `update_last_seq` and the reassembler's `DataSent`. `was_reset`: this side
    /// had sent a RST before (Zeek no longer trusts its sequence numbers). Returns whether
    /// Zeek counts it a retransmission (`DidRxmit`, history `T`): data ending below the last
    /// sequence number seen, which includes out-of-order segments filling a hole.
    pub fn zeek_segment(&mut self, rel: u64, flags: TcpFlags, len: u32, was_reset: bool) -> bool {
        let len64 = len as u64;
        let seg_len = if flags.rst() { 0 } else { len64 } + flags.syn() as u64 + flags.fin() as u64;
        let one_past = rel + seg_len;
        let delta = one_past as i64 - self.last as i64;
        let rxmit = if (flags.syn() || flags.rst()) && delta.abs() > TOO_LARGE_SEQ_DELTA {
            false
        } else if flags.fin() && self.last == 1 {
            self.last = one_past;
            false
        } else if was_reset {
            false
        } else if delta > 0 {
            self.last = one_past;
            false
        } else {
            // A segment ending before the last sequence number. IoT-23's Zeek (2.6) does not
            // count one ending exactly at it (an identical resend, a keep-alive); today's
            // `update_last_seq` does (`delta_last <= 0`). The shared conn.log shows the
            // former on every such connection (docs/zeek-comparison.md).
            delta < 0 && len > 0
        };
        if flags.fin() {
            self.fin_end = one_past;
        }
        if len > 0 && !flags.rst() {
            self.deliver(rel + flags.syn() as u64, len64);
        }
        rxmit
    }

    /// The reassembler taking data [start, start + len): already acknowledged data is
    /// dropped (`DataSent`), data at the reassembly point moves it (`BlockInserted`), data
    /// above it waits.
    fn deliver(&mut self, start: u64, len: u64) {
        let (mut s, e) = (start, start + len);
        if s < self.acked {
            if e <= self.acked {
                return;
            }
            s = self.acked;
        }
        if e <= self.contig {
            return;
        }
        if s <= self.contig {
            self.contig = e;
            if self.above.1 > 0 && self.above.0 <= self.contig {
                self.contig = self.contig.max(self.above.1);
                self.above = (0, 0);
            }
        } else if self.above.1 == 0 {
            self.above = (s, e);
        } else {
            self.above = (self.above.0.min(s), self.above.1.max(e));
        }
    }

    /// The peer acknowledged `ack` (of this direction's sequence space): Zeek's
    /// `update_ack_seq` (not from RSTs) and `TCP_Reassembler::AckReceived`. Acknowledged
    /// data never seen is a content gap: returns how many holes were given up; their bytes
    /// count in `missed_bytes` when `report` (Zeek reports gaps only while both endpoints are
    /// established or closing cleanly). `partial`: the connection began without a handshake
    /// (Zeek ignores a gap of the first octet or two there).
    pub fn zeek_ack(&mut self, ack: u32, rst: bool, partial: bool, report: bool) -> u32 {
        if !self.started {
            return 0;
        }
        let rel = self.unwrap(ack);
        if !rst && rel > self.acked {
            self.acked = rel;
        }
        let mut a = rel;
        if self.fin_end > 0 && a >= self.fin_end {
            a = self.fin_end - 1;
        }
        if a <= self.contig || (a <= 2 && partial) {
            return 0;
        }
        let mut holes = 0;
        let mut gap = |from: u64, to: u64, missed: &mut u64| {
            if to > from {
                holes += 1;
                if report {
                    *missed += to - from;
                }
            }
        };
        if self.above.1 > 0 && self.above.0 < a {
            gap(self.contig, self.above.0, &mut self.missed_bytes);
            self.contig = self.above.1;
            self.above = (0, 0);
        }
        gap(self.contig, a, &mut self.missed_bytes);
        self.contig = self.contig.max(a);
        holes
    }

    /// Payload bytes by the highest data sequence number seen.
    pub fn data_size(&self) -> u64 {
        self.end.saturating_sub(1)
    }

    /// Zeek's `TCP_Endpoint::Size`: payload bytes from the highest sequence number seen or
    /// acknowledged, less the SYN and FIN octets (Zeek's orig_bytes / resp_bytes).
    pub fn zeek_size(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let size = self.last.max(self.acked).saturating_sub(1);
        if self.fin_end > 0 { size.saturating_sub(1) } else { size }
    }

    /// Whether a segment of this direction has been seen.
    pub fn started(&self) -> bool {
        self.started
    }
}

/// A time that may not have come yet, in 8 bytes where an `Option<Timestamp>` takes 16 (a
/// flow keeps three): `i64::MIN`, before any capture's time, stands for "not yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenAt(i64);

impl SeenAt {
    pub const NEVER: SeenAt = SeenAt(i64::MIN);

    /// Seen at `t` (the earliest time a capture can hold, should `t` be the sentinel itself).
    pub fn at(t: Timestamp) -> SeenAt {
        SeenAt(t.0.max(i64::MIN + 1))
    }

    pub fn get(self) -> Option<Timestamp> {
        (self != SeenAt::NEVER).then_some(Timestamp(self.0))
    }

    pub fn is_some(self) -> bool {
        self != SeenAt::NEVER
    }

    pub fn is_none(self) -> bool {
        self == SeenAt::NEVER
    }
}

/// One direction of a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Direction {
    pub pkts: u64,
    /// Frame bytes on the wire, link header included (Argus sbytes/dbytes).
    pub wire_bytes: u64,
    /// IP bytes (Zeek orig_ip_bytes).
    pub ip_bytes: u64,
    /// Transport payload bytes by packet lengths.
    pub payload_bytes: u64,
    pub first_ts: Timestamp,
    pub last_ts: Timestamp,
    /// Inter-packet times in milliseconds.
    pub ipt_ms: Welford,
    /// TTL / hop limit of the last packet.
    pub ttl: u8,
    /// The last non-zero TCP window advertised (unscaled) by a packet that is neither a bare
    /// SYN nor carries FIN or RST: Argus's rule for swin/dwin (see [`Direction::note_window`]).
    pub window: u16,
    /// Window scale shift from this side's SYN, if it offered one.
    pub wscale: Option<u8>,
    /// OR of every TCP flag byte seen.
    pub tcp_flags: u8,
    pub seq: SeqTrack,
}

impl Direction {
    fn count(&mut self, m: &PacketMeta<'_>) {
        if self.pkts == 0 {
            self.first_ts = m.ts;
            self.last_ts = m.ts;
        } else {
            // Packets out of time order add a zero gap rather than a negative one.
            let gap_ns = m.ts.since(self.last_ts).max(0);
            self.ipt_ms.push(gap_ns as f64 / 1e6);
            self.last_ts = self.last_ts.max(m.ts);
        }
        self.pkts += 1;
        self.wire_bytes += m.wire_len as u64;
        self.ip_bytes += m.ip_len as u64;
        self.payload_bytes += m.payload_len as u64;
        self.ttl = m.ttl;
    }
}

impl Direction {
    /// Records the advertised window as Argus does (`ArgusUpdateTCPSequence`): a bare SYN is
    /// skipped, FIN and RST segments (which often advertise 0) are skipped, and a zero window
    /// marks the direction "window shut" without replacing the last open window.
    pub fn note_window(&mut self, flags: TcpFlags, window: u16) {
        if flags.0 & (TcpFlags::SYN | TcpFlags::ACK | TcpFlags::FIN | TcpFlags::RST)
            == TcpFlags::SYN
        {
            return;
        }
        if window != 0 && !flags.fin() && !flags.rst() {
            self.window = window;
        }
    }
}

/// A bidirectional flow; `orig` is the side that sent the first packet (or, when the first
/// packet was a SYN-ACK, the side it was sent to).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowRecord {
    /// Sequence number of the flow in this run, unique per table.
    pub id: u64,
    pub orig_addr: IpAddr,
    pub resp_addr: IpAddr,
    /// Ports; for ICMP the first packet's type (orig) and code (resp), as Zeek logs them.
    pub orig_port: u16,
    pub resp_port: u16,
    pub proto: u8,
    pub vlan: u32,
    pub first_ts: Timestamp,
    pub last_ts: Timestamp,
    /// Zeek's `last_time`: as `last_ts`, except that once both TCP endpoints have closed (sent
    /// a FIN or RST) later packets still count but no longer move it (the TCP analyzer updates
    /// the connection's last time only while `! orig->did_close || ! resp->did_close`). Zeek's
    /// `duration` ends here.
    pub zeek_last_ts: Timestamp,
    pub orig: Direction,
    pub resp: Direction,
    pub tcp: TcpEndpoints,
    pub history: History,
    pub app: AppState,
    /// Handshake times: originator SYN, responder SYN-ACK, originator ACK.
    pub syn_ts: SeenAt,
    pub synack_ts: SeenAt,
    pub ack_ts: SeenAt,
    /// Some packet of the flow was decapsulated from a tunnel.
    pub tunneled: bool,
    /// Zeek's `is_partial`: the originator's first packet was not a plain SYN, or the
    /// responder's first packet not a SYN.
    pub zeek_partial: bool,
    /// Kept under Zeek's cut rules ([`super::CutPolicy::Zeek`]): Zeek's sequence bookkeeping
    /// (retransmissions, gaps, missed bytes, byte counts from acknowledgments) runs only then,
    /// keeping it off the per-packet path of Argus's records.
    pub zeek_rules: bool,
    pub end_reason: EndReason,
    /// The capture clock at the flow's last packet (its `ltime` unless that packet came out of
    /// order), within the clock epoch: what the window order sorts by ([`super::order`]). Set
    /// when the record is exported.
    pub last_clock: StreamTime,
}

impl FlowRecord {
    /// A new flow from its first packet. `flip` makes the packet's destination the originator.
    pub fn new(id: u64, m: &PacketMeta<'_>, flip: bool) -> FlowRecord {
        let (orig_addr, orig_port, resp_addr, resp_port) =
            if flip { (m.dst, m.dport, m.src, m.sport) } else { (m.src, m.sport, m.dst, m.dport) };
        let mut history = History::default();
        if flip {
            history.flipped();
        }
        FlowRecord {
            id,
            orig_addr,
            resp_addr,
            orig_port,
            resp_port,
            proto: m.proto,
            vlan: m.vlan,
            first_ts: m.ts,
            last_ts: m.ts,
            zeek_last_ts: m.ts,
            orig: Direction::default(),
            resp: Direction::default(),
            tcp: TcpEndpoints::default(),
            history,
            app: AppState::default(),
            syn_ts: SeenAt::NEVER,
            synack_ts: SeenAt::NEVER,
            ack_ts: SeenAt::NEVER,
            tunneled: false,
            zeek_partial: false,
            zeek_rules: false,
            end_reason: EndReason::Idle,
            last_clock: StreamTime { epoch: 0, clock: m.ts },
        }
    }

    /// Adds one packet.
    pub fn update(&mut self, m: &PacketMeta<'_>, from_orig: bool) {
        self.first_ts = self.first_ts.min(m.ts);
        self.last_ts = self.last_ts.max(m.ts);
        if !self.both_closed() {
            self.zeek_last_ts = self.zeek_last_ts.max(m.ts);
        }
        self.tunneled |= m.tunneled;
        let dir = if from_orig { &mut self.orig } else { &mut self.resp };
        let first_of_side = dir.pkts == 0;
        dir.count(m);
        let later_fragment = matches!(m.frag, Fragment::Later { .. });
        if self.proto == IPPROTO_TCP && !later_fragment {
            let flags = m.tcp.flags;
            if first_of_side {
                // Zeek's SetPartialStatus.
                self.zeek_partial |=
                    if from_orig { !flags.syn() || flags.ack() } else { !flags.syn() };
            }
            dir.tcp_flags |= flags.0;
            dir.note_window(flags, m.tcp.window);
            if flags.syn() {
                dir.wscale = m.tcp.wscale;
            }
            let (me, peer) = if from_orig {
                (self.tcp.orig, self.tcp.resp)
            } else {
                (self.tcp.resp, self.tcp.orig)
            };
            let (rel, event) = dir.seq.observe(m.tcp.seq, flags, m.payload_len);
            // Zeek's sequence bookkeeping runs under Zeek's rules only; Argus's records keep
            // their retransmission count as the history's T.
            let rxmit = if self.zeek_rules {
                dir.seq.zeek_segment(rel, flags, m.payload_len, me == EndpointState::Reset)
            } else {
                event == SeqEvent::Retransmit
            };
            // Zeek's order within a packet: the flag letter (update_history), a zero window
            // (update_window: not with a RST, nor once the peer closed or this side reset),
            // a retransmission (update_last_seq), then gaps the acknowledgment reveals.
            self.history.tcp_packet(from_orig, flags, rel, m.payload_len);
            if m.tcp.window == 0
                && !flags.rst()
                && peer != EndpointState::Closed
                && me != EndpointState::Reset
            {
                self.history.scaled(from_orig, Scaled::ZeroWindow);
            }
            if rxmit {
                self.history.scaled(from_orig, Scaled::Retransmit);
            }
            self.tcp.update(from_orig, flags, m.payload_len);
            if self.zeek_rules && flags.ack() {
                // The peer's data acknowledged: Zeek's AckReceived, after the state machine.
                use EndpointState::{Closed, Established};
                let clean = |e| e == Established || (e == Closed && self.ack_ts.is_some());
                let report = clean(self.tcp.orig) && clean(self.tcp.resp);
                let partial = self.zeek_partial;
                let peer_dir = if from_orig { &mut self.resp } else { &mut self.orig };
                let holes = peer_dir.seq.zeek_ack(m.tcp.ack, flags.rst(), partial, report);
                if report {
                    for _ in 0..holes {
                        self.history.scaled(!from_orig, Scaled::Gap);
                    }
                }
            }
            match (from_orig, flags.syn(), flags.ack()) {
                // The last SYN before the SYN-ACK: a retransmitted SYN is the one answered
                // (Argus measures synack from it too).
                (true, true, false) if self.synack_ts.is_none() => self.syn_ts = SeenAt::at(m.ts),
                (false, true, true) if self.synack_ts.is_none() && self.syn_ts.is_some() => {
                    self.synack_ts = SeenAt::at(m.ts)
                }
                (true, false, true) if self.ack_ts.is_none() && self.synack_ts.is_some() => {
                    self.ack_ts = SeenAt::at(m.ts)
                }
                _ => {}
            }
        } else if !later_fragment {
            self.history.datagram(from_orig, m.payload_len);
        }
        if !m.payload.is_empty() && !later_fragment {
            self.app.observe(self.proto, from_orig, self.resp_port, m.payload);
        }
    }

    /// Adds later fragments that arrived before the first one (their times are unknown to
    /// the inter-packet statistics; their packets and bytes count).
    pub fn add_fragments(
        &mut self,
        from_orig: bool,
        pkts: u64,
        wire_bytes: u64,
        ip_bytes: u64,
        payload_bytes: u64,
    ) {
        let dir = if from_orig { &mut self.orig } else { &mut self.resp };
        dir.pkts += pkts;
        dir.wire_bytes += wire_bytes;
        dir.ip_bytes += ip_bytes;
        dir.payload_bytes += payload_bytes;
    }

    /// Whether each TCP endpoint has closed in Zeek's sense (`did_close`: it sent a FIN or a
    /// RST). Returns (orig, resp); false for other protocols.
    pub fn did_close(&self) -> (bool, bool) {
        const CLOSING: u8 = TcpFlags::FIN | TcpFlags::RST;
        (self.orig.tcp_flags & CLOSING != 0, self.resp.tcp_flags & CLOSING != 0)
    }

    fn both_closed(&self) -> bool {
        let (o, r) = self.did_close();
        o && r
    }

    /// Zeek's `duration`: from the first packet to [`FlowRecord::zeek_last_ts`].
    pub fn zeek_duration_secs(&self) -> f64 {
        self.zeek_last_ts.since(self.first_ts) as f64 / 1e9
    }

    /// Whether a packet on this connection's 5-tuple starts a new Zeek connection instead
    /// (the TCP analyzer's `IsReuse`): only a SYN can. A SYN-ACK can only while the originator
    /// has sent nothing (a half connection; the responder's start is compared then). Once either
    /// side has closed, any SYN starts a new connection; before, only one whose sequence number
    /// differs from the originator's initial one (a retransmitted SYN stays, a new attempt does
    /// not).
    pub fn zeek_is_reuse(&self, m: &PacketMeta<'_>) -> bool {
        use super::tcp_state::EndpointState::Inactive;
        let flags = m.tcp.flags;
        if self.proto != IPPROTO_TCP || !flags.syn() || matches!(m.frag, Fragment::Later { .. }) {
            return false;
        }
        let side = if flags.ack() {
            if self.tcp.orig != Inactive {
                return false;
            }
            &self.resp.seq
        } else {
            &self.orig.seq
        };
        let (oc, rc) = self.did_close();
        oc || rc || (side.started() && m.tcp.seq != side.base)
    }

    /// Whether TCP has ended: FIN from both sides, or a RST from either.
    pub fn tcp_finished(&self) -> bool {
        use super::tcp_state::EndpointState::{Closed, Reset};
        self.proto == IPPROTO_TCP
            && (matches!((self.tcp.orig, self.tcp.resp), (Closed, Closed))
                || self.tcp.orig == Reset
                || self.tcp.resp == Reset)
    }

    pub fn duration_secs(&self) -> f64 {
        self.last_ts.since(self.first_ts) as f64 / 1e9
    }

    /// Zeek's orig_bytes: TCP by sequence numbers (and, under Zeek's rules, acknowledgments),
    /// others by payload lengths.
    pub fn orig_bytes(&self) -> u64 {
        self.bytes_of(&self.orig)
    }

    pub fn resp_bytes(&self) -> u64 {
        self.bytes_of(&self.resp)
    }

    fn bytes_of(&self, d: &Direction) -> u64 {
        match (self.proto, self.zeek_rules) {
            (IPPROTO_TCP, true) => d.seq.zeek_size(),
            (IPPROTO_TCP, false) => d.seq.data_size(),
            _ => d.payload_bytes,
        }
    }

    /// Zeek's conn_state at export.
    pub fn conn_state(&self) -> ConnState {
        match self.proto {
            IPPROTO_TCP => tcp_conn_state(
                self.tcp,
                self.orig_bytes(),
                self.resp_bytes(),
                self.history.as_str(),
            ),
            IPPROTO_UDP => udp_conn_state(self.orig.pkts > 0, self.resp.pkts > 0),
            _ => ConnState::Oth,
        }
    }

    /// The service: sniffed from payload, else by the responder's port.
    pub fn service(&self) -> Service {
        self.app.service(self.proto, self.resp_port)
    }

    /// The service as Zeek would log it: only when confirmed from payload.
    pub fn zeek_service(&self) -> Service {
        self.app.sniffed.zeek()
    }

    /// The last window each side advertised, scaled when both SYNs negotiated window scaling
    /// (RFC 7323), as Argus reports swin/dwin. Returns (orig, resp).
    pub fn scaled_windows(&self) -> (u64, u64) {
        let (o, r) = (&self.orig, &self.resp);
        match (o.wscale, r.wscale) {
            (Some(so), Some(sr)) => ((o.window as u64) << so, (r.window as u64) << sr),
            _ => (o.window as u64, r.window as u64),
        }
    }

    pub fn is_icmp(&self) -> bool {
        matches!(self.proto, IPPROTO_ICMP | IPPROTO_ICMPV6)
    }

    pub fn community_id(&self, seed: u16) -> String {
        self.community_id_text(seed).as_str().to_owned()
    }

    /// [`Self::community_id`], kept inline (no allocation).
    pub fn community_id_text(&self, seed: u16) -> super::ShortText {
        super::key::community_id(
            seed,
            self.orig_addr,
            self.orig_port,
            self.resp_addr,
            self.resp_port,
            self.proto,
        )
    }
}

/// The transport protocol's name as Zeek writes it (`tcp`, `udp`, `icmp`, `unknown_transport`).
pub fn zeek_proto_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP | IPPROTO_ICMPV6 => "icmp",
        _ => "unknown_transport",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_matches_two_pass() {
        let xs = [1.0, 2.0, 4.0, 7.0, 11.0];
        let mut w = Welford::default();
        xs.iter().for_each(|x| w.push(*x));
        let mean = xs.iter().sum::<f64>() / 5.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0;
        assert!((w.mean - mean).abs() < 1e-12 && (w.std() - var.sqrt()).abs() < 1e-12);
    }

    fn flags(b: u8) -> TcpFlags {
        TcpFlags(b)
    }

    /// Feeds a segment to both views, as FlowRecord::update does; returns Zeek's rxmit.
    fn seg(s: &mut SeqTrack, seq: u32, f: u8, len: u32) -> bool {
        let (rel, _) = s.observe(seq, flags(f), len);
        s.zeek_segment(rel, flags(f), len, false)
    }

    #[test]
    fn seq_size_counts_data_not_syn_or_fin() {
        let mut s = SeqTrack::default();
        seg(&mut s, 1000, TcpFlags::SYN, 0);
        seg(&mut s, 1001, TcpFlags::ACK, 100);
        seg(&mut s, 1101, TcpFlags::ACK, 50);
        seg(&mut s, 1151, TcpFlags::FIN | TcpFlags::ACK, 0);
        assert_eq!(s.zeek_size(), 150);
        assert_eq!(s.retransmits, 0);
    }

    #[test]
    fn seq_retransmit_and_wraparound() {
        let mut s = SeqTrack::default();
        seg(&mut s, u32::MAX - 10, TcpFlags::SYN, 0);
        assert!(!seg(&mut s, u32::MAX - 9, TcpFlags::ACK, 100));
        // An identical resend: Argus counts it; IoT-23's Zeek does not (it ends at the last
        // sequence number, not before it).
        assert!(!seg(&mut s, u32::MAX - 9, TcpFlags::ACK, 100));
        assert_eq!(s.retransmits, 1);
        // Skip 20 bytes, across the 2^32 wrap, then fill the hole: Zeek's T.
        let next = (u32::MAX - 9).wrapping_add(120);
        assert!(!seg(&mut s, next, TcpFlags::ACK, 10));
        assert!(seg(&mut s, (u32::MAX - 9).wrapping_add(100), TcpFlags::ACK, 20));
        assert_eq!(s.zeek_size(), 130);
    }

    #[test]
    fn a_gap_is_data_acknowledged_but_never_seen() {
        let mut s = SeqTrack::default();
        seg(&mut s, 1000, TcpFlags::SYN, 0);
        seg(&mut s, 1001, TcpFlags::ACK, 100);
        // 50 bytes at 1101 never seen; the next segment arrives and the peer acks past it.
        seg(&mut s, 1151, TcpFlags::ACK, 50);
        assert_eq!(s.zeek_ack(1101, false, false, true), 0, "nothing missing below 1101");
        assert_eq!(s.zeek_ack(1201, false, false, true), 1);
        assert_eq!((s.missed_bytes, s.zeek_size()), (50, 200));
        // Out of order but filled before the ack: no gap.
        let mut t = SeqTrack::default();
        seg(&mut t, 1000, TcpFlags::SYN, 0);
        seg(&mut t, 1101, TcpFlags::ACK, 50);
        assert!(seg(&mut t, 1001, TcpFlags::ACK, 100));
        assert_eq!((t.zeek_ack(1151, false, false, true), t.missed_bytes), (0, 0));
    }

    #[test]
    fn first_seq_is_the_first_segment_even_without_syn() {
        let mut s = SeqTrack::default();
        s.observe(5000, flags(TcpFlags::ACK), 10);
        assert_eq!((s.first_seq, s.base), (5000, 4999));
        let mut t = SeqTrack::default();
        t.observe(7000, flags(TcpFlags::SYN), 0);
        assert_eq!((t.first_seq, t.base), (7000, 7000));
    }

    #[test]
    fn pop_std_divides_by_n() {
        let mut w = Welford::default();
        [10.0, 20.0, 30.0, 40.0].iter().for_each(|x| w.push(*x));
        assert!((w.pop_std() - 125f64.sqrt()).abs() < 1e-12);
        let mut one = Welford::default();
        one.push(3.0);
        assert_eq!(one.pop_std(), 0.0);
    }

    #[test]
    fn window_follows_argus_rule() {
        let mut d = Direction::default();
        d.note_window(flags(TcpFlags::SYN), 29200);
        assert_eq!(d.window, 0, "a bare SYN's window is not recorded");
        d.note_window(flags(TcpFlags::ACK), 4218);
        d.note_window(flags(TcpFlags::ACK), 0);
        assert_eq!(d.window, 4218, "a zero window keeps the last open one");
        d.note_window(flags(TcpFlags::RST), 0);
        d.note_window(flags(TcpFlags::FIN | TcpFlags::ACK), 100);
        assert_eq!(d.window, 4218, "FIN and RST segments are skipped");
        d.note_window(flags(TcpFlags::SYN | TcpFlags::ACK), 5720);
        assert_eq!(d.window, 5720);
    }

    #[test]
    fn partial_connection_counts_from_first_segment() {
        let mut s = SeqTrack::default();
        seg(&mut s, 5000, TcpFlags::ACK, 10);
        seg(&mut s, 5010, TcpFlags::ACK, 10);
        assert_eq!(s.zeek_size(), 20);
    }
}
