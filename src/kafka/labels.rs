//! Labels through Kafka (feature `kafka`): `mnpflow label --kafka` publishes a label to the
//! labels topic, and a running sensor consumes that topic into its label store, so that a
//! label given at one console teaches every sensor. The local store stays the durable record;
//! a label seen twice (the topic read again after a restart, or one this data directory
//! already holds) is stored once.
//!
//! The consumer assigns itself every partition of the topic from the beginning instead of
//! joining a consumer group: every sensor must see every label, and reading the topic again
//! is harmless since labels are stored once; so it needs no committed offsets.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

use super::KafkaConfig;
use crate::feedback::{Label, LabelStore};

/// What makes two labels the same label: the flow, the verdict, who and when.
pub fn label_identity(l: &Label) -> String {
    format!("{}|{}|{}|{:x}", l.uid, l.verdict, l.by, l.at.to_bits())
}

fn client(brokers: &str, cfg: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers);
    cc.set("client.id", "mnpflow");
    let _ = cfg;
    cc
}

/// Publishes labels to the labels topic, keyed by their flow's community ID; waits up to
/// `timeout` for the broker's acknowledgement.
pub fn publish(
    brokers: &str,
    cfg: &KafkaConfig,
    labels: &[Label],
    timeout: Duration,
) -> Result<(), String> {
    let mut cc = client(brokers, cfg);
    cc.set("acks", "all");
    for (k, v) in &cfg.client {
        cc.set(k, v);
    }
    let p: BaseProducer = cc.create().map_err(|e| format!("kafka {brokers}: {e}"))?;
    for l in labels {
        let json = serde_json::to_string(l).map_err(|e| e.to_string())?;
        p.send(BaseRecord::to(&cfg.labels_topic).key(&l.community_id).payload(&json))
            .map_err(|(e, _)| format!("kafka {brokers}: {e}"))?;
    }
    p.flush(timeout).map_err(|e| {
        format!("kafka {brokers}: the labels topic {} did not acknowledge: {e}", cfg.labels_topic)
    })
}

/// The labels consumer of a running sensor.
pub struct LabelsIn {
    consumer: BaseConsumer,
    topic: String,
    dir: PathBuf,
    store: LabelStore,
    brokers: String,
}

impl LabelsIn {
    pub fn new(
        brokers: &str,
        cfg: &KafkaConfig,
        sensor_id: &str,
        data_dir: &Path,
    ) -> Result<LabelsIn, String> {
        let cc = super::consumer_config(brokers, cfg, &format!("mnpflow-labels-{sensor_id}"));
        let consumer: BaseConsumer = cc.create().map_err(|e| format!("kafka {brokers}: {e}"))?;
        let store = LabelStore::open(data_dir)
            .map_err(|e| format!("opening the label store in {}: {e}", data_dir.display()))?;
        Ok(LabelsIn {
            consumer,
            topic: cfg.labels_topic.clone(),
            dir: data_dir.to_owned(),
            store,
            brokers: brokers.to_owned(),
        })
    }

    /// Consumes until `stop`; labels new to the store are added. Counts labels stored and
    /// messages refused (not a label).
    pub fn run(mut self, stop: &AtomicBool, stored: &AtomicU64, refused: &AtomicU64) {
        let mut warned = false;
        if !super::wait_assigned(&self.consumer, &self.topic, stop) {
            return;
        }
        while !stop.load(Relaxed) {
            let mut batch = Vec::new();
            let mut next = self.consumer.poll(Duration::from_millis(100));
            while let Some(r) = next {
                match r {
                    Ok(m) => match m.payload().map(serde_json::from_slice::<Label>) {
                        Some(Ok(l)) => batch.push(l),
                        _ => {
                            refused.fetch_add(1, Relaxed);
                        }
                    },
                    Err(e) => tracing::debug!("kafka {}: {e}", self.brokers),
                }
                if batch.len() >= 1000 {
                    break;
                }
                next = self.consumer.poll(Duration::ZERO);
            }
            if batch.is_empty() {
                continue;
            }
            // Read the store afresh (read-only): others (the page, the writer's indicator
            // rules, `mnpflow label`) append to it too.
            let result = LabelStore::read(&self.dir).map_err(|e| e.to_string()).and_then(|all| {
                let mut seen: HashSet<String> = all.iter().map(label_identity).collect();
                let new: Vec<Label> =
                    batch.into_iter().filter(|l| seen.insert(label_identity(l))).collect();
                let n = new.len() as u64;
                if n > 0 {
                    self.store.add_all(new).map_err(|e| e.to_string())?;
                }
                Ok(n)
            });
            match result {
                Ok(n) => {
                    stored.fetch_add(n, Relaxed);
                }
                Err(e) if !warned => {
                    eprintln!("warning   kafka labels: {e}");
                    warned = true;
                }
                Err(_) => {}
            }
        }
    }
}
