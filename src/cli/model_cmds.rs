//! `train`, `score` and `eval`: the model's subcommands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use crate::features::categories::TextEncoding;
use crate::features::schema::PrepChoice;
use crate::features::tables::{self, SchemaChoice, Table, TableOptions};
use crate::model::artifact::{Artifact, DataSummary, Layout};
use crate::model::device::{self, Backend};
use crate::model::eval::{self, mean_std};
use crate::model::score::{Scorer, Scores};
use crate::model::train::{Ablation, TrainConfig};

/// The input table and how to read it.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// CSV table with a header, or a Zeek conn.log(.labeled), ASCII or JSON; any of them may
    /// be gzip-compressed.
    #[arg(long)]
    pub table: PathBuf,
    #[command(flatten)]
    pub read: TableRead,
}

/// How to read a table.
#[derive(Debug, Args)]
pub struct TableRead {
    /// Feature schema to apply (one-hot encoding of categorical columns). A table that no
    /// schema covers has its text columns one-hot encoded with the categories of its rows;
    /// `none` reads every column but the label as a number.
    #[arg(long, value_enum, default_value_t = SchemaChoice::Auto)]
    pub schema: SchemaChoice,
    /// Label column (default: the schema's, else `label`, else the last column).
    #[arg(long)]
    pub label: Option<String>,
    /// Attack-class column (default: the schema's, if any).
    #[arg(long)]
    pub class_column: Option<String>,
    /// Skip and count malformed rows instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Use this column although it looks like an identifier (as many distinct values as rows,
    /// which is otherwise left out). Repeatable, or comma-separated.
    #[arg(long, value_name = "COLUMN", value_delimiter = ',')]
    pub keep: Vec<String>,
}

impl TableArgs {
    fn load(&self, encoding: Option<TextEncoding>) -> anyhow::Result<Table> {
        self.read.load(&self.table, encoding)
    }
}

impl TableRead {
    /// Reads the table; `encoding` is a model's, when scoring with one.
    fn load(&self, table: &Path, encoding: Option<TextEncoding>) -> anyhow::Result<Table> {
        let opts = TableOptions {
            schema: self.schema,
            label: self.label.clone(),
            class: self.class_column.clone(),
            skip_bad_rows: self.skip_bad_rows,
            keep: self.keep.clone(),
            encoding,
        };
        let t = tables::load(table, &opts)
            .with_context(|| format!("reading table {}", table.display()))?;
        let name = table.display();
        if t.skipped_bad > 0 {
            eprintln!("{name}: skipped {} malformed rows", t.skipped_bad);
        }
        if t.skipped_unlabeled > 0 {
            eprintln!("{name}: left out {} rows labeled unknown", t.skipped_unlabeled);
        }
        if let Some(e) =
            t.encoding.as_ref().filter(|e| t.encoding_inferred && !e.categorical.is_empty())
        {
            eprintln!("{name}: {}", e.describe());
        }
        for w in &t.warnings {
            eprintln!("{name}: warning: {w}");
        }
        if t.unseen_rows > 0 {
            let cols: Vec<String> = t.unseen.iter().map(|(c, n)| format!("{c} {n}")).collect();
            eprintln!(
                "{name}: {} of {} rows hold a category never seen in training, read as (other): {}",
                t.unseen_rows,
                t.n_rows(),
                cols.join(", ")
            );
        }
        Ok(t)
    }
}

/// Training hyperparameters: a TOML file, then `--set`, then the named flags.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML file with `TrainConfig` fields (e.g. `max_epochs = 100`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one field, `key=value` in TOML syntax (repeatable), e.g. `--set margin=0.05`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Maximum joint-training epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Number of prototypes (default: chosen by silhouette).
    #[arg(long)]
    pub k: Option<usize>,
    /// Latent width.
    #[arg(long)]
    pub latent: Option<usize>,
    /// How features are prepared before min-max scaling: `schema` (each feature's `prep` in
    /// features/*.toml: logarithms of sizes, rates and times; random sequence numbers left
    /// out) or `paper` (plain min-max on every column, the paper's protocol). Default: schema.
    #[arg(long, value_enum)]
    pub prep: Option<PrepChoice>,
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl ConfigArgs {
    fn build(&self) -> anyhow::Result<TrainConfig> {
        let mut table = toml::Table::try_from(TrainConfig::default())
            .expect("the default config serialises to TOML");
        if let Some(p) = &self.config {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let file: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
            table.extend(file);
        }
        for kv in &self.set {
            let (k, v) =
                kv.split_once('=').with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
            let value: toml::Value = format!("v = {v}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.to_string()));
            table.insert(k.trim().to_string(), value);
        }
        let mut cfg: TrainConfig = table.try_into().context("training configuration")?;
        if let Some(e) = self.epochs {
            cfg.max_epochs = e;
        }
        if let Some(k) = self.k {
            cfg.n_prototypes = Some(k);
        }
        if let Some(l) = self.latent {
            cfg.latent = l;
        }
        if let Some(p) = self.prep {
            cfg.prep = p;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub table: TableArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output model file.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Fraction of the training anomalies given to the learner as labeled (the rest count as
    /// unlabeled). Default: all known anomalies.
    #[arg(long, default_value_t = 1.0)]
    pub labeled_ratio: f64,
    /// Fraction of each class held out for early stopping.
    #[arg(long, default_value_t = 0.05)]
    pub val_fraction: f64,
    /// Random seed (also the training seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Train on the CPU or on a GPU (wgpu: builds with --features wgpu; without a GPU it says
    /// why and uses the CPU).
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
}

pub fn train(a: TrainArgs, config: &crate::config::Config) -> anyhow::Result<ExitCode> {
    let table = a.table.load(None)?;
    let mut cfg = a.config.build()?;
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    let compute = device::select(a.backend);
    let trained = eval::fit_table(
        &table,
        &cfg,
        a.val_fraction,
        a.labeled_ratio,
        &compute.device,
        !a.config.quiet,
    )
    .with_context(|| format!("training on {}", a.table.table.display()))?;
    let p = &trained.prepared;
    let d = p.scaler.width();
    let (name, fingerprint) = table.layout();
    let mut art = Artifact::new(
        &trained.model,
        Layout {
            name,
            fingerprint,
            columns: table.names.clone(),
            encoding: table.encoding.clone().unwrap_or_default(),
        },
        p.scaler.clone(),
        cfg,
        trained.report.clone(),
        DataSummary {
            source: a.table.table.display().to_string(),
            unlabeled_rows: p.unlabeled.len() / d,
            labeled_anomalies: p.anomalies.len() / d,
            validation_rows: p.val_labels.len(),
        },
    );
    // The alert cut that holds the false-positive budget on the training rows.
    let budget = trained.cut(config.alert.fpr_budget, true);
    art.cut = Some(budget.floor);
    art.budget = Some(budget);
    art.profiles = trained.profiles();
    art.save(&a.output).with_context(|| format!("writing model {}", a.output.display()))?;
    let r = &trained.report;
    eprintln!(
        "trained on {} rows ({} labeled anomalies), {} features, k = {} (clustered from {}), {} joint epochs (best {}), {:.1} s -> {}",
        p.unlabeled.len() / d,
        p.anomalies.len() / d,
        d,
        r.n_prototypes,
        r.prototype_rows,
        r.joint_epochs,
        r.best_epoch,
        r.fit_seconds,
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Model file written by `train`.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub table: TableArgs,
    /// Output CSV (default: standard output).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Score with the burn model instead of the hand-written CPU path (implied by
    /// --backend wgpu).
    #[arg(long)]
    pub burn: bool,
    /// Score on the CPU or on a GPU (wgpu: builds with --features wgpu; without a GPU it says
    /// why and uses the CPU).
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
}

fn schema_choice_for(layout_name: &str) -> SchemaChoice {
    match layout_name {
        "unsw-nb15" => SchemaChoice::Unsw,
        "iot23" => SchemaChoice::Zeek,
        _ => SchemaChoice::None,
    }
}

pub fn score(mut a: ScoreArgs) -> anyhow::Result<ExitCode> {
    let art = Artifact::load(&a.model)?;
    if a.table.read.schema == SchemaChoice::Auto {
        a.table.read.schema = schema_choice_for(&art.layout.name);
    }
    // A plain table is read with the model's categories (none for a model of numbers).
    let encoding = (a.table.read.schema != SchemaChoice::Unsw
        && a.table.read.schema != SchemaChoice::Zeek
        && art.layout.name == "table")
        .then(|| art.layout.encoding.clone());
    let table = a.table.load(encoding)?;
    let (name, fp) = table.layout();
    art.check_layout(&a.model, &name, &fp)?;
    let rows: Vec<usize> = (0..table.n_rows()).collect();
    let x = art.scaler.transform(&table.values, table.width(), &rows);
    let mut range = tables::RangeCheck::default();
    range.observe(&x, art.scaler.width());
    eprintln!("{}: {}", a.table.table.display(), range.summary(&art.scaler, &table.names, 5));
    let compute = device::select(a.backend);
    let model = art.to_model(&a.model, &compute.device)?;
    let scorer = match compute.backend {
        Backend::Cpu if a.burn => Scorer::Burn { model, batch: 4096 },
        _ => Scorer::new(&model, &compute),
    };
    let started = std::time::Instant::now();
    let s: Scores = scorer.explain(&x);
    let secs = started.elapsed().as_secs_f64();
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    write_scores(&mut out, &table, &s)
        .or_else(|e| if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) })?;
    eprintln!(
        "scored {} rows in {:.3} s ({:.0} rows/s)",
        table.n_rows(),
        secs,
        table.n_rows() as f64 / secs.max(1e-9)
    );
    if table.labels.contains(&0) && table.labels.contains(&1) {
        let m = eval::metrics(&s.score, &table.labels);
        eprintln!(
            "against the table's labels: AUC-ROC {:.4}, AUC-PR {:.4}, AP {:.4}",
            m.auc_roc, m.auc_pr, m.average_precision
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_scores(out: &mut dyn Write, table: &Table, s: &Scores) -> std::io::Result<()> {
    write!(out, "row,label,score,recon_error,prototype,similarity")?;
    for j in 0..s.latent_width {
        write!(out, ",z{j}")?;
    }
    writeln!(out)?;
    for i in 0..table.n_rows() {
        write!(
            out,
            "{},{},{},{},{},{}",
            table.row_ids[i],
            table.labels[i],
            s.score[i],
            s.recon[i],
            s.prototype[i],
            s.similarity[i]
        )?;
        for v in &s.latent[i * s.latent_width..(i + 1) * s.latent_width] {
            write!(out, ",{v}")?;
        }
        writeln!(out)?;
    }
    out.flush()
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// CSV table with a header, or a Zeek conn.log(.labeled), ASCII or JSON; any of them may
    /// be gzip-compressed.
    #[arg(long, required_unless_present = "scenario")]
    pub table: Option<PathBuf>,
    #[command(flatten)]
    pub read: TableRead,
    /// Evaluate on captures instead of a table: a scenario file (scenarios/*.toml) of benign
    /// and attack captures, cut into a training and a test half; every method on the same
    /// flows, judged on the half it never saw.
    #[arg(long, conflicts_with_all = ["table", "split", "unseen_class", "ablate"])]
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub scenario_opts: super::scenario::ScenarioOpts,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Number of runs, seeds `--seed`, `--seed`+1, ...
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// First seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of training anomalies labeled (ignored with --split, which says which).
    #[arg(long, default_value_t = 0.01)]
    pub labeled_ratio: f64,
    /// Split file (columns row,split,pos,y,semi_y), e.g. ../shared/reference/splits/*.split.csv.
    #[arg(long)]
    pub split: Option<PathBuf>,
    /// Seed of the protocol's own split when no --split is given.
    #[arg(long, default_value_t = 2024)]
    pub split_seed: u64,
    /// Attack class that appears only in the test set.
    #[arg(long)]
    pub unseen_class: Option<String>,
    /// Switch off a part of the method (repeatable).
    #[arg(long, value_enum)]
    pub ablate: Vec<Ablation>,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Train on the CPU or on a GPU (wgpu: builds with --features wgpu; without a GPU it says
    /// why and uses the CPU). Test rows are scored on the CPU either way: same function.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
}

pub fn eval(a: EvalArgs, config: &crate::config::Config) -> anyhow::Result<ExitCode> {
    if let Some(file) = &a.scenario {
        return super::scenario::run(file, &a, config);
    }
    let Some(table_path) = &a.table else {
        bail!(
            "eval needs --table FILE (a table with a label column) or --scenario FILE (captures)"
        );
    };
    // Categories from the whole table, as the reference one-hot encodes its tables before
    // splitting (and judges constant columns on the whole table, below).
    let table = a.read.load(table_path, None)?;
    let mut cfg = a.config.build()?;
    cfg.ablate.extend(a.ablate.iter().copied());
    let split = match (&a.split, &a.unseen_class) {
        (Some(_), Some(_)) => bail!(
            "--split and --unseen-class are exclusive: a split file already fixes the test rows"
        ),
        (Some(p), None) => eval::read_split(p, &table.row_ids, &table.labels)?,
        (None, Some(c)) => {
            let classes = table
                .classes
                .as_ref()
                .context("--unseen-class needs a class column (--class-column)")?;
            let unseen: Vec<bool> = classes.iter().map(|x| x == c).collect();
            if !unseen.contains(&true) {
                bail!("class {c:?} does not occur in {}", table_path.display());
            }
            eval::protocol_split(&table.labels, a.split_seed, a.labeled_ratio, Some(&unseen))
        }
        (None, None) => eval::protocol_split(&table.labels, a.split_seed, a.labeled_ratio, None),
    };
    // As the reference: constant columns are judged on the whole table.
    let all: Vec<usize> = (0..table.n_rows()).collect();
    let p = eval::prepare(&table, &split, &all, cfg.prep);
    eprintln!(
        "{}: {} rows, {} features, train {} ({} labeled anomalies), val {}, test {} ({} anomalies)",
        table_path.display(),
        table.n_rows(),
        p.scaler.width(),
        split.train.len(),
        p.anomalies.len() / p.scaler.width(),
        split.val.len(),
        split.test.len(),
        p.test_labels.iter().filter(|&&l| l == 1).count()
    );
    let dev = device::select(a.backend).device;
    let mut results = Vec::new();
    for r in 0..a.runs {
        let mut c = cfg.clone();
        c.seed = a.seed + r as u64;
        let res = eval::run_once(&p, &c, &dev, !a.config.quiet)?;
        eprintln!(
            "seed {}: AUC-PR {:.4}  AUC-ROC {:.4}  AP {:.4}  k {}  epochs {}  fit {:.1} s (pretrain {:.1}, prototypes {:.1}, joint {:.1})  score {:.3} s",
            res.seed,
            res.metrics.auc_pr,
            res.metrics.auc_roc,
            res.metrics.average_precision,
            res.n_prototypes,
            res.joint_epochs,
            res.fit_seconds,
            res.stage_seconds[0],
            res.stage_seconds[1],
            res.stage_seconds[2],
            res.score_seconds
        );
        results.push(res);
    }
    let col =
        |f: &dyn Fn(&eval::RunResult) -> f64| mean_std(&results.iter().map(f).collect::<Vec<_>>());
    let pr = col(&|r| r.metrics.auc_pr);
    let roc = col(&|r| r.metrics.auc_roc);
    let ap = col(&|r| r.metrics.average_precision);
    let fit = col(&|r| r.fit_seconds);
    let sc = col(&|r| r.score_seconds);
    println!(
        "{}: AUC-PR {:.3}+-{:.3}  AUC-ROC {:.3}+-{:.3}  AP {:.3}+-{:.3}  fit {:.1} s  score {:.3} s  ({} runs{})",
        table_path.display(),
        pr.0,
        pr.1,
        roc.0,
        roc.1,
        ap.0,
        ap.1,
        fit.0,
        sc.0,
        results.len(),
        if cfg.ablate.is_empty() { String::new() } else { format!(", ablate {:?}", cfg.ablate) }
    );
    if let Some(j) = &a.json {
        let line = serde_json::json!({
            "table": table_path.display().to_string(),
            "ablate": cfg.ablate,
            "runs": results,
            "aucpr_mean": pr.0, "aucpr_std": pr.1,
            "aucroc_mean": roc.0, "aucroc_std": roc.1,
            "ap_mean": ap.0, "ap_std": ap.1,
            "fit_s_mean": fit.0, "score_s_mean": sc.0,
        });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(j)
            .with_context(|| format!("opening {}", j.display()))?;
        writeln!(f, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}
