//! `mnpflow models`: the model registry of a data directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::labels::DataDirArg;
use crate::feedback::Registry;
use crate::feedback::retrain::RetrainRequest;

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: ModelsAction,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Every registered version, the current one marked with `*`.
    List,
    /// One version in full (default: the current one).
    Show { version: Option<u64> },
    /// Make an older version current; a running sensor picks it up at its next batch.
    Rollback { version: u64 },
    /// Ask the sensor running with this data directory (and --learn) to retrain now.
    Retrain {
        /// Train from scratch instead of from the current model's weights.
        #[arg(long)]
        scratch: bool,
    },
    /// Register a model file as the next version and make it current.
    Promote {
        file: PathBuf,
        /// What it was trained on, in words.
        #[arg(long, default_value = "")]
        data: String,
        /// The score cut that goes with it (a sensor without --threshold alerts at score >= CUT).
        #[arg(long)]
        cut: Option<f32>,
    },
    /// Publish a version (default: the current one) with its registry entry to the models
    /// topic (`[kafka] models_topic`), for every sensor running with Kafka to take. Builds
    /// with --features kafka.
    Publish {
        version: Option<u64>,
        /// Bootstrap brokers (default: `[kafka] brokers`).
        #[arg(long, value_name = "BROKERS")]
        kafka: Option<String>,
        /// Who publishes (default: `[kafka] sensor_id`, else the host name).
        #[arg(long)]
        from: Option<String>,
    },
}

pub fn run(args: ModelsArgs, config: &crate::config::Config) -> anyhow::Result<ExitCode> {
    let dir = args.data.resolve();
    let mut reg = Registry::open(&dir)?;
    let current = reg.current().map(|e| e.version);
    match args.action {
        ModelsAction::List => {
            for e in reg.entries() {
                let mark = if Some(e.version) == current { "*" } else { " " };
                let parent = e.parent.map(|p| format!("v{p}")).unwrap_or_else(|| "-".into());
                println!("{mark} v{}\tparent {parent}\t{:.0}\t{}", e.version, e.created, e.data);
            }
        }
        ModelsAction::Show { version } => {
            let v =
                version.or(current).ok_or_else(|| anyhow::anyhow!("no model is registered yet"))?;
            let e = reg.get(v)?;
            println!("{}", serde_json::to_string_pretty(e)?);
            println!("file: {}", reg.model_path(v).display());
        }
        ModelsAction::Rollback { version } => {
            reg.rollback(version, crate::capture::Timestamp::wall_now().as_secs_f64())?;
            println!("current model: v{version}");
        }
        ModelsAction::Retrain { scratch } => {
            let req = if scratch { RetrainRequest::Scratch } else { RetrainRequest::Warm };
            req.write(&dir)?;
            println!(
                "asked the sensor using {} to retrain ({}); its learning loop takes the request within a second",
                dir.display(),
                if scratch { "from scratch" } else { "warm start" }
            );
        }
        ModelsAction::Promote { file, data, cut } => {
            crate::model::artifact::Artifact::load(&file)?;
            let e = reg.promote(
                &file,
                data,
                Vec::new(),
                cut,
                crate::capture::Timestamp::wall_now().as_secs_f64(),
            )?;
            println!("registered {} as v{} (current)", file.display(), e.version);
        }
        ModelsAction::Publish { version, kafka, from } => {
            let v =
                version.or(current).ok_or_else(|| anyhow::anyhow!("no model is registered yet"))?;
            let brokers = kafka.or_else(|| config.kafka.brokers.clone()).ok_or_else(|| {
                anyhow::anyhow!("models publish: no brokers (--kafka or [kafka] brokers)")
            })?;
            let from = from
                .or_else(|| config.kafka.sensor_id.clone())
                .unwrap_or_else(crate::kafka::default_sensor_id);
            publish(&brokers, config, &dir, v, &from)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "kafka")]
fn publish(
    brokers: &str,
    config: &crate::config::Config,
    dir: &std::path::Path,
    version: u64,
    from: &str,
) -> anyhow::Result<()> {
    let key = crate::kafka::models::publish(
        brokers,
        &config.kafka,
        dir,
        version,
        from,
        std::time::Duration::from_secs(30),
    )
    .map_err(anyhow::Error::msg)?;
    println!(
        "published model v{version} to {} on {brokers} (key {key})",
        config.kafka.models_topic
    );
    Ok(())
}

#[cfg(not(feature = "kafka"))]
fn publish(
    brokers: &str,
    _: &crate::config::Config,
    _: &std::path::Path,
    _: u64,
    _: &str,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "Kafka ({brokers}): this mnpflow was built without Kafka support; build it with `cargo build --release --features kafka` (needs `apt-get install build-essential libssl-dev pkg-config`)"
    )
}
