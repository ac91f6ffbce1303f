//! Tables as analysts have them (issue 16, "text categories, CRLF, Zeek JSON and gzip
//! logs"): a raw table with text columns and CRLF line ends goes through `eval`, `train` and `score` with no preparation by hand, and a
//! Zeek conn.log reads the same as ASCII, as JSON lines and gzip'ed.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use mnpflow::features::tables::{self, Table, TableOptions};

use crate::util::shared;

fn mnpflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mnpflow"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Splits a line of an IoT-23 log: tabs, and three spaces before its last columns.
fn zeek_fields(line: &str) -> Vec<&str> {
    line.split('\t').flat_map(|f| f.split("   ")).collect()
}

/// The JSON form Zeek writes with `LogAscii::use_json=T`: one object per record, keys in
/// field order, unset fields left out, numbers as numbers, booleans as booleans, sets as
/// arrays. Built from the `#fields` and `#types` header lines.
fn zeek_ascii_to_json(ascii: &str) -> String {
    let header = |tag: &str| -> Vec<String> {
        let line = ascii.lines().find(|l| l.starts_with(tag)).expect(tag);
        zeek_fields(line).into_iter().skip(1).map(str::to_string).collect()
    };
    let (names, types) = (header("#fields"), header("#types"));
    assert_eq!(names.len(), types.len());
    let mut out = String::new();
    for line in ascii.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let cells: Vec<String> = zeek_fields(line)
            .into_iter()
            .zip(names.iter().zip(&types))
            .filter(|(v, _)| *v != "-")
            .map(|(v, (name, ty))| {
                let value = match ty.as_str() {
                    "time" | "interval" | "double" | "count" | "int" | "port" => v.to_string(),
                    "bool" => (v == "T").to_string(),
                    t if t.starts_with("set[") || t.starts_with("vector[") => {
                        let items: Vec<&str> =
                            if v == "(empty)" { Vec::new() } else { v.split(',').collect() };
                        serde_json::to_string(&items).unwrap()
                    }
                    _ => serde_json::to_string(v).unwrap(),
                };
                format!("{}:{value}", serde_json::to_string(name).unwrap())
            })
            .collect();
        out += &format!("{{{}}}\n", cells.join(","));
    }
    out
}

/// The attack classes, with a column of nothing but Zeek's unset `-` counted as no column:
/// Zeek's JSON writer leaves unset fields out, so such a column has no key at all.
fn classes(t: &Table) -> Option<&Vec<String>> {
    t.classes.as_ref().filter(|c| c.iter().any(|v| v != "-"))
}

fn same_table(a: &Table, b: &Table, what: &str) {
    assert_eq!(a.names, b.names, "{what}");
    assert!(a.labels == b.labels, "{what}: labels differ");
    assert!(classes(a) == classes(b), "{what}: classes differ");
    assert!(a.row_ids == b.row_ids, "{what}: row ids differ");
    assert_eq!(a.schema, b.schema, "{what}");
    assert!(a.values == b.values, "{what}: values differ");
}

/// The bar's second half: the shared conn.log gzip'ed, as JSON lines, and as gzip'ed JSON
/// reads into exactly the table of the ASCII log.
#[test]
fn shared_conn_log_reads_the_same_gzipped_and_as_json() {
    let src = shared("zeek/iot23-42-1-benign.conn.log.labeled");
    let ascii = std::fs::read_to_string(&src).unwrap();
    let json = zeek_ascii_to_json(&ascii);
    assert!(json.starts_with("{\"ts\":") && json.lines().count() == 4420, "{}", &json[..200]);
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("conn.log.gz", gzip(ascii.as_bytes())),
        ("conn.json", json.clone().into_bytes()),
        ("conn.json.gz", gzip(json.as_bytes())),
    ];
    let opts = TableOptions::default();
    let want = tables::load(&src, &opts).unwrap();
    assert_eq!((want.n_rows(), want.schema.map(|s| s.schema().name)), (4420, Some("iot23".into())));
    for (name, bytes) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        same_table(&want, &tables::load(&p, &opts).unwrap(), name);
    }
}

/// A gzip'ed capture gives the same flows as the capture.
#[test]
fn flows_of_a_gzipped_capture_are_the_captures() {
    let src = shared("captures/chrissanders/http_espn.pcapng");
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("http_espn.pcapng.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&src).unwrap())).unwrap();
    let run = |p: &Path| {
        let out = mnpflow().args(["flows", "--format", "csv"]).arg(p).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let (plain, zipped) = (run(&src), run(&gz));
    assert!(plain.len() > 1000 && plain == zipped);
}

/// A small table shaped like the public vehicle-insurance fraud table: text columns, a
/// policy number, numbers, CRLF line ends; label `FraudFound_P`. Fraud follows two columns.
fn fraud_like(rows: usize, seed: u64, extra_make: bool) -> String {
    let months = ["Jan", "Feb", "Mar", "Dec"];
    let makes = ["Honda", "Toyota", "Ford", "Mazda"];
    let kinds = ["Sedan - Collision", "Sport - Liability", "Utility - All Perils"];
    let mut s =
        String::from("Month,Make,PolicyType,Age,PolicyNumber,Days_Policy_Claim,FraudFound_P\r\n");
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = |n: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    for i in 0..rows {
        let kind = kinds[next(3) as usize];
        let make = if extra_make && i % 10 == 0 { "Ferrari" } else { makes[next(4) as usize] };
        let fraud = (kind.starts_with("Sport") && next(3) == 0) || next(40) == 0;
        let claim = if fraud && next(2) == 0 { "1 to 7" } else { "more than 30" };
        s += &format!(
            "{},{make},{kind},{},{},{claim},{}\r\n",
            months[next(4) as usize],
            18 + next(60),
            i + 1,
            fraud as u8
        );
    }
    s
}

/// The same table one-hot encoded by hand in the reader's column order (categories sorted,
/// identifier left out, no `(other)` cells, which are constant on training rows and dropped).
fn hand_one_hot(raw: &str) -> String {
    let rows: Vec<Vec<&str>> = raw.lines().map(|l| l.split(',').collect()).collect();
    let text = [0usize, 1, 2, 5];
    let cats: Vec<Vec<&str>> = text
        .iter()
        .map(|&j| {
            let mut c: Vec<&str> = rows[1..].iter().map(|r| r[j]).collect();
            c.sort();
            c.dedup();
            c
        })
        .collect();
    let mut header = Vec::new();
    for (j, name) in rows[0].iter().enumerate() {
        match text.iter().position(|&t| t == j) {
            Some(k) => header.extend(cats[k].iter().map(|c| format!("{name}={c}"))),
            None if j == 4 => {}
            None => header.push(name.to_string()),
        }
    }
    let mut out = header.join(",") + "\n";
    for r in &rows[1..] {
        let mut cells = Vec::new();
        for (j, v) in r.iter().enumerate() {
            match text.iter().position(|&t| t == j) {
                Some(k) => cells.extend(cats[k].iter().map(|c| if c == v { "1" } else { "0" })),
                None if j == 4 => {}
                None => cells.push(v),
            }
        }
        out += &(cells.join(",") + "\n");
    }
    out
}

fn auc_pr_line(stdout: &[u8]) -> String {
    let s = String::from_utf8_lossy(stdout);
    let at = s.find("AUC-PR").unwrap_or_else(|| panic!("no AUC-PR in {s}"));
    s[at..].split("  fit").next().unwrap().to_string()
}

/// The bar's first half, on a generated table: `eval` takes the raw table and scores exactly
/// as on the hand-encoded one (the same matrix reaches the model); `train` says what it
/// encoded and left out; `score` counts a category never seen in training.
#[test]
fn raw_text_table_evals_as_its_hand_one_hot_and_scores_new_categories() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("fraud.csv");
    let hand = dir.path().join("fraud_onehot.csv");
    let text = fraud_like(600, 1, false);
    std::fs::write(&raw, &text).unwrap();
    std::fs::write(&hand, hand_one_hot(&text)).unwrap();
    let eval = |p: &Path| {
        let out = mnpflow()
            .args(["eval", "--label", "FraudFound_P", "--runs", "1", "--epochs", "5", "--quiet"])
            .arg("--table")
            .arg(p)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let (a, b) = (eval(&raw), eval(&hand));
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(
        err.contains("4 text columns one-hot encoded, categories each: Month (4), Make (4), PolicyType (3), Days_Policy_Claim (2)")
            && err.contains("column \"PolicyNumber\" left out"),
        "{err}"
    );
    assert_eq!(auc_pr_line(&a.stdout), auc_pr_line(&b.stdout));

    // --schema none: today's strict reading, naming the first data row as line 2.
    let out = mnpflow()
        .args(["eval", "--schema", "none", "--label", "FraudFound_P", "--table"])
        .arg(&raw)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("fraud.csv:2:1: column \"Month\""), "{err}");

    // train, then score a table with a make the model never saw.
    let model = dir.path().join("m.mnp");
    let out = mnpflow()
        .args(["train", "--label", "FraudFound_P", "--epochs", "5", "--quiet", "--table"])
        .arg(&raw)
        .arg("-o")
        .arg(&model)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("Make (4)") && err.contains("PolicyNumber"),
        "{err}"
    );
    let new = dir.path().join("new.csv");
    std::fs::write(&new, fraud_like(200, 2, true)).unwrap();
    let out = mnpflow()
        .args(["score", "--label", "FraudFound_P", "--model"])
        .arg(&model)
        .arg("--table")
        .arg(&new)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && err.contains(
                "20 of 200 rows hold a category never seen in training, read as (other): Make 20"
            ),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 201);
}
