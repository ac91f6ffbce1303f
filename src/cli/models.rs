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
}

pub fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
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
    }
    Ok(ExitCode::SUCCESS)
}
