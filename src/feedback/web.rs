//! The analysts' page and its JSON API, as plain request -> reply functions (the server thread
//! that calls them is `pipeline::web_server`, so they are tested without sockets).
//!
//! | method and path      | what                                                              |
//! |----------------------|-------------------------------------------------------------------|
//! | `GET /`              | the page: recent alerts, a filter, "attack" and "benign" buttons  |
//! | `GET /?token=T`      | the first visit: keeps `T` in the page's cookie, 303 to `/`       |
//! | `GET /page.js`, `/page.css` | its script and style (separate files, so the CSP forbids inline code) |
//! | `GET /api/alerts`    | recent alerts, newest first (`?limit=N&q=TEXT`)                   |
//! | `GET /api/incidents` | recent alerts grouped into incidents ([`super::incidents`]), the most recently active first, with their members and label state (`?limit=N&q=TEXT`) |
//! | `POST /api/labels`   | `{"id": uid or community ID, "verdict": "attack"|"benign"|"unlabeled", "note", "by"}`; a named token's analyst overrides `by` |
//! | `POST /api/labels`   | `{"ids": [uid, ...], "incident": "I...", "verdict", "note"}`: one label per listed flow (all stored with one sync, or none), the note naming the incident |
//! | `GET /api/labels`    | every label (without feature vectors)                             |
//!
//! `unlabeled` withdraws a flow's verdict (the page's undo; the latest label wins). Alerts and
//! incidents carry their label state: `labeled` is the latest label (`verdict`, `by`, `at`,
//! `note`) of the flow, or null.
//! | `GET /api/models`    | the model registry and the current version                        |
//! | `GET /api/summary`   | the numbers of the page's pictures ([`super::summary`]): alerts and scored flows per bucket of capture time, the score histogram of recent flows (`?bins=N`), the threshold, the top sources and destinations of the alerts held (`?top=N`) |
//!
//! Every reply is JSON except the page. Mistakes get a 4xx with `{"error": "..."}` and store
//! nothing: 403 for a foreign `Host` (DNS rebinding) or, on a POST, a foreign `Origin`/`Referer`
//! (cross-site request forgery), 401 without a valid token, 415 for a POST body that is not
//! `application/json`, 400 for malformed JSON or a bad verdict, 404 for a flow the sensor does
//! not know, 405 for a wrong method, 413 for a huge body. The rules are in [`super::access`].
//! A label is acknowledged (201) only once it is on stable storage.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::access::{Access, SECURITY_HEADERS, TOKEN_FILE};
use super::labels::{Label, LabelError, LabelStore, ScoredFlow, Verdict};
use super::registry::Registry;
use super::summary::{Summary, TargetRate, Timeline, histogram, top_talkers};
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
    /// Its reasons in traffic terms, as text (`dpkts 1, typical 9-14; ...`) and as fields.
    pub reason: String,
    pub reasons: Vec<crate::model::reasons::Described>,
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
            *self = RecentFlows {
                recs: Vec::new(),
                rows: Vec::new(),
                scores: Vec::new(),
                width,
                next: 0,
                capacity: self.capacity,
            };
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
        let k =
            (0..self.recs.len()).rev().map(|j| (j + self.next) % self.recs.len()).find(|&k| {
                let r = &self.recs[k];
                if by_cid {
                    r.community_id(community_seed) == id
                } else {
                    crate::features::uid(r) == id
                }
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
    /// Alerts and scored flows over time, the latest flow's alert cut and its target rate.
    timeline: Mutex<(Timeline, Option<f32>, Option<TargetRate>)>,
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
            recent: Mutex::new(RecentFlows {
                recs: Vec::new(),
                rows: Vec::new(),
                scores: Vec::new(),
                width: 0,
                next: 0,
                capacity: recent.max(1),
            }),
            timeline: Mutex::new((Timeline::default(), None, None)),
            community_seed,
            schema: schema.to_owned(),
        }
    }

    /// Keeps a scored batch's flows in the window of recent flows (one lock per batch).
    pub fn push_recent(&self, recs: &[FlowRecord], rows: &[f32], scores: &[f32]) {
        if !recs.is_empty() {
            self.recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(recs, rows, scores);
        }
    }

    /// Counts a scored batch's flows in the timeline, at their ends: `alerted[i]` says whether
    /// `recs[i]` was written as an alert; `cut` is the alert cut of the batch's last flow,
    /// `target` the rate its threshold aims at.
    pub fn tally(
        &self,
        recs: &[FlowRecord],
        alerted: &[bool],
        cut: Option<f32>,
        target: Option<TargetRate>,
    ) {
        if recs.is_empty() {
            return;
        }
        let mut g = self.timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, r) in recs.iter().enumerate() {
            g.0.count(r.last_ts.0.div_euclid(1_000_000_000), alerted.get(i).copied() == Some(true));
        }
        if cut.is_some() {
            g.1 = cut;
        }
        g.2 = target;
    }

    /// The numbers of the page's pictures: the timeline, `bins` histogram bins of the recent
    /// flows' scores, the `top` sources and destinations of the alerts held.
    pub fn summary(&self, bins: usize, top: usize) -> Summary {
        let (timeline, threshold, target_rate) = {
            let g = self.timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (g.0.view(), g.1.filter(|t| t.is_finite()), g.2)
        };
        let scores = histogram(
            &self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).scores,
            threshold,
            bins,
        );
        let g = self.lock();
        let (top_sources, top_destinations) = top_talkers(g.0.iter(), top);
        Summary {
            timeline,
            scores,
            threshold: threshold.map(super::summary::decimal),
            target_rate,
            alerts_held: g.0.len(),
            top_sources,
            top_destinations,
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
                    || [
                        &a.flow.uid,
                        &a.flow.community_id,
                        &a.flow.orig_h,
                        &a.flow.resp_h,
                        &a.time,
                        &a.model,
                    ]
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
        let alerted = self
            .lock()
            .0
            .iter()
            .rev()
            .find(|a| a.flow.uid == id || a.flow.community_id == id)
            .map(|a| a.flow.clone());
        alerted.or_else(|| {
            self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).find(
                id,
                self.community_seed,
                &self.schema,
            )
        })
    }

    fn mark(&self, uid: &str, verdict: Verdict) {
        for a in self.lock().0.iter_mut().filter(|a| a.flow.uid == uid) {
            a.label = (verdict != Verdict::Unlabeled).then_some(verdict);
        }
    }

    /// Every alert held, newest first, whose text contains `filter`.
    pub fn all(&self, filter: &str) -> Vec<AlertView> {
        self.recent(self.capacity, filter)
    }
}

/// What the handlers work on.
pub struct WebState<'a> {
    pub feed: &'a AlertFeed,
    pub labels: Mutex<LabelStore>,
    pub data_dir: PathBuf,
    /// Tokens, Host and Origin rules.
    pub access: Access,
    /// Where stored labels are also published (the labels topic, Kafka on).
    pub label_sink: Option<crate::kafka::EventSink>,
}

/// What the handlers read of an HTTP request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path with its query.
    pub url: &'a str,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub body: &'a [u8],
}

/// An HTTP answer. Every reply also carries [`SECURITY_HEADERS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Further headers (a cookie, a redirect).
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply { status, content_type: "application/json", body: v.to_string(), headers: Vec::new() }
    }
    /// A 4xx or 5xx with `{"error": msg}`.
    pub fn error(status: u16, msg: impl Into<String>) -> Reply {
        Reply::json(status, json!({ "error": msg.into() }))
    }
    fn asset(content_type: &'static str, body: &str) -> Reply {
        Reply { status: 200, content_type, body: body.to_string(), headers: Vec::new() }
    }

    /// Every header of the reply: its own, then the security headers.
    pub fn all_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_str())).chain(SECURITY_HEADERS.iter().copied())
    }
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
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
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
    #[serde(default)]
    id: String,
    /// Several flows at once (an incident, an undo), instead of `id`.
    #[serde(default)]
    ids: Option<Vec<String>>,
    /// The incident the labels are given for, recorded in their note.
    #[serde(default)]
    incident: Option<String>,
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

/// A flow's label state as the page shows it: its latest label, or null.
fn state_json(latest: &HashMap<&str, &Label>, uid: &str) -> serde_json::Value {
    latest.get(uid).map_or(
        serde_json::Value::Null,
        |l| json!({ "verdict": l.verdict, "by": l.by, "at": l.at, "note": l.note }),
    )
}

/// An alert as the API lists it: without its feature vector, with its label state (the
/// label store's latest label of the flow; `label` its verdict unless withdrawn).
fn alert_json(
    a: &AlertView,
    latest: &HashMap<&str, &Label>,
    with_reasons: bool,
) -> serde_json::Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("features");
        if !with_reasons {
            o.remove("reasons");
        }
        if let Some(l) = latest.get(a.flow.uid.as_str()) {
            let verdict = (l.verdict != Verdict::Unlabeled).then_some(l.verdict);
            o.insert("label".into(), json!(verdict));
        }
        o.insert("labeled".into(), state_json(latest, &a.flow.uid));
    }
    v
}

/// An incident as the API lists it: its summary, members, and label state (`label`:
/// `attack` or `benign` when every member has that verdict, `unlabeled` when none has one,
/// else `mixed`; `labels`: counts; `labeled`: its latest member label).
fn incident_json(
    i: &super::incidents::Incident,
    latest: &HashMap<&str, &Label>,
) -> serde_json::Value {
    let mut v = serde_json::to_value(i).unwrap_or_default();
    let (mut attack, mut benign) = (0usize, 0usize);
    let mut newest: Option<&Label> = None;
    for a in &i.members {
        if let Some(l) = latest.get(a.flow.uid.as_str()) {
            match l.verdict {
                Verdict::Attack => attack += 1,
                Verdict::Benign => benign += 1,
                Verdict::Unlabeled => {}
            }
            if l.verdict != Verdict::Unlabeled && newest.is_none_or(|n| l.at >= n.at) {
                newest = Some(l);
            }
        }
    }
    let state = match (attack, benign) {
        (0, 0) => "unlabeled",
        (a, 0) if a == i.flows => "attack",
        (0, b) if b == i.flows => "benign",
        _ => "mixed",
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("label".into(), json!(state));
        o.insert(
            "labels".into(),
            json!({ "attack": attack, "benign": benign, "unlabeled": i.flows - attack - benign }),
        );
        o.insert(
            "labeled".into(),
            newest.map_or(
                serde_json::Value::Null,
                |l| json!({ "verdict": l.verdict, "by": l.by, "at": l.at, "note": l.note }),
            ),
        );
        o.insert(
            "members".into(),
            i.members.iter().map(|a| alert_json(a, latest, false)).collect(),
        );
    }
    v
}

/// Answers one request: the access checks first ([`super::access`]), then the route.
pub fn handle(state: &WebState<'_>, req: &Request<'_>, now_secs: f64) -> Reply {
    let (method, url) = (req.method, req.url);
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let access = &state.access;
    if !access.host_ok(req.host) {
        return Reply::error(
            403,
            format!(
                "Host {:?} is not this sensor's address (add the name to [feedback] hosts if it is)",
                req.host.unwrap_or("")
            ),
        );
    }
    let query_token = query_param(query, "token").map(url_decode);
    let Some(who) = access.who(req.authorization, req.cookie, query_token.as_deref()) else {
        return Reply::error(
            401,
            format!(
                "this sensor's feedback page needs its token: open the URL the sensor printed at start-up, or send Authorization: Bearer TOKEN (the URL is in {TOKEN_FILE} in the data directory while the sensor runs)"
            ),
        );
    };
    if method != "GET" && method != "HEAD" {
        if !access.origin_ok(req.host, req.origin, req.referer) {
            return Reply::error(
                403,
                format!(
                    "a request from {:?} may not change this sensor's state",
                    req.origin.or(req.referer).unwrap_or("")
                ),
            );
        }
        let json_body = req
            .content_type
            .and_then(|c| c.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json_body {
            return Reply::error(
                415,
                format!(
                    "expected Content-Type: application/json, not {:?}",
                    req.content_type.unwrap_or("")
                ),
            );
        }
    }
    match (method, path) {
        // The first visit carries ?token=: keep it in the cookie and take it out of the address.
        ("GET", "/") | ("GET", "/index.html")
            if access.needs_token()
                && query_token
                    .as_deref()
                    .is_some_and(|t| access.who(None, None, Some(t)).is_some()) =>
        {
            let secret = query_token.unwrap_or_default();
            let mut r = Reply::asset(
                "text/html; charset=utf-8",
                "<!doctype html><title>mnpflow</title><a href=\"/\">mnpflow alerts</a>",
            );
            r.status = 303;
            r.headers.push(("Set-Cookie", access.cookie_for(&secret)));
            r.headers.push(("Location", "/".into()));
            r
        }
        ("GET", "/") | ("GET", "/index.html") => Reply::asset("text/html; charset=utf-8", PAGE),
        ("GET", "/page.js") => Reply::asset("text/javascript; charset=utf-8", PAGE_JS),
        ("GET", "/page.css") => Reply::asset("text/css; charset=utf-8", PAGE_CSS),
        ("GET", "/api/alerts") => {
            let limit = query_param(query, "limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(200usize)
                .min(10_000);
            let q = query_param(query, "q").map(url_decode).unwrap_or_default();
            let recent = state.feed.recent(limit, &q);
            let store = state.labels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let latest = store.latest();
            let alerts: Vec<serde_json::Value> =
                recent.iter().map(|a| alert_json(a, &latest, true)).collect();
            Reply::json(200, json!({ "alerts": alerts }))
        }
        ("GET", "/api/incidents") => {
            let limit = query_param(query, "limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100usize)
                .min(10_000);
            let q = query_param(query, "q").map(url_decode).unwrap_or_default();
            let all = super::incidents::incidents(&state.feed.all(&q));
            let store = state.labels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let latest = store.latest();
            let incidents: Vec<serde_json::Value> =
                all.iter().take(limit).map(|i| incident_json(i, &latest)).collect();
            Reply::json(
                200,
                json!({ "incidents": incidents, "total": all.len(), "window_secs": super::incidents::WINDOW_SECS }),
            )
        }
        ("POST", "/api/labels") => post_label(state, req.body, who, now_secs),
        ("GET", "/api/labels") => match LabelStore::read(&state.data_dir) {
            Ok(all) => Reply::json(
                200,
                json!({ "labels": all.iter().map(label_json).collect::<Vec<_>>() }),
            ),
            Err(e) => Reply::error(500, e.to_string()),
        },
        ("GET", "/api/summary") => {
            let number = |key: &str, default: usize, max: usize| {
                query_param(query, key)
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(default)
                    .clamp(1, max)
            };
            let bins = number("bins", super::summary::DEFAULT_BINS, super::summary::MAX_BINS);
            let top = number("top", super::summary::DEFAULT_TOP, super::summary::MAX_TOP);
            Reply::json(
                200,
                serde_json::to_value(state.feed.summary(bins, top)).unwrap_or_default(),
            )
        }
        ("GET", "/api/models") => match Registry::open(&state.data_dir) {
            Ok(r) => Reply::json(
                200,
                json!({ "current": r.current().map(|e| e.version), "models": r.entries() }),
            ),
            Err(e) => Reply::error(500, e.to_string()),
        },
        (
            _,
            "/" | "/index.html" | "/page.js" | "/page.css" | "/api/alerts" | "/api/incidents"
            | "/api/labels" | "/api/models" | "/api/summary",
        ) => Reply::error(405, format!("{method} is not allowed on {path}")),
        _ => Reply::error(404, format!("no such page: {path}")),
    }
}

/// Stores a label by `who` (the token's analyst). A request's own `by` is taken only from a
/// token that names nobody, so that a named analyst cannot sign as another.
fn post_label(state: &WebState<'_>, body: &[u8], who: &str, now_secs: f64) -> Reply {
    if body.len() > MAX_BODY {
        return Reply::error(413, format!("body of {} bytes; at most {MAX_BODY}", body.len()));
    }
    let mut req: LabelRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return Reply::error(
                400,
                format!(
                    "expected {{\"id\": \"C...\" or \"1:...\", \"verdict\": \"attack\", \"benign\" or \"unlabeled\", \"note\": \"...\"}} (or \"ids\": [...] for several): {e}"
                ),
            );
        }
    };
    let by = match req.by.take().filter(|b| !b.trim().is_empty()) {
        Some(b) if who == super::access::DEFAULT_ANALYST => b,
        _ => who.to_string(),
    };
    req.note = match req.incident.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        Some(i) if req.note.is_empty() => format!("incident {i}"),
        Some(i) => format!("incident {i}: {}", req.note),
        None => std::mem::take(&mut req.note),
    };
    if let Some(ids) = &req.ids {
        if !req.id.is_empty() {
            return Reply::error(400, "give either id or ids, not both");
        }
        return post_labels(state, ids, req.verdict, &by, &req.note, now_secs);
    }
    let id = req.id.trim();
    if id.is_empty() {
        return Reply::error(400, "id is empty");
    }
    let mut store = state.labels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // The page's alerts first (they carry the feature vector), then the data directory's record.
    let result = match state.feed.find(id) {
        Some(flow) => {
            store.label_flow(&flow, req.verdict, &by, &req.note, now_secs).map_err(LabelError::from)
        }
        None => store.label(id, req.verdict, &by, &req.note, now_secs),
    };
    match result {
        Ok(l) => {
            state.feed.mark(&l.uid, l.verdict);
            if let Some(sink) = &state.label_sink {
                sink.offer_label(&l);
            }
            Reply::json(201, label_json(&l))
        }
        Err(e @ LabelError::UnknownFlow { .. }) => Reply::error(404, e.to_string()),
        Err(e) => Reply::error(500, e.to_string()),
    }
}

/// Labels several flows the page lists (an incident's members, an undo): all are stored with
/// one sync, or none (404 when one is not among the sensor's recent flows).
fn post_labels(
    state: &WebState<'_>,
    ids: &[String],
    verdict: Verdict,
    by: &str,
    note: &str,
    now_secs: f64,
) -> Reply {
    if ids.is_empty() {
        return Reply::error(400, "ids is empty");
    }
    let mut flows = Vec::with_capacity(ids.len());
    for id in ids {
        match state.feed.find(id.trim()) {
            Some(f) => flows.push(f),
            None => {
                return Reply::error(
                    404,
                    format!("no recent flow has uid or community ID {id:?}; nothing stored"),
                );
            }
        }
    }
    let mut store = state.labels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match store.label_flows(&flows, verdict, by, note, now_secs) {
        Ok(labels) => {
            for l in &labels {
                state.feed.mark(&l.uid, l.verdict);
                if let Some(sink) = &state.label_sink {
                    sink.offer_label(l);
                }
            }
            Reply::json(201, json!({ "labels": labels.iter().map(label_json).collect::<Vec<_>>() }))
        }
        Err(e) => Reply::error(500, e.to_string()),
    }
}

/// The page: three files served by the sensor, no external resources (the sensor may sit on
/// an isolated network).
pub const PAGE: &str = include_str!("web_page.html");
pub const PAGE_JS: &str = include_str!("web_page.js");
pub const PAGE_CSS: &str = include_str!("web_page.css");

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
            reason: String::new(),
            reasons: Vec::new(),
            indicator: None,
            label: None,
        }
    }

    const HOST: &str = "127.0.0.1:8090";

    fn state<'a>(feed: &'a AlertFeed, dir: &std::path::Path, token: Option<&str>) -> WebState<'a> {
        let bound = HOST.parse().unwrap();
        let access = match token {
            Some(t) => Access::new(bound, &[t.to_string()], false, &[]).unwrap(),
            None => Access::new(bound, &[], true, &[]).unwrap(),
        };
        WebState {
            feed,
            labels: Mutex::new(LabelStore::open(dir).unwrap()),
            data_dir: dir.to_owned(),
            access,
            label_sink: None,
        }
    }

    /// A request as the page itself sends it: our Host, JSON bodies.
    fn req<'a>(
        method: &'a str,
        url: &'a str,
        auth: Option<&'a str>,
        body: &'a [u8],
    ) -> Request<'a> {
        Request {
            method,
            url,
            host: Some(HOST),
            authorization: auth,
            content_type: Some("application/json"),
            body,
            ..Request::default()
        }
    }

    fn call(
        st: &WebState<'_>,
        method: &str,
        url: &str,
        auth: Option<&str>,
        body: &[u8],
        now: f64,
    ) -> Reply {
        handle(st, &req(method, url, auth, body), now)
    }

    #[test]
    fn label_from_the_api_is_stored_with_its_features() {
        let dir = tempfile::tempdir().unwrap();
        let feed = AlertFeed::new(2, 10, 0, "fp");
        for u in ["C1", "C2", "C3"] {
            feed.push(alert(u));
        }
        let st = state(&feed, dir.path(), None);
        let r = call(&st, "GET", "/api/alerts?limit=5", None, b"", 0.0);
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let uids: Vec<&str> =
            v["alerts"].as_array().unwrap().iter().map(|a| a["uid"].as_str().unwrap()).collect();
        assert_eq!(uids, ["C3", "C2"], "newest first, capacity 2");
        assert!(v["alerts"][0].get("features").is_none());
        let r = call(
            &st,
            "POST",
            "/api/labels",
            None,
            br#"{"id": "1:C2=", "verdict": "attack", "note": "scan"}"#,
            5.0,
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let stored = LabelStore::open(dir.path()).unwrap();
        assert_eq!(stored.labels().len(), 1);
        let l = &stored.labels()[0];
        assert_eq!(
            (l.uid.as_str(), l.verdict, l.by.as_str(), l.note.as_str(), l.features.len()),
            ("C2", Verdict::Attack, "web", "scan", 3)
        );
        assert_eq!(feed.recent(5, "c2")[0].label, Some(Verdict::Attack));
        assert_eq!(call(&st, "GET", "/api/labels", None, b"", 0.0).status, 200);
    }

    #[test]
    fn mistakes_get_4xx_and_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let feed = AlertFeed::new(10, 10, 0, "fp");
        feed.push(alert("C1"));
        let st = state(&feed, dir.path(), Some("s3cret-token"));
        let post = |auth: Option<&str>, url: &str, body: &[u8]| {
            call(&st, "POST", url, auth, body, 0.0).status
        };
        let good = br#"{"id": "C1", "verdict": "benign"}"#;
        assert_eq!(post(None, "/api/labels", good), 401);
        assert_eq!(post(Some("Bearer wrong!"), "/api/labels", good), 401);
        assert_eq!(post(None, "/api/labels?token=wrong", good), 401);
        let auth = Some("Bearer s3cret-token");
        assert_eq!(post(auth, "/api/labels", b"{not json"), 400);
        assert_eq!(post(auth, "/api/labels", br#"{"id": "C1", "verdict": "maybe"}"#), 400);
        assert_eq!(post(auth, "/api/labels", br#"{"id": "", "verdict": "attack"}"#), 400);
        assert_eq!(
            post(auth, "/api/labels", br#"{"id": "C1", "verdict": "attack", "extra": 1}"#),
            400
        );
        assert_eq!(post(auth, "/api/labels", br#"{"id": "C404", "verdict": "attack"}"#), 404);
        assert_eq!(post(auth, "/api/labels", &vec![b' '; MAX_BODY + 1]), 413);
        assert_eq!(post(auth, "/api/alerts", b""), 405);
        assert_eq!(post(auth, "/nope", b""), 404);
        assert_eq!(LabelStore::open(dir.path()).unwrap().labels().len(), 0, "nothing stored");
        assert_eq!(post(auth, "/api/labels", good), 201);
        assert_eq!(call(&st, "GET", "/?token=s3cret-token", None, b"", 0.0).status, 303);
        assert_eq!(LabelStore::open(dir.path()).unwrap().labels().len(), 1);
    }

    #[test]
    fn a_miss_in_the_window_of_recent_flows_can_be_labeled() {
        let dir = tempfile::tempdir().unwrap();
        let feed = AlertFeed::new(10, 2, 0, "fp");
        let mut recs: Vec<FlowRecord> = Vec::new();
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/demo.pcap");
        crate::pipeline::offline::run_files(&[demo], &crate::flow::FlowConfig::default(), |r| {
            recs.push(*r)
        })
        .unwrap();
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
        assert_eq!(call(&st, "POST", "/api/labels", None, body.as_bytes(), 0.0).status, 201);
        assert_eq!(LabelStore::read(dir.path()).unwrap()[0].features, vec![2.0, 3.0]);
    }

    /// The two attacks of issue 11, as requests: a cross-origin "simple" POST (text/plain,
    /// foreign Origin; with the cookie, as a browser sends it from a page of the same site,
    /// another port of 127.0.0.1, and without it, as from any other site) and a rebound name
    /// in Host. Neither is answered or stores anything; the page's own request still does.
    #[test]
    fn forgery_and_rebinding_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let feed = AlertFeed::new(10, 10, 0, "fp");
        feed.push(alert("C1"));
        let st = state(&feed, dir.path(), Some("alice:a1ice-secret"));
        let body = br#"{"id": "C1", "verdict": "benign"}"#;
        let cookie = "mnpflow_token_8090=a1ice-secret";
        let page = Request {
            cookie: Some(cookie),
            origin: Some("http://127.0.0.1:8090"),
            ..req("POST", "/api/labels", None, body)
        };
        let csrf = Request {
            content_type: Some("text/plain"),
            origin: Some("http://evil.example"),
            ..page
        };
        assert_eq!(handle(&st, &csrf, 0.0).status, 403);
        assert_eq!(
            handle(
                &st,
                &Request { origin: None, referer: Some("http://evil.example/x"), ..csrf },
                0.0
            )
            .status,
            403
        );
        assert_eq!(
            handle(&st, &Request { origin: Some("http://127.0.0.1:8090"), ..csrf }, 0.0).status,
            415,
            "text/plain from our own origin"
        );
        assert_eq!(
            handle(&st, &Request { cookie: None, ..page }, 0.0).status,
            401,
            "no cookie: what a cross-site request gets"
        );
        let rebound =
            Request { host: Some("evil.example:8090"), ..req("GET", "/api/alerts", None, b"") };
        let r = handle(&st, &Request { cookie: Some(cookie), ..rebound }, 0.0);
        assert_eq!(r.status, 403);
        assert!(!r.body.contains("C1"));
        assert_eq!(handle(&st, &Request { host: None, ..rebound }, 0.0).status, 403);
        assert!(LabelStore::read(dir.path()).unwrap().is_empty(), "nothing stored");
        // The page's own request: stored, by the token's analyst whatever the body says.
        let signed = br#"{"id": "C1", "verdict": "attack", "by": "mallory"}"#;
        let r = handle(&st, &Request { body: signed, ..page }, 0.0);
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(LabelStore::read(dir.path()).unwrap()[0].by, "alice");
        // Every reply forbids framing and sniffing and allows no other origin.
        let headers: Vec<(&str, &str)> = r.all_headers().collect();
        assert!(headers.contains(&("X-Content-Type-Options", "nosniff")));
        assert!(headers.iter().any(|(k, v)| *k == "Content-Security-Policy"
            && v.contains("frame-ancestors 'none'")
            && !v.contains("unsafe-inline")));
        assert!(!headers.iter().any(|(k, _)| k.starts_with("Access-Control")));
    }

    /// `?token=` on the first visit becomes an HttpOnly, SameSite=Strict cookie and a redirect
    /// that drops it from the address; later requests need only the cookie.
    #[test]
    fn first_visit_trades_the_token_for_a_cookie() {
        let dir = tempfile::tempdir().unwrap();
        let feed = AlertFeed::new(10, 10, 0, "fp");
        let st = state(&feed, dir.path(), Some("s3cret-token"));
        let r = call(&st, "GET", "/?token=s3cret-token", None, b"", 0.0);
        assert_eq!(r.status, 303);
        let cookie =
            r.headers.iter().find(|(k, _)| *k == "Set-Cookie").map(|(_, v)| v.clone()).unwrap();
        assert!(
            cookie.starts_with("mnpflow_token_8090=s3cret-token;")
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(r.headers.contains(&("Location", "/".to_string())));
        let jar = cookie.split(';').next().unwrap();
        for path in ["/", "/page.js", "/page.css", "/api/alerts"] {
            assert_eq!(
                handle(&st, &Request { cookie: Some(jar), ..req("GET", path, None, b"") }, 0.0)
                    .status,
                200,
                "{path}"
            );
            assert_eq!(
                call(&st, "GET", path, None, b"", 0.0).status,
                401,
                "{path} without the cookie"
            );
        }
        assert_eq!(call(&st, "GET", "/?token=wrong-token", None, b"", 0.0).status, 401);
        assert!(
            !PAGE.contains("<script>") && !PAGE.contains("<style>"),
            "no inline code: the CSP forbids it"
        );
    }

    /// An incident labeled with one request: one label per member flow, each as a single
    /// label is stored, its note naming the incident; the state shows who and when; a member
    /// labeled on its own; an undo withdraws the verdicts.
    #[test]
    fn an_incident_is_labeled_in_bulk_and_undone() {
        let dir = tempfile::tempdir().unwrap();
        let feed = AlertFeed::new(100, 10, 0, "fp");
        for k in 0..40 {
            let mut a = alert(&format!("C{k}"));
            a.flow.ts = 1000.0 + k as f64;
            feed.push(a);
        }
        let mut other = alert("Cx");
        other.flow.resp_h = "10.9.9.9".into();
        other.flow.resp_p = 443;
        feed.push(other);
        let st = state(&feed, dir.path(), None);
        let get = |url: &str| -> serde_json::Value {
            let r = call(&st, "GET", url, None, b"", 0.0);
            assert_eq!(r.status, 200, "{}", r.body);
            serde_json::from_str(&r.body).unwrap()
        };
        let v = get("/api/incidents");
        let inc = v["incidents"].as_array().unwrap();
        assert_eq!(inc.len(), 2);
        let brute = inc.iter().find(|i| i["flows"] == 40).unwrap();
        assert_eq!(
            (brute["id"].as_str(), brute["shape"].as_str()),
            (Some("IC0"), Some("repeated"))
        );
        assert_eq!(
            (brute["label"].as_str(), brute["labels"]["unlabeled"].as_u64()),
            (Some("unlabeled"), Some(40))
        );
        let members = brute["members"].as_array().unwrap();
        assert!(members.iter().all(|m| m.get("features").is_none() && m["labeled"].is_null()));
        let ids: Vec<&str> = members.iter().map(|m| m["uid"].as_str().unwrap()).collect();
        let body = json!({ "ids": ids, "incident": "IC0", "verdict": "attack" }).to_string();
        let r = call(&st, "POST", "/api/labels", None, body.as_bytes(), 50.0);
        assert_eq!(r.status, 201, "{}", r.body);
        let stored = LabelStore::read(dir.path()).unwrap();
        assert_eq!(stored.len(), 40, "one label per flow");
        assert!(stored.iter().all(|l| l.verdict == Verdict::Attack
            && l.note == "incident IC0"
            && l.by == "web"
            && l.features.len() == 3));
        // A member on its own: benign; the incident is now mixed.
        let one = br#"{"id": "C7", "verdict": "benign"}"#;
        assert_eq!(call(&st, "POST", "/api/labels", None, one, 60.0).status, 201);
        let v = get("/api/incidents?q=10.0.0.2");
        let brute = &v["incidents"][0];
        assert_eq!(brute["label"], "mixed");
        assert_eq!(
            (brute["labels"]["attack"].as_u64(), brute["labels"]["benign"].as_u64()),
            (Some(39), Some(1))
        );
        assert_eq!(
            (brute["labeled"]["by"].as_str(), brute["labeled"]["at"].as_f64()),
            (Some("web"), Some(60.0))
        );
        let c7 = get("/api/alerts?q=c7");
        assert_eq!(
            (c7["alerts"][0]["label"].as_str(), c7["alerts"][0]["labeled"]["at"].as_f64()),
            (Some("benign"), Some(60.0))
        );
        // Undo: every member back to no verdict.
        let body = json!({ "ids": ids, "incident": "IC0", "verdict": "unlabeled", "note": "undo" })
            .to_string();
        assert_eq!(call(&st, "POST", "/api/labels", None, body.as_bytes(), 70.0).status, 201);
        let v = get("/api/incidents?q=10.0.0.2");
        assert_eq!(
            (v["incidents"][0]["label"].as_str(), v["incidents"][0]["labeled"].is_null()),
            (Some("unlabeled"), true)
        );
        assert!(get("/api/alerts?q=c7")["alerts"][0]["label"].is_null());
        assert_eq!(
            LabelStore::read(dir.path()).unwrap().last().unwrap().note,
            "incident IC0: undo"
        );
        // All or nothing: an unknown flow among them stores none.
        let n = LabelStore::read(dir.path()).unwrap().len();
        let bad = br#"{"ids": ["C1", "C404"], "verdict": "attack"}"#;
        assert_eq!(call(&st, "POST", "/api/labels", None, bad, 80.0).status, 404);
        let both = br#"{"id": "C1", "ids": ["C1"], "verdict": "attack"}"#;
        assert_eq!(call(&st, "POST", "/api/labels", None, both, 80.0).status, 400);
        assert_eq!(
            call(&st, "POST", "/api/labels", None, br#"{"ids": [], "verdict": "attack"}"#, 80.0)
                .status,
            400
        );
        assert_eq!(LabelStore::read(dir.path()).unwrap().len(), n);
        assert_eq!(call(&st, "POST", "/api/incidents", None, b"{}", 0.0).status, 405);
    }

    /// The pictures' numbers on a crafted feed: timeline buckets from the flows' ends, the
    /// histogram of the recent flows' scores with the latest cut, talkers by alert count; the
    /// same access rules as the other GET APIs; odd query values are clamped, never a 500.
    #[test]
    fn summary_counts_the_crafted_feed() {
        let dir = tempfile::tempdir().unwrap();
        let feed = AlertFeed::new(10, 100, 0, "fp");
        let mut recs: Vec<FlowRecord> = Vec::new();
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/demo.pcap");
        crate::pipeline::offline::run_files(&[demo], &crate::flow::FlowConfig::default(), |r| {
            recs.push(*r)
        })
        .unwrap();
        recs.truncate(5);
        for (r, s) in recs.iter_mut().zip([100, 100, 101, 103, 103]) {
            r.last_ts = crate::capture::Timestamp(s * 1_000_000_000 + 999_999_999);
        }
        let rows = vec![0.0; 10];
        feed.push_recent(&recs, &rows, &[0.1, 0.2, 0.3, 0.6, 0.9]);
        let budget =
            crate::alert::threshold::BudgetCut { budget: 0.01, floor: 0.4, set_aside: 2.0 };
        let target = TargetRate::of(&crate::alert::threshold::Threshold::Budget(budget));
        feed.tally(&recs, &[false, false, false, true, true], Some(0.5), target);
        for (uid, src, dst) in [
            ("C1", "10.0.0.9", "10.0.0.2"),
            ("C2", "10.0.0.9", "10.0.0.3"),
            ("C3", "10.0.0.1", "10.0.0.3"),
        ] {
            let mut a = alert(uid);
            (a.flow.orig_h, a.flow.resp_h) = (src.into(), dst.into());
            feed.push(a);
        }
        let st = state(&feed, dir.path(), Some("s3cret-token"));
        let auth = Some("Bearer s3cret-token");
        let r = call(&st, "GET", "/api/summary?bins=4&top=1", auth, b"", 0.0);
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let t = &v["timeline"];
        assert_eq!(
            (t["bucket_secs"].as_i64(), t["scored"].as_u64(), t["alerts"].as_u64()),
            (Some(1), Some(5), Some(2))
        );
        let buckets: Vec<(i64, u64, u64)> = t["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["start"].as_i64().unwrap(),
                    b["scored"].as_u64().unwrap(),
                    b["alerts"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(buckets, [(100, 2, 0), (101, 1, 0), (102, 0, 0), (103, 2, 2)]);
        assert_eq!(t["rate"].as_f64(), Some(0.4));
        assert_eq!(v["threshold"].as_f64(), Some(0.5));
        assert_eq!(v["target_rate"], json!({ "kind": "budget", "rate": 0.01 }));
        let h = &v["scores"];
        let counts: Vec<u64> =
            h["bins"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).collect();
        assert_eq!(counts, [2, 1, 1, 1], "0.1 to 0.9 in four bins of 0.2");
        assert_eq!((h["flows"].as_u64(), h["at_or_above_threshold"].as_u64()), (Some(5), Some(2)));
        assert_eq!(v["alerts_held"], 3);
        assert_eq!(v["top_sources"], json!([{ "addr": "10.0.0.9", "alerts": 2 }]));
        assert_eq!(v["top_destinations"], json!([{ "addr": "10.0.0.3", "alerts": 2 }]));
        // Defaults, clamps and hostile values.
        for url in [
            "/api/summary",
            "/api/summary?bins=-1&top=99999999999999999999999",
            "/api/summary?bins=%00&top=",
        ] {
            let r = call(&st, "GET", url, auth, b"", 0.0);
            assert_eq!(r.status, 200, "{url}: {}", r.body);
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert!(!v["scores"]["bins"].as_array().unwrap().is_empty(), "{url}");
        }
        let r = call(&st, "GET", "/api/summary?bins=100000", auth, b"", 0.0);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["scores"]["bins"].as_array().unwrap().len(), super::super::summary::MAX_BINS);
        assert_eq!(call(&st, "GET", "/api/summary", None, b"", 0.0).status, 401);
        assert_eq!(call(&st, "POST", "/api/summary", auth, b"{}", 0.0).status, 405);
        let rebound =
            Request { host: Some("evil.example:8090"), ..req("GET", "/api/summary", auth, b"") };
        assert_eq!(handle(&st, &rebound, 0.0).status, 403);
        // An empty feed: no threshold yet, empty timeline, still bins.
        let empty = AlertFeed::new(10, 10, 0, "fp");
        let st = state(&empty, dir.path(), None);
        let v: serde_json::Value =
            serde_json::from_str(&call(&st, "GET", "/api/summary", None, b"", 0.0).body).unwrap();
        assert!(v["threshold"].is_null() && v["target_rate"].is_null());
        assert_eq!(v["timeline"]["buckets"], json!([]));
        assert_eq!(v["scores"]["flows"], 0);
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(url_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(url_decode("%zz%41"), "%zzA");
        assert_eq!(query_param("limit=5&q=x", "q"), Some("x"));
        assert_eq!(query_param("limit=5", "q"), None);
    }
}
