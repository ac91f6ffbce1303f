//! The command line: what was typed, turned into each stage's typed configuration.
//!
//! Each subcommand keeps its arguments and handler beside its stage's code (`model_cmds` for
//! `train`, `score`, `eval`); this file only lists them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod model_cmds;

/// mnpflow: network-flow anomaly detection with MNPWAD.
#[derive(Debug, Parser)]
#[command(name = "mnpflow", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model on a labeled table and write one model file.
    Train(model_cmds::TrainArgs),
    /// Score a table with a model file; each score comes with its explanation.
    Score(model_cmds::ScoreArgs),
    /// Evaluate MNPWAD on a table with the paper's protocol (AUC-ROC, AUC-PR, AP over runs).
    Eval(model_cmds::EvalArgs),
}

/// Parses the command line and runs the subcommand.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Train(a) => model_cmds::train(a),
        Command::Score(a) => model_cmds::score(a),
        Command::Eval(a) => model_cmds::eval(a),
    }
}
