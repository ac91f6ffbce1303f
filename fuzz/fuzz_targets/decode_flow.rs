//! Any frame, any link type, through decode, the flow table and both feature extractors.
//! The first byte picks the link type; the next eight give a timestamp; the rest is the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnpflow::capture::{LinkType, RawPacket, Timestamp};
use mnpflow::decode::decode;
use mnpflow::features::{SchemaKind, extractor};
use mnpflow::flow::{EndReason, FlowConfig, FlowTable};

const LINKS: [LinkType; 8] = [
    LinkType::Ethernet,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Null,
    LinkType::Loop,
];

fuzz_target!(|data: &[u8]| {
    let mut table = FlowTable::new(FlowConfig { max_flows: 8, ..FlowConfig::default() });
    let mut unsw = extractor(SchemaKind::Unsw, 0);
    let mut zeek = extractor(SchemaKind::Zeek, 0);
    let mut cells = Vec::new();
    let mut sink = |r: &mnpflow::flow::FlowRecord| {
        unsw.extract(r, &mut cells);
        zeek.extract(r, &mut cells);
    };
    // Several frames per input, separated by 0xFF 0x00 markers, so state carries across.
    for chunk in data.split(|b| *b == 0xFF) {
        if chunk.len() < 9 {
            continue;
        }
        let link = LINKS[(chunk[0] % 8) as usize];
        let ts = i64::from_le_bytes(chunk[1..9].try_into().unwrap());
        let frame = &chunk[9..];
        let raw = RawPacket {
            ts: Timestamp(ts),
            link,
            wire_len: frame.len() as u32 + (chunk[0] as u32 >> 3),
            data: frame,
        };
        if let Ok(meta) = decode(&raw) {
            table.process(&meta, &mut sink);
        }
    }
    table.flush(EndReason::EndOfInput, &mut sink);
});
