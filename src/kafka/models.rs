//! Models through Kafka (feature `kafka`): `mnpflow models publish --kafka` puts a registered
//! model on the models topic with its registry entry (version, parent, what it was trained
//! on, validation figures, cut), keyed by its schema fingerprint (so that a compacted topic
//! keeps the latest model of each schema); a sensor running with `--kafka` takes each model
//! new to its registry, checks its schema fingerprint against its own, registers it as
//! current, and its learning loop's thread moves the scorer to it as it does after a
//! rollback. A model of another schema is refused, both fingerprints named.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use base64::Engine;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};
use serde::{Deserialize, Serialize};

use super::KafkaConfig;
use crate::feedback::{ModelEntry, Registry};
use crate::model::artifact::Artifact;

/// A model on the models topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMessage {
    /// Who published it (sensor or retrainer id).
    pub from: String,
    /// Its entry in the publisher's registry.
    pub entry: ModelEntry,
    /// The schema it reads: name and fingerprint.
    pub schema: String,
    pub fingerprint: String,
    /// The model file, base64.
    pub model: String,
}

/// Publishes version `version` of the registry in `data_dir`; waits up to `timeout` for
/// the broker's acknowledgement. Returns the message's key (the schema fingerprint).
pub fn publish(
    brokers: &str,
    cfg: &KafkaConfig,
    data_dir: &Path,
    version: u64,
    from: &str,
    timeout: Duration,
) -> Result<String, String> {
    let reg = Registry::open(data_dir).map_err(|e| e.to_string())?;
    let entry = reg.get(version).map_err(|e| e.to_string())?.clone();
    let path = reg.model_path(version);
    let art = Artifact::load(&path).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let msg = ModelMessage {
        from: from.to_owned(),
        entry,
        schema: art.layout.name.clone(),
        fingerprint: art.layout.fingerprint.clone(),
        model: base64::engine::general_purpose::STANDARD.encode(&bytes),
    };
    let json = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers).set("acks", "all").set("client.id", "mnpflow");
    cc.set("message.max.bytes", (json.len() + 4096).max(1_000_000).to_string());
    for (k, v) in &cfg.client {
        cc.set(k, v);
    }
    let p: BaseProducer = cc.create().map_err(|e| format!("kafka {brokers}: {e}"))?;
    p.send(BaseRecord::to(&cfg.models_topic).key(&msg.fingerprint).payload(&json))
        .map_err(|(e, _)| format!("kafka {brokers}: {e}"))?;
    p.flush(timeout).map_err(|e| {
        format!("kafka {brokers}: the models topic {} did not acknowledge: {e}", cfg.models_topic)
    })?;
    Ok(msg.fingerprint)
}

/// The models consumer of a running sensor.
pub struct ModelsIn {
    consumer: BaseConsumer,
    topic: String,
    dir: PathBuf,
    /// This sensor's schema: name and fingerprint.
    schema: (String, String),
}

impl ModelsIn {
    pub fn new(
        brokers: &str,
        cfg: &KafkaConfig,
        sensor_id: &str,
        data_dir: &Path,
        schema: (String, String),
    ) -> Result<ModelsIn, String> {
        // The `[kafka] client` settings too (TLS, SASL): the models topic is on the same
        // brokers as the rest.
        let mut cc = super::consumer_config(brokers, cfg, &format!("mnpflow-models-{sensor_id}"));
        cc.set("fetch.message.max.bytes", "67108864");
        let consumer: BaseConsumer = cc.create().map_err(|e| format!("kafka {brokers}: {e}"))?;
        Ok(ModelsIn { consumer, topic: cfg.models_topic.clone(), dir: data_dir.to_owned(), schema })
    }

    /// Takes one message: `Ok(Some(version))` when registered, `Ok(None)` when the registry
    /// already holds that model, `Err` (the reason) when refused.
    fn take(&self, m: &ModelMessage) -> Result<Option<u64>, String> {
        let (name, fp) = &self.schema;
        if &m.fingerprint != fp {
            return Err(format!(
                "model v{} from {}: it reads schema {} (fingerprint {}), this sensor's is {} (fingerprint {})",
                m.entry.version, m.from, m.schema, m.fingerprint, name, fp
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(&m.model).map_err(|e| {
            format!("model v{} from {}: bad model field: {e}", m.entry.version, m.from)
        })?;
        let mut reg = Registry::open(&self.dir).map_err(|e| e.to_string())?;
        if reg
            .entries()
            .iter()
            .any(|e| std::fs::read(reg.model_path(e.version)).is_ok_and(|b| b == bytes))
        {
            return Ok(None);
        }
        let tmp = self.dir.join("models").join("kafka-incoming.mnp");
        std::fs::create_dir_all(self.dir.join("models")).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, &bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        // The file must be a model of this schema, whatever the message says.
        let art = Artifact::load(&tmp).map_err(|e| e.to_string())?;
        art.check_layout(&tmp, name, fp).map_err(|e| e.to_string())?;
        art.to_model(&tmp, &burn::tensor::Device::flex()).map_err(|e| e.to_string())?;
        let data = format!(
            "from {} over Kafka (its v{}{}): {}",
            m.from,
            m.entry.version,
            m.entry.parent.map(|p| format!(", parent v{p}")).unwrap_or_default(),
            m.entry.data
        );
        let now = crate::capture::Timestamp::wall_now().as_secs_f64();
        let e = reg
            .promote(&tmp, data, m.entry.validation.clone(), m.entry.cut, now)
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&tmp);
        Ok(Some(e.version))
    }

    /// Consumes until `stop`.
    pub fn run(self, stop: &AtomicBool, taken: &AtomicU64, refused: &AtomicU64) {
        if !super::wait_assigned(&self.consumer, &self.topic, stop) {
            return;
        }
        while !stop.load(Relaxed) {
            let Some(r) = self.consumer.poll(Duration::from_millis(100)) else { continue };
            let Ok(msg) = r else { continue };
            let parsed = msg.payload().map(serde_json::from_slice::<ModelMessage>);
            match parsed {
                Some(Ok(m)) => match self.take(&m) {
                    Ok(Some(v)) => {
                        taken.fetch_add(1, Relaxed);
                        eprintln!(
                            "models    took model v{} from {} over Kafka: registered as v{v} and current",
                            m.entry.version, m.from
                        );
                    }
                    Ok(None) => {}
                    Err(why) => {
                        refused.fetch_add(1, Relaxed);
                        eprintln!("models    refused {why}");
                    }
                },
                _ => {
                    refused.fetch_add(1, Relaxed);
                    eprintln!("models    refused a message on {} that is not a model", self.topic);
                }
            }
        }
    }
}
