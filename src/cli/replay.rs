//! `mnpflow replay`: capture files through the streaming detector, as if live.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::alert::{RuleSet, Threshold, ThresholdCalibrator};
use crate::capture::Timestamp;
use crate::capture::source::FileSource;
use crate::config::Config;
use crate::features::{self, SchemaKind};
use crate::feedback;
use crate::feedback::log::RecordLog;
use crate::feedback::{LabelStore, Registry};
use crate::kafka::{AlertFormat, EventIds};
use crate::model::artifact::Artifact;
use crate::model::device::{self, Backend, Compute};
use crate::model::eval;
use crate::model::mnpwad::Mnpwad;
use crate::model::slot::ModelSlot;
use crate::output::{Format, RecordWriter};
use crate::pipeline::bootstrap::{self, Truth};
use crate::pipeline::learn::LearnSetup;
use crate::pipeline::metrics::{self, Metrics};
use crate::pipeline::sensor::{self, WebSetup};
use crate::pipeline::stream::{
    self, Backpressure, Input, Outputs, Scoring, Setup, Speed, StreamReport,
};
use crate::pipeline::web_server;

/// Options shared by `replay` and `live`.
#[derive(Debug, Args, Clone)]
pub struct DetectArgs {
    /// Model file (`mnpflow train`, or a model `replay` trained before).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Folder for alerts.jsonl (and flows.*).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub output_dir: PathBuf,
    /// State folder (models trained here). Default: $MNPFLOW_DATA, else ./mnpflow-data.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Flow workers (default from [stream] workers, 2).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Alert at a score (0.9) or at a target alert rate over recent traffic (2%).
    #[arg(long, value_name = "SCORE|RATE%")]
    pub threshold: Option<String>,
    /// Also write every scored flow: flows.csv, flows.jsonl or flows.log (Zeek).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub flows: Option<Format>,
    /// Suppression rules folder (default: the `rules` key of the `[alert]` section, else `rules`).
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Back-pressure when a stage falls behind: block (replay default) or drop (live default).
    #[arg(long, value_enum)]
    pub backpressure: Option<Backpressure>,
    /// Print a one-line status to standard error every this many seconds.
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<f64>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Run the learning loop: retrain on recent traffic and labels, promote a better model
    /// and move to it while running (also `[learn] enabled = true`).
    #[arg(long)]
    pub learn: bool,
    /// Serve the analysts' page and JSON API on this address (e.g. 127.0.0.1:8080). Every
    /// request needs a token, on loopback too: unless one is given, one is generated and the
    /// page's URL with it is printed at start-up (and kept in the data directory's
    /// feedback.url while the sensor runs). After a replay the page stays up until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    pub feedback: Option<std::net::SocketAddr>,
    /// The page's token: SECRET, or NAME:SECRET to sign its labels with NAME; several by
    /// repeating the option or with commas. Default: [feedback] token, else
    /// $MNPFLOW_FEEDBACK_TOKEN, else one generated at start-up.
    #[arg(long, value_name = "[NAME:]SECRET", value_delimiter = ',', requires = "feedback")]
    pub feedback_token: Vec<String>,
    /// Serve the page without a token, on a loopback address only (refused on any other):
    /// every local user and program can then label. Host and Origin checks still apply.
    #[arg(long, requires = "feedback", conflicts_with = "feedback_token")]
    pub feedback_no_token: bool,
    /// Where the scorer runs: cpu (the hand-written forward pass) or wgpu (burn on a GPU;
    /// builds with --features wgpu; without a GPU it says why and uses the CPU).
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// Publish alerts to Kafka: bootstrap brokers, host:port separated by commas (also
    /// `[kafka] brokers`). Builds with --features kafka. Events not yet acknowledged wait in
    /// a spool in the data directory, sent when the broker is back.
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// This sensor's name in its events (`sensor_id`; ECS `observer.name`). Default:
    /// `[kafka] sensor_id`, else the host name when publishing to Kafka.
    #[arg(long, value_name = "ID")]
    pub sensor_id: Option<String>,
    /// Field names of alerts, in alerts.jsonl and on Kafka: eve (Suricata) or ecs (Elastic
    /// Common Schema).
    #[arg(long, value_enum, default_value_t = AlertFormat::Eve)]
    pub alert_format: AlertFormat,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng), read in order as one stream. Default: the bundled
    /// capture, with its truth file.
    #[arg(value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// Replay pace: max, or the capture's timing times a factor (1x, 10x, 0.5x).
    #[arg(long, default_value = "max")]
    pub speed: String,
    /// Truth file (label,kind,proto,orig_h,orig_p,resp_h,resp_p,...): labels the attacks for
    /// training when no --model is given, and scores are evaluated against it.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Feature vocabulary when training (a given model brings its own).
    #[arg(long, value_enum, default_value_t = SchemaKind::Unsw)]
    pub schema: SchemaKind,
    #[command(flatten)]
    pub detect: DetectArgs,
}

impl ReplayArgs {
    /// What `mnpflow` with no command runs: the bundled capture and its truth file.
    pub fn bundled_default() -> anyhow::Result<ReplayArgs> {
        let capture = super::bundled_capture()?;
        let truth = capture.with_extension("truth.csv");
        Ok(ReplayArgs {
            captures: vec![capture],
            speed: "max".into(),
            truth: truth.exists().then_some(truth),
            schema: SchemaKind::Unsw,
            detect: DetectArgs {
                model: None,
                output_dir: ".".into(),
                data_dir: None,
                workers: None,
                threshold: None,
                flows: None,
                rules: None,
                backpressure: None,
                stats_interval: None,
                metrics: None,
                learn: false,
                feedback: None,
                feedback_token: Vec::new(),
                feedback_no_token: false,
                backend: Backend::Cpu,
                kafka: None,
                sensor_id: None,
                alert_format: AlertFormat::Eve,
            },
        })
    }
}

fn data_dir(arg: &Option<PathBuf>) -> PathBuf {
    super::labels::DataDirArg { data_dir: arg.clone() }.resolve()
}

fn schema_of_layout(name: &str) -> Option<SchemaKind> {
    [SchemaKind::Unsw, SchemaKind::Zeek].into_iter().find(|k| k.schema().name == name)
}

/// A model loaded and ready, with the schema it reads.
pub struct LoadedModel {
    pub artifact: Artifact,
    pub model: Mnpwad,
    /// The model file's bytes (they name its version).
    pub bytes: Vec<u8>,
    /// The threshold that comes with the model (its false-positive budget, or the registry's
    /// cut).
    pub suggested: Option<Threshold>,
    pub schema: SchemaKind,
    pub path: PathBuf,
    /// Its version in the data directory's registry, when it is registered.
    pub registry_version: Option<u64>,
}

impl LoadedModel {
    /// The fixed cut that comes with the model (a budget's floor), if any.
    pub(super) fn cut(&self) -> Option<f32> {
        match self.suggested {
            Some(Threshold::Score(c)) => Some(c),
            Some(Threshold::Budget(b)) => Some(b.floor),
            _ => None,
        }
    }

    /// Its scorer on `compute`.
    pub fn scoring(&self, compute: &Compute) -> Scoring {
        Scoring::on(
            compute,
            &self.artifact,
            &self.model,
            &self.bytes,
            self.registry_version,
            self.cut(),
        )
    }
}

pub fn load_model(path: &Path) -> anyhow::Result<LoadedModel> {
    let art = Artifact::load(path)?;
    let Some(kind) = schema_of_layout(&art.layout.name) else {
        bail!(
            "{}: the model reads {:?} rows, not flow features of a schema this build extracts (unsw-nb15, iot23)",
            path.display(),
            art.layout.name
        );
    };
    let schema = kind.schema();
    art.check_layout(path, &schema.name, &schema.fingerprint())?;
    let model = art.to_model(path, &burn::tensor::Device::flex())?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let suggested = art.budget.map(Threshold::Budget).or(art.cut.map(Threshold::Score));
    Ok(LoadedModel {
        artifact: art,
        model,
        bytes,
        schema: kind,
        suggested,
        path: path.to_owned(),
        registry_version: None,
    })
}

/// The registry's current model of a data directory, if there is one.
pub fn registry_model(data_dir: &Path) -> anyhow::Result<Option<LoadedModel>> {
    let reg = Registry::open(data_dir)?;
    let Some(e) = reg.current() else { return Ok(None) };
    let path = reg.model_path(e.version);
    let mut m = load_model(&path)
        .with_context(|| format!("loading the registry's current model v{}", e.version))?;
    m.registry_version = Some(e.version);
    // A model's own budget first; the registry's cut is the rate-matched one of a model the
    // learning loop trained (those carry no budget).
    if !matches!(m.suggested, Some(Threshold::Budget(_))) {
        m.suggested = e.cut.map(Threshold::Score).or(m.suggested);
    }
    Ok(Some(m))
}

/// Makes sure the model in service is in the registry (the learning loop needs a parent to
/// promote from and a version to roll back to): the current entry when its file is the same,
/// else a new version.
pub(super) fn register(loaded: &mut LoadedModel, data_dir: &Path) -> anyhow::Result<()> {
    if loaded.registry_version.is_some() {
        return Ok(());
    }
    let mut reg = Registry::open(data_dir)?;
    if let Some(e) = reg.current()
        && std::fs::read(reg.model_path(e.version)).is_ok_and(|b| b == loaded.bytes)
    {
        loaded.registry_version = Some(e.version);
        return Ok(());
    }
    let e = reg.promote(
        &loaded.path,
        format!("model in service at start: {}", loaded.path.display()),
        Vec::new(),
        loaded.cut(),
        Timestamp::wall_now().as_secs_f64(),
    )?;
    eprintln!(
        "learn     registered {} as model v{} (the learning loop's starting point)",
        loaded.path.display(),
        e.version
    );
    loaded.registry_version = Some(e.version);
    Ok(())
}

/// Opens the outputs in `dir`.
/// The threshold in force: the command line's, the configuration's, the model's, else 2%.
pub fn threshold_of(
    d: &DetectArgs,
    config: &Config,
    loaded: &LoadedModel,
) -> anyhow::Result<Threshold> {
    Ok(match d.threshold.as_deref().or(config.alert.threshold.as_deref()) {
        Some(t) => t.parse()?,
        None => loaded.suggested.unwrap_or(crate::alert::DEFAULT_RATE.parse()?),
    })
}

pub fn open_outputs(
    d: &DetectArgs,
    config: &Config,
    extractor: &dyn features::RecordExtractor,
    threshold: Threshold,
    keep_scores: bool,
) -> anyhow::Result<Outputs> {
    std::fs::create_dir_all(&d.output_dir)
        .with_context(|| format!("creating {}", d.output_dir.display()))?;
    let create = |name: &str| -> anyhow::Result<Box<dyn Write + Send>> {
        let p = d.output_dir.join(name);
        Ok(Box::new(BufWriter::new(
            File::create(&p).with_context(|| format!("creating {}", p.display()))?,
        )))
    };
    let flows = match d.flows {
        None => None,
        Some(f) => {
            let name = match f {
                Format::Csv => "flows.csv",
                Format::Jsonl => "flows.jsonl",
                Format::Zeek => "flows.log",
            };
            Some(
                RecordWriter::new(
                    create(name)?,
                    f,
                    &stream::scored_columns(extractor),
                    "mnpflow_flows",
                )
                .context("writing flows header")?,
            )
        }
    };
    let rules = RuleSet::load_dir(&rules_dir(d, config))?;
    let dir = data_dir(&d.data_dir);
    let log = RecordLog::open_for_append(&dir.join("flows.log"))
        .with_context(|| format!("opening the flow record in {}", dir.display()))?;
    // Indicator rules label flows (also those of a rules folder reloaded while running).
    let weak_labels = Some(
        LabelStore::open(&dir)
            .with_context(|| format!("opening the label store in {}", dir.display()))?,
    );
    Ok(Outputs {
        alerts: create("alerts.jsonl")?,
        flows,
        rules,
        threshold: ThresholdCalibrator::new(threshold, config.alert.calibration_window),
        keep_scores,
        flow_log: Some((log, extractor.schema().fingerprint())),
        flow_log_max_bytes: config.feedback.flow_record_bytes,
        weak_labels,
        threshold_explicit: d.threshold.is_some() || config.alert.threshold.is_some(),
        publish: Default::default(),
    })
}

fn rules_dir(d: &DetectArgs, config: &Config) -> PathBuf {
    d.rules.clone().unwrap_or_else(|| config.alert.rules.clone())
}

/// The page's tokens: `--feedback-token`, else `[feedback] token`, else
/// `$MNPFLOW_FEEDBACK_TOKEN` (each a comma-separated list); none: one is generated.
fn feedback_tokens(d: &DetectArgs, config: &Config) -> Vec<String> {
    let flags: Vec<String> =
        d.feedback_token.iter().flat_map(|t| feedback::access::split_tokens(t)).collect();
    if !flags.is_empty() {
        return flags;
    }
    let configured =
        config.feedback.token.as_deref().map(feedback::access::split_tokens).unwrap_or_default();
    if !configured.is_empty() {
        return configured;
    }
    std::env::var("MNPFLOW_FEEDBACK_TOKEN")
        .map(|v| feedback::access::split_tokens(&v))
        .unwrap_or_default()
}

/// Binds the analysts' page, prints how to open it once, and keeps its URL in the data
/// directory while the sensor runs.
fn open_page(
    addr: std::net::SocketAddr,
    d: &DetectArgs,
    config: &Config,
    dir: &Path,
    stay: bool,
) -> anyhow::Result<WebSetup> {
    let page = web_server::PageAccess {
        tokens: feedback_tokens(d, config),
        no_token: d.feedback_no_token,
        hosts: config.feedback.hosts.clone(),
    };
    let (server, access) = web_server::bind(addr, &page)?;
    let url = access.page_url();
    let url_file = web_server::UrlFile::write(dir, &url)?;
    let kept = url_file.path().display();
    if !access.needs_token() {
        eprintln!(
            "feedback  open {url} (no token, --feedback-no-token: any program or user of this machine can label)"
        );
    } else if access.generated() {
        eprintln!(
            "feedback  open {url} (token generated for this run; the URL is in {kept} while the sensor runs)"
        );
    } else {
        // A token the user gave is not printed (logs outlive terminals); its file is private.
        let base = url.split('?').next().unwrap_or(&url);
        let named: Vec<&str> = access
            .analysts()
            .into_iter()
            .filter(|n| *n != feedback::access::DEFAULT_ANALYST)
            .collect();
        let whose = if named.is_empty() {
            "with the token you gave".to_string()
        } else {
            format!("with a token of {}", named.join(", "))
        };
        eprintln!(
            "feedback  open {base}?token=... {whose} (the first token's URL is in {kept} while the sensor runs)"
        );
    }
    Ok(WebSetup {
        server,
        access,
        data_dir: dir.to_owned(),
        url_file: Some(url_file),
        stay,
        label_sink: None,
    })
}

/// Runs the pipeline over a source and prints the summary; shared by `replay` and `live`.
#[allow(clippy::too_many_arguments)] // the command's parsed options as `replay` and `live` each hold them
pub fn detect(
    input: Input<'_>,
    d: &DetectArgs,
    config: &Config,
    mut loaded: LoadedModel,
    speed: Speed,
    default_backpressure: Backpressure,
    keep_scores: bool,
    stay_after_end: bool,
) -> anyhow::Result<StreamReport> {
    let extractor = features::extractor(loaded.schema, config.flow.community_id_seed);
    let layout_names = extractor.schema().encoded_names();
    #[cfg(feature = "kafka")]
    let schema_id = (extractor.schema().name.clone(), extractor.schema().fingerprint());
    let threshold = threshold_of(d, config, &loaded)?;
    let dir = data_dir(&d.data_dir);
    let mut learn_cfg = config.learn.clone();
    learn_cfg.enabled |= d.learn;
    if learn_cfg.enabled {
        register(&mut loaded, &dir)?;
    }
    // Bind the page before anything starts, so a bad address or token is the first thing
    // the user hears.
    let mut web = match d.feedback {
        Some(addr) => Some(open_page(addr, d, config, &dir, stay_after_end)?),
        None => None,
    };
    let mut outputs = open_outputs(d, config, extractor.as_ref(), threshold, keep_scores)?;
    // Kafka's counters now, the pipeline's clock (Metrics) when the pipeline starts below.
    let kafka_counters = std::sync::Arc::new(crate::kafka::KafkaCounters::default());
    let brokers = d.kafka.clone().or_else(|| config.kafka.brokers.clone());
    let brokers = brokers.filter(|b| !b.trim().is_empty());
    let mut sensor_id = d.sensor_id.clone().or_else(|| config.kafka.sensor_id.clone());
    if brokers.is_some() && sensor_id.is_none() {
        sensor_id = Some(crate::kafka::default_sensor_id());
    }
    outputs.publish.format = d.alert_format;
    if brokers.is_some() || sensor_id.is_some() {
        outputs.publish.ids = Some(EventIds::new());
    }
    outputs.publish.sensor_id = sensor_id.clone();
    let labels_stop = std::sync::atomic::AtomicBool::new(false);
    let kafka_thread = match &brokers {
        Some(b) => {
            let (sink, t) =
                start_kafka(b, config, &dir, &kafka_counters, sensor_id.as_deref().unwrap_or(""))?;
            outputs.publish.flows = config
                .kafka
                .flows_topic
                .clone()
                .map(|t| (t, stream::scored_columns(extractor.as_ref())));
            // The page's labels go to the labels topic, through the same queue and spool.
            if let Some(w) = web.as_mut() {
                w.label_sink = Some(sink.clone());
            }
            outputs.publish.sink = Some(sink);
            Some(t)
        }
        None => None,
    };
    let mut stream_cfg = config.stream.clone();
    if let Some(w) = d.workers {
        if w == 0 {
            bail!("--workers must be at least 1");
        }
        stream_cfg.workers = w;
    }
    if let Some(b) = d.backpressure {
        stream_cfg.backpressure = Some(b);
    }
    let metrics_listener = match d.metrics {
        Some(addr) => {
            Some(metrics::bind(addr).with_context(|| format!("serving metrics on {addr}"))?)
        }
        None => None,
    };
    let stats_interval = match d.stats_interval {
        Some(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("--stats-interval {s}: expected a positive number of seconds"),
        None => None,
    };
    crate::pipeline::catch_interrupt();
    let mut m = Metrics::new();
    m.kafka = kafka_counters;
    let flow_cfg = config.flow.for_cut(loaded.schema.cut_policy());
    let setup = Setup {
        stream: &stream_cfg,
        flow: &flow_cfg,
        speed,
        default_backpressure,
        stats_interval,
        metrics_listener,
    };
    let compute = device::select(d.backend);
    let slot = ModelSlot::new(loaded.scoring(&compute));
    let first_version = slot.load().model.version.clone();
    // The loop's thread also follows the registry (rollback) and the rules folder.
    let learn = LearnSetup {
        cfg: learn_cfg,
        data_dir: dir.clone(),
        rules_dir: Some(rules_dir(d, config)),
        artifact: loaded.artifact.clone(),
        registry_version: loaded.registry_version,
        compute,
        on_promote: publish_promoted(brokers.as_deref(), config, &dir, sensor_id.as_deref()),
        backlog: Vec::new(),
    };
    let report = std::thread::scope(|s| {
        #[cfg(not(feature = "kafka"))]
        let _ = s;
        // Labels from the labels topic into the store, while the sensor runs.
        #[cfg(feature = "kafka")]
        let labels_in = match &brokers {
            Some(b) => {
                let li = crate::kafka::labels::LabelsIn::new(
                    b,
                    &config.kafka,
                    sensor_id.as_deref().unwrap_or(""),
                    &dir,
                )
                .map_err(anyhow::Error::msg)?;
                let (stop, k) = (&labels_stop, &m.kafka);
                Some(
                    std::thread::Builder::new()
                        .name("mnpflow-labels-in".into())
                        .spawn_scoped(s, move || li.run(stop, &k.labels_in, &k.labels_refused))
                        .context("spawning the labels consumer")?,
                )
            }
            None => None,
        };
        // Models from the models topic into the registry (the learning loop's thread follows
        // the registry and moves the scorer).
        #[cfg(feature = "kafka")]
        let models_in = match &brokers {
            Some(b) => {
                let mi = crate::kafka::models::ModelsIn::new(
                    b,
                    &config.kafka,
                    sensor_id.as_deref().unwrap_or(""),
                    &dir,
                    schema_id.clone(),
                )
                .map_err(anyhow::Error::msg)?;
                let (stop, k) = (&labels_stop, &m.kafka);
                Some(
                    std::thread::Builder::new()
                        .name("mnpflow-models-in".into())
                        .spawn_scoped(s, move || mi.run(stop, &k.models_in, &k.models_refused))
                        .context("spawning the models consumer")?,
                )
            }
            None => None,
        };
        let report = sensor::run(
            input,
            setup,
            extractor,
            &slot,
            outputs,
            Some(learn),
            web,
            &crate::pipeline::INTERRUPTED,
            &m,
        );
        // The pipeline's figures as of its end: before the consumers below are stopped and
        // the Kafka producer flushes (waits for the broker that are not the sensor's time).
        let summary = m.summary();
        labels_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        #[cfg(feature = "kafka")]
        for t in [labels_in, models_in].into_iter().flatten() {
            let _ = t.join();
        }
        report.map(|r| (r, summary))
    });
    // The writer has ended (its end of the Kafka queue with it): the producer thread
    // flushes, then reports.
    if let Some(t) = kafka_thread {
        let note = t.join().unwrap_or_else(|_| Some("the Kafka producer thread panicked".into()));
        eprintln!("{}", m.kafka.summary());
        if let Some(n) = note {
            eprintln!("warning   kafka: {n}");
        }
    }
    let (report, summary) = report?;
    eprint!("{summary}");
    let f = &report.flow;
    eprintln!(
        "flow      {} workers, flows per worker {:?}; {} packets older than the clock, {} clock resets, {} orphan fragments",
        stream_cfg.workers.max(1),
        report.worker_flows,
        f.time_backwards,
        f.clock_resets,
        f.orphan_fragments
    );
    let o = &report.order;
    eprintln!(
        "order     flows released in window order (by last time), {} held at peak{}",
        o.peak_held,
        if o.released_early + o.late > 0 {
            format!(
                "; {} released before their turn ([flow] max_held_records reached) and {} behind one already released: their ct_* counts may differ from `mnpflow flows`",
                o.released_early, o.late
            )
        } else {
            String::new()
        }
    );
    for (r, hits) in report.rules.rules.iter().zip(&report.rules.hits) {
        eprintln!("rule      {} ({}): {} suppressed", r.origin, r.reason, hits);
    }
    for (r, hits) in report.rules.indicators.iter().zip(&report.rules.indicator_hits) {
        eprintln!("indicator {} ({}): {} flows alerted and labeled", r.origin, r.reason, hits);
    }
    let last_version = slot.load().model.version.clone();
    eprintln!(
        "output    {} (model {}{}, threshold {}, last cut {:.4})",
        d.output_dir.join("alerts.jsonl").display(),
        first_version,
        if last_version != first_version {
            format!(", then {last_version}")
        } else {
            String::new()
        },
        threshold,
        report.last_cut
    );
    if report.range.rows > 0 {
        eprintln!("ranges    {}", report.range.summary(&slot.load().scaler, &layout_names, 5));
    }
    for w in &report.warnings {
        eprintln!("warning   {w}");
    }
    if report.interrupted {
        eprintln!(
            "interrupted: stopped reading after {} packets; every open flow was flushed and scored",
            m.packets_read.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    if let Some(e) = &report.write_error {
        bail!("{e}");
    }
    Ok(report)
}

/// What the learning loop does with a model it promoted: with Kafka (and `[kafka]
/// publish_promoted`), it goes to the models topic for every sensor of the schema.
pub(super) fn publish_promoted(
    brokers: Option<&str>,
    config: &Config,
    data_dir: &Path,
    sensor_id: Option<&str>,
) -> Option<crate::pipeline::learn::OnPromote> {
    #[cfg(feature = "kafka")]
    if let Some(b) = brokers
        && config.kafka.publish_promoted
    {
        return Some(models_publisher(b, config, data_dir, sensor_id.unwrap_or_default()));
    }
    let _ = (brokers, config, data_dir, sensor_id);
    None
}

/// Puts a version of `data_dir`'s registry on the models topic, as `from`; says where.
#[cfg(feature = "kafka")]
pub(super) fn models_publisher(
    brokers: &str,
    config: &Config,
    data_dir: &Path,
    from: &str,
) -> crate::pipeline::learn::OnPromote {
    let (b, k, dir, from) =
        (brokers.to_owned(), config.kafka.clone(), data_dir.to_owned(), from.to_owned());
    Box::new(move |version| {
        crate::kafka::models::publish(&b, &k, &dir, version, &from, Duration::from_secs(10))
            .map(|_| format!("the models topic {} on {b}", k.models_topic))
    })
}

/// Starts the Kafka producer thread for `brokers`: the writer's end of its queue, and the
/// thread, which ends once that end is dropped and the spool is flushed (or
/// `[kafka] flush_seconds` passed), with a note for stderr.
#[cfg(feature = "kafka")]
fn start_kafka(
    brokers: &str,
    config: &Config,
    data_dir: &Path,
    counters: &std::sync::Arc<crate::kafka::KafkaCounters>,
    sensor_id: &str,
) -> anyhow::Result<(crate::kafka::EventSink, std::thread::JoinHandle<Option<String>>)> {
    use crate::kafka::producer::KafkaOut;
    let k = &config.kafka;
    let spool_dir = data_dir.join("kafka-spool");
    let out = KafkaOut::new(brokers, k, &spool_dir, counters.clone())?;
    let (sink, rx) = crate::kafka::EventSink::new(k.queue_events, k, counters.clone());
    let left = out.left_over();
    eprintln!(
        "kafka     alerts to {}{} on {brokers} as sensor {sensor_id:?}; spool {}{}",
        k.alerts_topic,
        k.flows_topic.as_deref().map(|t| format!(", scored flows to {t}")).unwrap_or_default(),
        spool_dir.display(),
        if left > 0 {
            format!(" ({left} events left by an earlier run: sent first)")
        } else {
            String::new()
        }
    );
    let t = std::thread::Builder::new()
        .name("mnpflow-kafka".into())
        .spawn(move || out.run(rx))
        .context("spawning the Kafka producer thread")?;
    Ok((sink, t))
}

#[cfg(not(feature = "kafka"))]
fn start_kafka(
    brokers: &str,
    _: &Config,
    _: &Path,
    _: &std::sync::Arc<crate::kafka::KafkaCounters>,
    _: &str,
) -> anyhow::Result<(crate::kafka::EventSink, std::thread::JoinHandle<Option<String>>)> {
    Err(no_kafka(brokers))
}

#[cfg(not(feature = "kafka"))]
fn no_kafka(brokers: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "Kafka ({brokers}): this mnpflow was built without Kafka support; build it with `cargo build --release --features kafka` (needs `apt-get install build-essential libssl-dev pkg-config`)"
    )
}

/// Refuses Kafka before any work when this build has no Kafka client.
pub fn check_kafka(d: &DetectArgs, config: &Config) -> anyhow::Result<()> {
    #[cfg(not(feature = "kafka"))]
    if let Some(b) = d.kafka.as_ref().or(config.kafka.brokers.as_ref()) {
        return Err(no_kafka(b));
    }
    let _ = (d, config);
    Ok(())
}

/// Saves a model the sensor just trained as `DATA/models/STEM.mnp`, says what it is, and loads
/// it back (the file carries its threshold).
pub fn save_trained(
    b: &bootstrap::Bootstrapped,
    data_dir: &Path,
    stem: &str,
    config: &Config,
) -> anyhow::Result<LoadedModel> {
    let dir = data_dir.join("models");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{stem}.mnp"));
    b.artifact.save(&path)?;
    eprintln!(
        "trained on {} flows ({} labeled attacks) in {:.1} s -> {} (reuse with --model); alert cut {:.4}: at most {}% of the normal-looking flows alert",
        b.flows,
        b.anomalies,
        b.elapsed.as_secs_f64(),
        path.display(),
        b.cut,
        config.alert.fpr_budget * 100.0
    );
    if b.cold_start {
        eprintln!(
            "cold start: no labeled attack, so the model learned this traffic against {} attacks of mnpflow's traffic generator (scan, flood, brute force, beacon, exfiltration); \
             label alerts (mnpflow label, --feedback) and run with --learn to move to the weakly supervised model",
            b.library
        );
    }
    load_model(&path)
}

pub fn run(args: ReplayArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let (captures, truth_path) = if args.captures.is_empty() {
        let d = ReplayArgs::bundled_default()?;
        (d.captures, args.truth.clone().or(d.truth))
    } else {
        (args.captures.clone(), args.truth.clone())
    };
    let speed: Speed = args.speed.parse().map_err(anyhow::Error::msg)?;
    // Check what can be checked before the training run.
    check_kafka(&args.detect, config)?;
    if let Some(t) = &args.detect.threshold {
        t.parse::<crate::alert::Threshold>()?;
    }
    let truth = match &truth_path {
        Some(p) => Some(Truth::read(p)?),
        None => None,
    };
    // Open the captures first: a missing file is reported before any training.
    let mut source = FileSource::open(&captures)?;
    let registered = match &args.detect.model {
        Some(_) => None,
        None => registry_model(&data_dir(&args.detect.data_dir))?,
    };
    let loaded = match (&args.detect.model, registered) {
        (Some(p), _) => load_model(p).with_context(|| format!("loading model {}", p.display()))?,
        (None, Some(m)) => {
            eprintln!(
                "no --model: using the registry's current model v{} ({})",
                m.registry_version.unwrap_or(0),
                m.path.display()
            );
            m
        }
        (None, None) => {
            eprintln!(
                "no --model: training one on the capture's own flows{}",
                if truth.is_some() { " and its truth file" } else { "" }
            );
            let b = bootstrap::train_on_captures(
                &captures,
                &config.flow,
                args.schema,
                truth.as_ref(),
                &config.bootstrap,
                config.alert.fpr_budget,
                false,
            )?;
            let stem = captures[0]
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "capture".into());
            save_trained(&b, &data_dir(&args.detect.data_dir), &stem, config)?
        }
    };
    let report = detect(
        Input::Shared(&mut source),
        &args.detect,
        config,
        loaded,
        speed,
        Backpressure::Block,
        truth.is_some(),
        true,
    )?;
    if let Some(t) = &truth {
        let labels: Vec<u8> = report.scored.iter().map(|s| t.is_attack(&s.rec) as u8).collect();
        let scores: Vec<f32> = report.scored.iter().map(|s| s.score).collect();
        if labels.contains(&0) && labels.contains(&1) {
            let mm = eval::metrics(&scores, &labels);
            let alerted = report.scored.iter().filter(|s| s.alerted).count();
            let hits =
                report.scored.iter().zip(&labels).filter(|(s, l)| s.alerted && **l == 1).count();
            let attacks = labels.iter().filter(|&&l| l == 1).count();
            eprintln!(
                "truth     {} flows, {} attacks: AUC-PR {:.4}, AUC-ROC {:.4}; alerts {} of which {} attacks (precision {:.3}, recall {:.3})",
                labels.len(),
                attacks,
                mm.auc_pr,
                mm.auc_roc,
                alerted,
                hits,
                hits as f64 / alerted.max(1) as f64,
                hits as f64 / attacks.max(1) as f64
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
