//! End to end: a multi-million-packet capture replayed through the streaming detector with
//! scoring on (`stream::run`, default configuration: 2 flow workers, default batching, the
//! CPU scorer, alerts written to a sink), beside the flow engine alone on the same file (one
//! thread: read, decode, flow table, UNSW features) — the ratio is the cost of scoring and
//! of the pipeline's hand-offs (or its gain from the second worker).
//!
//! Input: `synth --scale 20 --duration 3000 --snaplen 200` (about 3 M packets, 243 k flows)
//! written to a temporary file once; `MNPFLOW_BENCH_CAPTURE=path` measures another capture.
//! The model is the one `replay` trains on the bundled capture. After each pipeline run the
//! flow end -> written latency (p50/p99) is printed: criterion times the runs, the histogram
//! says whether alerts stayed prompt at that rate.
//!
//! Run: `cargo bench --bench pipeline`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mnpflow::alert::{RuleSet, Threshold, ThresholdCalibrator};
use mnpflow::capture::source::FileSource;
use mnpflow::capture::synth::{SynthConfig, generate};
use mnpflow::features::{SchemaKind, extractor};
use mnpflow::flow::FlowConfig;
use mnpflow::model::slot::ModelSlot;
use mnpflow::pipeline::bootstrap::{BootstrapConfig, Truth, train_on_captures};
use mnpflow::pipeline::metrics::Metrics;
use mnpflow::pipeline::offline;
use mnpflow::pipeline::stream::{
    self, Backpressure, LoopLinks, Outputs, Scoring, Setup, Speed, StreamConfig,
};

fn capture() -> (PathBuf, Option<tempfile::TempDir>) {
    if let Ok(p) = std::env::var("MNPFLOW_BENCH_CAPTURE") {
        return (PathBuf::from(p), None);
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("synth.pcap");
    let cfg =
        SynthConfig { scale: 20.0, duration_secs: 3000.0, snaplen: 200, ..SynthConfig::default() };
    let out = std::io::BufWriter::new(std::fs::File::create(&path).expect("creating the capture"));
    generate(&cfg, out, std::io::sink()).expect("generating the capture");
    (path, Some(dir))
}

fn scoring() -> Scoring {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let truth = Truth::read(&root.join("captures/demo.truth.csv")).expect("the bundled truth file");
    let b = train_on_captures(
        &[root.join("captures/demo.pcap")],
        &FlowConfig::default(),
        SchemaKind::Unsw,
        Some(&truth),
        &BootstrapConfig::default(),
        0.01,
        false,
    )
    .expect("training on the bundled capture");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("m.mnp");
    b.artifact.save(&path).expect("saving the model");
    let model =
        b.artifact.to_model(&path, &burn::tensor::Device::flex()).expect("loading the model");
    Scoring::new(
        &b.artifact,
        &model,
        &std::fs::read(&path).expect("reading the model"),
        None,
        Some(b.cut),
    )
}

fn bench(c: &mut Criterion) {
    let (path, _keep) = capture();
    let flow = FlowConfig::default();
    let stats = offline::run_files(std::slice::from_ref(&path), &flow, |_| {})
        .expect("reading the capture");
    let packets = stats.packets;
    let slot = ModelSlot::new(scoring());
    let mut g = c.benchmark_group(format!("end-to-end-{packets}pkts"));
    g.throughput(Throughput::Elements(packets));
    g.sample_size(10);

    g.bench_function("flow engine + UNSW features (1 thread)", |b| {
        b.iter(|| {
            let mut ex = extractor(SchemaKind::Unsw, 0);
            let mut cells = Vec::new();
            let mut n = 0usize;
            offline::run_files(std::slice::from_ref(&path), &flow, |r| {
                ex.extract(r, &mut cells);
                n += cells.len();
            })
            .expect("reading the capture");
            n
        })
    });

    let stream_cfg = StreamConfig::default();
    let mut p99s = Vec::new();
    g.bench_function("replay: pipeline + scoring + alerts (2 workers)", |b| {
        b.iter(|| {
            let mut source =
                FileSource::open(std::slice::from_ref(&path)).expect("opening the capture");
            let outputs = Outputs {
                alerts: Box::new(std::io::sink()),
                flows: None,
                rules: RuleSet::default(),
                threshold: ThresholdCalibrator::new(
                    Threshold::Score(slot.load().cut.unwrap_or(0.5)),
                    10_000,
                ),
                keep_scores: false,
                flow_log: None,
                flow_log_max_bytes: u64::MAX,
                weak_labels: None,
                threshold_explicit: false,
                publish: Default::default(),
            };
            let setup = Setup {
                stream: &stream_cfg,
                flow: &flow,
                speed: Speed::Max,
                default_backpressure: Backpressure::Block,
                stats_interval: None,
                metrics_listener: None,
            };
            let metrics = Metrics::new();
            let report = stream::run(
                stream::Input::Shared(&mut source),
                setup,
                extractor(SchemaKind::Unsw, 0),
                &slot,
                outputs,
                LoopLinks::default(),
                &AtomicBool::new(false),
                &metrics,
            );
            let (p50, p99, _, max, n) = metrics.latency_us();
            p99s.push((p50, p99, max, n));
            report.flow.exported_total()
        })
    });
    g.finish();
    p99s.sort_by_key(|x| x.1);
    if let Some((p50, p99, max, n)) = p99s.get(p99s.len() / 2) {
        eprintln!(
            "pipeline latency, median run of {}: {n} flows, flow end -> written p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            p99s.len(),
            *p50 as f64 / 1e3,
            *p99 as f64 / 1e3,
            *max as f64 / 1e3
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
