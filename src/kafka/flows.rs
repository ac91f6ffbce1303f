//! Scored flows from Kafka (feature `kafka`): the central retrainer (`mnpflow learn --kafka`)
//! reads the flows topic that sensors write (`[kafka] flows_topic`) and hands the flows to
//! its learning loop as the sensor's own writer would, as rows of the schema's encoded layout.
//!
//! Like the labels consumer, it assigns itself every partition from the beginning rather than
//! joining a consumer group: the loop's reservoir keeps a sample of recent traffic (by each
//! flow's own start time), so reading the topic again after a restart only refills it; the
//! topic's retention bounds what is read.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;

use super::KafkaConfig;
use crate::features::SchemaKind;
use crate::features::tables::{self, SchemaChoice, TableOptions};
use crate::pipeline::stream::Sample;

/// Messages decoded together (at most), and how long the first of them waits for the rest.
const BATCH: usize = 2000;
const BATCH_WAIT: Duration = Duration::from_millis(250);

/// The flows topic's consumer.
pub struct FlowsIn {
    consumer: BaseConsumer,
    topic: String,
    kind: SchemaKind,
    /// The schema's encoded row width.
    width: usize,
}

/// What the consumer did, for the closing summary.
#[derive(Debug, Default)]
pub struct FlowsInCounters {
    /// Flows handed to the learning loop.
    pub rows: AtomicU64,
    /// Messages that were not a flow of this schema (not JSON, or a column missing).
    pub refused: AtomicU64,
}

impl FlowsIn {
    pub fn new(
        brokers: &str,
        cfg: &KafkaConfig,
        topic: &str,
        kind: SchemaKind,
    ) -> Result<FlowsIn, String> {
        let cc = super::consumer_config(brokers, cfg, "mnpflow-learn-flows");
        let consumer: BaseConsumer = cc.create().map_err(|e| format!("kafka {brokers}: {e}"))?;
        Ok(FlowsIn {
            consumer,
            topic: topic.to_owned(),
            kind,
            width: kind.schema().encoded_width(),
        })
    }

    /// Consumes until `stop`, sending each batch of flows as one [`Sample`]; returns when
    /// stopped or when the loop's end of the channel is gone.
    pub fn run(self, stop: &AtomicBool, tx: Sender<Sample>, counters: &FlowsInCounters) {
        let mut said: Option<String> = None;
        if !super::wait_assigned(&self.consumer, &self.topic, stop) {
            return;
        }
        while !stop.load(Relaxed) {
            let mut lines = String::new();
            let (mut n, mut t) = (0usize, i64::MIN);
            let started = Instant::now();
            while n < BATCH && started.elapsed() < BATCH_WAIT && !stop.load(Relaxed) {
                let Some(r) = self.consumer.poll(Duration::from_millis(50)) else {
                    if n == 0 {
                        break;
                    }
                    continue;
                };
                let Ok(m) = r else { continue };
                match m.payload().map(serde_json::from_slice::<serde_json::Value>) {
                    Some(Ok(v)) if v.is_object() => {
                        t = t.max(flow_time(&v));
                        lines.push_str(&v.to_string());
                        lines.push('\n');
                        n += 1;
                    }
                    _ => {
                        counters.refused.fetch_add(1, Relaxed);
                    }
                }
            }
            if n == 0 {
                continue;
            }
            match self.rows(&lines) {
                Ok(rows) => {
                    let k = rows.len() / self.width.max(1);
                    counters.rows.fetch_add(k as u64, Relaxed);
                    counters.refused.fetch_add((n - k) as u64, Relaxed);
                    let t = if t == i64::MIN {
                        crate::capture::Timestamp::wall_now().as_secs_f64() as i64
                    } else {
                        t
                    };
                    if k > 0 && tx.send(Sample { t, rows }).is_err() {
                        return;
                    }
                }
                Err(why) => {
                    counters.refused.fetch_add(n as u64, Relaxed);
                    // Once per distinct reason: a sensor of another schema on the same topic
                    // would otherwise say it for every batch.
                    if said.as_ref() != Some(&why) {
                        eprintln!("warning   kafka flows: {why}");
                        said = Some(why);
                    }
                }
            }
        }
    }

    /// The batch's flows as encoded rows of this schema (malformed rows counted by the
    /// caller as refused).
    fn rows(&self, lines: &str) -> Result<Vec<f32>, String> {
        let opts = TableOptions {
            schema: match self.kind {
                SchemaKind::Unsw => SchemaChoice::Unsw,
                SchemaKind::Zeek => SchemaChoice::Zeek,
            },
            // Scored flows carry no truth; `alert` stands in for the label column the reader
            // needs (the loop treats every row as unlabeled).
            label: Some("alert".into()),
            skip_bad_rows: true,
            ..TableOptions::default()
        };
        let origin = Path::new(&self.topic);
        tables::from_json_lines(origin, lines, &opts)
            .map(|t| t.values)
            .map_err(|e| format!("topic {}: {e}", self.topic))
    }
}

/// A flow's start, Unix seconds: UNSW's `stime`, Zeek's `ts`; `i64::MIN` when neither.
fn flow_time(v: &serde_json::Value) -> i64 {
    ["stime", "ts"]
        .iter()
        .find_map(|k| v.get(*k).and_then(|x| x.as_f64()))
        .map(|s| s as i64)
        .unwrap_or(i64::MIN)
}
