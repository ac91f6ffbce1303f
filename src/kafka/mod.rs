//! Kafka: where many sensors meet. Alerts (and optionally every scored flow) leave the
//! sensor as events on Kafka topics, keyed by the flow's community ID, so that one
//! conversation stays in one partition and joins with Zeek's and Suricata's events.
//!
//! ```text
//!  alert writer ──[bounded queue]──> producer thread ──> librdkafka ──> broker
//!  (never waits:    (full: dropped,   (spool first,      (delivery
//!   try_send)         counted)         then produce)       reports ack the spool)
//! ```
//!
//! - [`KafkaConfig`] is the `[kafka]` section; [`AlertFormat`] how alerts are named (EVE or
//!   Elastic Common Schema), for the file and the topic alike.
//! - [`EventSink`] is the writer's end of the queue: it never blocks, so capture and scoring
//!   never wait on Kafka.
//! - [`spool::Spool`] holds every event not yet acknowledged by the broker, on disk in the
//!   data directory: nothing is lost while the broker is away, or when the sensor restarts,
//!   until the spool's bound; past it, events are dropped and counted.
//! - `labels` (feature `kafka`): labels published to the labels topic (`mnpflow label
//!   --kafka`; the page's go through the spool) and consumed by running sensors into their
//!   label stores, each label stored once.
//! - `producer` (feature `kafka`) is the thread that owns the spool and the librdkafka
//!   producer. Without the feature none of the client code is compiled, and `--kafka` says
//!   how to build it.
//!
//! Delivery is at least once: an event is resent until the broker acknowledges it, so a
//! consumer may see it twice, always with the same `event_id`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use serde::{Deserialize, Serialize};

#[cfg(feature = "kafka")]
pub mod flows;
#[cfg(feature = "kafka")]
pub mod labels;
#[cfg(feature = "kafka")]
pub mod models;
#[cfg(feature = "kafka")]
pub mod producer;
pub mod spool;

/// `[kafka]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` separated by commas. Unset: no Kafka, unless `--kafka`
    /// names them.
    pub brokers: Option<String>,
    /// This sensor's name in every event (`sensor_id`, ECS `observer.name`). Unset: the host
    /// name. `--sensor-id` takes precedence.
    pub sensor_id: Option<String>,
    /// Topic of the alerts, keyed by community ID.
    pub alerts_topic: String,
    /// Topic of every scored flow (with its score and whether it alerted), keyed by
    /// community ID. Unset: scored flows are not published.
    pub flows_topic: Option<String>,
    /// Topic of analysts' labels: published by `mnpflow label --kafka` and the analysts' page,
    /// consumed by every sensor running with Kafka into its label store.
    pub labels_topic: String,
    /// Topic of models (`mnpflow models publish --kafka`, keyed by schema fingerprint: make
    /// it compacted), taken by every sensor running with Kafka.
    pub models_topic: String,
    /// A sensor's learning loop puts each model it promotes on the models topic, for every
    /// sensor of its schema (true). False: its models stay on this sensor, as when a central
    /// `mnpflow learn` is the one retrainer.
    pub publish_promoted: bool,
    /// Events the queue from the alert writer to the producer thread holds; when it is full
    /// (the spool's disk cannot keep up), events are dropped and counted.
    pub queue_events: usize,
    /// Bytes the spool of events not yet acknowledged may take in the data directory
    /// (256 MiB); past it, new events are dropped and counted.
    pub spool_bytes: u64,
    /// At exit, wait this long for the broker to acknowledge what is in flight (10 s); what
    /// is left stays in the spool and is sent by the next run with this data directory.
    pub flush_seconds: f64,
    /// librdkafka settings passed through as they are, e.g. `acks`, `compression.type`,
    /// `linger.ms`, `security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `ssl.ca.location` (see librdkafka's CONFIGURATION.md). mnpflow sets `acks = "all"`
    /// unless given here.
    pub client: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            sensor_id: None,
            alerts_topic: "mnpflow.alerts".into(),
            flows_topic: None,
            labels_topic: "mnpflow.labels".into(),
            models_topic: "mnpflow.models".into(),
            publish_promoted: true,
            queue_events: 65_536,
            spool_bytes: 256 << 20,
            flush_seconds: 10.0,
            client: BTreeMap::new(),
        }
    }
}

/// How alerts name their fields (in `alerts.jsonl` and on the alerts topic alike).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// Suricata EVE JSON (`src_ip`, `dest_port`, `community_id`, `anomaly.*`).
    #[default]
    Eve,
    /// Elastic Common Schema (`source.ip`, `destination.port`, `network.community_id`,
    /// `event.*`, `observer.name`; mnpflow's own fields under `mnpflow.*`).
    Ecs,
}

/// One event for a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub topic: String,
    /// The message key: the flow's community ID.
    pub key: String,
    /// The event's unique id (also in the payload): a consumer drops duplicates by it.
    pub id: String,
    /// The message: one JSON object.
    pub payload: String,
}

/// Unique event ids: a random number per run, then a count (`0f3a...-1c`). Unique across
/// runs and sensors without coordination.
#[derive(Debug)]
pub struct EventIds {
    run: u64,
    next: u64,
}

impl EventIds {
    pub fn new() -> EventIds {
        EventIds { run: rand::random(), next: 0 }
    }

    pub fn next_id(&mut self) -> String {
        self.next += 1;
        format!("{:016x}-{:x}", self.run, self.next)
    }
}

impl Default for EventIds {
    fn default() -> Self {
        EventIds::new()
    }
}

/// The Kafka counters of a run (shared between the writer and the producer thread, and
/// reported by the metrics module).
#[derive(Debug, Default)]
pub struct KafkaCounters {
    /// Events handed to the producer thread.
    pub queued: AtomicU64,
    /// Events the broker acknowledged.
    pub delivered: AtomicU64,
    /// Events dropped: the queue to the producer thread was full, or the spool at its
    /// bound (or its disk failing).
    pub dropped: AtomicU64,
    /// Deliveries that failed and were retried from the spool.
    pub retried: AtomicU64,
    /// Events sent again from a previous run's spool.
    pub resent_from_spool: AtomicU64,
    /// Gauge: bytes of the spool's files.
    pub spool_bytes: AtomicU64,
    /// Gauge: events in the spool not yet acknowledged.
    pub spool_events: AtomicU64,
    /// Labels taken from the labels topic into the label store (new to it).
    pub labels_in: AtomicU64,
    /// Messages on the labels topic that are not labels.
    pub labels_refused: AtomicU64,
    /// Models taken from the models topic (registered and made current).
    pub models_in: AtomicU64,
    /// Models refused (another schema, or not a model).
    pub models_refused: AtomicU64,
}

impl KafkaCounters {
    /// The stderr summary line.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Relaxed);
        format!(
            "kafka     {} events queued, {} delivered, {} dropped, {} retried, {} resent from an earlier run's spool; spool {} events, {} bytes; {} labels taken from the labels topic ({} messages not labels); {} models taken, {} refused",
            g(&self.queued),
            g(&self.delivered),
            g(&self.dropped),
            g(&self.retried),
            g(&self.resent_from_spool),
            g(&self.spool_events),
            g(&self.spool_bytes),
            g(&self.labels_in),
            g(&self.labels_refused),
            g(&self.models_in),
            g(&self.models_refused)
        )
    }
}

/// The writer's (and the analysts' page's) end of the queue to the producer thread: never
/// blocks.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Sender<Event>,
    pub alerts_topic: String,
    pub labels_topic: String,
    counters: Arc<KafkaCounters>,
}

impl EventSink {
    /// A queue of `capacity` events; the receiver goes to the producer thread.
    pub fn new(
        capacity: usize,
        cfg: &KafkaConfig,
        counters: Arc<KafkaCounters>,
    ) -> (EventSink, Receiver<Event>) {
        let (tx, rx) = bounded(capacity.max(1));
        let sink = EventSink {
            tx,
            alerts_topic: cfg.alerts_topic.clone(),
            labels_topic: cfg.labels_topic.clone(),
            counters,
        };
        (sink, rx)
    }

    /// Hands an event on, or drops and counts it when the queue is full (or the producer
    /// thread is gone).
    pub fn offer(&self, e: Event) {
        match self.tx.try_send(e) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Publishes an analyst's label (the page's) to the labels topic, through the spool like
    /// any event: keyed by its flow's community ID, the label's JSON as the message.
    pub fn offer_label(&self, l: &crate::feedback::Label) {
        if let Ok(payload) = serde_json::to_string(l) {
            self.offer(Event {
                topic: self.labels_topic.clone(),
                key: l.community_id.clone(),
                id: format!("label:{}:{}:{:x}", l.uid, l.by, l.at.to_bits()),
                payload,
            });
        }
    }
}

/// The sensor id by default: the host name (`/proc/sys/kernel/hostname`, `$HOSTNAME`), else
/// `mnpflow`.
pub fn default_sensor_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "mnpflow".into())
}

/// Adds `sensor_id` and `event_id` to a JSON object's text (one line, `{...}`): the writer
/// renders records once and stamps them here.
pub fn stamp_json(line: &mut String, sensor_id: Option<&str>, event_id: &str) {
    if !line.ends_with('}') {
        return;
    }
    line.pop();
    let mut first = line.ends_with('{');
    for (k, v) in [("sensor_id", sensor_id), ("event_id", Some(event_id))] {
        let Some(v) = v else { continue };
        if !first {
            line.push(',');
        }
        first = false;
        line.push('"');
        line.push_str(k);
        line.push_str("\":");
        line.push_str(&serde_json::Value::from(v).to_string());
    }
    line.push('}');
}

/// A consumer's settings: `brokers`, consumer group `group` (nothing is committed: every
/// consumer here reads its topics from the beginning), and the `[kafka] client` settings
/// passed through, less the producer-only ones a consumer refuses to start with.
#[cfg(feature = "kafka")]
fn consumer_config(brokers: &str, cfg: &KafkaConfig, group: &str) -> rdkafka::ClientConfig {
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", brokers).set("client.id", "mnpflow");
    cc.set("group.id", group);
    cc.set("enable.auto.commit", "false");
    cc.set("auto.offset.reset", "earliest");
    for (k, v) in &cfg.client {
        if k != "acks" && !k.starts_with("linger") && !k.starts_with("batch") {
            cc.set(k, v);
        }
    }
    cc
}

/// Assigns every partition of `topic` to `consumer` from the beginning, trying again every
/// 200 ms while the broker or the topic is not there; `false` when `stop` came first (seen
/// within about 0.7 s: one metadata request's bound and one pause). The
/// labels, models and flows topics are read whole (no consumer group: each reader must see
/// every message).
#[cfg(feature = "kafka")]
fn wait_assigned(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> bool {
    while !stop.load(Relaxed) {
        if assign_from_beginning(consumer, topic) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}

/// One try of [`wait_assigned`].
#[cfg(feature = "kafka")]
fn assign_from_beginning(consumer: &rdkafka::consumer::BaseConsumer, topic: &str) -> bool {
    use rdkafka::consumer::Consumer;
    let Ok(md) = consumer.fetch_metadata(Some(topic), std::time::Duration::from_millis(500)) else {
        return false;
    };
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else { return false };
    if t.error().is_some() || t.partitions().is_empty() {
        return false;
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in t.partitions() {
        let _ = tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning);
    }
    consumer.assign(&tpl).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_keep_the_json_valid() {
        for (base, sensor) in [("{\"a\":1}", Some("edge-3")), ("{}", None), ("{}", Some("x\"y"))] {
            let mut l = base.to_string();
            stamp_json(&mut l, sensor, "00ff-1");
            let v: serde_json::Value = serde_json::from_str(&l).expect(&l);
            assert_eq!(v["event_id"], "00ff-1");
            assert_eq!(v.get("sensor_id").and_then(|s| s.as_str()), sensor);
        }
    }

    #[test]
    fn ids_are_unique_and_the_queue_never_blocks() {
        let mut ids = EventIds::new();
        let (a, b) = (ids.next_id(), ids.next_id());
        assert_ne!(a, b);
        assert_ne!(EventIds::new().next_id(), EventIds::new().next_id());
        let c = Arc::new(KafkaCounters::default());
        let (sink, rx) = EventSink::new(2, &KafkaConfig::default(), c.clone());
        for i in 0..5 {
            sink.offer(Event {
                topic: "t".into(),
                key: "k".into(),
                id: i.to_string(),
                payload: "{}".into(),
            });
        }
        assert_eq!((c.queued.load(Relaxed), c.dropped.load(Relaxed)), (2, 3));
        assert_eq!(rx.try_iter().count(), 2);
    }
}
