//! The learning loop's thread, beside the stream: it samples scored traffic into the
//! reservoir, retrains when there is something new to
//! learn from, promotes a candidate that passes the rule of [`crate::feedback::retrain`], and
//! moves the scorer to it through the [`ModelSlot`]. It also follows the data directory:
//! a `mnpflow models rollback` (or a promotion) from another process moves the scorer to
//! the registry's current model, and an edited `rules/` folder is reloaded (a refused file
//! keeps the rules in force and says why).
//!
//! Scoring never waits on it: the writer offers samples with `try_send`, and training runs on
//! a pool of `[learn] threads` cores while the stream goes on with the current model.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use burn::tensor::Device;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::json;

use super::metrics::Metrics;
use super::stream::{Sample, Scoring};
use crate::alert::RuleSet;
use crate::capture::Timestamp;
use crate::feedback::retrain::{Current, RetrainError, RetrainRequest, retrain};
use crate::feedback::{Label, LabelStore, LearnConfig, Registry, Reservoir};
use crate::model::artifact::Artifact;
use crate::model::denormal;
use crate::model::device::Compute;
use crate::model::mnpwad::Mnpwad;
use crate::model::slot::ModelSlot;

/// How often the data directory and the rules folder are looked at.
const POLL: Duration = Duration::from_millis(500);

/// What the loop starts from.
pub struct LearnSetup {
    pub cfg: LearnConfig,
    pub data_dir: PathBuf,
    /// Watched and reloaded when its files change.
    pub rules_dir: Option<PathBuf>,
    /// The model in service, and its registry version when it has one (only then does the
    /// loop follow the registry).
    pub artifact: Artifact,
    pub registry_version: Option<u64>,
    /// Where the scorer runs (`--backend`): a model the loop moves the scorer to is scored
    /// there too. Training itself stays on the CPU, beside the scorer.
    pub compute: Compute,
    /// Told each version the loop promotes, once it is registered: with `--kafka` it puts the
    /// model on the models topic for every other sensor. Returns where it went, or why not.
    pub on_promote: Option<OnPromote>,
    /// Flows read before the loop started, offered to its reservoir first (`mnpflow learn`'s
    /// warm-up: nothing it read is lost to the next retraining).
    pub backlog: Vec<Sample>,
}

/// See [`LearnSetup::on_promote`].
pub type OnPromote = Box<dyn Fn(u64) -> Result<String, String> + Send>;

/// The model the loop believes is in service.
struct InService {
    artifact: Artifact,
    model: Mnpwad,
    version: Option<u64>,
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// What identifies the state of a rules folder: its `*.toml` files with size and time.
fn rules_stamp(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let len = m.as_ref().map(|m| m.len()).unwrap_or(0);
            (p, len, m.and_then(|m| m.modified().ok()))
        })
        .collect();
    v.sort();
    v
}

struct Loop<'a> {
    cfg: LearnConfig,
    dir: PathBuf,
    slot: &'a ModelSlot<Scoring>,
    metrics: &'a Metrics,
    compute: Compute,
    current: InService,
    reservoir: Reservoir,
    labels: Vec<Label>,
    labels_len: u64,
    labels_at_turn: usize,
    registry_len: u64,
    last_turn: Instant,
    last_refusal: Option<String>,
    pool: Option<rayon::ThreadPool>,
    journal: Option<std::fs::File>,
    on_promote: Option<OnPromote>,
}

impl Loop<'_> {
    fn now() -> f64 {
        Timestamp::wall_now().as_secs_f64()
    }

    /// One line to standard error and one JSON line to `<data-dir>/learn.log`.
    fn log(&mut self, text: &str, record: serde_json::Value) {
        eprintln!("learn     {text}");
        if let Some(f) = self.journal.as_mut() {
            let mut line = record.to_string();
            line.push('\n');
            if let Err(e) = f.write_all(line.as_bytes()) {
                eprintln!("learn     cannot write {}: {e}", self.dir.join("learn.log").display());
                self.journal = None;
            }
        }
    }

    fn reload_labels(&mut self) {
        let path = self.dir.join("labels.log");
        let len = file_len(&path);
        if len == self.labels_len {
            return;
        }
        match LabelStore::read(&self.dir) {
            Ok(all) => {
                self.labels = all;
                self.labels_len = len;
            }
            Err(e) => eprintln!("learn     cannot read the labels: {e}"),
        }
    }

    /// Follows the registry when another process changed its current model.
    fn follow_registry(&mut self) {
        let Some(ours) = self.current.version else { return };
        let path = self.dir.join("models").join("registry.log");
        let len = file_len(&path);
        if len == self.registry_len {
            return;
        }
        self.registry_len = len;
        let reg = match Registry::open(&self.dir) {
            Ok(r) => r,
            Err(e) => return eprintln!("learn     cannot read the model registry: {e}"),
        };
        let Some(entry) = reg.current().cloned() else { return };
        if entry.version == ours {
            return;
        }
        match load(&reg.model_path(entry.version)) {
            Ok((artifact, model, bytes)) => {
                self.slot.store(Scoring::on(
                    &self.compute,
                    &artifact,
                    &model,
                    &bytes,
                    Some(entry.version),
                    entry.cut,
                ));
                self.current = InService { artifact, model, version: Some(entry.version) };
                self.log(
                    &format!("model v{} is current (changed in the registry: rollback or promotion); the scorer moved to it", entry.version),
                    json!({ "at": Self::now(), "event": "follow", "version": entry.version, "from": ours }),
                );
            }
            Err(e) => eprintln!(
                "learn     registry names v{} as current, but: {e:#}; keeping v{ours}",
                entry.version
            ),
        }
    }

    fn due(&self) -> bool {
        if !self.cfg.enabled || self.reservoir.len() < self.cfg.min_rows.max(2) {
            return false;
        }
        let new_labels = self.labels.len().saturating_sub(self.labels_at_turn);
        new_labels >= self.cfg.after_labels.max(1) || self.last_turn.elapsed() >= self.cfg.interval
    }

    fn turn(&mut self, scratch: bool) {
        self.last_turn = Instant::now();
        self.labels_at_turn = self.labels.len();
        let recent = self.reservoir.sample();
        let cut = f32::from_bits(self.metrics.cut_bits.load(Relaxed) as u32);
        let started = Instant::now();
        let result = {
            let cur = Current { artifact: &self.current.artifact, model: &self.current.model, cut };
            let cfg =
                LearnConfig { warm_start: self.cfg.warm_start && !scratch, ..self.cfg.clone() };
            let labels = &self.labels;
            let job = || retrain(&cur, &recent, labels, &cfg, &Device::flex());
            match &self.pool {
                Some(p) => p.install(job),
                None => job(),
            }
        };
        let r = match result {
            Ok(r) => {
                self.metrics.retrains.fetch_add(1, Relaxed);
                r
            }
            Err(e) => {
                // Say it once per distinct reason, not every interval.
                let msg = e.to_string();
                if self.last_refusal.as_ref() != Some(&msg) {
                    let quiet = matches!(e, RetrainError::NoAttacks);
                    self.log(
                        &format!(
                            "no retraining: {msg}{}",
                            if quiet {
                                " (label attacks with `mnpflow label` or the web page)"
                            } else {
                                ""
                            }
                        ),
                        json!({ "at": Self::now(), "event": "skip", "reason": msg }),
                    );
                    self.last_refusal = Some(msg);
                }
                return;
            }
        };
        self.last_refusal = None;
        let d = &r.decision;
        let mut record = json!({
            "at": Self::now(), "event": "retrain", "promoted": d.promote, "rule": d.rule,
            "parent": self.current.version, "seconds": started.elapsed().as_secs_f64(),
            "unlabeled": r.unlabeled, "benign": r.benign, "attacks": r.attacks,
            "held_back_attacks": d.attacks, "held_back_normals": d.normals,
            "current": d.current, "candidate": d.candidate, "cut": r.cut,
        });
        if !d.promote {
            self.log(
                &format!(
                    "candidate trained in {:.1} s: {}",
                    started.elapsed().as_secs_f64(),
                    d.rule
                ),
                record,
            );
            return;
        }
        match self.promote(
            r.artifact,
            r.model,
            r.cut,
            &d.rule,
            d.candidate.map(|c| vec![("auc_pr".into(), c.auc_pr), ("auc_roc".into(), c.auc_roc)]),
        ) {
            Ok(v) => {
                record["version"] = json!(v);
                self.log(
                    &format!(
                        "candidate trained in {:.1} s: {}; now model v{v}",
                        started.elapsed().as_secs_f64(),
                        d.rule
                    ),
                    record,
                );
                if let Some(publish) = &self.on_promote {
                    match publish(v) {
                        Ok(to) => self.log(
                            &format!("model v{v} published to {to}"),
                            json!({ "at": Self::now(), "event": "publish", "version": v, "to": to }),
                        ),
                        Err(why) => self.log(
                            &format!("model v{v} not published: {why}"),
                            json!({ "at": Self::now(), "event": "publish", "version": v, "error": why }),
                        ),
                    }
                }
            }
            Err(e) => eprintln!("learn     promotion failed, the current model stays: {e:#}"),
        }
    }

    fn promote(
        &mut self,
        artifact: Artifact,
        model: Mnpwad,
        cut: f32,
        rule: &str,
        validation: Option<Vec<(String, f64)>>,
    ) -> anyhow::Result<u64> {
        let models = self.dir.join("models");
        std::fs::create_dir_all(&models)?;
        let tmp = models.join("candidate.mnp");
        artifact.save(&tmp)?;
        let mut reg = Registry::open(&self.dir)?;
        let entry = reg.promote(
            &tmp,
            format!("{}; {rule}", artifact.data.source),
            validation.unwrap_or_default(),
            Some(cut),
            Self::now(),
        )?;
        let _ = std::fs::remove_file(&tmp);
        self.registry_len = file_len(&models.join("registry.log"));
        let bytes = std::fs::read(reg.model_path(entry.version))?;
        self.slot.store(Scoring::on(
            &self.compute,
            &artifact,
            &model,
            &bytes,
            Some(entry.version),
            Some(cut),
        ));
        self.metrics.promotions.fetch_add(1, Relaxed);
        // The writer sets the cut in force per batch; a loop without one (`mnpflow learn`)
        // compares its next candidate at this one.
        self.metrics.cut_bits.store(cut.to_bits() as u64, Relaxed);
        self.current = InService { artifact, model, version: Some(entry.version) };
        Ok(entry.version)
    }
}

/// Loads a model file: artifact, network, and the bytes that name its version.
pub fn load(path: &Path) -> anyhow::Result<(Artifact, Mnpwad, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let artifact = Artifact::load(path)?;
    let model = artifact.to_model(path, &Device::flex())?;
    Ok((artifact, model, bytes))
}

/// Runs until the writer hangs up (the stream ended).
pub fn run(
    setup: LearnSetup,
    rx: Receiver<Sample>,
    rules_tx: Sender<RuleSet>,
    slot: &ModelSlot<Scoring>,
    metrics: &Metrics,
) {
    let cfg = setup.cfg;
    let width = setup.artifact.layout.columns.len();
    let model = match setup.artifact.to_model(Path::new("(model in service)"), &Device::flex()) {
        Ok(m) => m,
        Err(e) => {
            return eprintln!(
                "learn     cannot rebuild the model in service: {e}; the learning loop is off"
            );
        }
    };
    let horizon = cfg.reservoir_horizon.as_secs().max(1) as i64;
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.max(1))
        .thread_name(|i| format!("mnpflow-train-{i}"))
        .start_handler(|_| denormal::flush_on_this_thread())
        .build()
    {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!(
                "learn     cannot make a training pool of {} threads ({e}); training on this thread",
                cfg.threads
            );
            None
        }
    };
    let journal = cfg
        .enabled
        .then(|| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(setup.data_dir.join("learn.log"))
                .ok()
        })
        .flatten();
    let dir = setup.data_dir;
    let mut lp = Loop {
        reservoir: Reservoir::new(width, cfg.reservoir_rows, horizon, 16, cfg.seed),
        labels: Vec::new(),
        labels_len: u64::MAX,
        labels_at_turn: 0,
        registry_len: file_len(&dir.join("models").join("registry.log")),
        last_turn: Instant::now(),
        last_refusal: None,
        current: InService { artifact: setup.artifact, model, version: setup.registry_version },
        compute: setup.compute,
        cfg,
        dir,
        slot,
        metrics,
        pool,
        journal,
        on_promote: setup.on_promote,
    };
    if lp.cfg.enabled && width > 0 {
        for Sample { t, rows } in &setup.backlog {
            for row in rows.chunks_exact(width) {
                lp.reservoir.offer(*t, row);
            }
        }
    }
    lp.reload_labels();
    lp.labels_at_turn = lp.labels.len();
    let mut rules_seen = setup.rules_dir.as_deref().map(rules_stamp);
    let mut last_poll = Instant::now();
    loop {
        match rx.recv_timeout(POLL) {
            Ok(Sample { t, rows }) => {
                if lp.cfg.enabled && width > 0 {
                    for row in rows.chunks_exact(width) {
                        lp.reservoir.offer(t, row);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_poll.elapsed() < POLL {
            continue;
        }
        last_poll = Instant::now();
        if let (Some(dir), Some(seen)) = (setup.rules_dir.as_deref(), rules_seen.as_mut()) {
            let now = rules_stamp(dir);
            if now != *seen {
                *seen = now;
                match RuleSet::load_dir(dir) {
                    Ok(set) => {
                        eprintln!(
                            "rules     reloaded {}: {} suppression rules, {} indicators",
                            dir.display(),
                            set.rules.len(),
                            set.indicators.len()
                        );
                        let _ = rules_tx.send(set);
                    }
                    Err(e) => eprintln!("rules     refused: {e}; the rules in force stay"),
                }
            }
        }
        lp.follow_registry();
        lp.reload_labels();
        if lp.cfg.enabled
            && let Some(req) = RetrainRequest::take(&lp.dir)
        {
            lp.log(&format!("retraining on request ({})", if req == RetrainRequest::Scratch { "from scratch" } else { "warm start" }), json!({ "at": Loop::now(), "event": "request", "scratch": req == RetrainRequest::Scratch }));
            lp.turn(req == RetrainRequest::Scratch);
        } else if lp.due() {
            lp.turn(false);
        }
    }
}
