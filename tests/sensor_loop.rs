//! The learning loop in a running sensor (issue 5), through the command line: a promotion
//! and a rollback while a capture streams (no flow lost or scored twice), rules reloaded
//! while running (a bad file refused with its line, indicators labeling flows), and the
//! analysts' page in a real headless browser.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mnpflow::feedback::{Label, LabelStore, Registry, Verdict};
use mnpflow::flow::FlowConfig;

use crate::stream::{mnpflow, model, repo};

/// A running sensor whose standard error is read line by line.
struct Sensor {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Sensor {
    fn start(cmd: &mut Command) -> Sensor {
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Sensor { child, lines, seen: Vec::new() }
    }

    /// Waits for a line containing `pat`; panics with everything seen after `secs`.
    fn wait_for(&mut self, pat: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(pat) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {pat:?} within {secs} s; the sensor said:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn interrupt(&self) {
        assert!(Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap().success());
    }

    /// Waits for exit; returns the whole standard error.
    fn finish(mut self) -> String {
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        let all = self.seen.join("\n");
        assert!(status.success(), "exit {status}:\n{all}");
        all
    }
}

fn data(dir: &Path, rel: &str) -> PathBuf {
    dir.join(rel)
}

/// `mnpflow replay OPTIONS --model (the test model) --output-dir OUT --data-dir STATE` on
/// the bundled capture.
fn replay_demo<I: AsRef<std::ffi::OsStr>>(options: impl IntoIterator<Item = I>, out: &Path, state: &Path) -> Command {
    let mut c = mnpflow();
    c.arg("replay").args(options).arg("--model").arg(&model().0).arg("--output-dir").arg(out).arg("--data-dir").arg(state).arg(repo("captures/demo.pcap"));
    c
}

/// Labels of the first `k` SSH brute-force flows of the bundled capture, as `labels export`
/// writes them (with the feature vectors the sensor would have recorded).
fn brute_force_labels(k: usize) -> String {
    use mnpflow::features::encode::{EncodeStats, RowEncoder};
    use mnpflow::features::{self, SchemaKind};
    let path = repo("captures/demo.truth.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let mut keep = vec![lines.next().unwrap().to_string()];
    keep.extend(lines.filter(|l| l.split(',').nth(1) == Some("ssh-bruteforce")).map(str::to_string));
    let truth = mnpflow::pipeline::bootstrap::Truth::parse(&path, &keep.join("\n")).unwrap();
    let mut ex = features::extractor(SchemaKind::Unsw, 0);
    let enc = RowEncoder::new(ex.schema());
    let columns = ex.columns().to_vec();
    let fp = ex.schema().fingerprint();
    let mut cells = Vec::new();
    let mut stats = EncodeStats::default();
    let mut out = Vec::new();
    mnpflow::pipeline::offline::run_files(&[repo("captures/demo.pcap")], &FlowConfig::default(), |r| {
        if truth.is_attack(r) {
            ex.extract(r, &mut cells);
            let mut row = vec![0.0; enc.width()];
            enc.encode(&columns, &cells, &mut row, &mut stats);
            out.push((r.first_ts, mnpflow::features::uid(r), row));
        }
    })
    .unwrap();
    out.sort_by_key(|(t, _, _)| *t);
    out.iter()
        .take(k)
        .map(|(_, uid, row)| {
            let l = Label { uid: uid.clone(), community_id: String::new(), verdict: Verdict::Attack, by: "analyst".into(), at: 0.0, note: "brute force".into(), schema: fp.clone(), features: row.clone() };
            serde_json::to_string(&l).unwrap() + "\n"
        })
        .collect()
}

/// `(uid, registry_version)` of every alert, in file order.
fn alert_versions(p: &Path) -> Vec<u64> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["anomaly"]["model"]["registry_version"].as_u64().unwrap_or(0)
        })
        .collect()
}

/// The uids of the every-flow CSV output.
fn scored_uids(p: &Path) -> Vec<String> {
    let mut r = csv::Reader::from_path(p).unwrap();
    let col = r.headers().unwrap().iter().position(|h| h == "uid").unwrap();
    r.records().map(|rec| rec.unwrap()[col].to_string()).collect()
}

/// While the capture streams: analysts' labels arrive, the loop trains a candidate, promotes
/// it and the scorer moves to it; then `mnpflow models rollback 1` moves it back, and
/// `mnpflow models retrain --scratch` asks for one more turn. Every flow is scored exactly
/// once across the swaps, alerts name the model that scored them, and the registry and
/// `learn.log` keep the decisions with their numbers.
#[test]
fn promotion_and_rollback_while_streaming_lose_no_flow() {
    let dir = tempfile::tempdir().unwrap();
    let (out, state) = (data(dir.path(), "out"), data(dir.path(), "state"));
    let cfg = data(dir.path(), "mnpflow.toml");
    std::fs::write(&cfg, "[learn]\ninterval = 3600.0\nafter_labels = 5\nmin_rows = 200\n").unwrap();
    let labels = data(dir.path(), "labels.jsonl");
    std::fs::write(&labels, brute_force_labels(6)).unwrap();
    let options = ["--speed", "25x", "--learn", "--flows", "csv", "--rules", "none", "--config", cfg.to_str().unwrap()];
    let mut s = Sensor::start(&mut replay_demo(options, &out, &state));
    s.wait_for("as model v1", 60);
    // Let the reservoir fill (200 flows), then the analyst's labels arrive.
    std::thread::sleep(Duration::from_millis(2500));
    let imported = mnpflow().args(["labels", "import"]).arg(&labels).arg("--data-dir").arg(&state).output().unwrap();
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let promoted = s.wait_for("now model v2", 30);
    assert!(promoted.contains("promoted: candidate AUC-PR"), "{promoted}");
    // Roll back once v2 has alerted (the SYN flood, a few seconds on).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(out.join("alerts.jsonl")).unwrap_or_default().contains("\"registry_version\":2") {
        assert!(Instant::now() < deadline, "v2 raised no alert");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rb = mnpflow().args(["models", "rollback", "1"]).arg("--data-dir").arg(&state).output().unwrap();
    assert!(rb.status.success(), "{}", String::from_utf8_lossy(&rb.stderr));
    s.wait_for("model v1 is current", 10);
    // An analyst asks for a retrain from scratch: the loop takes it and decides.
    let rq = mnpflow().args(["models", "retrain", "--scratch"]).arg("--data-dir").arg(&state).output().unwrap();
    assert!(rq.status.success(), "{}", String::from_utf8_lossy(&rq.stderr));
    s.wait_for("retraining on request (from scratch)", 10);
    let decided = s.wait_for("candidate trained in", 30);
    let err = s.finish();
    let swaps = if decided.contains("now model v3") { 3 } else { 2 };
    assert!(err.contains(&format!("{swaps} model swaps")), "{err}");

    // No flow lost or scored twice: the offline engine's flows, each once.
    let uids = scored_uids(&out.join("flows.csv"));
    let unique: HashSet<&String> = uids.iter().collect();
    assert_eq!(unique.len(), uids.len(), "a flow was scored twice");
    let (offline, _) = crate::util::flows_of(&[repo("captures/demo.pcap")]);
    assert_eq!(uids.len(), offline.len(), "flows lost or added across the swaps");
    // Alerts name their model: v1, then v2, then v1 again.
    let v = alert_versions(&out.join("alerts.jsonl"));
    let first2 = v.iter().position(|&x| x == 2).unwrap_or_else(|| panic!("no alert scored by v2: {v:?}\n{err}"));
    assert!(v[..first2].iter().all(|&x| x == 1), "{v:?}");
    assert!(v[first2..].contains(&1), "no alert after the rollback: {v:?}");
    let reg = Registry::open(&state).unwrap();
    assert_eq!(reg.current().unwrap().version, if swaps == 3 { 3 } else { 1 });
    let v2 = reg.get(2).unwrap();
    assert_eq!(v2.parent, Some(1));
    assert!(v2.cut.is_some() && v2.validation.iter().any(|(k, _)| k == "auc_pr"), "{v2:?}");
    let journal = std::fs::read_to_string(state.join("learn.log")).unwrap();
    assert!(journal.contains("\"promoted\":true") && journal.contains("held_back_attacks"), "{journal}");
}

/// Rules change under a running sensor: a file that does not parse is refused with its file
/// and line while the rules in force stay; a fixed file is taken at once, and its indicator
/// turns the C&C beacon's later flows into alerts and attack labels.
#[test]
fn rules_reload_while_running_and_indicators_label_flows() {
    let dir = tempfile::tempdir().unwrap();
    let (out, state, rules) = (data(dir.path(), "out"), data(dir.path(), "state"), data(dir.path(), "rules"));
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("a.toml"), "[[suppress]]\nreason = \"dns\"\ndest_port = 53\n").unwrap();
    let mut s = Sensor::start(&mut replay_demo(["--speed", "30x", "--threshold", "0.5", "--rules", rules.to_str().unwrap()], &out, &state));
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(rules.join("b.toml"), "# C2\n[[indicator]]\nreason = \"c2\"\ndest_cidr = \"185.100.87.999\"\n").unwrap();
    let refused = s.wait_for("rules     refused", 10);
    assert!(refused.contains("b.toml:2") && refused.contains("185.100.87.999") && refused.contains("stay"), "{refused}");
    std::fs::write(rules.join("b.toml"), "# C2\n[[indicator]]\nreason = \"c2\"\ndest_cidr = \"185.100.87.9\"\n").unwrap();
    let reloaded = s.wait_for("rules     reloaded", 10);
    assert!(reloaded.contains("1 suppression rules, 1 indicators"), "{reloaded}");
    let err = s.finish();
    assert!(err.contains("b.toml:2 (c2)"), "{err}");
    let alerts = std::fs::read_to_string(out.join("alerts.jsonl")).unwrap();
    let by_indicator = alerts.lines().filter(|l| l.contains("\"indicator\"")).count();
    assert!(by_indicator >= 3, "{by_indicator} indicator alerts");
    let labels = LabelStore::read(&state).unwrap();
    let weak: Vec<&Label> = labels.iter().filter(|l| l.by.ends_with("b.toml:2")).collect();
    assert_eq!(weak.len(), by_indicator, "one attack label per indicator alert");
    assert!(weak.iter().all(|l| l.verdict == Verdict::Attack && !l.features.is_empty()));
    // The suppression rule stayed in force the whole run.
    assert!(!alerts.lines().any(|l| l.contains("\"dest_port\":53,")), "a DNS alert got through");
}

/// Anywhere but loopback, the page needs a token; with one, requests without it are refused.
#[test]
fn feedback_page_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = replay_demo(["--feedback", "0.0.0.0:0"], dir.path(), dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("without a token") && err.contains("--feedback-token"), "{err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.0 request; returns (status, body).
fn http(port: u16, req: &str) -> (u16, String) {
    use std::io::Read;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(req.as_bytes()).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let status = s.split(' ').nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    (status, s.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// The page in Debian's chromium (driven by Selenium): it lists the alerts of a replay, a
/// click on "attack" stores the label durably (with the flow's features), and the API
/// refuses requests without the token and unknown flows.
#[test]
fn web_page_in_a_headless_browser_labels_an_alert() {
    let browser = Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists();
    if !browser {
        assert!(
            std::env::var("CI").is_err(),
            "chromium, chromium-driver and python3-selenium are needed (.ci/run installs them)"
        );
        eprintln!("SKIPPED web_page_in_a_headless_browser_labels_an_alert: install chromium chromium-driver python3-selenium to run it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = data(dir.path(), "state");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let options = ["--threshold", "0.5", "--rules", "none", "--feedback-token", "tok3n", "--feedback", addr.as_str()];
    let mut s = Sensor::start(&mut replay_demo(options, dir.path(), &state));
    s.wait_for("the page stays up", 60);
    let (st, _) = http(port, "GET /api/alerts HTTP/1.0\r\n\r\n");
    assert_eq!(st, 401);
    let body = r#"{"id": "C-nope", "verdict": "attack"}"#;
    let (st, b) = http(port, &format!("POST /api/labels HTTP/1.0\r\nAuthorization: Bearer tok3n\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    assert_eq!(st, 404, "{b}");
    let (st, b) = http(port, "POST /api/labels HTTP/1.0\r\nAuthorization: Bearer tok3n\r\nContent-Length: 5\r\n\r\n{oops");
    assert_eq!(st, 400, "{b}");
    assert!(LabelStore::read(&state).unwrap().is_empty(), "a refused request stored a label");

    let script = repo("tests/browser/label_click.py");
    let run = Command::new("/usr/bin/python3").arg(&script).arg(format!("http://127.0.0.1:{port}/?token=tok3n")).output().unwrap();
    let said = String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    s.interrupt();
    s.finish();
    assert!(run.status.success(), "{said}");
    let uid = said.lines().find_map(|l| l.strip_prefix("labeled ")).unwrap_or_else(|| panic!("{said}")).trim().to_string();
    let labels = LabelStore::read(&state).unwrap();
    assert_eq!(labels.len(), 1, "{labels:?}");
    assert_eq!((labels[0].uid.as_str(), labels[0].verdict, labels[0].by.as_str()), (uid.as_str(), Verdict::Attack, "web"));
    assert!(!labels[0].features.is_empty());
}
