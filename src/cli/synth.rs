//! `mnpflow synth`: write a labeled synthetic capture and its truth file.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::capture::synth::{SynthConfig, generate};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output capture (pcap, Ethernet).
    #[arg(short, long, value_name = "FILE", default_value = "captures/demo.pcap")]
    pub output: PathBuf,
    /// Truth file (CSV: label,kind,proto,orig_h,orig_p,resp_h,resp_p,start). Default: the
    /// capture's path with `.truth.csv` in place of its extension.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// PRNG seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    pub seed: u64,
    /// Seconds of traffic.
    #[arg(long, default_value_t = SynthConfig::default().duration_secs)]
    pub duration: f64,
    /// Multiplies the rate of normal traffic (for large benchmark captures).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Leave the attacks out (normal traffic only).
    #[arg(long)]
    pub no_attacks: bool,
    /// Bytes kept of each frame, as a capture's snap length (at least 64); wire lengths are
    /// recorded in full.
    #[arg(long, default_value_t = SynthConfig::default().snaplen)]
    pub snaplen: u32,
}

pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.duration > 0.0 && args.duration.is_finite(),
        "--duration must be a positive number of seconds"
    );
    anyhow::ensure!(args.scale > 0.0 && args.scale.is_finite(), "--scale must be positive");
    let truth = args.truth.clone().unwrap_or_else(|| args.output.with_extension("truth.csv"));
    let cfg = SynthConfig {
        seed: args.seed,
        duration_secs: args.duration,
        scale: args.scale,
        attacks: !args.no_attacks,
        snaplen: args.snaplen,
        ..SynthConfig::default()
    };
    let pcap = BufWriter::new(
        File::create(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?,
    );
    let truth_file = BufWriter::new(
        File::create(&truth).with_context(|| format!("creating {}", truth.display()))?,
    );
    let s = generate(&cfg, pcap, truth_file)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "wrote {} ({} packets) and {} ({} conversations, {} attacks)",
        args.output.display(),
        s.packets,
        truth.display(),
        s.conversations,
        s.attack_conversations
    );
    Ok(ExitCode::SUCCESS)
}
