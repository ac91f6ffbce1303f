//! Measurements of the streaming pipeline: counters per stage, queue high-water marks, drops,
//! and the latency from a flow's end (its export by the flow table) to its score being
//! written, in an `hdrhistogram` of microseconds.
//!
//! Stages bump relaxed atomics once per batch, never per packet, so measuring costs nothing
//! on the hot path. [`Metrics::summary`] is the human report (on exit and every
//! `--stats-interval`); [`Metrics::prometheus`] is the text exposition format served on
//! `--metrics ADDR`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::capture::source::SourceDrops;

/// A queue between two stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// capture -> flow workers (batches of packets, per worker).
    Packets = 0,
    /// flow workers -> features (batches of flow records).
    Flows,
    /// features/batcher -> scorer (batches of rows).
    Rows,
    /// scorer -> alert writer (scored batches).
    Scored,
}

impl Queue {
    pub const ALL: [Queue; 4] = [Queue::Packets, Queue::Flows, Queue::Rows, Queue::Scored];
    pub fn name(self) -> &'static str {
        match self {
            Queue::Packets => "packets",
            Queue::Flows => "flows",
            Queue::Rows => "rows",
            Queue::Scored => "scored",
        }
    }
}

/// A pipeline stage, for busy time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Capture = 0,
    Flow,
    Features,
    Score,
    Output,
}

impl Stage {
    pub const ALL: [Stage; 5] =
        [Stage::Capture, Stage::Flow, Stage::Features, Stage::Score, Stage::Output];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Flow => "flow",
            Stage::Features => "features",
            Stage::Score => "score",
            Stage::Output => "output",
        }
    }
}

/// Shared counters; every field is monotonic except the live-flow gauge.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    pub packets_read: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Packets that did not decode (counted by reason in the final report).
    pub packets_skipped: AtomicU64,
    pub packets_flowed: AtomicU64,
    pub flows_exported: AtomicU64,
    /// Gauge: ended flows the features stage holds until their turn in window order.
    pub flows_held: AtomicU64,
    pub rows_built: AtomicU64,
    pub batches_scored: AtomicU64,
    pub rows_scored: AtomicU64,
    pub alerts: AtomicU64,
    pub suppressed: AtomicU64,
    /// Packets dropped at the capture -> flow hand-off (policy `drop`, queue full).
    pub dropped_packets: AtomicU64,
    /// Flow records dropped at the flow -> features hand-off (policy `drop`, queue full).
    pub dropped_flows: AtomicU64,
    /// Capture below us (libpcap): kernel buffer and interface drops.
    pub kernel_drops: AtomicU64,
    pub interface_drops: AtomicU64,
    /// Per capture socket (fanout capture: one per flow worker), kernel and interface drops;
    /// `kernel_drops` and `interface_drops` hold their sums.
    sockets: Mutex<Vec<SourceDrops>>,
    /// Alerts raised by indicator rules (whatever the score).
    pub indicator_alerts: AtomicU64,
    /// Times the scorer moved to another model (learning loop, rollback).
    pub model_swaps: AtomicU64,
    /// Learning loop: candidates trained, promotions, and rows not offered to the reservoir
    /// because it was busy training (a sample: nothing downstream misses them).
    pub retrains: AtomicU64,
    pub promotions: AtomicU64,
    pub learn_rows_skipped: AtomicU64,
    /// The scorer's current cut (f32 bits), for the learning loop's rate matching.
    pub cut_bits: AtomicU64,
    high_water: [AtomicU64; 4],
    busy_ns: [AtomicU64; 5],
    /// Flow end -> written, microseconds, for flows that ended while traffic flowed.
    latency: Mutex<Histogram<u64>>,
    /// The same for flows the end of input flushed all at once (a burst whose last flow
    /// waits for all the others: reported apart so it does not hide the steady state).
    latency_flush: Mutex<Histogram<u64>>,
    pub stop: AtomicBool,
    /// Kafka's counters (zero without Kafka), shared with the producer thread.
    pub kafka: std::sync::Arc<crate::kafka::KafkaCounters>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            packets_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            packets_skipped: AtomicU64::new(0),
            packets_flowed: AtomicU64::new(0),
            flows_exported: AtomicU64::new(0),
            flows_held: AtomicU64::new(0),
            rows_built: AtomicU64::new(0),
            batches_scored: AtomicU64::new(0),
            rows_scored: AtomicU64::new(0),
            alerts: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            dropped_packets: AtomicU64::new(0),
            dropped_flows: AtomicU64::new(0),
            kernel_drops: AtomicU64::new(0),
            interface_drops: AtomicU64::new(0),
            sockets: Mutex::new(Vec::new()),
            indicator_alerts: AtomicU64::new(0),
            model_swaps: AtomicU64::new(0),
            retrains: AtomicU64::new(0),
            promotions: AtomicU64::new(0),
            learn_rows_skipped: AtomicU64::new(0),
            cut_bits: AtomicU64::new(f32::INFINITY.to_bits() as u64),
            high_water: Default::default(),
            busy_ns: Default::default(),
            // 1 µs to 1 hour at 3 significant digits.
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
            latency_flush: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
            stop: AtomicBool::new(false),
            kafka: Default::default(),
        }
    }

    /// One capture socket's drop counters so far (fanout capture).
    pub fn socket_drops(&self, socket: usize, d: SourceDrops) {
        let mut v = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() <= socket {
            v.resize(socket + 1, SourceDrops::default());
        }
        v[socket] = d;
        self.kernel_drops.store(v.iter().map(|d| d.kernel).sum(), Relaxed);
        self.interface_drops.store(v.iter().map(|d| d.interface).sum(), Relaxed);
    }

    /// Kernel drops per capture socket; empty unless capture fans out.
    pub fn kernel_drops_per_socket(&self) -> Vec<u64> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|d| d.kernel).collect()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn queue_len(&self, q: Queue, len: usize) {
        self.high_water[q as usize].fetch_max(len as u64, Relaxed);
    }

    pub fn high_water(&self, q: Queue) -> u64 {
        self.high_water[q as usize].load(Relaxed)
    }

    pub fn busy(&self, s: Stage, d: Duration) {
        self.busy_ns[s as usize].fetch_add(d.as_nanos() as u64, Relaxed);
    }

    pub fn busy_secs(&self, s: Stage) -> f64 {
        self.busy_ns[s as usize].load(Relaxed) as f64 / 1e9
    }

    /// Records a batch of latencies (microseconds): of flows that ended in traffic, and of
    /// flows flushed at the end of input.
    pub fn record_latencies(&self, us: &[u64], flushed: &[u64]) {
        for (v, h) in [(us, &self.latency), (flushed, &self.latency_flush)] {
            if v.is_empty() {
                continue;
            }
            let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
            for &x in v {
                h.saturating_record(x.max(1));
            }
        }
    }

    fn quantiles(h: &Mutex<Histogram<u64>>) -> (u64, u64, u64, u64, u64) {
        let h = h.lock().unwrap_or_else(|p| p.into_inner());
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len(),
        )
    }

    /// (p50, p99, p99.9, max) of flow end -> written, in microseconds, and the count, for
    /// flows that ended while traffic flowed.
    pub fn latency_us(&self) -> (u64, u64, u64, u64, u64) {
        Self::quantiles(&self.latency)
    }

    /// The same for flows flushed at the end of input.
    pub fn flush_latency_us(&self) -> (u64, u64, u64, u64, u64) {
        Self::quantiles(&self.latency_flush)
    }

    fn get(a: &AtomicU64) -> u64 {
        a.load(Relaxed)
    }

    /// The human report: totals, rates, per-stage throughput over busy time, queues, drops,
    /// latency.
    pub fn summary(&self) -> String {
        let secs = self.elapsed().as_secs_f64().max(1e-9);
        let g = Self::get;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "packets   {} read ({} bytes), {} skipped undecodable, {:.0} packets/s over {:.3} s",
            g(&self.packets_read),
            g(&self.bytes_read),
            g(&self.packets_skipped),
            g(&self.packets_read) as f64 / secs,
            secs
        );
        let _ = writeln!(
            s,
            "flows     {} exported, {} rows built, {} scored in {} batches ({:.1} rows/batch)",
            g(&self.flows_exported),
            g(&self.rows_built),
            g(&self.rows_scored),
            g(&self.batches_scored),
            g(&self.rows_scored) as f64 / g(&self.batches_scored).max(1) as f64
        );
        let _ = writeln!(
            s,
            "alerts    {} written ({} by indicator rules), {} suppressed by rules",
            g(&self.alerts),
            g(&self.indicator_alerts),
            g(&self.suppressed)
        );
        if g(&self.retrains) + g(&self.model_swaps) > 0 {
            let _ = writeln!(
                s,
                "learning  {} retrains, {} promoted, {} model swaps; {} rows not sampled while training",
                g(&self.retrains),
                g(&self.promotions),
                g(&self.model_swaps),
                g(&self.learn_rows_skipped)
            );
        }
        let items = [
            (Stage::Capture, g(&self.packets_read), "packets"),
            (Stage::Flow, g(&self.packets_flowed), "packets"),
            (Stage::Features, g(&self.rows_built), "rows"),
            (Stage::Score, g(&self.rows_scored), "rows"),
            (Stage::Output, g(&self.rows_scored), "rows"),
        ];
        let stages: Vec<String> = items
            .iter()
            .map(|(st, n, unit)| {
                let b = self.busy_secs(*st);
                if b > 0.0 {
                    format!("{} {:.2e} {unit}/s busy {:.2} s", st.name(), *n as f64 / b, b)
                } else {
                    format!("{} idle", st.name())
                }
            })
            .collect();
        let _ = writeln!(s, "stages    {}", stages.join("; "));
        let q: Vec<String> =
            Queue::ALL.iter().map(|q| format!("{} {}", q.name(), self.high_water(*q))).collect();
        let _ = writeln!(s, "queues    high-water marks (batches): {}", q.join(", "));
        let per_socket = self.kernel_drops_per_socket();
        let per_socket = if per_socket.is_empty() {
            String::new()
        } else {
            let v: Vec<String> = per_socket.iter().map(|d| d.to_string()).collect();
            format!(" (per socket: {})", v.join(", "))
        };
        let _ = writeln!(
            s,
            "drops     {} packets, {} flow records (queue full, policy drop); capture: {} kernel{per_socket}, {} interface",
            g(&self.dropped_packets),
            g(&self.dropped_flows),
            g(&self.kernel_drops),
            g(&self.interface_drops)
        );
        let (p50, p99, p999, max, n) = self.latency_us();
        let _ = writeln!(
            s,
            "latency   flow end -> scored and written, {n} flows: p50 {} p99 {} p99.9 {} max {}",
            fmt_us(p50),
            fmt_us(p99),
            fmt_us(p999),
            fmt_us(max)
        );
        let (f50, f99, _, fmax, fn_) = self.flush_latency_us();
        if fn_ > 0 {
            let _ = writeln!(
                s,
                "          and {fn_} flows flushed at the end of input: p50 {} p99 {} max {}",
                fmt_us(f50),
                fmt_us(f99),
                fmt_us(fmax)
            );
        }
        s
    }

    /// One line for `--stats-interval`.
    pub fn line(&self) -> String {
        let g = Self::get;
        let (_, p99, _, _, _) = self.latency_us();
        format!(
            "[{:.1} s] packets {} flows {} scored {} alerts {} suppressed {} dropped {}+{} p99 {}",
            self.elapsed().as_secs_f64(),
            g(&self.packets_read),
            g(&self.flows_exported),
            g(&self.rows_scored),
            g(&self.alerts),
            g(&self.suppressed),
            g(&self.dropped_packets),
            g(&self.dropped_flows),
            fmt_us(p99)
        )
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let g = Self::get;
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                s,
                "# HELP mnpflow_{name} {help}\n# TYPE mnpflow_{name} counter\nmnpflow_{name} {v}\n"
            );
        };
        counter("packets_total", "Packets read from the capture.", g(&self.packets_read));
        counter("bytes_total", "Wire bytes read from the capture.", g(&self.bytes_read));
        counter("packets_skipped_total", "Packets that did not decode.", g(&self.packets_skipped));
        counter("flows_total", "Flows exported by the flow table.", g(&self.flows_exported));
        counter("rows_scored_total", "Flows scored by the model.", g(&self.rows_scored));
        counter("batches_scored_total", "Scorer batches.", g(&self.batches_scored));
        counter("alerts_total", "Alerts written.", g(&self.alerts));
        counter("alerts_suppressed_total", "Alerts suppressed by rules.", g(&self.suppressed));
        counter(
            "indicator_alerts_total",
            "Alerts raised by indicator rules.",
            g(&self.indicator_alerts),
        );
        counter(
            "model_swaps_total",
            "Times the scorer moved to another model.",
            g(&self.model_swaps),
        );
        counter("retrains_total", "Learning loop retraining turns.", g(&self.retrains));
        counter("promotions_total", "Candidates the learning loop promoted.", g(&self.promotions));
        counter(
            "dropped_packets_total",
            "Packets dropped at the capture -> flow queue.",
            g(&self.dropped_packets),
        );
        counter(
            "dropped_flows_total",
            "Flow records dropped at the flow -> features queue.",
            g(&self.dropped_flows),
        );
        counter(
            "capture_kernel_drops_total",
            "Packets the kernel capture buffer dropped.",
            g(&self.kernel_drops),
        );
        counter(
            "capture_interface_drops_total",
            "Packets the interface dropped.",
            g(&self.interface_drops),
        );
        let k = &self.kafka;
        counter("kafka_events_queued_total", "Events handed to the Kafka producer.", g(&k.queued));
        counter(
            "kafka_events_delivered_total",
            "Events the Kafka broker acknowledged.",
            g(&k.delivered),
        );
        counter(
            "kafka_events_dropped_total",
            "Events dropped: Kafka queue full, spool at its bound, or refused by the broker.",
            g(&k.dropped),
        );
        counter(
            "kafka_events_retried_total",
            "Kafka deliveries that failed and were sent again from the spool.",
            g(&k.retried),
        );
        let _ = write!(
            s,
            "# HELP mnpflow_kafka_spool_bytes Bytes of the Kafka spool (events not yet acknowledged).\n# TYPE mnpflow_kafka_spool_bytes gauge\nmnpflow_kafka_spool_bytes {}\n# HELP mnpflow_kafka_spool_events Events in the Kafka spool not yet acknowledged.\n# TYPE mnpflow_kafka_spool_events gauge\nmnpflow_kafka_spool_events {}\n",
            g(&k.spool_bytes),
            g(&k.spool_events)
        );
        let per_socket = self.kernel_drops_per_socket();
        if !per_socket.is_empty() {
            let _ = writeln!(
                s,
                "# HELP mnpflow_capture_socket_kernel_drops_total Packets the kernel dropped, per fanout capture socket.\n# TYPE mnpflow_capture_socket_kernel_drops_total counter"
            );
            for (i, d) in per_socket.iter().enumerate() {
                let _ =
                    writeln!(s, "mnpflow_capture_socket_kernel_drops_total{{socket=\"{i}\"}} {d}");
            }
        }
        let _ = writeln!(
            s,
            "# HELP mnpflow_stage_busy_seconds_total Time each stage spent working.\n# TYPE mnpflow_stage_busy_seconds_total counter"
        );
        for st in Stage::ALL {
            let _ = writeln!(
                s,
                "mnpflow_stage_busy_seconds_total{{stage=\"{}\"}} {}",
                st.name(),
                self.busy_secs(st)
            );
        }
        let _ = writeln!(
            s,
            "# HELP mnpflow_flows_held Ended flows waiting for their turn in window order.\n# TYPE mnpflow_flows_held gauge\nmnpflow_flows_held {}",
            g(&self.flows_held)
        );
        let _ = writeln!(
            s,
            "# HELP mnpflow_queue_high_water Most batches waiting in a queue.\n# TYPE mnpflow_queue_high_water gauge"
        );
        for q in Queue::ALL {
            let _ = writeln!(
                s,
                "mnpflow_queue_high_water{{queue=\"{}\"}} {}",
                q.name(),
                self.high_water(q)
            );
        }
        let (p50, p99, p999, max, n) = self.latency_us();
        let _ = writeln!(
            s,
            "# HELP mnpflow_alert_latency_seconds Flow end to scored and written.\n# TYPE mnpflow_alert_latency_seconds summary"
        );
        for (q, v) in [("0.5", p50), ("0.99", p99), ("0.999", p999), ("1", max)] {
            let _ =
                writeln!(s, "mnpflow_alert_latency_seconds{{quantile=\"{q}\"}} {}", v as f64 / 1e6);
        }
        let _ = writeln!(s, "mnpflow_alert_latency_seconds_count {n}");
        s
    }
}

fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

/// Binds the metrics endpoint (so that a bad address fails before the pipeline starts).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `GET /metrics` (any path) until `done` is set: a tiny HTTP/1.0 responder.
pub fn serve(listener: TcpListener, metrics: &Metrics, done: &AtomicBool) {
    while !done.load(Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let body = metrics.prometheus();
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-socket drops (fanout capture) are summed into the capture counters and shown per
    /// socket in the summary and in Prometheus; a later reading replaces an earlier one.
    #[test]
    fn socket_drops_are_summed_and_listed_per_socket() {
        let m = Metrics::new();
        assert!(m.kernel_drops_per_socket().is_empty());
        assert!(!m.prometheus().contains("socket_kernel_drops"));
        m.socket_drops(1, SourceDrops { kernel: 7, interface: 0 });
        m.socket_drops(0, SourceDrops { kernel: 2, interface: 5 });
        m.socket_drops(1, SourceDrops { kernel: 9, interface: 0 });
        assert_eq!(m.kernel_drops_per_socket(), [2, 9]);
        assert_eq!(m.kernel_drops.load(Relaxed), 11);
        assert_eq!(m.interface_drops.load(Relaxed), 5);
        let p = m.prometheus();
        assert!(p.contains("mnpflow_capture_socket_kernel_drops_total{socket=\"1\"} 9"), "{p}");
        assert!(p.contains("mnpflow_capture_kernel_drops_total 11"), "{p}");
        let s = m.summary();
        assert!(s.contains("capture: 11 kernel (per socket: 2, 9), 5 interface"), "{s}");
    }
}
