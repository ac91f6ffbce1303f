//! The analysts' page and its JSON API, as plain request -> reply functions (the server thread
//! that calls them is `pipeline::web_server`, so they are tested without sockets).
//!
//! | method and path      | what                                                              |
//! |----------------------|-------------------------------------------------------------------|
//! | `GET /`              | the page: recent alerts, a filter, "attack" and "benign" buttons  |
//! | `GET /api/alerts`    | recent alerts, newest first (`?limit=N&q=TEXT`)                   |
//! | `POST /api/labels`   | `{"id": uid or community ID, "verdict": "attack"|"benign", "note", "by"}` |
//! | `GET /api/labels`    | every label (without feature vectors)                             |
//! | `GET /api/models`    | the model registry and the current version                        |
//!
//! Every reply is JSON except the page. Mistakes get a 4xx with `{"error": "..."}` and store
//! nothing: 401 without the token (when one is set), 400 for malformed JSON or a bad verdict,
//! 404 for a flow the sensor does not know, 405 for a wrong method, 413 for a huge body.
//! A label is acknowledged (201) only once it is on stable storage.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::labels::{Label, LabelError, LabelStore, ScoredFlow, Verdict};
use super::registry::Registry;
use crate::flow::FlowRecord;

/// Bodies larger than this are refused (a label is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// An alert as the page lists it, with the flow record a label needs.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// Running number within this sensor's run.
    pub seq: u64,
    /// Flow end, EVE timestamp.
    pub time: String,
    pub flow_id: u64,
    #[serde(flatten)]
    pub flow: ScoredFlow,
    pub threshold: f32,
    pub model: String,
    pub recon_error: f32,
    pub prototype: u32,
    pub similarity: f32,
    /// The indicator rule that raised it, if one did.
    pub indicator: Option<String>,
    /// The verdict given on this page, if any.
    pub label: Option<Verdict>,
}

/// A window of the most recent scored flows that did not alert, so that an analyst can
/// label a miss (an attack the model let through) by uid or community ID. Fixed memory:
/// records and rows are copied into slots allocated once.
struct RecentFlows {
    recs: Vec<FlowRecord>,
    rows: Vec<f32>,
    scores: Vec<f32>,
    width: usize,
    next: usize,
    capacity: usize,
}

impl RecentFlows {
    fn push(&mut self, recs: &[FlowRecord], rows: &[f32], scores: &[f32]) {
        let width = rows.len() / recs.len().max(1);
        if width != self.width {
            // First batch (or a schema change): start over at this width.
            *self = RecentFlows { recs: Vec::new(), rows: Vec::new(), scores: Vec::new(), width, next: 0, capacity: self.capacity };
        }
        for (i, r) in recs.iter().enumerate() {
            let row = &rows[i * width..(i + 1) * width];
            if self.recs.len() < self.capacity {
                self.recs.push(*r);
                self.rows.extend_from_slice(row);
                self.scores.push(scores[i]);
            } else {
                let k = self.next;
                self.recs[k] = *r;
                self.rows[k * width..(k + 1) * width].copy_from_slice(row);
                self.scores[k] = scores[i];
                self.next = (k + 1) % self.capacity;
            }
        }
    }

    fn find(&self, id: &str, community_seed: u16, schema: &str) -> Option<ScoredFlow> {
        let by_cid = id.starts_with("1:");
        let k = (0..self.recs.len()).rev().map(|j| (j + self.next) % self.recs.len()).find(|&k| {
            let r = &self.recs[k];
            if by_cid { r.community_id(community_seed) == id } else { crate::features::uid(r) == id }
        })?;
        let r = &self.recs[k];
        Some(ScoredFlow {
            uid: crate::features::uid(r),
            community_id: r.community_id(community_seed),
            ts: r.first_ts.as_secs_f64(),
            orig_h: r.orig_addr.to_string(),
            orig_p: r.orig_port,
            resp_h: r.resp_addr.to_string(),
            resp_p: r.resp_port,
            proto: r.proto,
            schema: schema.to_owned(),
            features: self.rows[k * self.width..(k + 1) * self.width].to_vec(),
            score: self.scores[k],
        })
    }
}

/// The most recent alerts, bounded: the writer pushes, the page reads; and a window of the
/// other recent flows for labels of misses.
pub struct AlertFeed {
    inner: Mutex<(VecDeque<AlertView>, u64)>,
    capacity: usize,
    recent: Mutex<RecentFlows>,
    community_seed: u16,
    schema: String,
}

impl AlertFeed {
    /// `capacity` alerts, `recent` other flows; flows are named by community IDs of
    /// `community_seed` and their rows are of schema (fingerprint) `schema`.
    pub fn new(capacity: usize, recent: usize, community_seed: u16, schema: &str) -> AlertFeed {
        AlertFeed {
            inner: Mutex::new((VecDeque::new(), 0)),
            capacity: capacity.max(1),
            recent: Mutex::new(RecentFlows { recs: Vec::new(), rows: Vec::new(), scores: Vec::new(), width: 0, next: 0, capacity: recent.max(1) }),
            community_seed,
            schema: schema.to_owned(),
        }
    }

    /// Keeps a scored batch's flows in the window of recent flows (one lock per batch).
    pub fn push_recent(&self, recs: &[FlowRecord], rows: &[f32], scores: &[f32]) {
        if !recs.is_empty() {
            self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(recs, rows, scores);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<AlertView>, u64)> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an alert (its `seq` is assigned here), dropping the oldest beyond capacity.
    pub fn push(&self, mut a: AlertView) {
        let mut g = self.lock();
        g.1 += 1;
        a.seq = g.1;
        if g.0.len() == self.capacity {
            g.0.pop_front();
        }
        g.0.push_back(a);
    }

    /// Up to `limit` alerts, newest first, whose text contains `filter` (case-insensitive).
    pub fn recent(&self, limit: usize, filter: &str) -> Vec<AlertView> {
        let f = filter.to_ascii_lowercase();
        let g = self.lock();
        g.0.iter()
            .rev()
            .filter(|a| {
                f.is_empty()
                    || [&a.flow.uid, &a.flow.community_id, &a.flow.orig_h, &a.flow.resp_h, &a.time, &a.model]
                        .iter()
                        .any(|s| s.to_ascii_lowercase().contains(&f))
                    || a.flow.orig_p.to_string() == f
                    || a.flow.resp_p.to_string() == f
                    || a.indicator.as_deref().is_some_and(|r| r.to_ascii_lowercase().contains(&f))
            })
            .take(limit)
            .cloned()
            .collect()
    }

    /// The most recent alerted flow with this uid or community ID, else the most recent
    /// such flow of the window of other flows.
    pub fn find(&self, id: &str) -> Option<ScoredFlow> {
        let alerted = self.lock().0.iter().rev().find(|a| a.flow.uid == id || a.flow.community_id == id).map(|a| a.flow.clone());
        alerted.or_else(|| self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).find(id, self.community_seed, &self.schema))
    }

    fn mark(&self, uid: &str, verdict: Verdict) {
        for a in self.lock().0.iter_mut().filter(|a| a.flow.uid == uid) {
            a.label = Some(verdict);
        }
    }
}

/// What the handlers work on.
pub struct WebState<'a> {
    pub feed: &'a AlertFeed,
    pub labels: Mutex<LabelStore>,
    pub data_dir: PathBuf,
    /// Required on every request when set (`Authorization: Bearer T` or `?token=T`).
    pub token: Option<String>,
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply { status, content_type: "application/json", body: v.to_string() }
    }
    fn error(status: u16, msg: impl Into<String>) -> Reply {
        Reply::json(status, json!({ "error": msg.into() }))
    }
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

/// `%xx` and `+` decoding for query values.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelRequest {
    id: String,
    verdict: Verdict,
    #[serde(default)]
    note: String,
    #[serde(default)]
    by: Option<String>,
}

/// A label without its feature vector, as the API lists it.
fn label_json(l: &Label) -> serde_json::Value {
    json!({ "uid": l.uid, "community_id": l.community_id, "verdict": l.verdict, "by": l.by, "at": l.at, "note": l.note })
}

/// Answers one request. `url` is the path with its query; `authorization` the header's value.
pub fn handle(state: &WebState<'_>, method: &str, url: &str, authorization: Option<&str>, body: &[u8], now_secs: f64) -> Reply {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    if let Some(token) = &state.token {
        let given = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::to_owned)
            .or_else(|| query_param(query, "token").map(url_decode));
        if !given.is_some_and(|g| same_secret(&g, token)) {
            return Reply::error(401, "this sensor's feedback API needs its token (Authorization: Bearer TOKEN, or ?token=TOKEN)");
        }
    }
    match (method, path) {
        ("GET", "/") | ("GET", "/index.html") => Reply { status: 200, content_type: "text/html; charset=utf-8", body: PAGE.to_string() },
        ("GET", "/api/alerts") => {
            let limit = query_param(query, "limit").and_then(|v| v.parse().ok()).unwrap_or(200usize).min(10_000);
            let q = query_param(query, "q").map(url_decode).unwrap_or_default();
            let alerts: Vec<serde_json::Value> = state
                .feed
                .recent(limit, &q)
                .into_iter()
                .map(|a| {
                    let mut v = serde_json::to_value(&a).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("features");
                    }
                    v
                })
                .collect();
            Reply::json(200, json!({ "alerts": alerts }))
        }
        ("POST", "/api/labels") => post_label(state, body, now_secs),
        ("GET", "/api/labels") => match LabelStore::read(&state.data_dir) {
            Ok(all) => Reply::json(200, json!({ "labels": all.iter().map(label_json).collect::<Vec<_>>() })),
            Err(e) => Reply::error(500, e.to_string()),
        },
        ("GET", "/api/models") => match Registry::open(&state.data_dir) {
            Ok(r) => Reply::json(200, json!({ "current": r.current().map(|e| e.version), "models": r.entries() })),
            Err(e) => Reply::error(500, e.to_string()),
        },
        (_, "/" | "/index.html" | "/api/alerts" | "/api/labels" | "/api/models") => Reply::error(405, format!("{method} is not allowed on {path}")),
        _ => Reply::error(404, format!("no such page: {path}")),
    }
}

fn post_label(state: &WebState<'_>, body: &[u8], now_secs: f64) -> Reply {
    if body.len() > MAX_BODY {
        return Reply::error(413, format!("body of {} bytes; at most {MAX_BODY}", body.len()));
    }
    let req: LabelRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Reply::error(400, format!("expected {{\"id\": \"C...\" or \"1:...\", \"verdict\": \"attack\" or \"benign\", \"note\": \"...\"}}: {e}")),
    };
    let id = req.id.trim();
    if id.is_empty() {
        return Reply::error(400, "id is empty");
    }
    let by = req.by.filter(|b| !b.trim().is_empty()).unwrap_or_else(|| "web".into());
    let mut store = state.labels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // The page's alerts first (they carry the feature vector), then the data directory's record.
    let result = match state.feed.find(id) {
        Some(flow) => store.label_flow(&flow, req.verdict, &by, &req.note, now_secs).map_err(LabelError::from),
        None => store.label(id, req.verdict, &by, &req.note, now_secs),
    };
    match result {
        Ok(l) => {
            state.feed.mark(&l.uid, l.verdict);
            Reply::json(201, label_json(&l))
        }
        Err(e @ LabelError::UnknownFlow { .. }) => Reply::error(404, e.to_string()),
        Err(e) => Reply::error(500, e.to_string()),
    }
}

/// The page: one file, no external resources (the sensor may sit on an isolated network).
pub const PAGE: &str = include_str!("web_page.html");

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(uid: &str) -> ScoredFlow {
        ScoredFlow {
            uid: uid.into(),
            community_id: format!("1:{uid}="),
            ts: 1.0,
            orig_h: "10.0.0.1".into(),
            orig_p: 4000,
            resp_h: "10.0.0.2".into(),
            resp_p: 22,
            proto: 6,
            schema: "fp".into(),
            features: vec![0.5; 3],
            score: 0.9,
        }
    }

    fn alert(uid: &str) -> AlertView {
        AlertView {
            seq: 0,
            time: "2026-01-01T00:00:00.000000+0000".into(),
            flow_id: 1,
            flow: flow(uid),
            threshold: 0.5,
            model: "sha1:00".into(),
            recon_error: 0.1,
            prototype: 0,
            similarity: 0.2,
            indicator: None,
            label: None,
        }
    }

    fn state<'a>(feed: &'a AlertFeed, dir: &std::path::Path, token: Option<&str>) -> WebState<'a> {
        WebState { feed, labels: Mutex::new(LabelStore::open(dir).unwrap()), data_dir: dir.to_owned(), token: token.map(str::to_owned) }
    }

    #[test]
    fn label_from_the_api_is_stored_with_its_features() {
        let dir = tempfile::tempdir().unwrap();
        let feed = AlertFeed::new(2, 10, 0, "fp");
        for u in ["C1", "C2", "C3"] {
            feed.push(alert(u));
        }
        let st = state(&feed, dir.path(), None);
        let r = handle(&st, "GET", "/api/alerts?limit=5", None, b"", 0.0);
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let uids: Vec<&str> = v["alerts"].as_array().unwrap().iter().map(|a| a["uid"].as_str().unwrap()).collect();
        assert_eq!(uids, ["C3", "C2"], "newest first, capacity 2");
        assert!(v["alerts"][0].get("features").is_none());
        let r = handle(&st, "POST", "/api/labels", None, br#"{"id": "1:C2=", "verdict": "attack", "note": "scan"}"#, 5.0);
        assert_eq!(r.status, 201, "{}", r.body);
        let stored = LabelStore::open(dir.path()).unwrap();
        assert_eq!(stored.labels().len(), 1);
        let l = &stored.labels()[0];
        assert_eq!((l.uid.as_str(), l.verdict, l.by.as_str(), l.note.as_str(), l.features.len()), ("C2", Verdict::Attack, "web", "scan", 3));
        assert_eq!(feed.recent(5, "c2")[0].label, Some(Verdict::Attack));
        assert_eq!(handle(&st, "GET", "/api/labels", None, b"", 0.0).status, 200);
    }

    #[test]
    fn mistakes_get_4xx_and_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let feed = AlertFeed::new(10, 10, 0, "fp");
        feed.push(alert("C1"));
        let st = state(&feed, dir.path(), Some("s3cret"));
        let post = |auth: Option<&str>, url: &str, body: &[u8]| handle(&st, "POST", url, auth, body, 0.0).status;
        let good = br#"{"id": "C1", "verdict": "benign"}"#;
        assert_eq!(post(None, "/api/labels", good), 401);
        assert_eq!(post(Some("Bearer wrong!"), "/api/labels", good), 401);
        assert_eq!(post(None, "/api/labels?token=wrong", good), 401);
        let auth = Some("Bearer s3cret");
        assert_eq!(post(auth, "/api/labels", b"{not json"), 400);
        assert_eq!(post(auth, "/api/labels", br#"{"id": "C1", "verdict": "maybe"}"#), 400);
        assert_eq!(post(auth, "/api/labels", br#"{"id": "", "verdict": "attack"}"#), 400);
        assert_eq!(post(auth, "/api/labels", br#"{"id": "C1", "verdict": "attack", "extra": 1}"#), 400);
        assert_eq!(post(auth, "/api/labels", br#"{"id": "C404", "verdict": "attack"}"#), 404);
        assert_eq!(post(auth, "/api/labels", &vec![b' '; MAX_BODY + 1]), 413);
        assert_eq!(post(auth, "/api/alerts", b""), 405);
        assert_eq!(post(auth, "/nope", b""), 404);
        assert_eq!(LabelStore::open(dir.path()).unwrap().labels().len(), 0, "nothing stored");
        assert_eq!(post(auth, "/api/labels", good), 201);
        assert_eq!(handle(&st, "GET", "/?token=s3cret", None, b"", 0.0).status, 200);
        assert_eq!(LabelStore::open(dir.path()).unwrap().labels().len(), 1);
    }

    #[test]
    fn a_miss_in_the_window_of_recent_flows_can_be_labeled() {
        let dir = tempfile::tempdir().unwrap();
        let feed = AlertFeed::new(10, 2, 0, "fp");
        let mut recs: Vec<FlowRecord> = Vec::new();
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/demo.pcap");
        crate::pipeline::offline::run_files(&[demo], &crate::flow::FlowConfig::default(), |r| recs.push(*r)).unwrap();
        recs.truncate(3);
        let rows: Vec<f32> = (0..6).map(|v| v as f32).collect();
        feed.push_recent(&recs, &rows, &[0.1, 0.2, 0.3]);
        let uid = |i: usize| crate::features::uid(&recs[i]);
        assert!(feed.find(&uid(0)).is_none(), "the window holds the newest two");
        let f = feed.find(&uid(2)).unwrap();
        assert_eq!((f.features, f.score, f.schema.as_str()), (vec![4.0, 5.0], 0.3, "fp"));
        let cid = recs[1].community_id(0);
        assert_eq!(feed.find(&cid).unwrap().uid, uid(1));
        let st = state(&feed, dir.path(), None);
        let body = format!(r#"{{"id": "{}", "verdict": "attack", "note": "missed"}}"#, uid(1));
        assert_eq!(handle(&st, "POST", "/api/labels", None, body.as_bytes(), 0.0).status, 201);
        assert_eq!(LabelStore::read(dir.path()).unwrap()[0].features, vec![2.0, 3.0]);
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(url_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(url_decode("%zz%41"), "%zzA");
        assert_eq!(query_param("limit=5&q=x", "q"), Some("x"));
        assert_eq!(query_param("limit=5", "q"), None);
    }
}
