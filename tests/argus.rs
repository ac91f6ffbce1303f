//! Argus as the oracle for the Argus-derived UNSW-NB15 features.
//!
//! For each capture this runs Argus 3 (`argus` then `ra`, as subprocesses, into a temporary
//! directory) and our extractor (library call), pairs the flows and compares every feature
//! with a stated tolerance. The command, the tolerances, the measured agreement and the
//! features where we knowingly differ are in `docs/argus-comparison.md`; the thresholds below
//! are the measured figures rounded down, so a regression in any feature fails here.
//!
//! Pairing: a flow of ours pairs with the Argus record of the same (proto, addresses, ports),
//! in either orientation (Argus may call the other side the source), whose start time is
//! nearest. A pair is *aligned* when both tools cut the same flow: same start time (within
//! 2 us, Argus keeps microseconds) and same total packet count. Flow boundaries differ by
//! design in a few places (Argus checks idle timeouts lazily, ends DNS transactions on the
//! reply, opens new records on some crafted flag sequences), so features are compared on
//! aligned pairs only, and the share of aligned flows is asserted separately.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use mnpflow::features::{Cell, SchemaKind, extractor};
use mnpflow::flow::FlowConfig;
use mnpflow::pipeline::offline::run_files;

/// The `ra` fields, in order. `stime`..`dport` identify the flow; the rest are compared.
const RA_FIELDS: [&str; 32] = [
    "stime", "ltime", "proto", "saddr", "sport", "daddr", "dport", "state", "dur", "sbytes",
    "dbytes", "sttl", "dttl", "spkts", "dpkts", "sloss", "dloss", "swin", "dwin", "stcpb", "dtcpb",
    "smeansz", "dmeansz", "sjit", "djit", "sintpkt", "dintpkt", "tcprtt", "synack", "ackdat",
    "sload", "dload",
];

/// Argus field -> our UNSW column, for the compared features.
const FEATURES: [(&str, &str); 25] = [
    ("state", "state"),
    ("dur", "dur"),
    ("spkts", "spkts"),
    ("dpkts", "dpkts"),
    ("sbytes", "sbytes"),
    ("dbytes", "dbytes"),
    ("sttl", "sttl"),
    ("dttl", "dttl"),
    ("sloss", "sloss"),
    ("dloss", "dloss"),
    ("swin", "swin"),
    ("dwin", "dwin"),
    ("stcpb", "stcpb"),
    ("dtcpb", "dtcpb"),
    ("smeansz", "smean"),
    ("dmeansz", "dmean"),
    ("sintpkt", "sinpkt"),
    ("dintpkt", "dinpkt"),
    ("sjit", "sjit"),
    ("djit", "djit"),
    ("tcprtt", "tcprtt"),
    ("synack", "synack"),
    ("ackdat", "ackdat"),
    ("sload", "sload"),
    ("dload", "dload"),
];

/// Source/destination pairs, swapped when Argus's orientation is the reverse of ours.
const PAIRED: [(&str, &str); 11] = [
    ("sbytes", "dbytes"),
    ("sttl", "dttl"),
    ("spkts", "dpkts"),
    ("sloss", "dloss"),
    ("swin", "dwin"),
    ("stcpb", "dtcpb"),
    ("smeansz", "dmeansz"),
    ("sjit", "djit"),
    ("sintpkt", "dintpkt"),
    ("sload", "dload"),
    ("saddr", "daddr"),
];

/// How two values of a feature are judged equal.
#[derive(Clone, Copy, Debug)]
enum Tol {
    /// The same text (state).
    Text,
    /// Integers, exactly.
    Exact,
    /// |ours - argus| <= abs + rel * |argus|.
    Abs { abs: f64, rel: f64 },
    /// Rates in bit/s: relative 1e-3, widened by the error a duration rounded to 1 us gives.
    Rate,
}

fn tolerance(feature: &str) -> Tol {
    match feature {
        "state" => Tol::Text,
        // Argus keeps microseconds (both ends truncated: up to 2 us) and ra prints 6 decimals.
        "dur" | "tcprtt" | "synack" | "ackdat" => Tol::Abs { abs: 2.5e-6, rel: 0.0 },
        // Milliseconds, printed with 3-6 decimals.
        "sintpkt" | "dintpkt" | "sjit" | "djit" => Tol::Abs { abs: 2e-3, rel: 1e-4 },
        // Argus keeps a float mean; we round to an integer as the published UNSW table does.
        "smeansz" | "dmeansz" => Tol::Abs { abs: 0.5 + 1e-6, rel: 0.0 },
        "sload" | "dload" => Tol::Rate,
        _ => Tol::Exact,
    }
}

/// One flow as either tool reports it, keyed by Argus field names.
#[derive(Debug, Clone)]
struct Flow {
    proto: String,
    saddr: String,
    sport: String,
    daddr: String,
    dport: String,
    stime: f64,
    values: HashMap<&'static str, String>,
}

impl Flow {
    fn num(&self, f: &str) -> f64 {
        self.values
            .get(f)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
    }

    fn total_pkts(&self) -> f64 {
        self.num("spkts") + self.num("dpkts")
    }

    /// The same flow seen from the other side.
    fn flipped(&self) -> Flow {
        let mut f = self.clone();
        std::mem::swap(&mut f.saddr, &mut f.daddr);
        std::mem::swap(&mut f.sport, &mut f.dport);
        for (s, d) in PAIRED {
            let (a, b) = (self.values.get(s).cloned(), self.values.get(d).cloned());
            f.values.remove(s);
            f.values.remove(d);
            if let Some(v) = b {
                f.values.insert(s, v);
            }
            if let Some(v) = a {
                f.values.insert(d, v);
            }
        }
        f
    }
}

fn tool_missing(tool: &str) -> bool {
    Command::new(tool).arg("-h").output().is_err()
}

/// Fails (never skips) when Argus is not installed, naming the missing tool.
fn require_argus() {
    let missing: Vec<&str> = ["argus", "ra"].into_iter().filter(|t| tool_missing(t)).collect();
    if !missing.is_empty() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        panic!(
            "{}: {} not found on PATH; the Argus comparison needs Argus 3 (Debian packages argus-server and \
             argus-client; `scripts/test argus` installs them as root)",
            if ci { "CI" } else { "argus comparison" },
            missing.join(" and ")
        );
    }
}

/// Argus's records for a capture: `argus -X -J -R -S 60`, then `ra` without management records.
fn argus_flows(capture: &Path) -> Vec<Flow> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.argus");
    let run = Command::new("argus")
        .args(["-X", "-J", "-R", "-S", "60", "-r"])
        .arg(capture)
        .arg("-w")
        .arg(&out)
        .output()
        .expect("run argus");
    assert!(
        run.status.success(),
        "argus failed on {}: {}",
        capture.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let ra = Command::new("ra")
        .arg("-r")
        .arg(&out)
        .args(["-n", "-u", "-c", ",", "-s"])
        .args(RA_FIELDS)
        .args(["-", "not", "man"])
        .output()
        .expect("run ra");
    assert!(
        ra.status.success(),
        "ra failed on {}: {}",
        capture.display(),
        String::from_utf8_lossy(&ra.stderr)
    );
    let text = String::from_utf8(ra.stdout).expect("ra prints text");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            assert_eq!(cols.len(), RA_FIELDS.len(), "ra line {l:?}");
            let values: HashMap<&'static str, String> =
                RA_FIELDS.iter().zip(&cols).map(|(k, v)| (*k, v.trim().to_string())).collect();
            Flow {
                proto: cols[2].to_string(),
                saddr: cols[3].to_string(),
                sport: cols[4].to_string(),
                daddr: cols[5].to_string(),
                dport: cols[6].to_string(),
                stime: cols[0].parse().expect("stime"),
                values,
            }
        })
        .collect()
}

fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Num(v) => format!("{v}"),
        Cell::Count(v) => v.to_string(),
        Cell::Text(t) => t.to_string(),
        Cell::Str(s) => s.clone(),
        Cell::Short(s) => s.as_str().to_owned(),
        Cell::Addr(a) => a.to_string(),
        Cell::Port(p) => p.to_string(),
        Cell::Time(t) => format!("{}", t.as_secs_f64()),
        Cell::Unset => String::new(),
    }
}

/// Our records for a capture, with the default flow configuration (Argus's timeouts).
fn our_flows(capture: &Path) -> Vec<Flow> {
    let mut ex = extractor(SchemaKind::Unsw, 0);
    let names: Vec<String> = ex.columns().iter().map(|c| c.name.clone()).collect();
    let col =
        |n: &str| names.iter().position(|c| c == n).unwrap_or_else(|| panic!("no column {n}"));
    let idx: Vec<(&'static str, usize)> = FEATURES.iter().map(|(a, o)| (*a, col(o))).collect();
    let (proto, srcip, sport, dstip, dsport) =
        (col("proto"), col("srcip"), col("sport"), col("dstip"), col("dsport"));
    let mut flows = Vec::new();
    let mut cells = Vec::new();
    run_files(&[capture.to_path_buf()], &FlowConfig::default(), |rec| {
        ex.extract(rec, &mut cells);
        let values = idx.iter().map(|(a, i)| (*a, cell_text(&cells[*i]))).collect();
        flows.push(Flow {
            proto: cell_text(&cells[proto]),
            saddr: cell_text(&cells[srcip]),
            sport: cell_text(&cells[sport]),
            daddr: cell_text(&cells[dstip]),
            dport: cell_text(&cells[dsport]),
            stime: rec.first_ts.as_secs_f64(),
            values,
        });
    })
    .expect("our flow engine reads the capture");
    flows
}

fn agrees(feature: &str, ours: &Flow, argus: &Flow) -> bool {
    match tolerance(feature) {
        Tol::Text => ours.values.get(feature) == argus.values.get(feature),
        Tol::Exact => ours.num(feature) == argus.num(feature),
        Tol::Abs { abs, rel } => {
            let (o, a) = (ours.num(feature), argus.num(feature));
            (o - a).abs() <= abs + rel * a.abs()
        }
        Tol::Rate => {
            let (o, a) = (ours.num(feature), argus.num(feature));
            let dur = argus.num("dur");
            let rel = if dur > 0.0 { 1e-3f64.max(2e-6 / dur) } else { 1e-3 };
            (o - a).abs() <= 0.01 + rel * a.abs()
        }
    }
}

/// Agreement on one capture.
#[derive(Debug, Default)]
struct Report {
    ours: usize,
    argus: usize,
    paired: usize,
    aligned: usize,
    /// Per feature: (agreeing, compared) over aligned pairs.
    agree: Vec<(usize, usize)>,
    /// A few disagreements per feature: (ours, argus, flow).
    examples: Vec<Vec<String>>,
}

impl Report {
    fn aligned_rate(&self) -> f64 {
        self.aligned as f64 / self.ours.max(1) as f64
    }

    fn rate(&self, feature: &str) -> f64 {
        let i = FEATURES.iter().position(|(a, _)| *a == feature).expect("known feature");
        let (ok, n) = self.agree[i];
        if n == 0 { 1.0 } else { ok as f64 / n as f64 }
    }
}

fn compare(capture: &Path) -> Report {
    let argus = argus_flows(capture);
    let ours = our_flows(capture);
    type Key = (String, String, String, String, String);
    let mut index: HashMap<Key, Vec<Flow>> = HashMap::new();
    for a in &argus {
        for f in [a.clone(), a.flipped()] {
            index
                .entry((
                    f.proto.clone(),
                    f.saddr.clone(),
                    f.sport.clone(),
                    f.daddr.clone(),
                    f.dport.clone(),
                ))
                .or_default()
                .push(f);
        }
    }
    let mut r = Report {
        ours: ours.len(),
        argus: argus.len(),
        agree: vec![(0, 0); FEATURES.len()],
        examples: vec![Vec::new(); FEATURES.len()],
        ..Report::default()
    };
    for o in &ours {
        let key =
            (o.proto.clone(), o.saddr.clone(), o.sport.clone(), o.daddr.clone(), o.dport.clone());
        let Some(cands) = index.get(&key) else { continue };
        // Nearest start; among equal starts, the orientation whose source packet count agrees.
        let Some(a) = cands.iter().min_by(|x, y| {
            let dx = ((x.stime - o.stime).abs(), (x.num("spkts") != o.num("spkts")) as u8);
            let dy = ((y.stime - o.stime).abs(), (y.num("spkts") != o.num("spkts")) as u8);
            dx.partial_cmp(&dy).expect("finite times")
        }) else {
            continue;
        };
        r.paired += 1;
        if (a.stime - o.stime).abs() > 2e-6 || a.total_pkts() != o.total_pkts() {
            continue;
        }
        r.aligned += 1;
        for (i, (f, _)) in FEATURES.iter().enumerate() {
            r.agree[i].1 += 1;
            if agrees(f, o, a) {
                r.agree[i].0 += 1;
            } else if r.examples[i].len() < 3 {
                r.examples[i].push(format!(
                    "{} {}:{} > {}:{} ours {:?} argus {:?}",
                    o.proto, o.saddr, o.sport, o.daddr, o.dport, o.values[f], a.values[f]
                ));
            }
        }
    }
    r
}

/// The captures, each with its minimum share of aligned flows and the per-feature minimum
/// agreement where it is below the default of [`DEFAULT_MIN`].
struct Case {
    capture: &'static str,
    min_aligned: f64,
    exceptions: &'static [(&'static str, f64)],
}

/// Minimum agreement of a feature on aligned flows unless a case says otherwise.
const DEFAULT_MIN: f64 = 0.99;

/// Per capture: the measured share of aligned flows and, for every feature measured below
/// [`DEFAULT_MIN`], its measured agreement, both rounded down to the percent. Why each one is
/// below 99% is in docs/argus-comparison.md (two_way_all_flags holds crafted flag
/// combinations; the jitter and loss rows are Argus definitions we knowingly do not copy).
const CASES: &[Case] = &[
    Case {
        capture: "chrissanders/http_google.pcapng",
        min_aligned: 1.00,
        exceptions: &[("djit", 0.00)],
    },
    Case {
        capture: "chrissanders/http_espn.pcapng",
        min_aligned: 1.00,
        exceptions: &[("sjit", 0.97), ("djit", 0.87)],
    },
    Case {
        capture: "chrissanders/tcp_ports.pcapng",
        min_aligned: 1.00,
        exceptions: &[("dloss", 0.75), ("djit", 0.12)],
    },
    Case {
        capture: "esnet/two_way_all_flags.pcap",
        min_aligned: 0.75,
        exceptions: &[
            ("state", 0.75),
            ("spkts", 0.96),
            ("dpkts", 0.96),
            ("sbytes", 0.96),
            ("dbytes", 0.96),
            ("dttl", 0.96),
            ("dloss", 0.98),
            ("swin", 0.65),
            ("dwin", 0.83),
            ("stcpb", 0.28),
            ("dtcpb", 0.75),
            ("smeansz", 0.96),
            ("dmeansz", 0.96),
            ("tcprtt", 0.96),
            ("synack", 0.96),
        ],
    },
    Case {
        capture: "ndpi/netflix.pcap",
        min_aligned: 0.95,
        exceptions: &[
            ("state", 0.98),
            ("swin", 0.98),
            ("stcpb", 0.98),
            ("sintpkt", 0.98),
            ("sjit", 0.61),
            ("djit", 0.22),
        ],
    },
    Case {
        capture: "iot23/2018-09-14-13-40-25-Philips-Hue-Bridge.pcap",
        min_aligned: 0.79,
        exceptions: &[
            ("state", 0.93),
            ("sloss", 0.93),
            ("dloss", 0.94),
            ("swin", 0.88),
            ("dwin", 0.95),
            ("stcpb", 0.95),
            ("sintpkt", 0.90),
            ("dintpkt", 0.95),
            ("sjit", 0.83),
            ("djit", 0.88),
            ("tcprtt", 0.92),
            ("synack", 0.92),
            ("ackdat", 0.92),
        ],
    },
    Case {
        capture: "slips/test-cc-capture-2.pcap",
        min_aligned: 0.97,
        exceptions: &[("sjit", 0.91), ("djit", 0.92)],
    },
    Case { capture: "stopddos/amp.UDP.isakmp.pcap", min_aligned: 1.00, exceptions: &[] },
];

#[test]
fn argus_agrees_with_our_unsw_features() {
    require_argus();
    let mut failures = Vec::new();
    let mut table = String::from("| capture | ours | argus | paired | aligned |");
    for (f, _) in FEATURES {
        table += &format!(" {f} |");
    }
    table += "\n";
    for case in CASES {
        let path = crate::util::shared(&format!("captures/{}", case.capture));
        assert!(path.exists(), "shared capture missing: {}", path.display());
        let r = compare(&path);
        table += &format!(
            "| {} | {} | {} | {} | {} ({:.1}%) |",
            case.capture,
            r.ours,
            r.argus,
            r.paired,
            r.aligned,
            100.0 * r.aligned_rate()
        );
        for (f, _) in FEATURES {
            table += &format!(" {:.1} |", 100.0 * r.rate(f));
        }
        table += "\n";
        if r.aligned_rate() < case.min_aligned {
            failures.push(format!(
                "{}: aligned {:.3} < {}",
                case.capture,
                r.aligned_rate(),
                case.min_aligned
            ));
        }
        for (i, (f, _)) in FEATURES.iter().enumerate() {
            let min = case.exceptions.iter().find(|(n, _)| n == f).map_or(DEFAULT_MIN, |(_, m)| *m);
            if r.rate(f) < min {
                failures.push(format!(
                    "{}: {f} agrees on {:.3} of {} aligned flows < {min}; e.g. {:?}",
                    case.capture,
                    r.rate(f),
                    r.agree[i].1,
                    r.examples[i]
                ));
            }
        }
    }
    println!("{table}");
    assert!(
        failures.is_empty(),
        "Argus disagreements above the stated thresholds:\n{}",
        failures.join("\n")
    );
}
