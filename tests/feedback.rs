//! The label store under crashes: a writer process is killed (SIGKILL) at random moments
//! while appending; every label it acknowledged must be there, and the store must open.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use mnpflow::capture::synth::Rng;
use mnpflow::feedback::{Label, LabelStore, Verdict};

fn label(i: u64) -> Label {
    Label {
        uid: format!("C{i:017}"),
        community_id: format!("1:{i}"),
        verdict: if i.is_multiple_of(2) { Verdict::Attack } else { Verdict::Benign },
        by: "crash-test".into(),
        at: i as f64,
        note: "x".repeat((i % 50) as usize),
        schema: "unsw-nb15-v1-test".into(),
        features: (0..200).map(|k| (i * 1000 + k) as f32).collect(),
    }
}

/// The writer: run only as a child of `kill_9_during_writes_loses_no_acknowledged_label`.
#[test]
#[ignore = "child process of kill_9_during_writes_loses_no_acknowledged_label"]
fn label_writer_child() {
    let dir = std::env::var("MNPFLOW_LABEL_CHILD_DIR").expect("run by the crash test");
    let start: u64 = std::env::var("MNPFLOW_LABEL_CHILD_START").unwrap().parse().unwrap();
    let mut store = LabelStore::open(std::path::Path::new(&dir)).unwrap();
    for i in start.. {
        store.add(label(i)).unwrap();
        println!("ack {i}");
    }
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_label() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(99);
    let mut next = 0u64;
    for round in 0..15 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "feedback::label_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MNPFLOW_LABEL_CHILD_DIR", dir.path())
            .env("MNPFLOW_LABEL_CHILD_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let want = rng.range(1, 40);
        let mut acked = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("ack ") {
                acked = Some(n.trim().parse::<u64>().unwrap());
                if acked.unwrap() + 1 - next >= want {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let acked =
            acked.unwrap_or_else(|| panic!("round {round}: the writer acknowledged nothing"));
        let store = LabelStore::open(dir.path())
            .unwrap_or_else(|e| panic!("round {round}: store does not open: {e}"));
        let labels = store.labels();
        assert!(
            labels.len() as u64 > acked,
            "round {round}: {} labels stored, {} acknowledged",
            labels.len(),
            acked + 1
        );
        for (i, l) in labels.iter().enumerate() {
            assert_eq!(l, &label(i as u64), "round {round}: label {i} differs");
        }
        next = labels.len() as u64;
    }
}
