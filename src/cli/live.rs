//! `mnpflow live`: watch an interface (libpcap, feature `live`) and write alerts as flows end.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use super::replay::{DetectArgs, load_model, registry_model};
use crate::capture::live::LiveSource;
use crate::config::Config;
use crate::pipeline::stream::{Backpressure, Speed};

#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Interface to capture on (e.g. eth0).
    #[arg(short, long)]
    pub interface: String,
    /// BPF filter (tcpdump syntax), e.g. "not port 22".
    #[arg(long)]
    pub filter: Option<String>,
    /// Bytes kept per packet (default from [live] snaplen).
    #[arg(long)]
    pub snaplen: Option<u32>,
    /// Do not put the interface in promiscuous mode.
    #[arg(long)]
    pub no_promisc: bool,
    /// Kernel capture buffer in bytes (default from [live] buffer_size).
    #[arg(long)]
    pub buffer_size: Option<u32>,
    #[command(flatten)]
    pub detect: DetectArgs,
}

pub fn run(args: LiveArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let mut cfg = config.live.clone();
    if let Some(s) = args.snaplen {
        cfg.snaplen = s;
    }
    if args.no_promisc {
        cfg.promisc = false;
    }
    if let Some(b) = args.buffer_size {
        cfg.buffer_size = b;
    }
    // One line for the user: the interface, and what libpcap said.
    let mut source = match LiveSource::open(&args.interface, args.filter.as_deref(), &cfg) {
        Ok(s) => s,
        Err(e) => bail!("{e}"),
    };
    let loaded = match &args.detect.model {
        Some(model) => match load_model(model) {
            Ok(m) => m,
            Err(e) => bail!("loading model {}: {e:#}", model.display()),
        },
        None => {
            let dir =
                super::labels::DataDirArg { data_dir: args.detect.data_dir.clone() }.resolve();
            match registry_model(&dir)? {
                Some(m) => m,
                None => bail!(
                    "live needs a model: --model FILE, or a current model in the registry of {} (train one with `mnpflow train`, or let `mnpflow replay` train one on a capture of this network, cold without --truth)",
                    dir.display()
                ),
            }
        }
    };
    eprintln!(
        "capturing on {} (Ctrl-C to stop; open flows are flushed and scored)",
        args.interface
    );
    super::replay::detect(
        &mut source,
        &args.detect,
        config,
        loaded,
        Speed::Max,
        Backpressure::Drop,
        false,
        false,
    )?;
    Ok(ExitCode::SUCCESS)
}
