//! `mnpflow flows`: capture files to flow records.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::Config;
use crate::features::{self, SchemaKind};
use crate::output::{Format, RecordWriter};
use crate::pipeline::offline;

#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Capture files (pcap or pcapng), read in order as one stream. Default: the bundled
    /// capture.
    #[arg(value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// Feature vocabulary of the records.
    #[arg(long, value_enum, default_value_t = SchemaKind::Unsw)]
    pub schema: SchemaKind,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Write records here instead of standard output (`-`: standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print a summary to standard error: packets, bytes, flows, packets skipped and why,
    /// packets per second.
    #[arg(long)]
    pub stats: bool,
}

pub fn run(args: FlowsArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let captures =
        if args.captures.is_empty() { vec![super::bundled_capture()?] } else { args.captures };
    let out: Box<dyn Write> = match &args.output {
        Some(p) if p.as_os_str() != "-" => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        _ => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let mut extractor = features::extractor(args.schema, config.flow.community_id_seed);
    let mut writer = RecordWriter::new(out, args.format, extractor.columns(), "conn")?;
    let mut cells = Vec::new();
    let mut write_error: Option<io::Error> = None;
    // The vocabulary chooses the cut rules: Argus's for UNSW-NB15, Zeek's for conn.log.
    let flow = config.flow.for_cut(args.schema.cut_policy());
    let stats = offline::run_files(&captures, &flow, |rec| {
        if write_error.is_some() {
            return;
        }
        extractor.extract(rec, &mut cells);
        if let Err(e) = writer.write(&cells) {
            write_error = Some(e);
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing flow records");
    }
    writer.finish().context("writing flow records")?;
    if args.stats {
        eprint!("{}", stats.summary());
    } else {
        for w in &stats.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
