//! The alert writer: the last stage, and the owner of the outputs. Per scored flow it applies
//! the rules (indicators, suppressions) and writes the EVE alert with its reasons, the
//! every-flow output, the data directory's record of alerted flows and the indicators' labels;
//! it feeds the analysts' page, samples rows for the learning loop and measures each flow's
//! latency from its end to its write.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::batch::RowBatch;
use super::{LoopLinks, Outputs, Sample, ScoredFlow};
use crate::alert::RuleSet;
use crate::alert::rules::FlowIdentity;
use crate::alert::{ecs, eve};
use crate::capture::Timestamp;
use crate::features::{Cell, Column, RecordExtractor};
use crate::feedback;
use crate::feedback::web::AlertView;
use crate::flow::{EndReason, FlowRecord};
use crate::kafka::{AlertFormat, Event, stamp_json};
use crate::model::reasons;
use crate::output::{Format, RecordWriter};
use crate::pipeline::metrics::{Metrics, Stage};

/// The columns of the every-flow output: the extractor's, then `score` and `alert`.
pub fn scored_columns(extractor: &dyn RecordExtractor) -> Vec<Column> {
    let mut c = extractor.columns().to_vec();
    c.push(Column { name: "score".into(), zeek_type: "double", feature: None });
    c.push(Column { name: "alert".into(), zeek_type: "count", feature: None });
    c
}

pub(super) struct WriterResult {
    pub(super) rules: RuleSet,
    pub(super) error: Option<String>,
    pub(super) scored: Vec<ScoredFlow>,
}

/// A flow as the data directory and the analysts' page keep it.
fn scored_record(
    rec: &FlowRecord,
    cid: &str,
    schema: &str,
    features: &[f32],
    score: f32,
) -> feedback::ScoredFlow {
    feedback::ScoredFlow {
        uid: crate::features::uid(rec),
        community_id: cid.to_owned(),
        ts: rec.first_ts.as_secs_f64(),
        orig_h: rec.orig_addr.to_string(),
        orig_p: rec.orig_port,
        resp_h: rec.resp_addr.to_string(),
        resp_p: rec.resp_port,
        proto: rec.proto,
        schema: schema.to_owned(),
        features: features.to_vec(),
        score,
    }
}

/// Flow `i`'s community ID: its row's cell when the batch kept rows (the extractor computed
/// it there), else computed from the record (a SHA-1).
fn community_id(
    batch: &RowBatch,
    i: usize,
    (n_cells, column): (usize, Option<usize>),
    rec: &FlowRecord,
    seed: u16,
) -> String {
    if let Some(k) = column
        && let Some(Cell::Short(s)) = batch.cells.get(i * n_cells + k)
    {
        return s.as_str().to_owned();
    }
    rec.community_id(seed)
}

/// What the writer hands back when it ends: the record writer, the alert sink, its counts.
pub(super) type WriterEnd =
    (Option<RecordWriter<Box<dyn Write + Send>>>, Box<dyn Write + Send>, WriterResult);

#[allow(clippy::too_many_arguments)] // the writer's ends of the channels and the outputs it owns
pub(super) fn writer_stage(
    mut outputs: Outputs,
    links: LoopLinks<'_>,
    fingerprint: &str,
    (n_cells, cid_column): (usize, Option<usize>),
    community_seed: u16,
    rx: Receiver<RowBatch>,
    free: Sender<RowBatch>,
    metrics: &Metrics,
) -> WriterEnd {
    let mut line = String::new();
    let mut cells: Vec<Cell> = Vec::with_capacity(n_cells + 2);
    let (mut lat, mut lat_flush): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    let mut error: Option<String> = None;
    let mut scored = Vec::new();
    let mut busy = Duration::ZERO;
    let mut to_log: Vec<feedback::ScoredFlow> = Vec::new();
    let mut indicated: Vec<feedback::Label> = Vec::new();
    // Which flows of the batch were written as alerts, for the page's timeline.
    let mut alerted: Vec<bool> = Vec::new();
    let keep_records = outputs.flow_log.is_some() || links.feed.is_some();
    // Scored flows for the flows topic: JSON lines. The flows file's own line when it is
    // JSON lines too (the same columns), else rendered here.
    let file_is_json = outputs.flows.as_ref().is_some_and(|w| w.format() == Format::Jsonl);
    let mut flow_json = match (&outputs.publish.flows, &outputs.publish.sink) {
        (Some((_, columns)), Some(_)) if !file_is_json => {
            RecordWriter::new(std::io::sink(), Format::Jsonl, columns, "").ok()
        }
        _ => None,
    };
    for mut batch in rx.iter() {
        let t0 = Instant::now();
        if let Some(new) = links.rules.as_ref().and_then(|r| r.try_iter().last()) {
            let mut new = new;
            new.carry_hits_from(&outputs.rules);
            outputs.rules = new;
        }
        let need_cid = outputs.rules.needs_community_id();
        let check_indicators = !outputs.rules.indicators.is_empty();
        let scoring = batch.model.take().expect("the scorer names the model of every batch");
        let model = &scoring.model;
        let mut alerts = 0u64;
        let mut suppressed = 0u64;
        let mut by_indicator = 0u64;
        let width = batch.rows.len() / batch.len().max(1);
        alerted.clear();
        for i in 0..batch.len() {
            let rec = &batch.recs[i];
            let score = batch.scores[i];
            let cut = batch.cuts[i];
            let mut alert = score >= cut;
            let mut wrote_alert = false;
            // The community ID costs a SHA-1: only for alerts, rules that name one and the
            // flows topic, once per flow.
            let mut cid = String::new();
            if alert || check_indicators {
                if alert || need_cid {
                    cid = community_id(&batch, i, (n_cells, cid_column), rec, community_seed);
                }
                let who = FlowIdentity {
                    src: rec.orig_addr,
                    src_port: rec.orig_port,
                    dest: rec.resp_addr,
                    dest_port: rec.resp_port,
                    proto: rec.proto,
                    community_id: Some(&cid),
                };
                let indicator = if check_indicators { outputs.rules.indicate(&who) } else { None };
                let suppress =
                    alert && indicator.is_none() && outputs.rules.suppress(&who).is_some();
                let indicator = indicator.map(|k| &outputs.rules.indicators[k]);
                if let Some(rule) = indicator {
                    // An indicator makes an alert whatever the score, and a weak label.
                    alert = true;
                    by_indicator += 1;
                    if cid.is_empty() {
                        cid = community_id(&batch, i, (n_cells, cid_column), rec, community_seed);
                    }
                    if outputs.weak_labels.is_some() {
                        let f = scored_record(
                            rec,
                            &cid,
                            fingerprint,
                            &batch.rows[i * width..(i + 1) * width],
                            score,
                        );
                        indicated.push(feedback::Label {
                            uid: f.uid,
                            community_id: f.community_id,
                            verdict: feedback::Verdict::Attack,
                            by: format!("rule:{}", rule.origin),
                            at: Timestamp::wall_now().as_secs_f64(),
                            note: rule.reason.clone(),
                            schema: f.schema,
                            features: f.features,
                        });
                    }
                }
                // (A flow that neither scored high nor matched an indicator ends here.)
                if alert && suppress {
                    suppressed += 1;
                } else if alert {
                    line.clear();
                    let described =
                        scoring.describe(&batch.why[i], &batch.rows[i * width..(i + 1) * width]);
                    let why = eve::Why { explanation: &batch.why[i], reasons: &described };
                    let publish = &mut outputs.publish;
                    let event_id = publish.ids.as_mut().map(|ids| ids.next_id());
                    let sensor_id = publish.sensor_id.as_deref();
                    match publish.format {
                        AlertFormat::Eve => {
                            eve::write_alert(
                                &mut line, rec, &cid, score, cut, &why, model, indicator,
                            );
                            if let Some(id) = &event_id {
                                stamp_json(&mut line, sensor_id, id);
                            }
                        }
                        AlertFormat::Ecs => ecs::write_alert(
                            &mut line,
                            rec,
                            &cid,
                            score,
                            cut,
                            &why,
                            model,
                            indicator,
                            &ecs::Stamp { event_id: event_id.as_deref(), sensor_id },
                        ),
                    }
                    if let Some(sink) = &publish.sink {
                        sink.offer(Event {
                            topic: sink.alerts_topic.clone(),
                            key: cid.clone(),
                            id: event_id.unwrap_or_default(),
                            payload: line.clone(),
                        });
                    }
                    line.push('\n');
                    if error.is_none()
                        && let Err(e) = outputs.alerts.write_all(line.as_bytes())
                    {
                        error = Some(format!("writing alerts: {e}"));
                    }
                    alerts += 1;
                    wrote_alert = true;
                    if keep_records {
                        let f = scored_record(
                            rec,
                            &cid,
                            fingerprint,
                            &batch.rows[i * width..(i + 1) * width],
                            score,
                        );
                        if let Some(feed) = links.feed {
                            let why = &batch.why[i];
                            feed.push(AlertView {
                                seq: 0,
                                time: eve::eve_timestamp(rec.last_ts),
                                flow_id: rec.id,
                                flow: f.clone(),
                                threshold: cut,
                                model: model.version.clone(),
                                recon_error: why.recon_error,
                                prototype: why.prototype,
                                similarity: why.similarity,
                                reason: reasons::text(&described),
                                reasons: described,
                                indicator: indicator
                                    .map(|r| format!("{} ({})", r.reason, r.origin)),
                                label: None,
                            });
                        }
                        if outputs.flow_log.is_some() {
                            to_log.push(f);
                        }
                    }
                }
            }
            alerted.push(wrote_alert);
            if outputs.keep_scores {
                scored.push(ScoredFlow { rec: *rec, score, alerted: wrote_alert });
            }
            // The scored flow's row (its cells, score and alert flag), for the flows file and
            // the flows topic alike.
            if outputs.flows.is_some() || flow_json.is_some() {
                cells.clear();
                cells.extend_from_slice(&batch.cells[i * n_cells..(i + 1) * n_cells]);
                cells.push(Cell::Num(score as f64));
                cells.push(Cell::Count(wrote_alert as u64));
            }
            // Whether the flows file rendered this row (its line is then the topic's too).
            let mut rendered = false;
            if let Some(w) = outputs.flows.as_mut()
                && error.is_none()
            {
                rendered = true;
                if let Err(e) = w.write(&cells) {
                    error = Some(format!("writing flows: {e}"));
                }
            }
            if let (Some(sink), Some((topic, _))) = (&outputs.publish.sink, &outputs.publish.flows)
            {
                let line = match (flow_json.as_mut(), outputs.flows.as_mut()) {
                    (Some(fw), _) => {
                        fw.render(&cells);
                        fw.last_line()
                    }
                    (None, Some(file)) => {
                        if !rendered {
                            file.render(&cells);
                        }
                        file.last_line()
                    }
                    (None, None) => "",
                };
                if !line.is_empty() {
                    let mut text = String::with_capacity(line.len() + 80);
                    text.push_str(line);
                    // The row carries the flow's `community_id` (a column of both
                    // vocabularies); it is also the message's key.
                    if cid.is_empty() {
                        cid = community_id(&batch, i, (n_cells, cid_column), rec, community_seed);
                    }
                    let id =
                        outputs.publish.ids.as_mut().map(|ids| ids.next_id()).unwrap_or_default();
                    stamp_json(&mut text, outputs.publish.sensor_id.as_deref(), &id);
                    sink.offer(Event { topic: topic.clone(), key: cid, id, payload: text });
                }
            }
        }
        if error.is_none()
            && let Err(e) = outputs.alerts.flush()
        {
            error = Some(format!("writing alerts: {e}"));
        }
        if let Some((log, _)) = outputs.flow_log.as_mut()
            && !to_log.is_empty()
            && error.is_none()
        {
            // One fsync per batch; the alerts above are already written.
            if let Err(e) = log.append_all(&to_log) {
                error = Some(format!("recording alerted flows: {e}"));
            } else if log.len_bytes() > outputs.flow_log_max_bytes
                && let Err(e) = log.rotate()
            {
                error = Some(format!("rotating the record of alerted flows: {e}"));
            }
        }
        to_log.clear();
        if let Some(store) = outputs.weak_labels.as_mut()
            && !indicated.is_empty()
            && error.is_none()
            && let Err(e) = store.add_all(std::mem::take(&mut indicated))
        {
            error = Some(format!("storing indicator labels: {e}"));
        }
        indicated.clear();
        if let Some(feed) = links.feed {
            feed.push_recent(&batch.recs, &batch.rows, &batch.scores);
            feed.tally(&batch.recs, &alerted, batch.cuts.last().copied(), batch.target_rate);
        }
        if let Some(tx) = &links.learn {
            let t = batch.recs.last().map(|r| r.last_ts.as_secs_f64() as i64).unwrap_or(0);
            if tx.try_send(Sample { t, rows: batch.rows.clone() }).is_err() {
                metrics.learn_rows_skipped.fetch_add(batch.len() as u64, Relaxed);
            }
        }
        let now = Instant::now();
        lat.clear();
        lat_flush.clear();
        for (r, t) in batch.recs.iter().zip(&batch.at) {
            let us = now.saturating_duration_since(*t).as_micros() as u64;
            if r.end_reason == EndReason::EndOfInput { lat_flush.push(us) } else { lat.push(us) }
        }
        metrics.record_latencies(&lat, &lat_flush);
        metrics.alerts.fetch_add(alerts, Relaxed);
        metrics.suppressed.fetch_add(suppressed, Relaxed);
        metrics.indicator_alerts.fetch_add(by_indicator, Relaxed);
        drop(scoring);
        batch.clear();
        let _ = free.try_send(batch);
        busy += t0.elapsed();
    }
    metrics.busy(Stage::Output, busy);
    (outputs.flows, outputs.alerts, WriterResult { rules: outputs.rules, error, scored })
}
