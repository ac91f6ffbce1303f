//! Zeek as the oracle for the Zeek vocabulary (IoT-23's conn.log).
//!
//! `../shared/data/zeek/` holds a real IoT-23 capture and the conn.log Zeek wrote for it. This
//! runs `mnpflow flows CAPTURE --schema zeek --format zeek` and pairs each Zeek row with ours:
//! same 5-tuple (in Zeek's orientation) and start time within 1 s, nearest first, each of our
//! rows used once. A paired row is a connection *cut the same way*. On those, every conn.log
//! field is compared (duration within 10 us, the rest exactly). The floors below are the
//! measured figures rounded down: they can only rise. What still differs, and why, is in
//! `docs/zeek-comparison.md`.
//!
//! The shared files are read in place; when they are missing the test fails naming the file
//! (it never skips, under CI or not).

use std::collections::HashMap;
use std::process::Command;

use crate::util::shared;

/// Share of Zeek's connections we cut the same way (%), and of our rows that are Zeek's.
const CUT_FLOOR: f64 = 99.9;
const OURS_IN_ZEEK_FLOOR: f64 = 99.9;

/// Per-field agreement floors (%) on connections cut the same way.
const FIELD_FLOORS: [(&str, f64); 11] = [
    ("service", 100.0),
    ("duration", 100.0),
    ("orig_bytes", 100.0),
    ("resp_bytes", 100.0),
    ("conn_state", 100.0),
    ("missed_bytes", 100.0),
    ("history", 100.0),
    ("orig_pkts", 100.0),
    ("orig_ip_bytes", 100.0),
    ("resp_pkts", 100.0),
    ("resp_ip_bytes", 100.0),
];

type Row = HashMap<String, String>;

/// Rows of a Zeek ASCII log. IoT-23's labeled files separate their last three columns by
/// three spaces instead of tabs; those are split too.
fn parse_log(text: &str) -> Vec<Row> {
    let mut fields: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#fields\t") {
            fields = rest.split(['\t', ' ']).filter(|f| !f.is_empty()).map(String::from).collect();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let cells = line.split('\t').flat_map(|c| c.split("   "));
        rows.push(fields.iter().cloned().zip(cells.map(String::from)).collect());
    }
    assert!(!fields.is_empty(), "no #fields line");
    rows
}

fn key(r: &Row) -> (String, String, String, String, String) {
    let f = |k: &str| r[k].clone();
    (f("id.orig_h"), f("id.orig_p"), f("id.resp_h"), f("id.resp_p"), f("proto"))
}

fn ts(r: &Row) -> f64 {
    r["ts"].parse().unwrap()
}

fn same(field: &str, a: &str, b: &str) -> bool {
    match (field, a.parse::<f64>(), b.parse::<f64>()) {
        ("duration", Ok(x), Ok(y)) => (x - y).abs() <= 1e-5,
        _ => a == b,
    }
}

#[test]
fn conn_log_agrees_with_zeek_on_the_shared_iot23_capture() {
    let pcap = shared("zeek/iot23-42-1-benign.pcap");
    let log = shared("zeek/iot23-42-1-benign.conn.log.labeled");
    let dir = tempfile::tempdir().unwrap();
    let ours_path = dir.path().join("conn.log");
    let out = Command::new(env!("CARGO_BIN_EXE_mnpflow"))
        .args(["flows", "--schema", "zeek", "--format", "zeek", "-o"])
        .arg(&ours_path)
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "mnpflow flows failed: {}", String::from_utf8_lossy(&out.stderr));
    let zeek = parse_log(&std::fs::read_to_string(&log).unwrap());
    let ours = parse_log(&std::fs::read_to_string(&ours_path).unwrap());

    let mut by_key: HashMap<_, Vec<usize>> = HashMap::new();
    for (i, r) in ours.iter().enumerate() {
        by_key.entry(key(r)).or_default().push(i);
    }
    let mut zeek_sorted: Vec<&Row> = zeek.iter().collect();
    zeek_sorted.sort_by(|a, b| ts(a).total_cmp(&ts(b)));
    let mut used = vec![false; ours.len()];
    let mut pairs = Vec::new();
    let mut unpaired = Vec::new();
    for z in zeek_sorted {
        let best = by_key
            .get(&key(z))
            .into_iter()
            .flatten()
            .filter(|&&i| !used[i])
            .map(|&i| ((ts(&ours[i]) - ts(z)).abs(), i))
            .filter(|(d, _)| *d <= 1.0)
            .min_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((_, i)) => {
                used[i] = true;
                pairs.push((z, &ours[i]));
            }
            None => unpaired.push(z),
        }
    }

    let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    let cut = pct(pairs.len(), zeek.len());
    let ours_in_zeek = pct(pairs.len(), ours.len());
    let mut report = format!(
        "Zeek rows {}, ours {}, cut the same way {} ({cut:.2} % of Zeek's, {ours_in_zeek:.2} % \
         of ours)\n",
        zeek.len(),
        ours.len(),
        pairs.len()
    );
    let mut failures = Vec::new();
    if cut < CUT_FLOOR {
        failures.push(format!("cut the same way {cut:.2} % < {CUT_FLOOR} %"));
    }
    if ours_in_zeek < OURS_IN_ZEEK_FLOOR {
        failures.push(format!("our rows in Zeek's {ours_in_zeek:.2} % < {OURS_IN_ZEEK_FLOOR} %"));
    }
    for (field, floor) in FIELD_FLOORS {
        let differ: Vec<_> =
            pairs.iter().filter(|(z, o)| !same(field, &z[field], &o[field])).collect();
        let agree = pct(pairs.len() - differ.len(), pairs.len());
        report += &format!("  {field:14} {agree:7.2} %\n");
        if agree < floor {
            let examples: Vec<String> = differ
                .iter()
                .take(3)
                .map(|(z, o)| {
                    format!("{} {:?}: zeek {} ours {}", z["ts"], key(z), z[field], o[field])
                })
                .collect();
            failures.push(format!("{field} {agree:.2} % < {floor} %: {}", examples.join("; ")));
        }
    }
    for z in unpaired.iter().take(5) {
        report += &format!("  unpaired Zeek row: {} {:?} {}\n", z["ts"], key(z), z["history"]);
    }
    eprintln!("{report}");
    assert!(failures.is_empty(), "{report}\n{}", failures.join("\n"));
}
