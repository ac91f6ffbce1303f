//! No input panics the engine: real frames from the shared captures (every link type),
//! mutated deterministically (bit flips, truncations, extreme length fields, garbage), go
//! through decode, the flow table and both extractors; mutated capture files go through the
//! reader. This runs in CI; `fuzz/` has the coverage-guided libFuzzer targets for longer runs.

use std::io::Cursor;
use std::path::Path;

use mnpflow::capture::synth::Rng;
use mnpflow::capture::{CaptureFile, LinkType, RawPacket, Timestamp};
use mnpflow::decode::decode;
use mnpflow::features::{SchemaKind, extractor};
use mnpflow::flow::{EndReason, FlowConfig, FlowRecord, FlowTable};

use crate::util::shared;

const CAPTURES: [&str; 8] = [
    "captures/chrissanders/http_ip4and6.pcapng",
    "captures/chrissanders/ip_frag_source.pcapng",
    "captures/chrissanders/ipv6_fragments.pcapng",
    "captures/ndpi-linktypes/ocs.pcap",
    "captures/ndpi-linktypes/KakaoTalk_chat.pcap",
    "captures/ndpi-linktypes/rdp.pcap",
    "captures/ndpi-linktypes/6in4tunnel.pcap",
    "captures/esnet/two_way_all_flags.pcap",
];

fn frames(rel: &str) -> Vec<(Timestamp, LinkType, Vec<u8>)> {
    let mut cf = CaptureFile::open(shared(rel)).unwrap();
    let mut out = Vec::new();
    while let Some(p) = cf.next_packet().unwrap() {
        out.push((p.ts, p.link, p.data.to_vec()));
        if out.len() >= 400 {
            break;
        }
    }
    out
}

fn mutate(rng: &mut Rng, frame: &mut Vec<u8>) {
    match rng.range(0, 6) {
        0 => {
            for _ in 0..rng.range(1, 9) {
                if !frame.is_empty() {
                    let i = rng.range(0, frame.len() as u64) as usize;
                    frame[i] ^= 1 << rng.range(0, 8);
                }
            }
        }
        1 => frame.truncate(rng.range(0, frame.len() as u64 + 1) as usize),
        2 => {
            // Extreme values where length and offset fields live (IP total length, IHL, TCP
            // data offset, IPv6 payload length), at several link-header offsets.
            let v = [0x00u8, 0xff, 0x0f, 0xf0][rng.range(0, 4) as usize];
            for base in [0usize, 4, 14, 16, 18, 20] {
                for off in [0usize, 2, 3, 4, 5, 6, 7, 12, 32] {
                    if rng.range(0, 4) == 0 && base + off < frame.len() {
                        frame[base + off] = v;
                    }
                }
            }
        }
        3 => {
            let at = rng.range(0, frame.len() as u64 + 1) as usize;
            let garbage: Vec<u8> = (0..rng.range(1, 64)).map(|_| rng.next_u64() as u8).collect();
            frame.splice(at..at, garbage);
        }
        4 => frame.iter_mut().for_each(|b| *b = rng.next_u64() as u8),
        _ => {}
    }
}

#[test]
fn mutated_frames_never_panic_and_conserve_packets() {
    let mut rng = Rng::new(2026);
    let links = [
        LinkType::Ethernet,
        LinkType::Raw,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Null,
    ];
    let mut decoded = 0u64;
    let mut in_flows = 0u64;
    let mut orphans = 0u64;
    for rel in CAPTURES {
        let base = frames(rel);
        for round in 0..40 {
            let mut table = FlowTable::new(FlowConfig { max_flows: 64, ..FlowConfig::default() });
            let mut unsw = extractor(SchemaKind::Unsw, 0);
            let mut zeek = extractor(SchemaKind::Zeek, 0);
            let mut cells = Vec::new();
            let mut sink = |r: &FlowRecord| {
                in_flows += r.orig.pkts + r.resp.pkts;
                unsw.extract(r, &mut cells);
                zeek.extract(r, &mut cells);
            };
            for (ts, link, frame) in &base {
                let mut f = frame.clone();
                mutate(&mut rng, &mut f);
                let link = if round % 5 == 4 {
                    links[rng.range(0, links.len() as u64) as usize]
                } else {
                    *link
                };
                // Timestamps jitter, sometimes wildly.
                let ts = if rng.range(0, 20) == 0 { Timestamp(rng.next_u64() as i64) } else { *ts };
                let raw = RawPacket {
                    ts,
                    link,
                    wire_len: f.len() as u32 + rng.range(0, 3) as u32 * 1000,
                    data: &f,
                };
                if let Ok(meta) = decode(&raw) {
                    decoded += 1;
                    table.process(&meta, &mut sink);
                }
            }
            table.flush(EndReason::EndOfInput, &mut sink);
            orphans += table.stats().orphan_fragments;
        }
    }
    assert!(decoded > 10_000, "mutations should still decode often: {decoded}");
    assert_eq!(in_flows, decoded - orphans, "every decoded packet lands in exactly one flow");
}

#[test]
fn mutated_capture_files_never_panic() {
    let mut rng = Rng::new(7);
    for rel in CAPTURES {
        let original = std::fs::read(shared(rel)).unwrap();
        for _ in 0..60 {
            let mut bytes = original.clone();
            // Damage the file mostly in its headers, where lengths live.
            for _ in 0..rng.range(1, 6) {
                let span = bytes.len().min(if rng.range(0, 2) == 0 { 256 } else { usize::MAX });
                let i = rng.range(0, span as u64) as usize;
                bytes[i] = rng.next_u64() as u8;
            }
            if rng.range(0, 3) == 0 {
                bytes.truncate(rng.range(0, bytes.len() as u64) as usize);
            }
            if let Ok(mut cf) =
                CaptureFile::from_reader(Path::new("mutated"), Box::new(Cursor::new(bytes)))
            {
                let mut n = 0;
                while let Ok(Some(p)) = cf.next_packet() {
                    let _ = decode(&p);
                    n += 1;
                    assert!(n < 1_000_000);
                }
            }
        }
    }
}
