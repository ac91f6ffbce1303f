//! `mnpflow live`: watch an interface (feature `live`) and write alerts as flows end: one
//! PACKET_FANOUT socket per flow worker on Linux, or one libpcap handle.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use super::replay::{DetectArgs, LoadedModel, load_model, register, registry_model, save_trained};
use crate::capture::Timestamp;
use crate::capture::live::LiveSource;
use crate::capture::source::{CaptureMethod, LiveConfig, PacketSource};
use crate::config::Config;
use crate::features::SchemaKind;
use crate::pipeline::bootstrap::{self, MIN_FLOWS};
use crate::pipeline::stream::{Backpressure, Input, Speed};
use crate::pipeline::warmup::{self, Replayed, WarmupEnd, WarmupLimits};

#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Interface to capture on (e.g. eth0).
    #[arg(short, long)]
    pub interface: String,
    /// How the interface is read (default from [live] capture): `fanout`, one AF_PACKET socket
    /// per flow worker in a PACKET_FANOUT group, the kernel sharding packets by flow (Linux);
    /// `pcap`, one libpcap handle whose reader shards them.
    #[arg(long, value_enum)]
    pub capture: Option<CaptureMethod>,
    /// BPF filter (tcpdump syntax), e.g. "not port 22" (compiled by libpcap either way).
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
    /// Feature vocabulary of the model trained at cold start (no --model and no model in
    /// the registry); a given model brings its own.
    #[arg(long, value_enum, default_value_t = SchemaKind::Unsw)]
    pub schema: SchemaKind,
    #[command(flatten)]
    pub detect: DetectArgs,
}

pub fn run(args: LiveArgs, config: &Config) -> anyhow::Result<ExitCode> {
    super::replay::check_kafka(&args.detect, config)?;
    let mut cfg = config.live.clone();
    if let Some(c) = args.capture {
        cfg.capture = c;
    }
    if let Some(s) = args.snaplen {
        cfg.snaplen = s;
    }
    if args.no_promisc {
        cfg.promisc = false;
    }
    if let Some(b) = args.buffer_size {
        cfg.buffer_size = b;
    }
    let workers = args.detect.workers.unwrap_or(config.stream.workers);
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    let dir = super::labels::DataDirArg { data_dir: args.detect.data_dir.clone() }.resolve();
    let model = match &args.detect.model {
        Some(model) => match load_model(model) {
            Ok(m) => Some(m),
            Err(e) => bail!("loading model {}: {e:#}", model.display()),
        },
        None => registry_model(&dir)?,
    };
    if cfg.capture == CaptureMethod::Fanout {
        run_fanout(&args, &cfg, config, workers, model, &dir)?;
        return Ok(ExitCode::SUCCESS);
    }
    // One line for the user: the interface, and what libpcap said.
    let mut source = match LiveSource::open(&args.interface, args.filter.as_deref(), &cfg) {
        Ok(s) => s,
        Err(e) => bail!("{e}"),
    };
    let (loaded, recording) = match model {
        Some(m) => (m, None),
        None => {
            let (m, r) = cold_start(&mut source, &args, config, &dir)?;
            (m, Some(r))
        }
    };
    eprintln!(
        "capturing on {} through one libpcap handle (Ctrl-C to stop; open flows are flushed and scored)",
        args.interface
    );
    let mut replayed;
    let source: &mut dyn PacketSource = match recording {
        Some(r) => {
            replayed = Replayed::new(r, &mut source);
            &mut replayed
        }
        None => &mut source,
    };
    detect(Input::Shared(source), &args, config, loaded)?;
    Ok(ExitCode::SUCCESS)
}

/// The detector on a live input: as fast as packets come, dropping (and counting) what does
/// not fit rather than stalling the capture.
fn detect(
    input: Input<'_>,
    args: &LiveArgs,
    config: &Config,
    loaded: LoadedModel,
) -> anyhow::Result<()> {
    super::replay::detect(
        input,
        &args.detect,
        config,
        loaded,
        Speed::Max,
        Backpressure::Drop,
        false,
        false,
    )?;
    Ok(())
}

/// One fanout socket per flow worker, each read by its worker. With no model, the warm-up
/// reads the whole group as one source, and each worker then replays the recorded packets of
/// its own socket before reading on.
#[cfg(target_os = "linux")]
fn run_fanout(
    args: &LiveArgs,
    cfg: &LiveConfig,
    config: &Config,
    workers: usize,
    model: Option<LoadedModel>,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    use crate::capture::fanout::{FanoutGroup, open_group};
    let sockets = match open_group(&args.interface, args.filter.as_deref(), cfg, workers) {
        Ok(s) => s,
        Err(e) => bail!("{e}"),
    };
    let (loaded, recording, sockets) = match model {
        Some(m) => (m, None, sockets),
        None => {
            let mut group = FanoutGroup::new(sockets);
            let (m, r) = cold_start(&mut group, args, config, dir)?;
            (m, Some(r), group.into_sockets())
        }
    };
    eprintln!(
        "capturing on {} with {} fanout sockets, one per flow worker (Ctrl-C to stop; open flows are flushed and scored)",
        args.interface,
        sockets.len()
    );
    // With a recording, each worker's source borrows its socket; they live here.
    let mut replayed_sockets;
    let inputs: Vec<Box<dyn PacketSource + '_>> = match recording {
        None => sockets.into_iter().map(|s| Box::new(s) as Box<dyn PacketSource>).collect(),
        Some(r) => {
            replayed_sockets = sockets;
            r.split(replayed_sockets.len())
                .into_iter()
                .zip(replayed_sockets.iter_mut())
                .map(|(r, s)| Box::new(Replayed::new(r, s)) as Box<dyn PacketSource + '_>)
                .collect()
        }
    };
    detect(Input::PerWorker(inputs), args, config, loaded)
}

#[cfg(not(target_os = "linux"))]
fn run_fanout(
    args: &LiveArgs,
    _: &LiveConfig,
    _: &Config,
    _: usize,
    _: Option<LoadedModel>,
    _: &std::path::Path,
) -> anyhow::Result<()> {
    bail!(
        "interface {}: fanout capture needs Linux (PACKET_FANOUT); use --capture pcap",
        args.interface
    )
}

/// No model anywhere: learn this network from the interface's first flows (the `[bootstrap]
/// warmup_*` limits), train on them with no labels as `replay` would on a capture, and hand
/// back the recording, which the detector reads before the interface so that the warm-up's
/// flows are scored too ([`crate::pipeline::warmup`]).
fn cold_start(
    source: &mut dyn PacketSource,
    args: &LiveArgs,
    config: &Config,
    dir: &std::path::Path,
) -> anyhow::Result<(LoadedModel, warmup::Recording)> {
    let b = &config.bootstrap;
    let limits = WarmupLimits {
        flows: b.warmup_flows.max(MIN_FLOWS),
        time: std::time::Duration::from_secs_f64(b.warmup_seconds.clamp(1.0, 1e7)),
        bytes: b.warmup_bytes,
    };
    eprintln!(
        "cold start: no --model and no model in the registry of {}: learning this network from its first {} flows on {} (at most {:.0} s); they are scored once the model is trained",
        dir.display(),
        limits.flows,
        args.interface,
        limits.time.as_secs_f64()
    );
    crate::pipeline::catch_interrupt();
    let w = warmup::record(
        source,
        args.schema,
        &config.flow,
        &limits,
        &crate::pipeline::INTERRUPTED,
        |flows, t| eprintln!("warm-up   {flows} flows in {:.0} s", t.as_secs_f64()),
    );
    let why = match w.ended_by {
        WarmupEnd::Flows => "enough flows",
        WarmupEnd::Time => "time limit ([bootstrap] warmup_seconds)",
        WarmupEnd::Bytes => "memory limit ([bootstrap] warmup_bytes)",
        WarmupEnd::SourceEnded => "the interface stopped delivering packets",
        WarmupEnd::Interrupted => bail!(
            "interrupted during the cold start's warm-up after {} flows: no model was trained and nothing was scored",
            w.flows
        ),
    };
    eprintln!(
        "warm-up   {} flows, {} packets ({:.1} MB held) in {:.0} s: {why}",
        w.flows,
        w.recording.packets(),
        w.recording.bytes() as f64 / 1e6,
        w.elapsed.as_secs_f64()
    );
    if w.flows < MIN_FLOWS {
        bail!(
            "cold start on {}: {} flows in the warm-up, too few to learn this network's traffic (at least {MIN_FLOWS}); raise [bootstrap] warmup_seconds or pass --model",
            args.interface,
            w.flows
        );
    }
    let trained = bootstrap::train_on_rows(
        &w.rows,
        &vec![false; w.flows],
        args.schema,
        &config.flow,
        &format!("live {} (first {} flows)", args.interface, w.flows),
        b,
        config.alert.fpr_budget,
        false,
    )?;
    let stem = format!("live-{}-{}", args.interface, Timestamp::wall_now().as_secs_f64() as u64);
    let mut loaded = save_trained(&trained, dir, &stem, config)?;
    // The registry's current model from now on: a restart uses it instead of learning again.
    register(&mut loaded, dir)?;
    if crate::pipeline::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
        bail!(
            "interrupted while the cold start's model trained: the model was kept ({}), nothing was scored",
            loaded.path.display()
        );
    }
    Ok((loaded, w.recording))
}
