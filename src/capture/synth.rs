//! A deterministic generator of labeled traffic, for the bundled capture, tests and benches.
//!
//! Normal traffic: web browsing (HTTP and TLS), DNS lookups, NTP, an IoT device's periodic
//! heartbeat, and SSH sessions, from a small office network. Attacks, each labeled: a TCP
//! port scan, a SYN flood from spoofed sources, an SSH brute force, a periodic C&C beacon,
//! and a bulk exfiltration upload. The same seed always gives the same bytes (the generator
//! uses its own PRNG so that crate upgrades cannot change the bundled capture).
//!
//! Output: a pcap (Ethernet, IPv4) and a truth CSV with one row per generated conversation:
//! `label,kind,proto,orig_h,orig_p,resp_h,resp_p,start`. A flow record matches a truth row by
//! (proto, orig_h, orig_p, resp_h, resp_p); flows split by the active timeout share the label.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use super::writer::PcapWriter;
use super::{LinkType, Timestamp};

/// A small, fixed PRNG (SplitMix64): deterministic across platforms and crate versions.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.f64()).ln()
    }

    /// Log-normal with the given median and shape.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let (u1, u2) = (self.f64().max(1e-12), self.f64());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * z).exp()
    }
}

impl TruthRow {
    #[allow(clippy::too_many_arguments)] // one truth row's columns, in the file's order
    fn new(
        label: u8,
        kind: &'static str,
        proto: u8,
        orig: Ipv4Addr,
        orig_port: u16,
        resp: Ipv4Addr,
        resp_port: u16,
        start: i64,
    ) -> TruthRow {
        TruthRow { label, kind, proto, orig, orig_port, resp, resp_port, start: Timestamp(start) }
    }
}

fn record(truth: &mut dyn Write, s: &mut SynthSummary, r: TruthRow) -> io::Result<()> {
    s.conversations += 1;
    s.attack_conversations += r.label as u64;
    writeln!(
        truth,
        "{},{},{},{},{},{},{},{}",
        r.label, r.kind, r.proto, r.orig, r.orig_port, r.resp, r.resp_port, r.start
    )
}

/// What the generator writes.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub seed: u64,
    /// Seconds of traffic.
    pub duration_secs: f64,
    /// Multiplies the rate of every normal traffic kind (attacks keep their size).
    pub scale: f64,
    /// Capture start, Unix seconds.
    pub start_secs: i64,
    /// Include the labeled attacks.
    pub attacks: bool,
    /// Bytes kept of each frame (the wire length is always recorded in full).
    pub snaplen: u32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 7,
            duration_secs: 600.0,
            scale: 1.0,
            start_secs: 1_767_225_600,
            attacks: true,
            snaplen: 65_535,
        }
    }
}

/// One generated conversation, as the truth file lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthRow {
    pub label: u8,
    pub kind: &'static str,
    pub proto: u8,
    pub orig: Ipv4Addr,
    pub orig_port: u16,
    pub resp: Ipv4Addr,
    pub resp_port: u16,
    pub start: Timestamp,
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynthSummary {
    pub packets: u64,
    pub conversations: u64,
    pub attack_conversations: u64,
}

const MSS: usize = 1448;
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Packets waiting to be written in time order.
struct Pending {
    heap: BinaryHeap<Reverse<(i64, u64, Vec<u8>)>>,
    seq: u64,
}

impl Pending {
    fn push(&mut self, ts_ns: i64, frame: Vec<u8>) {
        self.seq += 1;
        self.heap.push(Reverse((ts_ns, self.seq, frame)));
    }
}

/// Builds frames for one endpoint pair.
struct Conv<'a> {
    out: &'a mut Pending,
    client: Ipv4Addr,
    server: Ipv4Addr,
    cport: u16,
    sport: u16,
    cttl: u8,
    sttl: u8,
    cseq: u32,
    sseq: u32,
    /// Current time, ns.
    t: i64,
    /// Half the round-trip time, ns.
    half_rtt: i64,
}

impl<'a> Conv<'a> {
    #[allow(clippy::too_many_arguments)] // a conversation's endpoints and timing, in the order they read in the generator
    fn new(
        out: &'a mut Pending,
        client: Ipv4Addr,
        server: Ipv4Addr,
        cport: u16,
        sport: u16,
        rtt: i64,
        t: i64,
        rng: &mut Rng,
    ) -> Conv<'a> {
        Conv {
            out,
            client,
            server,
            cport,
            sport,
            cttl: 64,
            sttl: if server.octets()[0] == 10 { 64 } else { 52 },
            cseq: rng.next_u64() as u32,
            sseq: rng.next_u64() as u32,
            t,
            half_rtt: rtt / 2,
        }
    }

    fn frame_tcp(&mut self, from_client: bool, flags: u8, payload: &[u8]) -> Vec<u8> {
        let (src, dst, sp, dp, ttl, seq, ack) = if from_client {
            (self.client, self.server, self.cport, self.sport, self.cttl, self.cseq, self.sseq)
        } else {
            (self.server, self.client, self.sport, self.cport, self.sttl, self.sseq, self.cseq)
        };
        let window = if from_client { 64240 } else { 65160 };
        let mut b = PacketBuilder::ethernet2(
            if from_client { mac_of(src) } else { GATEWAY_MAC },
            mac_of(dst),
        )
        .ipv4(src.octets(), dst.octets(), ttl)
        .tcp(sp, dp, seq, window);
        if flags & 0x02 != 0 {
            b = b.syn();
        }
        if flags & 0x10 != 0 {
            b = b.ack(ack);
        }
        if flags & 0x01 != 0 {
            b = b.fin();
        }
        if flags & 0x04 != 0 {
            b = b.rst();
        }
        if flags & 0x08 != 0 {
            b = b.psh();
        }
        let mut v = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut v, payload).expect("writing to a Vec cannot fail");
        v
    }

    /// Sends one TCP segment and advances sequence numbers and time.
    fn seg(&mut self, from_client: bool, flags: u8, payload: &[u8], gap_ns: i64) {
        self.t += gap_ns;
        let f = self.frame_tcp(from_client, flags, payload);
        self.out.push(self.t, f);
        let adv = payload.len() as u32 + (flags & 0x03 != 0) as u32;
        if from_client {
            self.cseq = self.cseq.wrapping_add(adv)
        } else {
            self.sseq = self.sseq.wrapping_add(adv)
        }
    }

    fn handshake(&mut self) {
        self.seg(true, 0x02, &[], 0);
        self.seg(false, 0x12, &[], self.half_rtt);
        self.seg(true, 0x10, &[], self.half_rtt);
    }

    /// Sends `len` bytes starting with `head`, in MSS segments, acked every two segments.
    fn data(&mut self, from_client: bool, head: &[u8], len: usize, rng: &mut Rng) {
        let mut sent = 0;
        let mut n = 0;
        let mut buf = [0u8; MSS];
        while sent < len.max(head.len()) {
            let k = MSS.min(len.max(head.len()) - sent);
            for (i, b) in buf[..k].iter_mut().enumerate() {
                let at = sent + i;
                *b = if at < head.len() { head[at] } else { (at as u8).wrapping_mul(31) ^ 0x5a };
            }
            let gap = if n == 0 { self.half_rtt } else { rng.range(20_000, 200_000) as i64 };
            self.seg(from_client, 0x18, &buf[..k], gap);
            sent += k;
            n += 1;
            if n % 2 == 0 {
                self.seg(!from_client, 0x10, &[], self.half_rtt);
            }
        }
        self.seg(!from_client, 0x10, &[], self.half_rtt);
    }

    fn close(&mut self) {
        self.seg(true, 0x11, &[], 1_000_000);
        self.seg(false, 0x11, &[], self.half_rtt);
        self.seg(true, 0x10, &[], self.half_rtt);
    }

    fn udp(&mut self, from_client: bool, payload: &[u8], gap_ns: i64) {
        self.t += gap_ns;
        let (src, dst, sp, dp, ttl) = if from_client {
            (self.client, self.server, self.cport, self.sport, self.cttl)
        } else {
            (self.server, self.client, self.sport, self.cport, self.sttl)
        };
        let b = PacketBuilder::ethernet2(mac_of(src), mac_of(dst))
            .ipv4(src.octets(), dst.octets(), ttl)
            .udp(sp, dp);
        let mut v = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut v, payload).expect("writing to a Vec cannot fail");
        self.out.push(self.t, v);
    }
}

fn dns_query(id: u16, name: &str, response: bool) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(if response { &[0x81, 0x80] } else { &[0x01, 0x00] });
    p.extend_from_slice(&[0, 1, 0, response as u8, 0, 0, 0, 0]);
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    if response {
        p.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 93, 184, 216, 34]);
    }
    p
}

const TLS_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
const SITES: [&str; 6] = [
    "example.com",
    "news.example.org",
    "cdn.example.net",
    "mail.example.com",
    "wiki.example.org",
    "shop.example.net",
];

/// The generator's plan: who talks, and the attacks' parameters.
struct World {
    clients: Vec<Ipv4Addr>,
    web: Vec<Ipv4Addr>,
    dns: Ipv4Addr,
    ntp: Ipv4Addr,
    iot: Ipv4Addr,
    cloud: Ipv4Addr,
    ssh: Ipv4Addr,
    admin: Ipv4Addr,
}

impl World {
    fn new() -> World {
        World {
            clients: (10..40).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect(),
            web: vec![
                Ipv4Addr::new(93, 184, 216, 34),
                Ipv4Addr::new(151, 101, 1, 69),
                Ipv4Addr::new(104, 16, 132, 229),
                Ipv4Addr::new(10, 0, 1, 80),
            ],
            dns: Ipv4Addr::new(10, 0, 0, 2),
            ntp: Ipv4Addr::new(162, 159, 200, 1),
            iot: Ipv4Addr::new(10, 0, 0, 77),
            cloud: Ipv4Addr::new(52, 1, 2, 3),
            ssh: Ipv4Addr::new(10, 0, 1, 22),
            admin: Ipv4Addr::new(10, 0, 0, 5),
        }
    }
}

/// Writes the capture to `pcap` and the truth rows to `truth`.
pub fn generate(
    cfg: &SynthConfig,
    pcap: impl Write,
    mut truth: impl Write,
) -> io::Result<SynthSummary> {
    let mut rng = Rng::new(cfg.seed);
    let snaplen = cfg.snaplen.max(64) as usize;
    let world = World::new();
    let mut out = Pending { heap: BinaryHeap::new(), seq: 0 };
    let mut writer = PcapWriter::new(pcap, LinkType::Ethernet)?;
    let mut summary = SynthSummary::default();
    writeln!(truth, "label,kind,proto,orig_h,orig_p,resp_h,resp_p,start")?;
    let t0 = cfg.start_secs * 1_000_000_000;
    let end = t0 + (cfg.duration_secs * 1e9) as i64;
    let mut next_port: u16 = 40_000;
    let mut port = |rng: &mut Rng| {
        next_port = if next_port >= 60_999 {
            40_000 + rng.range(0, 100) as u16
        } else {
            next_port + 1 + rng.range(0, 3) as u16
        };
        next_port
    };

    // Events: (time, kind index). Normal kinds are Poisson processes; attacks are scheduled.
    let rates_per_sec = [("web", 0.5), ("tls", 0.5), ("dns", 3.0), ("ntp", 0.1), ("ssh", 0.01)];
    let mut events: Vec<(i64, &'static str)> = Vec::new();
    for (kind, rate) in rates_per_sec {
        let rate = rate * cfg.scale;
        let mut t = t0 as f64;
        loop {
            t += rng.exp(1e9 / rate);
            if t as i64 >= end {
                break;
            }
            events.push((t as i64, kind));
        }
    }
    // The IoT heartbeat: every 30 s, a short TCP exchange.
    let mut t = t0 + 3_000_000_000;
    while t < end {
        events.push((t, "iot"));
        t += 30_000_000_000 + rng.range(0, 200_000_000) as i64;
    }
    if cfg.attacks {
        let span = end - t0;
        events.push((t0 + span / 10, "portscan"));
        events.push((t0 + span * 3 / 10, "synflood"));
        events.push((t0 + span / 2, "bruteforce"));
        events.push((t0 + span * 7 / 10, "exfil"));
        // The beacon: every 60 s with little jitter, from a fifth of the way in.
        let mut t = t0 + span / 5;
        while t < end {
            events.push((t, "beacon"));
            t += 60_000_000_000 + rng.range(0, 1_500_000_000) as i64;
        }
    }
    events.sort_by_key(|e| e.0);

    for (t, kind) in events {
        // Flush every packet that precedes this event.
        while let Some(Reverse((ts, _, _))) = out.heap.peek() {
            if *ts > t {
                break;
            }
            let Reverse((ts, _, frame)) = out.heap.pop().expect("peeked");
            writer.write(Timestamp(ts), &frame[..frame.len().min(snaplen)], frame.len() as u32)?;
            summary.packets += 1;
        }
        let client = world.clients[rng.range(0, world.clients.len() as u64) as usize];
        let lan_rtt = rng.range(200_000, 1_500_000) as i64;
        let wan_rtt = rng.range(8_000_000, 60_000_000) as i64;
        match kind {
            "web" => {
                let server = world.web[rng.range(0, world.web.len() as u64) as usize];
                let cp = port(&mut rng);
                record(
                    &mut truth,
                    &mut summary,
                    TruthRow::new(0, "web", 6, client, cp, server, 80, t),
                )?;
                let mut c = Conv::new(&mut out, client, server, cp, 80, wan_rtt, t, &mut rng);
                c.handshake();
                let site = SITES[rng.range(0, SITES.len() as u64) as usize];
                let req = format!(
                    "GET /page/{} HTTP/1.1\r\nHost: {site}\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n",
                    rng.range(0, 500)
                );
                c.data(true, req.as_bytes(), req.len(), &mut rng);
                let body = rng.lognormal(6_000.0, 1.2).clamp(200.0, 2_000_000.0) as usize;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {body}\r\n\r\n"
                );
                c.data(false, head.as_bytes(), head.len() + body, &mut rng);
                c.close();
            }
            "tls" => {
                let server = world.web[rng.range(0, world.web.len() as u64) as usize];
                let cp = port(&mut rng);
                record(
                    &mut truth,
                    &mut summary,
                    TruthRow::new(0, "tls", 6, client, cp, server, 443, t),
                )?;
                let mut c = Conv::new(&mut out, client, server, cp, 443, wan_rtt, t, &mut rng);
                c.handshake();
                c.data(true, TLS_HELLO, 517, &mut rng);
                c.data(false, &[0x16, 0x03, 0x03], 3_000 + rng.range(0, 2_000) as usize, &mut rng);
                for _ in 0..rng.range(1, 4) {
                    c.data(true, &[0x17, 0x03, 0x03], rng.range(200, 900) as usize, &mut rng);
                    let size = rng.lognormal(6_000.0, 1.3).clamp(300.0, 3_000_000.0) as usize;
                    c.data(false, &[0x17, 0x03, 0x03], size, &mut rng);
                }
                c.close();
            }
            "dns" => {
                let cp = port(&mut rng);
                record(
                    &mut truth,
                    &mut summary,
                    TruthRow::new(0, "dns", 17, client, cp, world.dns, 53, t),
                )?;
                let mut c = Conv::new(&mut out, client, world.dns, cp, 53, lan_rtt, t, &mut rng);
                let id = rng.next_u64() as u16;
                let site = SITES[rng.range(0, SITES.len() as u64) as usize];
                c.udp(true, &dns_query(id, site, false), 0);
                c.udp(false, &dns_query(id, site, true), lan_rtt);
            }
            "ntp" => {
                record(
                    &mut truth,
                    &mut summary,
                    TruthRow::new(0, "ntp", 17, client, 123, world.ntp, 123, t),
                )?;
                let mut c = Conv::new(&mut out, client, world.ntp, 123, 123, wan_rtt, t, &mut rng);
                let mut req = [0u8; 48];
                req[0] = 0x23;
                c.udp(true, &req, 0);
                req[0] = 0x24;
                c.udp(false, &req, wan_rtt);
            }
            "ssh" => {
                let cp = port(&mut rng);
                record(
                    &mut truth,
                    &mut summary,
                    TruthRow::new(0, "ssh", 6, world.admin, cp, world.ssh, 22, t),
                )?;
                let mut c =
                    Conv::new(&mut out, world.admin, world.ssh, cp, 22, lan_rtt, t, &mut rng);
                c.handshake();
                c.data(false, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", 32, &mut rng);
                c.data(true, b"SSH-2.0-OpenSSH_9.6\r\n", 21, &mut rng);
                c.data(true, &[0, 0, 5, 0xdc], 1500, &mut rng);
                c.data(false, &[0, 0, 4, 0x5c], 1100, &mut rng);
                // An interactive session: keystrokes and echoes for a minute or more.
                for _ in 0..rng.range(100, 300) {
                    c.t += rng.exp(300_000_000.0) as i64;
                    c.data(true, &[0, 0, 0, 0x34], 52, &mut rng);
                    c.data(false, &[0, 0, 0, 0x44], rng.range(52, 400) as usize, &mut rng);
                }
                c.close();
            }
            "iot" => {
                let cp = port(&mut rng);
                record(
                    &mut truth,
                    &mut summary,
                    TruthRow::new(0, "iot-heartbeat", 6, world.iot, cp, world.cloud, 8883, t),
                )?;
                let mut c =
                    Conv::new(&mut out, world.iot, world.cloud, cp, 8883, wan_rtt, t, &mut rng);
                c.cttl = 255;
                c.handshake();
                c.data(true, &[0x10, 0x1c, 0, 4, b'M', b'Q', b'T', b'T'], 30, &mut rng);
                c.data(false, &[0x20, 0x02, 0, 0], 4, &mut rng);
                c.data(true, &[0xc0, 0x00], 2, &mut rng);
                c.data(false, &[0xd0, 0x00], 2, &mut rng);
                c.close();
            }
            "portscan" => {
                let attacker = Ipv4Addr::new(10, 0, 0, 66);
                let target = Ipv4Addr::new(10, 0, 1, 80);
                let sp = 61_000 + rng.range(0, 1000) as u16;
                let mut tt = t;
                for dp in 1..=120u16 {
                    tt += rng.range(500_000, 3_000_000) as i64;
                    record(
                        &mut truth,
                        &mut summary,
                        TruthRow::new(1, "portscan", 6, attacker, sp, target, dp, tt),
                    )?;
                    let mut c = Conv::new(&mut out, attacker, target, sp, dp, lan_rtt, t, &mut rng);
                    c.t = tt;
                    c.cttl = 37;
                    c.seg(true, 0x02, &[], 0);
                    if matches!(dp, 22 | 80 | 443) {
                        c.seg(false, 0x12, &[], c.half_rtt);
                        c.seg(true, 0x04, &[], c.half_rtt);
                    } else {
                        c.seg(false, 0x14, &[], c.half_rtt);
                    }
                }
            }
            "synflood" => {
                let target = world.web[3];
                let mut tt = t;
                for _ in 0..400 {
                    tt += rng.range(100_000, 500_000) as i64;
                    let src =
                        Ipv4Addr::new(198, 51, rng.range(0, 256) as u8, rng.range(1, 255) as u8);
                    let sp = rng.range(1024, 65535) as u16;
                    record(
                        &mut truth,
                        &mut summary,
                        TruthRow::new(1, "synflood", 6, src, sp, target, 80, tt),
                    )?;
                    let mut c = Conv::new(&mut out, src, target, sp, 80, lan_rtt, t, &mut rng);
                    c.t = tt;
                    c.cttl = rng.range(30, 250) as u8;
                    c.seg(true, 0x02, &[], 0);
                }
            }
            "bruteforce" => {
                let attacker = Ipv4Addr::new(203, 0, 113, 9);
                let mut tt = t;
                for _ in 0..40 {
                    tt += rng.range(800_000_000, 2_000_000_000) as i64;
                    let cp = port(&mut rng);
                    record(
                        &mut truth,
                        &mut summary,
                        TruthRow::new(1, "ssh-bruteforce", 6, attacker, cp, world.ssh, 22, tt),
                    )?;
                    let mut c =
                        Conv::new(&mut out, attacker, world.ssh, cp, 22, wan_rtt, t, &mut rng);
                    c.t = tt;
                    c.cttl = 45;
                    c.handshake();
                    c.data(false, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", 32, &mut rng);
                    c.data(true, b"SSH-2.0-libssh2_1.10.0\r\n", 24, &mut rng);
                    c.data(true, &[0, 0, 2, 0x1c], 540, &mut rng);
                    c.data(false, &[0, 0, 4, 0x5c], 1100, &mut rng);
                    for _ in 0..3 {
                        c.data(true, &[0, 0, 0, 0x5c], 96, &mut rng);
                        c.data(false, &[0, 0, 0, 0x1c], 32, &mut rng);
                    }
                    c.close();
                }
            }
            "beacon" => {
                let infected = Ipv4Addr::new(10, 0, 0, 23);
                let cnc = Ipv4Addr::new(185, 100, 87, 9);
                let cp = port(&mut rng);
                record(
                    &mut truth,
                    &mut summary,
                    TruthRow::new(1, "cnc-beacon", 6, infected, cp, cnc, 443, t),
                )?;
                let mut c = Conv::new(&mut out, infected, cnc, cp, 443, wan_rtt, t, &mut rng);
                c.handshake();
                c.data(true, &[0x17, 0x03, 0x03, 0x00, 0x40], 69, &mut rng);
                c.data(false, &[0x17, 0x03, 0x03, 0x00, 0x20], 37, &mut rng);
                c.close();
            }
            "exfil" => {
                let insider = Ipv4Addr::new(10, 0, 0, 31);
                let drop = Ipv4Addr::new(203, 0, 113, 50);
                let cp = port(&mut rng);
                record(
                    &mut truth,
                    &mut summary,
                    TruthRow::new(1, "exfiltration", 6, insider, cp, drop, 8443, t),
                )?;
                let mut c = Conv::new(&mut out, insider, drop, cp, 8443, wan_rtt, t, &mut rng);
                c.handshake();
                c.data(true, &[0x17, 0x03, 0x03], 2_500_000, &mut rng);
                c.data(false, &[0x17, 0x03, 0x03], 40, &mut rng);
                c.close();
            }
            other => unreachable!("unknown event kind {other}"),
        }
    }
    while let Some(Reverse((ts, _, frame))) = out.heap.pop() {
        writer.write(Timestamp(ts), &frame[..frame.len().min(snaplen)], frame.len() as u32)?;
        summary.packets += 1;
    }
    writer.into_inner().flush()?;
    truth.flush()?;
    Ok(summary)
}
