//! `mnpflow synth`: write a labeled synthetic capture.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output capture (pcap).
    #[arg(short, long, value_name = "FILE", default_value = "captures/demo.pcap")]
    pub output: PathBuf,
}

pub fn run(_args: SynthArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("synth is not written yet")
}
