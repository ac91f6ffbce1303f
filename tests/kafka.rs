//! Kafka (feature `kafka`): the sensor's events on a real Kafka-protocol broker, read back by
//! an independent client.
//!
//! The broker is tansu (Apache-2.0, Kafka-compatible, SQLite storage so that a restarted
//! broker keeps its topics and messages), found at `$MNPFLOW_TANSU` (`scripts/test kafka`
//! builds it once into /var/tmp/tansu); the independent client is Debian's python3-kafka
//! (kafka-python, pure Python: `tests/kafka/client.py`). Debian's kcat cannot be it: its
//! librdkafka 2.0.2 misreads tansu's ApiVersions v3 answer (it skips one byte less than each
//! tagged field's length), the reason mnpflow builds a newer librdkafka itself. Each test starts its
//! own broker on a free loopback port, in its own folder, and stops it by its process id when
//! it ends, passing or failing (and names the id in `$MNPFLOW_KAFKA_PIDS`, which the script
//! kills if the test binary itself is killed). Without tansu or kafka-python a test says so and
//! passes, except under CI (`CI=true`), where that is a failure.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::stream::{mnpflow, model, repo};

/// A tansu broker on loopback, killed on drop.
struct Broker {
    tansu: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The independent client: `tests/kafka/client.py BROKER MODE TOPIC`.
fn client(broker: &str, mode: &str, topic: &str) -> Command {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(repo("tests/kafka/client.py")).args([broker, mode, topic]);
    c
}

/// Whether the tools are here; `None` (with the reason printed) when not and not under CI.
fn tools() -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let tansu = std::env::var_os("MNPFLOW_TANSU").map(PathBuf::from).or_else(|| {
        let p = PathBuf::from("/var/tmp/tansu/bin/tansu");
        p.exists().then_some(p)
    });
    let client_ok = Command::new("/usr/bin/python3")
        .args(["-c", "import kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    let why = match (&tansu, client_ok) {
        (None, _) => {
            "no tansu broker ($MNPFLOW_TANSU unset and no /var/tmp/tansu/bin/tansu: run scripts/test kafka)"
        }
        (_, false) => "no kafka-python (apt-get install python3-kafka)",
        (Some(t), true) if !t.exists() => "$MNPFLOW_TANSU names no file",
        _ => return tansu,
    };
    assert!(!ci, "kafka test under CI: {why}");
    eprintln!("kafka test skipped: {why}");
    None
}

impl Broker {
    fn start() -> Option<Broker> {
        let tansu = tools()?;
        let mut b =
            Broker { tansu, dir: tempfile::tempdir().unwrap(), port: free_port(), child: None };
        b.spawn();
        Some(b)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the broker on its port and storage, and waits until it answers.
    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .unwrap();
        let child = Command::new(&self.tansu)
            .current_dir(self.dir.path())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.tansu.display()));
        if let Some(f) = std::env::var_os("MNPFLOW_KAFKA_PIDS") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(f).unwrap();
            let _ = writeln!(f, "{}", child.id());
        }
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "tansu did not listen on {} within 30 s: {}",
                self.addr(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Kills the broker (SIGKILL: no clean shutdown) and waits for it to go.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn create_topic(&self, name: &str) {
        let out = Command::new(&self.tansu)
            .args(["topic", "create", name, "--partitions", "3"])
            .args(["--broker", &format!("tcp://{}", self.addr())])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every message of `topic` as (key, payload), read from the beginning by the
    /// independent client.
    fn consume(&self, topic: &str) -> Vec<(String, String)> {
        let out = client(&self.addr(), "consume", topic).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "consuming {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('\t').unwrap_or_else(|| panic!("no key in {l:?}"));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A configuration file naming the alerts topic.
fn config(dir: &Path, topic: &str, extra: &str) -> PathBuf {
    let p = dir.join("mnpflow.toml");
    std::fs::write(&p, format!("[kafka]\nalerts_topic = \"{topic}\"\n{extra}")).unwrap();
    p
}

fn topic_name(what: &str) -> String {
    format!("{what}-{}-{}", std::process::id(), free_port())
}

fn replay(cfg: &Path, out: &Path, data: &Path, broker: &str, extra: &[&str]) -> Command {
    let mut c = mnpflow();
    c.arg("--config")
        .arg(cfg)
        .arg("replay")
        .arg(repo("captures/demo.pcap"))
        .arg("--model")
        .arg(&model().0)
        .arg("--output-dir")
        .arg(out)
        .arg("--data-dir")
        .arg(data)
        .args(["--kafka", broker, "--sensor-id", "edge-test"])
        .args(extra);
    c
}

fn file_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().map(String::from).collect()
}

#[test]
fn alerts_reach_the_topic_keyed_by_community_id() {
    let Some(broker) = Broker::start() else { return };
    let topic = topic_name("alerts");
    broker.create_topic(&topic);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &topic, "");
    let out =
        replay(&cfg, dir.path(), &dir.path().join("data"), &broker.addr(), &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines = file_lines(&dir.path().join("alerts.jsonl"));
    assert!(lines.len() > 10, "the demo capture alerts: {stderr}");
    let msgs = broker.consume(&topic);
    assert_eq!(msgs.len(), lines.len(), "one message per alert line: {stderr}");
    // Each message is its alerts.jsonl line, keyed by that line's community ID.
    let mut want: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["sensor_id"], "edge-test");
            assert!(v["event_id"].as_str().is_some_and(|s| !s.is_empty()), "{l}");
            (v["community_id"].as_str().unwrap().to_owned(), l.clone())
        })
        .collect();
    let mut got = msgs;
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let ids: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l.split("\"event_id\":\"").nth(1).unwrap().split('"').next().unwrap())
        .collect();
    assert_eq!(ids.len(), lines.len(), "event ids are unique");
    assert!(stderr.contains("kafka ") && stderr.contains(" 0 dropped"), "{stderr}");
}

#[test]
fn ecs_alerts_and_scored_flows() {
    let Some(broker) = Broker::start() else { return };
    let (topic, flows) = (topic_name("ecs"), topic_name("flows"));
    broker.create_topic(&topic);
    broker.create_topic(&flows);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &topic, &format!("flows_topic = \"{flows}\"\n"));
    let out = replay(
        &cfg,
        dir.path(),
        &dir.path().join("data"),
        &broker.addr(),
        &["--alert-format", "ecs"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines = file_lines(&dir.path().join("alerts.jsonl"));
    let msgs = broker.consume(&topic);
    assert_eq!(msgs.len(), lines.len(), "{stderr}");
    for (k, m) in &msgs {
        let v: serde_json::Value = serde_json::from_str(m).unwrap();
        assert_eq!(v["network"]["community_id"], k.as_str(), "{m}");
        assert_eq!(v["observer"]["name"], "edge-test", "{m}");
        assert_eq!(v["event"]["kind"], "alert", "{m}");
        assert!(v["source"]["ip"].is_string() && v["destination"]["port"].is_u64(), "{m}");
        assert!(v["network"]["transport"].is_string() && v["event"]["id"].is_string(), "{m}");
        assert!(v["mnpflow"]["anomaly"]["score"].is_number(), "{m}");
    }
    // Every scored flow on the flows topic, as many alerted as there are alerts.
    let fl = broker.consume(&flows);
    assert!(fl.len() > lines.len(), "{} flows, {} alerts", fl.len(), lines.len());
    let alerted = fl
        .iter()
        .filter(|(k, m)| {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            assert_eq!(v["community_id"], k.as_str());
            assert_eq!(m.matches("\"community_id\"").count(), 1, "one key, once: {m}");
            assert!(v["score"].is_number() && v["event_id"].is_string(), "{m}");
            v["alert"] == 1
        })
        .count();
    assert_eq!(alerted, lines.len());
}

/// Each event id's payloads: at least once, and duplicates only as copies.
fn by_event_id(msgs: &[(String, String)]) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (_, p) in msgs {
        let v: serde_json::Value = serde_json::from_str(p).unwrap();
        m.entry(v["event_id"].as_str().unwrap().to_owned()).or_default().push(p.clone());
    }
    m
}

fn assert_every_alert_arrived(lines: &[String], msgs: &[(String, String)], context: &str) {
    let got = by_event_id(msgs);
    let mut missing = 0;
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let id = v["event_id"].as_str().unwrap();
        match got.get(id) {
            Some(copies) => assert!(copies.iter().all(|c| c == l), "a duplicate differs: {id}"),
            None => missing += 1,
        }
    }
    assert_eq!(missing, 0, "{missing} of {} alerts never arrived: {context}", lines.len());
    let dups: usize = got.values().map(|c| c.len() - 1).sum();
    eprintln!("{} alerts, {} messages, {dups} duplicates (same event id)", lines.len(), msgs.len());
}

#[test]
fn broker_killed_mid_replay_and_restarted_loses_nothing() {
    let Some(mut broker) = Broker::start() else { return };
    let topic = topic_name("restart");
    broker.create_topic(&topic);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &topic, "flush_seconds = 120.0\n");
    // The 10-minute capture at 60x: about 10 s of replay.
    let mut child =
        replay(&cfg, dir.path(), &dir.path().join("data"), &broker.addr(), &["--speed", "60x"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    broker.kill();
    std::thread::sleep(Duration::from_millis(3000));
    broker.spawn();
    let t0 = Instant::now();
    let out = loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break child.wait_with_output().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(180), "replay did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(" 0 dropped"), "{stderr}");
    let lines = file_lines(&dir.path().join("alerts.jsonl"));
    assert!(lines.len() > 10, "{stderr}");
    let msgs = broker.consume(&topic);
    assert_every_alert_arrived(&lines, &msgs, &stderr);
    // Nothing is pending: the spool is empty.
    assert!(stderr.contains("spool 0 events, 0 bytes"), "{stderr}");
}

#[test]
fn broker_away_events_wait_in_the_spool_for_the_next_run() {
    let Some(mut broker) = Broker::start() else { return };
    let topic = topic_name("spool");
    broker.create_topic(&topic);
    broker.kill();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &topic, "flush_seconds = 1.0\n");
    let first = dir.path().join("first");
    let out = replay(&cfg, &first, &dir.path().join("data"), &broker.addr(), &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("kept in") && stderr.contains("kafka-spool"), "{stderr}");
    let spooled: BTreeMap<String, u64> = std::fs::read_dir(dir.path().join("data/kafka-spool"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len())
        })
        .collect();
    assert!(!spooled.is_empty() && spooled.values().all(|&b| b > 0), "{spooled:?}");
    // The broker is back; the next run sends the spool first, then its own alerts.
    broker.spawn();
    let second = dir.path().join("second");
    let out =
        replay(&cfg, &second, &dir.path().join("data"), &broker.addr(), &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("left by an earlier run"), "{stderr}");
    let msgs = broker.consume(&topic);
    let mut lines = file_lines(&first.join("alerts.jsonl"));
    lines.extend(file_lines(&second.join("alerts.jsonl")));
    assert_every_alert_arrived(&lines, &msgs, &stderr);
    assert!(stderr.contains("spool 0 events, 0 bytes"), "{stderr}");
}

/// Labels of a data directory with this uid.
fn labels_of(data: &Path, uid: &str) -> usize {
    mnpflow::feedback::LabelStore::read(data).unwrap().iter().filter(|l| l.uid == uid).count()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn labels_from_the_topic_reach_a_running_sensor_once() {
    let Some(broker) = Broker::start() else { return };
    let (topic, labels) = (topic_name("alerts"), topic_name("labels"));
    broker.create_topic(&topic);
    broker.create_topic(&labels);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &topic, &format!("labels_topic = \"{labels}\"\n"));
    // A console's data directory with scored flows to label (a run without Kafka).
    let console = dir.path().join("console");
    let out = mnpflow()
        .arg("replay")
        .arg(repo("captures/demo.pcap"))
        .arg("--model")
        .arg(&model().0)
        .arg("--output-dir")
        .arg(&console)
        .arg("--data-dir")
        .arg(&console)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first: serde_json::Value =
        serde_json::from_str(&file_lines(&console.join("alerts.jsonl"))[0]).unwrap();
    let cid = first["community_id"].as_str().unwrap().to_owned();
    // The sensor: the capture at 40x (15 s), consuming the labels topic.
    let sensor = dir.path().join("sensor");
    let child = replay(&cfg, &sensor, &sensor.join("data"), &broker.addr(), &["--speed", "40x"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // A label produced by the independent client, twice: stored once.
    let label = mnpflow::feedback::Label {
        uid: "CkafkaLabel1".into(),
        community_id: "1:kafka-test=".into(),
        verdict: mnpflow::feedback::Verdict::Attack,
        by: "console-7".into(),
        at: 1_767_225_600.5,
        note: "from another client".into(),
        schema: "unsw-nb15".into(),
        features: vec![1.0, 2.0],
    };
    let json = serde_json::to_string(&label).unwrap();
    for _ in 0..2 {
        let mut kc =
            client(&broker.addr(), "produce", &labels).stdin(Stdio::piped()).spawn().unwrap();
        {
            use std::io::Write;
            let mut stdin = kc.stdin.take().unwrap();
            writeln!(stdin, "{json}").unwrap();
        }
        assert!(kc.wait().unwrap().success());
    }
    let data = sensor.join("data");
    wait_for("the independent client's label in the sensor's store", || {
        labels_of(&data, "CkafkaLabel1") > 0
    });
    // `mnpflow label --kafka` at the console: stored there, and reaches the sensor.
    let out = mnpflow()
        .arg("--config")
        .arg(&cfg)
        .args(["label", &cid, "--as", "attack", "--by", "ana", "--kafka", &broker.addr()])
        .arg("--data-dir")
        .arg(&console)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let console_labels = mnpflow::feedback::LabelStore::read(&console).unwrap();
    let uid = console_labels[0].uid.clone();
    wait_for("the console's label in the sensor's store", || labels_of(&data, &uid) > 0);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(labels_of(&data, "CkafkaLabel1"), 1, "a label seen twice is stored once");
    assert_eq!(labels_of(&data, &uid), 1);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 labels taken from the labels topic"), "{stderr}");
}

/// Trains a model on the bundled capture in `data` (a replay without --model, no truth file:
/// a cold-start model, so not the bytes of `model()`), with `schema`; returns its file.
fn cold_model(data: &Path, schema: &str) -> PathBuf {
    let out = mnpflow()
        .arg("replay")
        .arg(repo("captures/demo.pcap"))
        .args(["--schema", schema, "--output-dir"])
        .arg(data)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    data.join("models/demo.mnp")
}

fn mnpflow_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = mnpflow().args(args).output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mnpflow {args:?}: {text}");
    text
}

#[test]
fn a_published_model_is_taken_by_a_running_sensor_and_another_schema_refused() {
    let Some(broker) = Broker::start() else { return };
    let (topic, models) = (topic_name("alerts"), topic_name("models"));
    broker.create_topic(&topic);
    broker.create_topic(&models);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &topic, &format!("models_topic = \"{models}\"\n"));
    let os = |s: &str| std::ffi::OsString::from(s);
    // The sensor's registry: a cold-start model of the capture.
    let sensor = dir.path().join("sensor");
    let first = cold_model(&sensor.join("data"), "unsw");
    mnpflow_ok(&[
        &os("models"),
        &os("promote"),
        first.as_os_str(),
        &os("--data-dir"),
        sensor.join("data").as_os_str(),
    ]);
    // The retrainer's registry: the model trained with the truth file; and one of another
    // schema.
    let retrainer = dir.path().join("retrainer");
    mnpflow_ok(&[
        &os("models"),
        &os("promote"),
        model().0.as_os_str(),
        &os("--data-dir"),
        retrainer.as_os_str(),
    ]);
    let other = dir.path().join("other");
    let zeek = cold_model(&other, "zeek");
    mnpflow_ok(&[
        &os("models"),
        &os("promote"),
        zeek.as_os_str(),
        &os("--data-dir"),
        other.as_os_str(),
    ]);
    // The sensor runs on its registry's model (the capture at 20x: 30 s).
    let child = mnpflow()
        .arg("--config")
        .arg(&cfg)
        .arg("replay")
        .arg(repo("captures/demo.pcap"))
        .args(["--speed", "20x", "--output-dir"])
        .arg(&sensor)
        .arg("--data-dir")
        .arg(sensor.join("data"))
        .args(["--kafka", &broker.addr(), "--sensor-id", "edge-m"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    let publish = |data: &Path| {
        mnpflow_ok(&[
            &os("--config"),
            cfg.as_os_str(),
            &os("models"),
            &os("publish"),
            &os("--kafka"),
            &os(&broker.addr()),
            &os("--from"),
            &os("retrainer-1"),
            &os("--data-dir"),
            data.as_os_str(),
        ])
    };
    publish(&other);
    publish(&retrainer);
    let t0 = Instant::now();
    let data = sensor.join("data");
    wait_for("the published model in the sensor's registry", || {
        mnpflow::feedback::Registry::open(&data).unwrap().current().is_some_and(|e| e.version == 2)
    });
    eprintln!("model taken {} ms after it was published", t0.elapsed().as_millis());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("took model v1 from retrainer-1"), "{stderr}");
    assert!(stderr.contains("model v2 is current"), "the scorer moved to it: {stderr}");
    let refusal = stderr.lines().find(|l| l.contains("models    refused")).unwrap_or_default();
    let fp =
        |p: &Path| mnpflow::model::artifact::Artifact::load(p).unwrap().layout.fingerprint.clone();
    assert!(refusal.contains(&fp(&zeek)) && refusal.contains(&fp(&first)), "{stderr}");
    let reg = mnpflow::feedback::Registry::open(&data).unwrap();
    assert_eq!(reg.entries().len(), 2, "the other schema's model was not registered");
}

#[test]
fn the_central_retrainer_learns_from_the_flows_topic_and_publishes_its_models() {
    let Some(broker) = Broker::start() else { return };
    let [topic, flows, labels, models] = ["alerts", "flows", "labels", "models"].map(topic_name);
    for t in [&topic, &flows, &labels, &models] {
        broker.create_topic(t);
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &topic,
        &format!(
            "flows_topic = \"{flows}\"\nlabels_topic = \"{labels}\"\nmodels_topic = \"{models}\"\n\
             [bootstrap]\nwarmup_flows = 1000\nwarmup_seconds = 60.0\n\
             [learn]\nafter_labels = 5\ninterval = 3600.0\n"
        ),
    );
    // A sensor publishes the capture's 3,088 scored flows.
    let sensor = dir.path().join("sensor");
    let out = replay(&cfg, &sensor, &sensor.join("data"), &broker.addr(), &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The retrainer: no model anywhere, so it learns from the topic's first 1,000 flows and
    // the attacks its label store already holds (six SSH brute-force flows).
    let central = dir.path().join("central");
    let known = dir.path().join("known.jsonl");
    std::fs::write(&known, crate::sensor_loop::brute_force_labels(6)).unwrap();
    crate::sensor_loop::import_labels(&known, &central);
    let learner = mnpflow()
        .arg("--config")
        .arg(&cfg)
        .args(["learn", "--kafka", &broker.addr(), "--id", "central-1", "--data-dir"])
        .arg(&central)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while mnpflow::feedback::Registry::open(&central).map_or(true, |r| r.current().is_none()) {
        if t0.elapsed() > Duration::from_secs(120) {
            let mut learner = learner;
            let _ = learner.kill();
            let out = learner.wait_with_output().unwrap();
            panic!("no cold-start model within 120 s: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its first model is on the models topic, from it, keyed by the schema's fingerprint.
    let fp = mnpflow::features::SchemaKind::Unsw.schema().fingerprint();
    let mut on_topic = Vec::new();
    wait_for("the retrainer's model on the models topic", || {
        on_topic = broker.consume(&models);
        !on_topic.is_empty()
    });
    let (key, value) = &on_topic[0];
    assert_eq!(key, &fp);
    let msg: serde_json::Value = serde_json::from_str(value).unwrap();
    assert_eq!(msg["from"], "central-1");
    assert_eq!(msg["entry"]["version"], 1);
    // Five analysts' labels on the labels topic (from a console that saw the alerts) reach
    // its store and start a retraining on the flows it read since.
    let alerts = file_lines(&sensor.join("alerts.jsonl"));
    for line in alerts.iter().take(5) {
        let a: serde_json::Value = serde_json::from_str(line).unwrap();
        let cid = a["community_id"].as_str().unwrap();
        let out = mnpflow()
            .arg("--config")
            .arg(&cfg)
            .args(["label", cid, "--as", "attack", "--by", "ana", "--kafka", &broker.addr()])
            .arg("--data-dir")
            .arg(sensor.join("data"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let journal = central.join("learn.log");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&journal).unwrap_or_default().contains("\"event\":\"retrain\"") {
        if t0.elapsed() > Duration::from_secs(120) {
            let mut learner = learner;
            let _ = learner.kill();
            let out = learner.wait_with_output().unwrap();
            panic!(
                "no retraining within 120 s ({} labels stored, journal {:?}): {}",
                mnpflow::feedback::LabelStore::read(&central).map_or(0, |l| l.len()),
                std::fs::read_to_string(&journal).unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stored = mnpflow::feedback::LabelStore::read(&central).unwrap();
    assert!(stored.len() >= 11, "{} labels in the retrainer's store", stored.len());
    // Ctrl-C: it stops and says what it read.
    let pid = learner.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = learner.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("model v1 published to the models topic"), "{stderr}");
    assert!(stderr.contains("trained on 1006 flows (6 labeled attacks)"), "{stderr}");
    assert!(stderr.contains("3088 flows read from"), "{stderr}");
    // A promoted candidate went to the topic as well.
    let text = std::fs::read_to_string(&journal).unwrap();
    let retrain: serde_json::Value =
        serde_json::from_str(text.lines().find(|l| l.contains("\"event\":\"retrain\"")).unwrap())
            .unwrap();
    if retrain["promoted"] == true {
        assert!(text.contains("\"event\":\"publish\""), "{text}");
        assert!(!text.contains("\"error\""), "{text}");
        assert_eq!(broker.consume(&models).len(), 2, "{text}");
    }
}

/// A sensor running with `--learn --kafka`: the model its loop promotes (after the analysts'
/// labels arrive) goes to the models topic, from it.
#[test]
fn a_sensor_publishes_the_model_its_loop_promotes() {
    use crate::sensor_loop::{Sensor, brute_force_labels, import_labels, replay_demo};
    let Some(broker) = Broker::start() else { return };
    let [topic, models] = ["alerts", "models"].map(topic_name);
    broker.create_topic(&topic);
    broker.create_topic(&models);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &topic,
        &format!(
            "models_topic = \"{models}\"\n[learn]\ninterval = 3600.0\nafter_labels = 5\nmin_rows = 200\n"
        ),
    );
    let (out, state) = (dir.path().join("out"), dir.path().join("state"));
    let labels = dir.path().join("labels.jsonl");
    std::fs::write(&labels, brute_force_labels(6)).unwrap();
    let addr = broker.addr();
    let options =
        ["--speed", "25x", "--learn", "--rules", "none", "--kafka", &addr, "--sensor-id", "edge-p"];
    let mut cmd = replay_demo(options, &out, &state);
    cmd.arg("--config").arg(&cfg);
    let mut s = Sensor::start(&mut cmd);
    s.wait_for("as model v1", 60);
    // Let the reservoir fill (200 flows), then the analyst's labels arrive.
    std::thread::sleep(Duration::from_millis(2500));
    import_labels(&labels, &state);
    s.wait_for("now model v2", 30);
    let published = s.wait_for("model v2 published to", 20);
    assert!(published.contains(&models), "{published}");
    let on_topic = broker.consume(&models);
    assert_eq!(on_topic.len(), 1, "{on_topic:?}");
    let msg: serde_json::Value = serde_json::from_str(&on_topic[0].1).unwrap();
    assert_eq!((msg["from"].as_str(), msg["entry"]["version"].as_u64()), (Some("edge-p"), Some(2)));
    s.interrupt();
    s.finish();
}
