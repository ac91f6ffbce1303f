//! `mnpflow eval --scenario FILE`: detection on captures the model never saw.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::model_cmds::EvalArgs;
use crate::model::device;
use crate::scenario::Scenario;
use crate::scenario::run::{self, Judged, Method, mean_std_text};

/// Options of `eval --scenario`.
#[derive(Debug, Args)]
pub struct ScenarioOpts {
    /// Methods to run on the scenario (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub methods: Vec<Method>,
    /// Write each seed's training and test rows as CSV into this folder
    /// (`NAME.seedS.train.csv`, `NAME.seedS.test.csv`), for peers outside the project
    /// (benches/detection_peers.py).
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// False-positive budget of the default alert threshold, a share of normal-looking
    /// flows (default: the configuration's `[alert] fpr_budget`, 0.01).
    #[arg(long)]
    pub fpr_budget: Option<f64>,
}

/// Runs the scenario's methods over `--runs` seeds and prints the comparison.
pub fn run(file: &Path, a: &EvalArgs, config: &crate::config::Config) -> anyhow::Result<ExitCode> {
    let sc = Scenario::load(file, &config.flow)?;
    let methods = if a.scenario_opts.methods.is_empty() {
        vec![Method::Default, Method::Train, Method::Paper, Method::Cold]
    } else {
        a.scenario_opts.methods.clone()
    };
    let budget = a.scenario_opts.fpr_budget.unwrap_or(config.alert.fpr_budget);
    if !(0.0..1.0).contains(&budget) {
        anyhow::bail!("false-positive budget {budget}: expected a share in [0, 1), e.g. 0.01");
    }
    let alert = crate::alert::AlertConfig { fpr_budget: budget, ..config.alert.clone() };
    let compute = device::select(a.backend);
    let kind = sc.spec.schema;
    eprintln!("scenario {} ({}): {} captures", sc.spec.name, file.display(), sc.captures.len());
    for c in &sc.captures {
        eprintln!(
            "  {:<8} {:<4} {:>6} flows, {} kept  {}",
            c.kind,
            if c.unseen { "test" } else { "" },
            c.n,
            c.n.min(c.cap),
            c.path.display()
        );
    }
    let mut results: Vec<(Method, Vec<Judged>)> =
        methods.iter().map(|&m| (m, Vec::new())).collect();
    let mut kinds = Vec::new();
    for r in 0..a.runs.max(1) {
        let seed = a.seed + r as u64;
        let split = sc.split(seed);
        kinds = run::kinds(&split);
        let attacks = split.test_attack.iter().filter(|&&x| x).count();
        eprintln!(
            "seed {seed}: train {} flows ({} attacks, {} labeled), test {} flows ({} attacks, {} of unseen kinds)",
            split.n_train(),
            split.train_attack.iter().filter(|&&x| x).count(),
            split.train_labeled.iter().filter(|&&x| x).count(),
            split.n_test(),
            attacks,
            split.test_unseen.iter().filter(|&&x| x).count()
        );
        if let Some(dir) = &a.scenario_opts.export {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let prefix = dir.join(format!("{}.seed{seed}", sc.spec.name));
            run::export(&split, &sc.names, &prefix)
                .with_context(|| format!("writing {}.*.csv", prefix.display()))?;
        }
        for (m, judged) in results.iter_mut() {
            let s = run::score(*m, &split, kind, &config.flow, seed, &alert, &compute.device)
                .with_context(|| format!("{} on seed {seed}", m.name()))?;
            let j = run::judge(&split, &s.scores, &s.cuts);
            let fixed = run::judge(&split, &s.scores, &vec![s.floor(); s.scores.len()]);
            eprintln!(
                "  {:<38} AUC-PR {:.3}  AUC-ROC {:.3}  TPR@1%FPR {:.3}  threshold: precision {:.3} recall {:.3} FPR {:.4} (training cut {:.4} alone: recall {:.3} FPR {:.4})",
                m.name(),
                j.metrics.auc_pr,
                j.metrics.auc_roc,
                j.tpr_at_1pct_fpr,
                j.precision,
                j.recall,
                j.fpr,
                s.floor(),
                fixed.recall,
                fixed.fpr
            );
            judged.push(j);
        }
    }
    print_table(&sc, &results, &kinds, a.runs.max(1), budget);
    if let Some(path) = &a.json {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        for (m, judged) in &results {
            let line = serde_json::json!({ "scenario": sc.spec.name, "method": m.name(), "seed": a.seed, "runs": judged });
            writeln!(f, "{line}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The comparison as a Markdown table (means and standard deviations over seeds), then recall
/// per attack kind at each method's own threshold.
fn print_table(
    sc: &Scenario,
    results: &[(Method, Vec<Judged>)],
    kinds: &[(String, bool)],
    runs: usize,
    budget: f64,
) {
    let col = |judged: &[Judged], f: &dyn Fn(&Judged) -> f64| {
        mean_std_text(&judged.iter().map(f).collect::<Vec<_>>())
    };
    println!(
        "\nscenario {} ({} seeds; threshold: {}% false-positive budget)\n",
        sc.spec.name,
        runs,
        budget * 100.0
    );
    println!(
        "| method | AUC-PR | AUC-ROC | TPR at 1% FPR | precision at threshold | recall at threshold | FPR at threshold | false alerts per 1k benign |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (m, j) in results {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            m.name(),
            col(j, &|x| x.metrics.auc_pr),
            col(j, &|x| x.metrics.auc_roc),
            col(j, &|x| x.tpr_at_1pct_fpr),
            col(j, &|x| x.precision),
            col(j, &|x| x.recall),
            col(j, &|x| x.fpr),
            col(j, &|x| x.false_alerts_per_1k),
        );
    }
    println!("\nrecall at threshold by attack kind (unseen: test only)\n");
    let head: Vec<String> =
        kinds.iter().map(|(k, u)| if *u { format!("{k} (unseen)") } else { k.clone() }).collect();
    println!("| method | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(kinds.len()));
    for (m, j) in results {
        let cells: Vec<String> = kinds
            .iter()
            .map(|(k, _)| {
                format!(
                    "{:.2}",
                    j.iter().map(|x| x.recall_by_kind.get(k).map_or(0.0, |r| r.0)).sum::<f64>()
                        / j.len().max(1) as f64
                )
            })
            .collect();
        println!("| {} | {} |", m.name(), cells.join(" | "));
    }
}
