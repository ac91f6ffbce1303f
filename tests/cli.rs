//! The `mnpflow` binary as a user runs it.

use std::process::Command;

use crate::util::shared;

fn mnpflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mnpflow"))
}

#[test]
fn flows_writes_every_format_with_stats() {
    let cap = shared("captures/chrissanders/http_espn.pcapng");
    for (format, check) in
        [("csv", "stime,ltime,uid"), ("jsonl", "{\"stime\":"), ("zeek", "#fields\tstime")]
    {
        let out =
            mnpflow().args(["flows", "--stats", "--format", format]).arg(&cap).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.starts_with(check) || stdout.contains(check),
            "{format}: {}",
            &stdout[..200.min(stdout.len())]
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains("956 packets") && stderr.contains("packets/s"), "{stderr}");
    }
}

/// `-o -` is standard output, as for other tools: the same records, and no file named `-`.
#[test]
fn flows_output_dash_is_standard_output() {
    let cap = shared("captures/chrissanders/http_espn.pcapng");
    let dir = tempfile::tempdir().unwrap();
    let plain = mnpflow().arg("flows").arg(&cap).output().unwrap();
    let dash =
        mnpflow().args(["flows", "-o", "-"]).arg(&cap).current_dir(dir.path()).output().unwrap();
    assert!(dash.status.success(), "{}", String::from_utf8_lossy(&dash.stderr));
    assert!(plain.stdout.len() > 100);
    assert_eq!(dash.stdout, plain.stdout);
    assert!(!dir.path().join("-").exists());
}

#[test]
fn zeek_schema_has_conn_log_columns() {
    let cap = shared("captures/chrissanders/http_google.pcapng");
    let out = mnpflow()
        .args(["flows", "--schema", "zeek", "--format", "zeek"])
        .arg(&cap)
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains(
        "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration"
    ));
    let row = s.lines().find(|l| !l.starts_with('#')).unwrap();
    let cols: Vec<&str> = row.split('\t').collect();
    assert_eq!((cols[2], cols[5], cols[6], cols[7]), ("172.16.16.128", "80", "tcp", "http"));
}

#[test]
fn bad_inputs_give_one_clear_line_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "these are not packets, just some words in a file").unwrap();
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing.pcap");
    for (path, needle) in
        [(&text, "not a pcap or pcapng file"), (&empty, "empty file"), (&missing, "cannot open")]
    {
        let out = mnpflow().arg("flows").arg(path).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(&path.display().to_string()) && err.contains(needle), "{err}");
    }
    let bad_config = dir.path().join("bad.toml");
    std::fs::write(&bad_config, "[flow]\nudp_idle = \"soon\"\n").unwrap();
    let out = mnpflow().arg("--config").arg(&bad_config).arg("config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("bad.toml"));
}

/// A capture cut mid-packet: the complete packets count, a warning names the file.
#[test]
fn truncated_capture_keeps_what_is_there() {
    let src = std::fs::read(shared("captures/chrissanders/http_espn.pcapng")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pcapng");
    std::fs::write(&cut, &src[..src.len() / 2 + 3]).unwrap();
    let out = mnpflow().args(["flows", "--stats"]).arg(&cut).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cut.pcapng: truncated"), "{err}");
}

#[test]
fn synth_is_deterministic_and_the_bundled_capture_is_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.pcap");
    let status = mnpflow().args(["synth", "--snaplen", "200", "-o"]).arg(&a).status().unwrap();
    assert!(status.success());
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/demo.pcap");
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&bundled).unwrap(),
        "captures/demo.pcap is not `mnpflow synth --snaplen 200`"
    );
    let truth = std::fs::read_to_string(dir.path().join("a.truth.csv")).unwrap();
    assert!(truth.starts_with("label,kind,proto,orig_h,orig_p,resp_h,resp_p,start\n"));
    for kind in [
        "portscan",
        "synflood",
        "ssh-bruteforce",
        "cnc-beacon",
        "exfiltration",
        "web",
        "dns",
        "ntp",
        "ssh",
        "iot-heartbeat",
    ] {
        assert!(truth.contains(&format!(",{kind},")), "no {kind} in truth");
    }
}

// `mnpflow` with no arguments now runs `replay` (issue 4): see
// `stream::no_arguments_replays_the_bundled_capture`.

/// `eval --scenario`: a small scenario of shared captures, every figure printed, the rows
/// exported for peers, and the bundled scenarios parse and name captures that exist.
#[test]
fn eval_scenario_reports_every_method_and_exports_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.toml");
    let data = shared("captures");
    std::fs::write(
        &file,
        format!(
            "name = \"small\"\ndata = {:?}\ncap = 40\n\
             [[capture]]\npath = \"ndpi/1kxun.pcap\"\nkind = \"benign\"\ncap = 120\n\
             [[capture]]\npath = \"chrissanders/portscan.pcap\"\nkind = \"scan\"\n\
             [[capture]]\npath = \"chrissanders/dosattack.pcap\"\nkind = \"synflood\"\nunseen = true\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let export = dir.path().join("rows");
    let out = mnpflow()
        .args(["eval", "--runs", "1", "--methods", "train,cold", "--scenario"])
        .arg(&file)
        .arg("--export")
        .arg(&export)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // 1kxun: 120 of 204 kept, 60 train; portscan 29 kept, 14 train, 3 labeled (20 %, rounded
    // up); dosattack 40 kept, all 20 of its second half in the test only.
    assert!(
        stderr.contains(
            "train 74 flows (14 attacks, 3 labeled), test 95 flows (35 attacks, 20 of unseen kinds)"
        ),
        "{stderr}"
    );
    for want in [
        "| mnpflow train |",
        "| mnpflow default, no labels (cold start) |",
        "TPR at 1% FPR",
        "synflood (unseen)",
    ] {
        assert!(stdout.contains(want), "no {want:?} in\n{stdout}");
    }
    let train = std::fs::read_to_string(export.join("small.seed42.train.csv")).unwrap();
    assert!(
        train.starts_with("dur,proto=3pc,")
            && train.lines().next().unwrap().ends_with(",labeled,label,kind,unseen")
    );
    assert_eq!(train.lines().count(), 1 + 74);
    assert_eq!(
        std::fs::read_to_string(export.join("small.seed42.test.csv")).unwrap().lines().count(),
        1 + 95
    );

    // The bundled scenarios: every capture they name is there.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for entry in std::fs::read_dir(&root).unwrap() {
        let p = entry.unwrap().path();
        let spec = mnpflow::scenario::ScenarioFile::read(&p).unwrap();
        for c in &spec.captures {
            let path = spec.capture_path(&p, c);
            assert!(path.exists(), "{}: {} is missing", p.display(), path.display());
        }
    }
}

/// Each capture of a scenario gets its own `ct_*` windows, as `mnpflow flows` on that capture
/// alone would: no window state carries over from the capture before it.
#[test]
fn scenario_rows_of_a_capture_are_its_own_flows() {
    use mnpflow::capture::CaptureFile;
    use mnpflow::features::SchemaKind;
    use mnpflow::flow::FlowConfig;
    use mnpflow::pipeline::offline;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.toml");
    let data = shared("captures");
    std::fs::write(
        &file,
        format!(
            "name = \"two\"\ndata = {:?}\n[[capture]]\npath = \"chrissanders/synscan.pcapng\"\nkind = \"benign\"\n\
             [[capture]]\npath = \"chrissanders/portscan.pcap\"\nkind = \"scan\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let sc = mnpflow::scenario::Scenario::load(&file, &FlowConfig::default()).unwrap();
    let mut alone: Vec<(mnpflow::capture::Timestamp, Vec<f32>)> = Vec::new();
    offline::encoded_rows(
        [CaptureFile::open(data.join("chrissanders/portscan.pcap"))],
        SchemaKind::Unsw,
        &FlowConfig::default(),
        |r, row| alone.push((r.first_ts, row.to_vec())),
    )
    .unwrap();
    alone.sort_by_key(|r| r.0);
    let alone: Vec<f32> = alone.into_iter().flat_map(|r| r.1).collect();
    assert_eq!(sc.captures[1].values, alone);
}

/// `--kafka` in a build without the feature: one line that says how to build it, before any
/// work (no training run, no output).
#[cfg(not(feature = "kafka"))]
#[test]
fn kafka_without_the_feature_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = mnpflow()
        .args(["replay", "--kafka", "127.0.0.1:9", "--output-dir"])
        .arg(dir.path())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("127.0.0.1:9") && err.contains("--features kafka"), "{err}");
    assert!(!dir.path().join("alerts.jsonl").exists());
}

/// `--alert-format ecs` names the fields as Elastic Common Schema does, in the file too.
#[test]
fn ecs_alert_format_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = mnpflow()
        .arg("replay")
        .arg(crate::stream::repo("captures/demo.pcap"))
        .arg("--model")
        .arg(&crate::stream::model().0)
        .args(["--alert-format", "ecs", "--sensor-id", "edge-9", "--output-dir"])
        .arg(dir.path())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let text = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    assert!(text.lines().count() > 10, "{err}");
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["@timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
        assert!(v["source"]["ip"].is_string() && v["source"]["port"].is_u64(), "{l}");
        assert!(v["destination"]["ip"].is_string() && v["destination"]["port"].is_u64(), "{l}");
        assert!(v["network"]["community_id"].as_str().is_some_and(|c| c.starts_with("1:")), "{l}");
        assert!(v["network"]["transport"].is_string(), "{l}");
        assert_eq!(v["event"]["kind"], "alert");
        assert_eq!(v["event"]["category"][0], "network");
        assert!(v["event"]["risk_score"].is_number() && v["event"]["id"].is_string(), "{l}");
        assert_eq!(v["observer"]["name"], "edge-9");
        assert!(v.get("src_ip").is_none(), "no EVE names in ECS: {l}");
    }
}
