//! Every shared capture through the flow engine: counts, link types, fragments, time.

use std::net::IpAddr;

use mnpflow::decode::DecodeError;
use mnpflow::flow::EndReason;

use crate::util::{flows_of, golden, shared, shared_captures, short_name};

/// Packets are conserved: every decoded packet is in exactly one exported flow, except later
/// fragments whose first fragment never came (counted).
#[test]
fn every_shared_capture_goes_through_and_conserves_packets() {
    let mut lines = String::new();
    for path in shared_captures() {
        let (flows, stats) = flows_of(std::slice::from_ref(&path));
        assert!(stats.warnings.is_empty(), "{}: {:?}", path.display(), stats.warnings);
        let in_flows: u64 = flows.iter().map(|f| f.orig.pkts + f.resp.pkts).sum();
        assert_eq!(
            in_flows,
            stats.decode.decoded - stats.flow.orphan_fragments,
            "{}",
            path.display()
        );
        assert_eq!(flows.len() as u64, stats.flow.exported_total());
        let mut ids: Vec<u64> = flows.iter().map(|f| f.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), flows.len(), "{}: a flow exported twice", path.display());
        for f in &flows {
            assert!(f.last_ts >= f.first_ts, "{}: negative duration", path.display());
        }
        let skipped: Vec<String> = DecodeError::ALL
            .iter()
            .filter(|e| stats.decode.errors[e.index()] > 0)
            .map(|e| format!("{}={}", e.name(), stats.decode.errors[e.index()]))
            .collect();
        lines += &format!(
            "{} packets={} decoded={} flows={} orphan_fragments={} backwards={} resets={} skipped=[{}]\n",
            short_name(&path),
            stats.packets,
            stats.decode.decoded,
            flows.len(),
            stats.flow.orphan_fragments,
            stats.flow.time_backwards,
            stats.flow.clock_resets,
            skipped.join(",")
        );
    }
    golden("captures.txt", &lines);
}

#[test]
fn link_type_raw_ip() {
    let (flows, stats) = flows_of(&[shared("captures/ndpi-linktypes/ocs.pcap")]);
    assert_eq!((stats.packets, stats.decode.decoded), (946, 946));
    assert!(!flows.is_empty());
}

#[test]
fn link_type_linux_cooked() {
    let (_, stats) = flows_of(&[shared("captures/ndpi-linktypes/KakaoTalk_chat.pcap")]);
    assert_eq!(stats.decode.decoded, stats.packets);
}

#[test]
fn link_type_bsd_loopback() {
    let (flows, stats) = flows_of(&[shared("captures/ndpi-linktypes/rdp.pcap")]);
    assert_eq!(stats.decode.decoded, 20);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].resp_port, 3389);
}

/// 6in4: the inner IPv6 conversation is the flow (decapsulated, see `decode`).
#[test]
fn six_in_four_is_decapsulated_to_inner_flows() {
    let (flows, stats) = flows_of(&[shared("captures/ndpi-linktypes/6in4tunnel.pcap")]);
    assert_eq!(stats.decode.tunneled, stats.packets);
    assert!(flows.iter().all(|f| f.tunneled && matches!(f.orig_addr, IpAddr::V6(_))));
}

#[test]
fn vlan_tags_are_part_of_the_key() {
    let (flows, stats) = flows_of(&[shared("captures/ndpi/bot.pcap")]);
    assert_eq!(stats.decode.decoded, stats.packets);
    assert!(flows.iter().all(|f| f.vlan != 0), "bot.pcap is on an 802.1Q VLAN");
}

/// Fragmented ICMP echo: the later fragments join the first fragment's flow.
#[test]
fn ipv4_fragments_join_their_flow() {
    let (flows, stats) = flows_of(&[shared("captures/chrissanders/ip_frag_source.pcapng")]);
    assert_eq!(stats.flow.orphan_fragments, 0);
    assert_eq!(flows.len(), 1);
    let f = &flows[0];
    assert_eq!((f.proto, f.orig.pkts + f.resp.pkts), (1, 6));
    assert_eq!(f.orig.ip_bytes + f.resp.ip_bytes, stats.wire_bytes - 6 * 14);
}

#[test]
fn ipv6_fragments_join_their_flow() {
    let (flows, stats) = flows_of(&[shared("captures/chrissanders/ipv6_fragments.pcapng")]);
    assert_eq!(stats.flow.orphan_fragments, 0);
    let total: u64 = flows.iter().map(|f| f.orig.pkts + f.resp.pkts).sum();
    assert_eq!(total, 22);
}

/// `ndpi/sites.pcapng` goes back in time (17 packets older than the clock): the clock holds,
/// no flow gets a negative duration or inter-packet time.
#[test]
fn time_going_backwards_is_counted_not_corrupting() {
    let (flows, stats) = flows_of(&[shared("captures/ndpi/sites.pcapng")]);
    assert!(stats.flow.time_backwards > 0);
    assert!(flows.iter().all(|f| f.duration_secs() >= 0.0
        && f.orig.ipt_ms.mean >= 0.0
        && f.resp.ipt_ms.mean >= 0.0));
}

/// `ndpi/malware.pcap` concatenates captures years apart (time jumps forward): open flows
/// expire at the jump, and no flow spans it.
#[test]
fn concatenated_captures_do_not_join_flows_across_years() {
    let (flows, stats) = flows_of(&[shared("captures/ndpi/malware.pcap")]);
    assert!(stats.flow.exported[EndReason::Idle as usize] > 0);
    assert!(flows.iter().all(|f| f.duration_secs() < 86_400.0), "a flow spans a capture boundary");
}

/// Concatenating two captures in one run conserves their packets.
#[test]
fn several_files_are_one_stream() {
    let a = shared("captures/chrissanders/http_google.pcapng");
    let b = shared("captures/esnet/nmap_80_vanilla.pcap");
    let (fa, _) = flows_of(std::slice::from_ref(&a));
    let (fb, _) = flows_of(std::slice::from_ref(&b));
    let (fab, stats) = flows_of(&[a, b]);
    assert_eq!(stats.files, 2);
    assert_eq!(fab.len(), fa.len() + fb.len());
}
