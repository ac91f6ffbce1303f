//! `mnpflow label` and `mnpflow labels`: analysts' feedback on scored flows.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::feedback::{Label, LabelStore, Verdict};

/// The state directory: `--data-dir`, else `$MNPFLOW_DATA`, else `./mnpflow-data`.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// State directory (labels, scored flows, models). Default: $MNPFLOW_DATA, else ./mnpflow-data.
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    pub fn resolve(&self) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| std::env::var_os("MNPFLOW_DATA").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("mnpflow-data"))
    }
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// The flow: its uid (C...) or community ID (1:...).
    pub flow: String,
    /// The verdict.
    #[arg(long = "as", value_enum)]
    pub verdict: Verdict,
    /// Why (free text).
    #[arg(long, default_value = "")]
    pub note: String,
    /// Who (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
    /// Also publish the label to the labels topic (`[kafka] labels_topic`) of these brokers
    /// (also `[kafka] brokers`), for every sensor that consumes it. Builds with --features
    /// kafka.
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Args)]
pub struct LabelsArgs {
    #[command(subcommand)]
    pub action: LabelsAction,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum LabelsAction {
    /// One line per label: time, who, verdict, flow, note.
    List,
    /// Every label as JSON lines on standard output (features included).
    Export,
    /// Adds labels from a JSON lines file (as `export` writes them); `-` reads standard input.
    Import { file: PathBuf },
}

pub fn label(args: LabelArgs, config: &crate::config::Config) -> anyhow::Result<ExitCode> {
    let brokers = args.kafka.clone().or_else(|| config.kafka.brokers.clone());
    #[cfg(not(feature = "kafka"))]
    if let Some(b) = &brokers {
        anyhow::bail!(
            "Kafka ({b}): this mnpflow was built without Kafka support; build it with `cargo build --release --features kafka` (needs `apt-get install build-essential libssl-dev pkg-config`)"
        );
    }
    let dir = args.data.resolve();
    let mut store = LabelStore::open(&dir)
        .with_context(|| format!("opening the label store in {}", dir.display()))?;
    let by = args.by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into());
    let l = store.label(
        &args.flow,
        args.verdict,
        &by,
        &args.note,
        crate::capture::Timestamp::wall_now().as_secs_f64(),
    )?;
    println!("labeled {} ({}) as {} by {}", l.uid, l.community_id, l.verdict, l.by);
    #[cfg(feature = "kafka")]
    if let Some(b) = &brokers {
        crate::kafka::labels::publish(
            b,
            &config.kafka,
            std::slice::from_ref(&l),
            std::time::Duration::from_secs(10),
        )
        .map_err(|e| anyhow::anyhow!("{e} (the label is stored in {})", dir.display()))?;
        println!("published to {} on {b}", config.kafka.labels_topic);
    }
    let _ = brokers;
    Ok(ExitCode::SUCCESS)
}

pub fn labels(args: LabelsArgs) -> anyhow::Result<ExitCode> {
    let dir = args.data.resolve();
    let mut store = LabelStore::open(&dir)
        .with_context(|| format!("opening the label store in {}", dir.display()))?;
    if store.recovered_bytes() > 0 {
        eprintln!(
            "note: cut {} bytes of a label write interrupted by a crash (it was never acknowledged)",
            store.recovered_bytes()
        );
    }
    let mut out = std::io::stdout().lock();
    match args.action {
        LabelsAction::List => {
            for l in store.labels() {
                writeln!(
                    out,
                    "{:.0}\t{}\t{}\t{}\t{}\t{}",
                    l.at, l.by, l.verdict, l.uid, l.community_id, l.note
                )?;
            }
        }
        LabelsAction::Export => {
            for l in store.labels() {
                writeln!(out, "{}", serde_json::to_string(l)?)?;
            }
        }
        LabelsAction::Import { file } => {
            let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
                Box::new(BufReader::new(std::io::stdin()))
            } else {
                Box::new(BufReader::new(
                    std::fs::File::open(&file)
                        .with_context(|| format!("opening {}", file.display()))?,
                ))
            };
            let mut n = 0;
            for (i, line) in reader.lines().enumerate() {
                let line = line.with_context(|| format!("reading {}", file.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let l: Label = serde_json::from_str(&line)
                    .with_context(|| format!("{}:{}: not a label", file.display(), i + 1))?;
                store.add(l)?;
                n += 1;
            }
            writeln!(out, "imported {n} labels")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
