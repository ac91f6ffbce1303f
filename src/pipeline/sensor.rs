//! The whole sensor: the stream ([`super::stream`]) with the learning loop
//! ([`super::learn`]) and the analysts' page ([`super::web_server`]) beside it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_channel::bounded;

use super::learn::{self, LearnSetup};
use super::metrics::Metrics;
use super::stream::{self, Input, LoopLinks, Outputs, Sample, Scoring, Setup, StreamReport};
use crate::alert::RuleSet;
use crate::features::RecordExtractor;
use crate::feedback::LabelStore;
use crate::feedback::access::Access;
use crate::feedback::web::{AlertFeed, WebState};
use crate::model::slot::ModelSlot;

/// Alerts the page keeps.
const FEED_ALERTS: usize = 2000;
/// Other recent flows the page can label (a miss the model let through): about 7 MB.
const FEED_RECENT_FLOWS: usize = 10_000;

/// The analysts' page.
pub struct WebSetup {
    pub server: tiny_http::Server,
    /// Who may use it ([`super::web_server::bind`]).
    pub access: Access,
    pub data_dir: PathBuf,
    /// The page's URL in the data directory: removed when the sensor returns (also on an
    /// error), since it is dropped with the setup.
    pub url_file: Option<super::web_server::UrlFile>,
    /// Keep serving after the stream ends, until `stop` (replay: label what was replayed).
    pub stay: bool,
    /// The labels topic's end of the Kafka queue (Kafka on): the page's labels go there too.
    pub label_sink: Option<crate::kafka::EventSink>,
}

/// Runs the stream with the loop and the page; returns when the stream has drained (and,
/// with `web.stay`, the page was stopped).
#[allow(clippy::too_many_arguments)] // the stream's parts plus the loop's and the page's, each owned by the caller
pub fn run(
    input: Input<'_>,
    setup: Setup<'_>,
    extractor: Box<dyn RecordExtractor>,
    slot: &ModelSlot<Scoring>,
    outputs: Outputs,
    learn: Option<LearnSetup>,
    web: Option<WebSetup>,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> anyhow::Result<StreamReport> {
    let feed = AlertFeed::new(
        FEED_ALERTS,
        FEED_RECENT_FLOWS,
        setup.flow.community_id_seed,
        &extractor.schema().fingerprint(),
    );
    let web_state = match &web {
        Some(w) => Some(WebState {
            feed: &feed,
            labels: Mutex::new(LabelStore::open(&w.data_dir)?),
            data_dir: w.data_dir.clone(),
            access: w.access.clone(),
            label_sink: w.label_sink.clone(),
        }),
        None => None,
    };
    let page_done = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        let mut links = LoopLinks { feed: web.is_some().then_some(&feed), ..LoopLinks::default() };
        // The loop's thread ends when the sample sender goes: with learning off, no samples
        // are copied, and the sender is held here until the stream ends.
        let mut idle_sender = None;
        let learner = learn.map(|l| {
            let (tx, rx) = bounded::<Sample>(64);
            let (rules_tx, rules_rx) = bounded::<RuleSet>(4);
            if l.cfg.enabled {
                links.learn = Some(tx);
            } else {
                idle_sender = Some(tx);
            }
            links.rules = Some(rules_rx);
            std::thread::Builder::new()
                .name("mnpflow-learn".into())
                .spawn_scoped(s, move || learn::run(l, rx, rules_tx, slot, metrics))
                .expect("spawning the learning loop")
        });
        let page = match (&web, &web_state) {
            (Some(w), Some(state)) => {
                let done = &page_done;
                Some(
                    std::thread::Builder::new()
                        .name("mnpflow-web".into())
                        .spawn_scoped(s, move || super::web_server::serve(&w.server, state, done))
                        .expect("spawning the feedback page"),
                )
            }
            _ => None,
        };
        let report = stream::run(input, setup, extractor, slot, outputs, links, stop, metrics);
        drop(idle_sender);
        if let Some(l) = learner {
            l.join().expect("the learning loop panicked");
        }
        if web.as_ref().is_some_and(|w| w.stay) && !stop.load(Relaxed) {
            eprintln!("feedback  the capture is done; the page stays up until Ctrl-C");
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        page_done.store(true, Relaxed);
        if let Some(p) = page {
            p.join().expect("the feedback page panicked");
        }
        report
    });
    Ok(report)
}
