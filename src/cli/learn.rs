//! `mnpflow learn --kafka BROKERS`: the learning loop as its own process, the one retrainer of
//! many sensors.
//!
//! ```text
//!  sensors ──flows topic──> FlowsIn ──> learning loop ──promoted──> models topic ──> sensors
//!  consoles ─labels topic─> LabelsIn ─> label store ──┘   (registry in the data directory)
//! ```
//!
//! It reads the scored flows the sensors publish (`[kafka] flows_topic`) into the loop's
//! reservoir and the analysts' labels into its label store, and runs the loop a sensor runs
//! (`pipeline::learn`): retrain when labels or time say so, promote a candidate that passes
//! the rule, register it; each promoted model goes to the models topic, where every sensor of
//! the schema takes it and hot swaps. With no model anywhere it starts cold: it trains on the
//! first flows it reads (`[bootstrap] warmup_flows`, or what arrives in `warmup_seconds`) and
//! the attacks its label store holds, and publishes that model first.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::features::SchemaKind;

use super::labels::DataDirArg;

#[derive(Debug, clap::Args)]
pub struct LearnArgs {
    /// Kafka bootstrap brokers, host:port separated by commas (default: `[kafka] brokers`).
    /// Needs a build with `--features kafka`.
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// This retrainer's name in the models it publishes (default: `[kafka] sensor_id`, else
    /// the host name).
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// Start from this model (registered as current). Default: the registry's current model;
    /// with none, a model trained on the first flows read (cold start).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Feature vocabulary of the flows when no model gives it (sensors must publish the same).
    #[arg(long, value_enum, default_value_t = SchemaKind::Unsw)]
    pub schema: SchemaKind,
    #[command(flatten)]
    pub data: DataDirArg,
}

pub fn run(args: LearnArgs, config: &Config) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "kafka")]
    return with_kafka::run(args, config);
    #[cfg(not(feature = "kafka"))]
    {
        let _ = (args, config);
        anyhow::bail!(
            "learn: the central retrainer works through Kafka, and this mnpflow was built without it; build it with `cargo build --release --features kafka` (needs `apt-get install build-essential libssl-dev pkg-config`)"
        )
    }
}

#[cfg(feature = "kafka")]
mod with_kafka {
    use std::path::Path;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use crossbeam_channel::Receiver;

    use super::LearnArgs;
    use crate::cli::replay::{
        LoadedModel, load_model, models_publisher, register, registry_model, save_trained,
    };
    use crate::config::Config;
    use crate::features::SchemaKind;
    use crate::feedback::{LabelStore, Verdict};
    use crate::kafka::flows::{FlowsIn, FlowsInCounters};
    use crate::kafka::{KafkaCounters, labels::LabelsIn, models::ModelsIn};
    use crate::model::device::Compute;
    use crate::model::slot::ModelSlot;
    use crate::pipeline::bootstrap::{self, MIN_FLOWS};
    use crate::pipeline::learn::{self, LearnSetup};
    use crate::pipeline::metrics::Metrics;
    use crate::pipeline::stream::Sample;
    use crate::pipeline::{INTERRUPTED, catch_interrupt};

    pub fn run(args: LearnArgs, config: &Config) -> anyhow::Result<ExitCode> {
        let brokers = args
            .kafka
            .clone()
            .or_else(|| config.kafka.brokers.clone())
            .filter(|b| !b.trim().is_empty())
            .context("learn: no brokers (--kafka BROKERS or [kafka] brokers)")?;
        let Some(flows_topic) = config.kafka.flows_topic.clone() else {
            bail!(
                "learn reads the scored flows that the sensors publish: set [kafka] flows_topic, in this configuration and the sensors'"
            );
        };
        let id = args
            .id
            .clone()
            .or_else(|| config.kafka.sensor_id.clone())
            .unwrap_or_else(crate::kafka::default_sensor_id);
        let dir = args.data.resolve();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        catch_interrupt();
        let loaded = match &args.model {
            Some(p) => Some(load_model(p)?),
            None => registry_model(&dir)?,
        };
        let kind = loaded.as_ref().map_or(args.schema, |l| l.schema);
        let schema = kind.schema();
        eprintln!(
            "learn     retrainer {id:?}: flows from {flows_topic}, labels from {}, models to {} on {brokers}; data in {}",
            config.kafka.labels_topic,
            config.kafka.models_topic,
            dir.display()
        );
        let kafka = KafkaCounters::default();
        let flows = FlowsInCounters::default();
        let stop = AtomicBool::new(false);
        let labels_in =
            LabelsIn::new(&brokers, &config.kafka, &id, &dir).map_err(anyhow::Error::msg)?;
        let models_in = ModelsIn::new(
            &brokers,
            &config.kafka,
            &id,
            &dir,
            (schema.name.clone(), schema.fingerprint()),
        )
        .map_err(anyhow::Error::msg)?;
        let flows_in = FlowsIn::new(&brokers, &config.kafka, &flows_topic, kind)
            .map_err(anyhow::Error::msg)?;
        let result = std::thread::scope(|s| -> anyhow::Result<()> {
            let (stop, kafka, flows) = (&stop, &kafka, &flows);
            // The loop's end lives in this closure: when it returns (an error included), the
            // flows consumer's sends fail and it stops, even with the channel full.
            let (tx, rx) = crossbeam_channel::bounded::<Sample>(64);
            s.spawn(move || labels_in.run(stop, &kafka.labels_in, &kafka.labels_refused));
            s.spawn(move || models_in.run(stop, &kafka.models_in, &kafka.models_refused));
            s.spawn(move || flows_in.run(stop, tx, flows));
            // Ctrl-C stops the consumers; the flows consumer's end of the channel goes with
            // it, and the loop returns.
            s.spawn(move || {
                while !stop.load(Relaxed) {
                    if INTERRUPTED.load(Relaxed) {
                        stop.store(true, Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let result = serve(loaded, kind, &rx, &brokers, &id, &dir, config);
            stop.store(true, Relaxed);
            drop(rx);
            result
        });
        eprintln!("{}", kafka.summary());
        eprintln!(
            "learn     {} flows read from {flows_topic}, {} messages refused",
            flows.rows.load(Relaxed),
            flows.refused.load(Relaxed)
        );
        result?;
        Ok(ExitCode::SUCCESS)
    }

    /// The loop itself, on this thread, until the flows consumer stops.
    fn serve(
        loaded: Option<LoadedModel>,
        kind: SchemaKind,
        rx: &Receiver<Sample>,
        brokers: &str,
        id: &str,
        dir: &Path,
        config: &Config,
    ) -> anyhow::Result<()> {
        let publish = models_publisher(brokers, config, dir, id);
        let (mut loaded, backlog) = match loaded {
            Some(l) => (l, Vec::new()),
            None => match cold_start(kind, rx, dir, config)? {
                (Some(l), backlog) => (l, backlog),
                (None, _) => return Ok(()),
            },
        };
        let fresh = loaded.registry_version.is_none();
        register(&mut loaded, dir)?;
        if fresh && let Some(v) = loaded.registry_version {
            match publish(v) {
                Ok(to) => eprintln!("learn     model v{v} published to {to}"),
                Err(why) => eprintln!("warning   learn: model v{v} not published: {why}"),
            }
        }
        let compute = Compute::cpu();
        let metrics = Metrics::new();
        if let Some(c) = loaded.cut() {
            metrics.cut_bits.store(c.to_bits() as u64, Relaxed);
        }
        let slot = ModelSlot::new(loaded.scoring(&compute));
        let mut cfg = config.learn.clone();
        cfg.enabled = true;
        let setup = LearnSetup {
            cfg,
            data_dir: dir.to_owned(),
            rules_dir: None,
            artifact: loaded.artifact.clone(),
            registry_version: loaded.registry_version,
            compute,
            on_promote: Some(publish),
            backlog,
        };
        let (rules_tx, _rules) = crossbeam_channel::unbounded();
        learn::run(setup, rx.clone(), rules_tx, &slot, &metrics);
        Ok(())
    }

    /// No model anywhere: the first flows of the topic, with the attacks the label store
    /// holds, make the first model. `None` when interrupted before it was trained. Also
    /// returns every flow it read, for the loop's reservoir.
    fn cold_start(
        kind: SchemaKind,
        rx: &Receiver<Sample>,
        dir: &Path,
        config: &Config,
    ) -> anyhow::Result<(Option<LoadedModel>, Vec<Sample>)> {
        let bc = &config.bootstrap;
        let schema = kind.schema();
        let width = schema.encoded_width();
        // Labels name their schema by its fingerprint (as the retraining reads them).
        let fingerprint = schema.fingerprint();
        eprintln!(
            "learn     cold start: no --model and no model in the registry of {}: learning from the first {} flows read (at most {:.0} s)",
            dir.display(),
            bc.warmup_flows,
            bc.warmup_seconds
        );
        let started = Instant::now();
        let limit = Duration::from_secs_f64(bc.warmup_seconds.max(0.0));
        let mut read: Vec<Sample> = Vec::new();
        let mut values: Vec<f32> = Vec::new();
        while values.len() / width < bc.warmup_flows && started.elapsed() < limit {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(sample) => {
                    values.extend_from_slice(&sample.rows);
                    read.push(sample);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        // Batches arrive whole: the model learns from the first `warmup_flows`; the loop's
        // reservoir gets every flow read.
        values.truncate(bc.warmup_flows.max(1) * width);
        let flows = values.len() / width;
        if INTERRUPTED.load(Relaxed) && flows < MIN_FLOWS {
            eprintln!(
                "learn     interrupted during the cold start's warm-up after {flows} flows: no model was trained"
            );
            return Ok((None, read));
        }
        if flows < MIN_FLOWS {
            bail!(
                "learn: {flows} flows read in the warm-up, too few to learn from (at least {MIN_FLOWS}); are the sensors publishing to [kafka] flows_topic? Raise [bootstrap] warmup_seconds or pass --model"
            );
        }
        let mut labeled = vec![false; flows];
        let attacks: Vec<_> = LabelStore::read(dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| {
                l.verdict == Verdict::Attack && l.schema == fingerprint && l.features.len() == width
            })
            .collect();
        for l in &attacks {
            values.extend_from_slice(&l.features);
            labeled.push(true);
        }
        let source =
            format!("{} flows of {}", flows, config.kafka.flows_topic.as_deref().unwrap_or("?"));
        let b = bootstrap::train_on_rows(
            &values,
            &labeled,
            kind,
            &config.flow.for_cut(kind.cut_policy()),
            &source,
            bc,
            config.alert.fpr_budget,
            false,
        )?;
        Ok((Some(save_trained(&b, dir, "learn-cold-start", config)?), read))
    }
}
