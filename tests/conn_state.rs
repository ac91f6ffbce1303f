//! TCP state from packet sequences: Zeek's history and conn_state, Argus's state, and byte
//! counts, on tiny crafted traces named after their edge case (as Zeek's btest traces), plus
//! a golden summary of the all-flags captures.

use std::collections::BTreeMap;

use etherparse::PacketBuilder;
use mnpflow::capture::writer::PcapWriter;
use mnpflow::capture::{LinkType, Timestamp};
use mnpflow::features::unsw::argus_state;
use mnpflow::flow::{CutPolicy, FlowConfig, FlowRecord};

use crate::util::{flows_of, flows_with, golden, shared};

const C: [u8; 4] = [10, 1, 1, 1];
const S: [u8; 4] = [10, 1, 1, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;

/// One packet of a trace: from the client?, flags, seq, ack, payload length, time in ms.
type P = (bool, u8, u32, u32, usize, i64);

fn write_trace(name: &str, pkts: &[P]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mnpflow-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.pcap"));
    let mut w = PcapWriter::new(std::fs::File::create(&path).unwrap(), LinkType::Ethernet).unwrap();
    for &(from_client, flags, seq, ack, len, t_ms) in pkts {
        let (src, dst, sp, dp) = if from_client { (C, S, 40000, 80) } else { (S, C, 80, 40000) };
        let mut b =
            PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src, dst, 64).tcp(sp, dp, seq, 1000);
        if flags & SYN != 0 {
            b = b.syn();
        }
        if flags & ACK != 0 {
            b = b.ack(ack);
        }
        if flags & FIN != 0 {
            b = b.fin();
        }
        if flags & RST != 0 {
            b = b.rst();
        }
        if flags & PSH != 0 {
            b = b.psh();
        }
        let mut v = Vec::new();
        b.write(&mut v, &vec![b'x'; len]).unwrap();
        w.write(Timestamp(1_700_000_000_000_000_000 + t_ms * 1_000_000), &v, v.len() as u32)
            .unwrap();
    }
    drop(w);
    path
}

fn one_flow(name: &str, pkts: &[P]) -> FlowRecord {
    let (flows, _) = flows_of(&[write_trace(name, pkts)]);
    assert_eq!(flows.len(), 1, "{name}: {} flows", flows.len());
    flows[0]
}

/// The trace's one flow under Zeek's cut rules, where Zeek's history and byte counts are kept.
fn one_zeek_flow(name: &str, pkts: &[P]) -> FlowRecord {
    let zeek = FlowConfig::default().for_cut(CutPolicy::Zeek);
    let (flows, _) = flows_with(&[write_trace(name, pkts)], &zeek);
    assert_eq!(flows.len(), 1, "{name}: {} Zeek connections", flows.len());
    flows[0]
}

/// (trace, packets, history, conn_state, Argus state, orig_bytes, resp_bytes)
#[test]
fn crafted_edge_traces() {
    /// (name, packets, history, conn_state, Argus state, orig_bytes, resp_bytes)
    type Case = (&'static str, Vec<P>, &'static str, &'static str, &'static str, u64, u64);
    let cases: Vec<Case> = vec![
        ("syn-only", vec![(true, SYN, 100, 0, 0, 0)], "S", "S0", "REQ", 0, 0),
        (
            "syn-then-rst",
            vec![(true, SYN, 100, 0, 0, 0), (true, RST, 101, 0, 0, 5)],
            "SR",
            "RSTOS0",
            "RST",
            0,
            0,
        ),
        (
            "syn-rejected",
            vec![(true, SYN, 100, 0, 0, 0), (false, RST | ACK, 0, 101, 0, 1)],
            "Sr",
            "REJ",
            "RST",
            0,
            0,
        ),
        (
            "fin-both-ways",
            vec![
                (true, SYN, 100, 0, 0, 0),
                (false, SYN | ACK, 500, 101, 0, 10),
                (true, ACK, 101, 501, 0, 20),
                (true, PSH | ACK, 101, 501, 40, 21),
                (false, ACK, 501, 141, 0, 30),
                (false, PSH | ACK, 501, 141, 300, 31),
                (true, ACK, 141, 801, 0, 40),
                (true, FIN | ACK, 141, 801, 0, 50),
                (false, FIN | ACK, 801, 142, 0, 60),
                (true, ACK, 142, 802, 0, 70),
            ],
            "ShADadFf",
            "SF",
            "FIN",
            40,
            300,
        ),
        (
            "established-open",
            vec![
                (true, SYN, 100, 0, 0, 0),
                (false, SYN | ACK, 500, 101, 0, 10),
                (true, ACK, 101, 501, 0, 20),
                (true, PSH | ACK, 101, 501, 10, 30),
            ],
            "ShAD",
            "S1",
            "CON",
            10,
            0,
        ),
        (
            "synack-seen-first",
            vec![
                (false, SYN | ACK, 500, 101, 0, 0),
                (true, ACK, 101, 501, 0, 10),
                (true, PSH | ACK, 101, 501, 20, 20),
            ],
            "^hAD",
            "OTH",
            "ACC",
            20,
            0,
        ),
        (
            "missing-syn",
            vec![
                (true, PSH | ACK, 1000, 2000, 100, 0),
                (false, PSH | ACK, 2000, 1100, 50, 10),
                (true, ACK, 1100, 2050, 0, 20),
            ],
            "DdA",
            "OTH",
            "CON",
            100,
            50,
        ),
        (
            "half-open-fin",
            vec![(true, SYN, 100, 0, 0, 0), (true, FIN, 101, 0, 0, 10)],
            "SF",
            "SH",
            "CLO",
            0,
            0,
        ),
        (
            "orig-aborts",
            vec![
                (true, SYN, 100, 0, 0, 0),
                (false, SYN | ACK, 500, 101, 0, 10),
                (true, ACK, 101, 501, 0, 20),
                (true, RST, 101, 0, 0, 30),
            ],
            "ShAR",
            "RSTO",
            "RST",
            0,
            0,
        ),
        (
            // Out of order: the segment filling the hole ends below the last sequence number.
            "retransmission",
            vec![
                (true, SYN, 100, 0, 0, 0),
                (false, SYN | ACK, 500, 101, 0, 10),
                (true, ACK, 101, 501, 0, 20),
                (true, PSH | ACK, 111, 501, 10, 30),
                (true, PSH | ACK, 101, 501, 10, 40),
            ],
            "ShADT",
            "S1",
            "CON",
            20,
            0,
        ),
        (
            // An identical resend ends at the last sequence number: IoT-23's Zeek writes no T
            // (docs/zeek-comparison.md).
            "identical-resend",
            vec![
                (true, SYN, 100, 0, 0, 0),
                (false, SYN | ACK, 500, 101, 0, 10),
                (true, ACK, 101, 501, 0, 20),
                (true, PSH | ACK, 101, 501, 10, 30),
                (true, PSH | ACK, 101, 501, 10, 40),
            ],
            "ShAD",
            "S1",
            "CON",
            10,
            0,
        ),
        (
            "time-goes-back",
            vec![
                (true, SYN, 100, 0, 0, 100),
                (false, SYN | ACK, 500, 101, 0, 90),
                (true, ACK, 101, 501, 0, 110),
            ],
            "ShA",
            "S1",
            "CON",
            0,
            0,
        ),
    ];
    for (name, pkts, history, conn_state, state, ob, rb) in cases {
        // Zeek's fields as Zeek cuts and counts; Argus's state as Argus cuts.
        let z = one_zeek_flow(name, &pkts);
        assert_eq!(z.history.as_str(), history, "{name}: history");
        assert_eq!(z.conn_state().as_str(), conn_state, "{name}: conn_state");
        assert_eq!((z.orig_bytes(), z.resp_bytes()), (ob, rb), "{name}: bytes");
        assert_eq!(argus_state(&one_flow(name, &pkts)), state, "{name}: Argus state");
    }
}

#[test]
fn handshake_times_give_tcprtt() {
    let f = one_flow(
        "rtt",
        &[
            (true, SYN, 100, 0, 0, 0),
            (false, SYN | ACK, 500, 101, 0, 30),
            (true, ACK, 101, 501, 0, 35),
        ],
    );
    let synack = f.synack_ts.get().unwrap().since(f.syn_ts.get().unwrap());
    let ackdat = f.ack_ts.get().unwrap().since(f.synack_ts.get().unwrap());
    assert_eq!((synack, ackdat), (30_000_000, 5_000_000));
}

/// Both-direction TCP state over every flag combination (ESnet's crafted captures): the
/// distribution of (history, conn_state, Argus state) is pinned by a golden file.
#[test]
fn all_flags_captures_golden() {
    let mut out = String::new();
    for cap in ["esnet/one_way_all_flags.pcap", "esnet/two_way_all_flags.pcap"] {
        let (flows, _) = flows_of(&[shared(&format!("captures/{cap}"))]);
        let mut dist: BTreeMap<(String, &str, &str), usize> = BTreeMap::new();
        for f in &flows {
            *dist
                .entry((f.history.as_str().to_owned(), f.conn_state().as_str(), argus_state(f)))
                .or_default() += 1;
        }
        out += &format!("## {cap}: {} flows\n", flows.len());
        for ((h, c, s), n) in dist {
            out += &format!("{n:5} {h:12} {c:7} {s}\n");
        }
    }
    golden("all_flags.txt", &out);
}
