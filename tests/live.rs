//! Live capture (feature `live`, run as root): two network namespaces joined by a veth pair;
//! `mnpflow live` captures on one end while the other sends known traffic (a ping, a small TCP
//! connect scan, one TCP conversation). Traffic stays between the namespaces this test
//! creates, which it removes afterwards, whatever happens.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::stream::{mnpflow, model};

/// Namespaces and the veth pair, removed on drop.
struct Netns {
    a: String,
    b: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    fn new() -> Netns {
        // One pair per test, tests run in parallel: the process id and a count.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}x{n}", std::process::id() % 100_000);
        let n = Netns { a: format!("mnpA{id}"), b: format!("mnpB{id}") };
        ip(&["netns", "add", &n.a]);
        ip(&["netns", "add", &n.b]);
        ip(&[
            "link",
            "add",
            &format!("va{id}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("vb{id}"),
        ]);
        ip(&["link", "set", &format!("va{id}"), "netns", &n.a]);
        ip(&["link", "set", &format!("vb{id}"), "netns", &n.b]);
        for (ns, dev, addr) in
            [(&n.a, format!("va{id}"), "10.213.0.1/24"), (&n.b, format!("vb{id}"), "10.213.0.2/24")]
        {
            ip(&["-n", ns, "addr", "add", addr, "dev", &dev]);
            ip(&["-n", ns, "link", "set", &dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }
    fn dev_a(&self) -> String {
        format!("va{}", &self.a[4..])
    }

    fn dev_b(&self) -> String {
        format!("vb{}", &self.b[4..])
    }
    fn exec(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and so the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

/// A child's output, line by line, read on a thread: a test waits for a line to appear.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    seen: String,
}

impl Lines {
    fn of(out: impl std::io::Read + Send + 'static) -> Lines {
        use std::io::{BufRead, BufReader};
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Lines { rx, reader: Some(reader), seen: String::new() }
    }

    /// Waits until some line so far contains `needle`.
    fn wait_for(&mut self, needle: &str, secs: u64) {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        while !self.seen.contains(needle) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => self.seen.push_str(&(l + "\n")),
                Err(_) => panic!("no {needle:?} within {secs} s: {}", self.seen),
            }
        }
    }

    /// Everything, once the child has exited.
    fn all(mut self) -> String {
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        while let Ok(l) = self.rx.try_recv() {
            self.seen.push_str(&(l + "\n"));
        }
        self.seen
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn live_capture_between_namespaces_gives_flows_and_alerts() {
    assert!(is_root(), "the live test runs as root (network namespaces); CI runs it as root");
    let (model_path, _) = model();
    let ns = Netns::new();
    let out_dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_mnpflow");
    let child = ns
        .exec(&ns.a)
        .arg(bin)
        .args([
            "live",
            "--interface",
            &ns.dev_a(),
            "--filter",
            "ip",
            "--flows",
            "jsonl",
            "--threshold",
            "5%",
            "--rules",
            "none",
        ])
        .arg("--model")
        .arg(model_path)
        .arg("--output-dir")
        .arg(out_dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // A listener in A for one real conversation; the scan's other ports answer RST.
    let mut listener =
        ns.exec(&ns.a).args(["nc", "-l", "-p", "8080"]).stdout(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let st = ns
        .exec(&ns.b)
        .args(["ping", "-c", "3", "-i", "0.2", "10.213.0.1"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ping between the namespaces failed");
    let scan = "for p in $(seq 20 59); do timeout 0.3 bash -c \"echo > /dev/tcp/10.213.0.1/$p\" 2>/dev/null; done; \
                echo hello | timeout 2 nc -q 0 10.213.0.1 8080 || true";
    let st = ns.exec(&ns.b).args(["bash", "-c", scan]).status().unwrap();
    assert!(st.success());
    let _ = listener.kill();
    let _ = listener.wait();
    // No traffic for longer than the ICMP idle timeout (5 s): the ping's flow must end on the
    // wall clock, before Ctrl-C.
    std::thread::sleep(Duration::from_secs(7));
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    let flows = std::fs::read_to_string(out_dir.path().join("flows.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> =
        flows.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let icmp: Vec<&serde_json::Value> = rows.iter().filter(|r| r["proto"] == "icmp").collect();
    assert_eq!(icmp.len(), 1, "one ping flow: {flows}");
    assert_eq!(icmp[0]["end_reason"], "idle", "the ping flow ends on the wall clock: {}", icmp[0]);
    assert_eq!(icmp[0]["spkts"].as_u64(), Some(3));
    let scanned: std::collections::BTreeSet<u64> = rows
        .iter()
        .filter(|r| r["proto"] == "tcp" && r["srcip"] == "10.213.0.2")
        .filter_map(|r| r["dsport"].as_u64())
        .collect();
    assert!(
        (20..60).all(|p| scanned.contains(&p)) && scanned.contains(&8080),
        "scan flows: {scanned:?}"
    );
    let alerts = std::fs::read_to_string(out_dir.path().join("alerts.jsonl")).unwrap();
    assert!(!alerts.is_empty(), "no alert; stderr: {err}");
    assert!(err.contains("capture: 0 kernel"), "{err}");
}

/// No model anywhere: `live` learns the network from its first flows, trains, and then scores
/// those flows too (replayed from memory) before the interface's later traffic.
#[test]
fn live_cold_start_learns_then_scores_the_warm_up_flows_too() {
    cold_start_through("fanout");
}

/// The same through one libpcap handle.
#[test]
fn live_cold_start_through_libpcap() {
    cold_start_through("pcap");
}

fn cold_start_through(capture: &str) {
    assert!(is_root(), "the live test runs as root (network namespaces); CI runs it as root");
    let ns = Netns::new();
    let work = tempfile::tempdir().unwrap();
    let (out_dir, data_dir) = (work.path().join("out"), work.path().join("data"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let config = work.path().join("mnpflow.toml");
    // A short warm-up: 30 flows or 10 s, and a quick training run.
    std::fs::write(
        &config,
        "[bootstrap]\nwarmup_flows = 30\nwarmup_seconds = 10.0\nmax_epochs = 20\npretrain_epochs = 20\n",
    )
    .unwrap();
    let mut child = ns
        .exec(&ns.a)
        .arg(env!("CARGO_BIN_EXE_mnpflow"))
        .arg("--config")
        .arg(&config)
        .args(["live", "--interface", &ns.dev_a(), "--filter", "ip", "--flows", "jsonl"])
        .args(["--capture", capture, "--rules", "none", "--output-dir"])
        .arg(&out_dir)
        .arg("--data-dir")
        .arg(&data_dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = Lines::of(child.stderr.take().unwrap());
    err.wait_for("cold start", 10);
    std::thread::sleep(Duration::from_millis(500));
    // The warm-up's traffic: a connect scan of 40 closed ports (40 short flows).
    let scan = "for p in $(seq 20 59); do timeout 0.3 bash -c \"echo > /dev/tcp/10.213.0.1/$p\" 2>/dev/null; done; true";
    assert!(ns.exec(&ns.b).args(["bash", "-c", scan]).status().unwrap().success());
    err.wait_for("capturing on", 120);
    // After the model: a ping, which must end on the wall clock (ICMP idle 5 s) before Ctrl-C.
    let st = ns
        .exec(&ns.b)
        .args(["ping", "-c", "3", "-i", "0.2", "10.213.0.1"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ping between the namespaces failed");
    std::thread::sleep(Duration::from_secs(7));
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    let err = err.all();
    assert!(status.success(), "{err}");
    assert!(err.contains("warm-up") && err.contains("cold start: no labeled attack"), "{err}");
    if capture == "fanout" {
        assert!(err.contains("with 2 fanout sockets"), "{err}");
    }
    // The model it trained is kept in the data directory.
    let models: Vec<_> = std::fs::read_dir(data_dir.join("models"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("live-"))
        .collect();
    assert_eq!(models.len(), 1, "{err}");
    assert!(err.contains("as model v1"), "registered, for the next start: {err}");
    // Every flow was scored: the warm-up's scan as well as the later ping.
    let flows = std::fs::read_to_string(out_dir.join("flows.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> =
        flows.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let scanned: std::collections::BTreeSet<u64> = rows
        .iter()
        .filter(|r| r["proto"] == "tcp" && r["srcip"] == "10.213.0.2")
        .filter_map(|r| r["dsport"].as_u64())
        .collect();
    assert!((20..60).all(|p| scanned.contains(&p)), "warm-up flows scored: {scanned:?}\n{err}");
    let icmp = rows.iter().filter(|r| r["proto"] == "icmp").count();
    assert_eq!(icmp, 1, "the ping after the warm-up: {flows}");
    assert!(rows.iter().all(|r| r["score"].as_f64().is_some()), "every flow has a score");
}

/// What `live --capture fanout --workers 2` wrote for a capture sent over the veth pair by
/// tcpreplay, beside what `mnpflow flows` writes for tcpdump's recording of the interface
/// (the oracle: what the interface delivered, time-stamped in nanoseconds; the kernel stamps
/// each packet once, for every socket that takes it). Both captured nothing dropped.
struct FanoutRun {
    header: Vec<String>,
    live: Vec<Vec<String>>,
    offline: Vec<Vec<String>>,
}

fn fanout_beside_the_offline_engine(capture: &std::path::Path) -> FanoutRun {
    assert!(is_root(), "the live test runs as root (network namespaces); CI runs it as root");
    let (model_path, _) = model();
    let ns = Netns::new();
    let work = tempfile::tempdir().unwrap();
    let recording = work.path().join("seen.pcap");
    let mut sensor = ns
        .exec(&ns.a)
        .arg(env!("CARGO_BIN_EXE_mnpflow"))
        .args(["live", "--interface", &ns.dev_a(), "--capture", "fanout", "--workers", "2"])
        .args(["--filter", "ip or vlan", "--flows", "csv", "--rules", "none"])
        .args(["--threshold", "5%", "--model"])
        .arg(model_path)
        .arg("--output-dir")
        .arg(work.path())
        .arg("--data-dir")
        .arg(work.path().join("data"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sensor_err = Lines::of(sensor.stderr.take().unwrap());
    let mut tcpdump = ns
        .exec(&ns.a)
        .args(["tcpdump", "-i", &ns.dev_a(), "--immediate-mode", "-B", "65536", "-Z", "root"])
        .args(["--time-stamp-precision=nano", "-w"])
        .arg(&recording)
        .args(["ip or vlan"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("running tcpdump (apt-get install tcpdump)");
    let mut tcpdump_err = Lines::of(tcpdump.stderr.take().unwrap());
    sensor_err.wait_for("2 fanout sockets", 20);
    tcpdump_err.wait_for("listening on", 20);
    let out = ns
        .exec(&ns.b)
        .args(["tcpreplay", "-i", &ns.dev_b(), "--pps", "10000"])
        .arg(capture)
        .output()
        .expect("running tcpreplay (apt-get install tcpreplay)");
    assert!(out.status.success(), "tcpreplay: {}", String::from_utf8_lossy(&out.stderr));
    // Less than a second: the sensor's idle clock (the wall clock less 1 s) ends nothing.
    std::thread::sleep(Duration::from_millis(500));
    for pid in [sensor.id(), tcpdump.id()] {
        assert!(Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
    }
    let (sensor_ok, tcpdump_ok) = (sensor.wait().unwrap(), tcpdump.wait().unwrap());
    let (err, tcpdump_err) = (sensor_err.all(), tcpdump_err.all());
    assert!(sensor_ok.success(), "{err}");
    assert!(
        tcpdump_ok.success() && tcpdump_err.lines().any(|l| l == "0 packets dropped by kernel"),
        "{tcpdump_err}"
    );
    assert!(err.contains("capture: 0 kernel (per socket: 0, 0)"), "{err}");

    let offline = work.path().join("offline.csv");
    let st = mnpflow()
        .arg("flows")
        .arg(&recording)
        .args(["--schema", "unsw", "--format", "csv", "-o"])
        .arg(&offline)
        .status()
        .unwrap();
    assert!(st.success());
    let read = |p: &std::path::Path| {
        let mut r = csv::Reader::from_path(p).unwrap();
        let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        let rows: Vec<Vec<String>> = r
            .records()
            .map(|rec| rec.unwrap().iter().map(String::from).collect::<Vec<_>>())
            .collect();
        (header, rows)
    };
    let (live_header, live) = read(&work.path().join("flows.csv"));
    let (header, offline) = read(&offline);
    // The sensor's rows carry its score and alert after the record's columns.
    assert_eq!(live_header[..header.len()], header[..]);
    assert_eq!(&live_header[header.len()..], ["score", "alert"]);
    let live = live.into_iter().map(|mut r| r.drain(..header.len()).collect()).collect();
    FanoutRun { header, live, offline }
}

impl FanoutRun {
    /// Every flow once, and the offline engine's records in its order.
    fn assert_same(&self) {
        let key = |r: &Vec<String>| -> Vec<String> {
            ["srcip", "sport", "dstip", "dsport", "proto", "stime"]
                .iter()
                .map(|c| r[self.header.iter().position(|h| h == c).unwrap()].clone())
                .collect()
        };
        let keys: std::collections::HashSet<Vec<String>> = self.live.iter().map(key).collect();
        assert_eq!(keys.len(), self.live.len(), "a flow exported twice");
        assert_eq!(self.live.len(), self.offline.len(), "flows live and offline");
        for (i, (l, o)) in self.live.iter().zip(&self.offline).enumerate() {
            let diff: Vec<(&String, &String, &String)> = self
                .header
                .iter()
                .zip(l.iter().zip(o))
                .filter(|(_, (a, b))| a != b)
                .map(|(h, (a, b))| (h, a, b))
                .collect();
            assert!(diff.is_empty(), "row {i} differs (column, live, offline): {diff:?}");
        }
    }
}

/// Two fanout workers (one PACKET_FANOUT socket each): the bundled capture gives every flow
/// exactly once, and the very records, in the same order, that the offline engine writes for
/// what the interface saw.
#[test]
fn fanout_workers_export_every_flow_once_as_the_offline_engine_does() {
    let run = fanout_beside_the_offline_engine(&crate::stream::repo("captures/demo.pcap"));
    assert!(run.offline.len() > 3000, "{} flows offline", run.offline.len());
    run.assert_same();
}

/// The kernel takes an 802.1Q tag out of the frame before a packet socket sees it; the fanout
/// reader puts it back, so that the same conversation on two VLANs stays two flows.
#[test]
fn fanout_keeps_vlans_apart() {
    use etherparse::{PacketBuilder, VlanId};
    let work = tempfile::tempdir().unwrap();
    let capture = work.path().join("vlans.pcap");
    let file = std::fs::File::create(&capture).unwrap();
    let mut w = mnpflow::capture::writer::PcapWriter::new(
        std::io::BufWriter::new(file),
        mnpflow::capture::LinkType::Ethernet,
    )
    .unwrap();
    let mut t = 1_700_000_000_000_000_000i64;
    for vlan in [10u16, 20] {
        for (src, dst, sp, dp) in
            [([10, 9, 0, 1], [10, 9, 0, 2], 40000, 53), ([10, 9, 0, 2], [10, 9, 0, 1], 53, 40000)]
        {
            let mut v = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .single_vlan(VlanId::try_new(vlan).unwrap())
                .ipv4(src, dst, 64)
                .udp(sp, dp)
                .write(&mut v, &[b'q'; 24])
                .unwrap();
            w.write(mnpflow::capture::Timestamp(t), &v, v.len() as u32).unwrap();
            t += 1_000_000;
        }
    }
    std::io::Write::flush(&mut w.into_inner()).unwrap();
    let run = fanout_beside_the_offline_engine(&capture);
    let udp = |rows: &[Vec<String>]| {
        let sport = run.header.iter().position(|h| h == "sport").unwrap();
        rows.iter().filter(|r| r[sport] == "40000").count()
    };
    assert_eq!(udp(&run.offline), 2, "one flow per VLAN offline: {:?}", run.offline);
    assert_eq!(udp(&run.live), 2, "one flow per VLAN live: {:?}", run.live);
    run.assert_same();
}

#[test]
fn live_bad_input_is_one_clear_line() {
    let (model_path, _) = model();
    let m = model_path.display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["live", "--interface", "mnpnope0", "--model", &m], "no such interface"),
        (&["live", "--interface", "lo", "--filter", "port fo", "--model", &m], "does not compile"),
        (&["live", "--interface", "lo", "--model", "/nonexistent.mnp"], "nonexistent.mnp"),
    ];
    for (args, needle) in cases {
        let out = mnpflow().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // No permission: an unprivileged user (nobody) cannot open a capture. Root is needed to
    // become nobody; the live tests run as root (`scripts/test live`), never skipping this.
    assert!(is_root(), "the live tests run as root (the unprivileged case switches to nobody)");
    {
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(env!("CARGO_BIN_EXE_mnpflow"))
            .args(["live", "--interface", "lo", "--model", &m])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("interface lo: cannot capture") && err.contains("no permission"),
            "{err}"
        );
    }
}
