//! The producer thread (feature `kafka`): takes events from the alert writer's queue, spools
//! them ([`super::spool`]), hands them to librdkafka (`BaseProducer`, polled here) keyed by
//! community ID, and acknowledges the spool from librdkafka's delivery reports. A failed
//! delivery (the broker away longer than `message.timeout.ms`) or a full librdkafka queue
//! leaves the event in the spool, sent again later, so while the broker is away events wait
//! on disk, not in memory.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};

use super::spool::{Spool, SpoolEntry};
use super::{Event, KafkaConfig, KafkaCounters};

/// Events taken from the queue per spool append (one `fsync`).
const BATCH: usize = 4096;
/// How long the first event of a batch waits for others to share its spool `fsync`. With an
/// `fsync` per arriving alert (hundreds a second in a burst), one sensor replaying at full
/// speed and publishing its alerts ran at 0.70 of its files-only packet rate here, with twice
/// the system time (on ext4 an `fsync` is a journal commit, which also waits on the data the
/// sensor's other outputs are writing); with 50 ms, 0.89. At most 20 `fsync`s a second
/// unless batches fill ([`BATCH`] events), for up to 50 ms more latency per event.
const SPOOL_LINGER: Duration = Duration::from_millis(50);
/// Events read back from the spool per resend turn.
const RESEND_BATCH: usize = 10_000;

/// How a delivery ended.
enum Outcome {
    Delivered,
    /// Worth retrying (the broker away, a timeout).
    Retry(String),
    /// Never deliverable as it is (too large for the broker): dropped, counted.
    Refused(String),
}

struct Ctx {
    acks: Sender<(u64, Outcome)>,
    brokers: String,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::warn!("kafka {}: {fac}: {msg}", self.brokers),
            _ => tracing::debug!("kafka {}: {fac}: {msg}", self.brokers),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Connection losses are expected (the spool holds the events): debug, not noise.
        tracing::debug!("kafka {}: {error}: {reason}", self.brokers);
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, r: &DeliveryResult<'_>, seq: Box<u64>) {
        let outcome = match r {
            Ok(_) => Outcome::Delivered,
            Err((e, _)) => match e.rdkafka_error_code() {
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidRecord,
                ) => Outcome::Refused(e.to_string()),
                _ => Outcome::Retry(e.to_string()),
            },
        };
        let _ = self.acks.send((*seq, outcome));
    }
}

/// A producer thread ready to run: the client is configured, the spool open.
pub struct KafkaOut {
    producer: BaseProducer<Ctx>,
    acks: Receiver<(u64, Outcome)>,
    spool: Spool,
    flush: Duration,
    brokers: String,
    counters: Arc<KafkaCounters>,
}

/// Why Kafka could not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("kafka {brokers}: {source}")]
    Client { brokers: String, source: KafkaError },
    #[error("kafka spool: {0}")]
    Spool(#[from] crate::feedback::log::LogError),
}

impl KafkaOut {
    /// Configures the client for `brokers` (no connection yet: a broker away is not an
    /// error, its events wait in the spool) and opens the spool in `spool_dir`.
    pub fn new(
        brokers: &str,
        cfg: &KafkaConfig,
        spool_dir: &std::path::Path,
        counters: Arc<KafkaCounters>,
    ) -> Result<KafkaOut, KafkaSetupError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", brokers);
        cc.set("acks", "all");
        cc.set("client.id", "mnpflow");
        // librdkafka's own queue holds 100,000 messages by default: a sensor publishing every
        // scored flow fills it within a second of a slow broker, and each event that meets a
        // full queue is sent again from the spool on disk (read back and parsed). Room for a
        // million, bounded by 256 MiB of memory (librdkafka's default is 1 GiB); the spool
        // stays the bound on what waits.
        cc.set("queue.buffering.max.messages", "1000000");
        cc.set("queue.buffering.max.kbytes", "262144");
        for (k, v) in &cfg.client {
            cc.set(k, v);
        }
        let (tx, acks) = unbounded();
        let producer: BaseProducer<Ctx> = cc
            .create_with_context(Ctx { acks: tx, brokers: brokers.to_owned() })
            .map_err(|source| KafkaSetupError::Client { brokers: brokers.to_owned(), source })?;
        let spool = Spool::open(spool_dir, cfg.spool_bytes)?;
        counters.spool_bytes.store(spool.bytes(), Relaxed);
        counters.spool_events.store(spool.pending_len() as u64, Relaxed);
        Ok(KafkaOut {
            producer,
            acks,
            spool,
            flush: Duration::from_secs_f64(cfg.flush_seconds.clamp(0.0, 86_400.0)),
            brokers: brokers.to_owned(),
            counters,
        })
    }

    /// Events an earlier run left in the spool.
    pub fn left_over(&self) -> usize {
        self.spool.pending_len()
    }

    /// Hands one spooled event to librdkafka; `false` when its queue is full.
    fn send(&self, e: &SpoolEntry) -> bool {
        let record = BaseRecord::with_opaque_to(&e.event.topic, Box::new(e.seq))
            .key(e.event.key.as_str())
            .payload(e.event.payload.as_str());
        match self.producer.send(record) {
            Ok(()) => true,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => false,
            Err((e, _)) => {
                // Not queued (e.g. a topic name librdkafka refuses): kept for a retry.
                tracing::warn!("kafka {}: {e}", self.brokers);
                false
            }
        }
    }

    /// Runs until the queue's sender is gone and everything is acknowledged, or the flush
    /// time after that has passed (what is left stays in the spool). Returns a line for
    /// stderr when events are left or errors happened.
    pub fn run(mut self, rx: Receiver<Event>) -> Option<String> {
        let c = self.counters.clone();
        // Events on disk and not in librdkafka: an earlier run's, failed deliveries, and
        // those that met a full librdkafka queue. Sent in order, from the spool.
        let mut waiting: BTreeSet<u64> = self.spool.pending();
        let earlier = waiting.clone();
        let mut retry_at = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut closed_at: Option<Instant> = None;
        let mut spool_error: Option<String> = None;
        let mut refused: Option<String> = None;
        let mut in_flight = 0usize;
        loop {
            // 1. New events: spooled first, then sent (after any waiting ones, in order).
            let mut batch = Vec::new();
            if closed_at.is_none() {
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(e) => {
                        batch.push(e);
                        // Group commit: what arrives within SPOOL_LINGER joins this batch
                        // and its one `fsync`.
                        let until = Instant::now() + SPOOL_LINGER;
                        while batch.len() < BATCH {
                            match rx.recv_deadline(until) {
                                Ok(e) => batch.push(e),
                                Err(RecvTimeoutError::Timeout) => break,
                                Err(RecvTimeoutError::Disconnected) => {
                                    closed_at = Some(Instant::now());
                                    break;
                                }
                            }
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => closed_at = Some(Instant::now()),
                }
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !batch.is_empty() {
                let n = batch.len() as u64;
                match self.spool.append(batch) {
                    Ok((kept, dropped)) => {
                        c.dropped.fetch_add(dropped, Relaxed);
                        for e in kept {
                            if waiting.is_empty() && self.send(&e) {
                                in_flight += 1;
                            } else {
                                waiting.insert(e.seq);
                            }
                        }
                    }
                    Err(e) => {
                        c.dropped.fetch_add(n, Relaxed);
                        if spool_error.is_none() {
                            tracing::warn!("{e}");
                            spool_error = Some(e.to_string());
                        }
                    }
                }
            }
            // 2. Delivery reports.
            self.producer.poll(Duration::ZERO);
            for (seq, outcome) in self.acks.try_iter() {
                in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Delivered => {
                        self.spool.ack(seq);
                        c.delivered.fetch_add(1, Relaxed);
                        backoff = Duration::from_millis(100);
                    }
                    Outcome::Retry(why) => {
                        tracing::debug!("kafka {}: delivery failed, retrying: {why}", self.brokers);
                        waiting.insert(seq);
                        c.retried.fetch_add(1, Relaxed);
                        retry_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Outcome::Refused(why) => {
                        self.spool.ack(seq);
                        c.dropped.fetch_add(1, Relaxed);
                        refused.get_or_insert(why);
                    }
                }
            }
            // 3. Waiting events, from the spool, once the backoff has passed.
            if !waiting.is_empty() && Instant::now() >= retry_at {
                match self.spool.read(&waiting, RESEND_BATCH) {
                    Ok(entries) => {
                        for e in entries {
                            if !self.send(&e) {
                                retry_at = Instant::now() + Duration::from_millis(50);
                                break;
                            }
                            waiting.remove(&e.seq);
                            in_flight += 1;
                            if earlier.contains(&e.seq) {
                                c.resent_from_spool.fetch_add(1, Relaxed);
                            }
                        }
                    }
                    Err(e) => {
                        if spool_error.is_none() {
                            tracing::warn!("{e}");
                            spool_error = Some(e.to_string());
                        }
                        retry_at = Instant::now() + Duration::from_secs(1);
                    }
                }
                // Entries acknowledged meanwhile are no longer read back: forget them.
                waiting.retain(|&s| self.spool.is_pending(s));
            }
            c.spool_bytes.store(self.spool.bytes(), Relaxed);
            c.spool_events.store(self.spool.pending_len() as u64, Relaxed);
            // 4. The end: all acknowledged, or the flush time spent.
            if let Some(t) = closed_at
                && ((waiting.is_empty() && in_flight == 0 && self.spool.pending_len() == 0)
                    || t.elapsed() >= self.flush)
            {
                break;
            }
        }
        let left = self.spool.pending_len();
        let mut notes = Vec::new();
        if left > 0 {
            notes.push(format!(
                "{left} events ({} bytes) not acknowledged by {} within [kafka] flush_seconds: kept in {}, sent by the next run with this data directory",
                self.spool.bytes(),
                self.brokers,
                self.spool.dir().display()
            ));
        }
        if let Some(e) = spool_error {
            notes.push(format!("the spool failed, events were dropped: {e}"));
        }
        if let Some(e) = refused {
            notes.push(format!("the broker refused events (dropped, counted): {e}"));
        }
        // Dropping the producer purges what librdkafka still holds: those events are in
        // the spool.
        drop(self.producer);
        (!notes.is_empty()).then(|| notes.join("; "))
    }
}
