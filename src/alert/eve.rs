//! Suricata EVE-style JSON lines for anomaly alerts.
//!
//! Field names follow Suricata's EVE format where one exists (`timestamp`, `flow_id`,
//! `event_type`, `src_ip`, `src_port`, `dest_ip`, `dest_port`, `proto`, `app_proto`,
//! `community_id`, and a `flow` object with `pkts_toserver`...), so existing EVE pipelines
//! (jq, Filebeat's Suricata module, Splunk) take the file as it is. Source is the flow's
//! originator. What is ours sits under `anomaly`: the score, the cut it passed, the model, and
//! the explanation.

use std::fmt::Write as _;

use serde_json::json;

use super::Explanation;
use crate::capture::Timestamp;
use crate::flow::FlowRecord;
use crate::flow::key::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// The model that scored, as alerts name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// `sha1:` and the first 16 hex digits of the model file's SHA-1: changes with any weight.
    pub version: String,
    /// The feature schema the model reads (`unsw-nb15`).
    pub schema: String,
    /// Its version in the data directory's model registry, when it came from there.
    pub registry_version: Option<u64>,
}

/// EVE's timestamp: `2026-01-01T00:00:00.163962+0000` (UTC, microseconds).
pub fn eve_timestamp(ts: Timestamp) -> String {
    let (y, m, d, hh, mm, ss, micros) = ts.civil();
    let mut s = String::with_capacity(32);
    let _ = write!(s, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{micros:06}+0000");
    s
}

/// Suricata's protocol names.
pub fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "TCP".into(),
        IPPROTO_UDP => "UDP".into(),
        IPPROTO_ICMP => "ICMP".into(),
        IPPROTO_ICMPV6 => "IPv6-ICMP".into(),
        IPPROTO_SCTP => "SCTP".into(),
        p => p.to_string(),
    }
}

/// Suricata's `app_proto` for our service names (`ssl` is `tls` there); `None` when unknown.
pub fn app_proto(rec: &FlowRecord) -> Option<&'static str> {
    match rec.service().as_str() {
        "-" => None,
        "ssl" => Some("tls"),
        s => Some(s),
    }
}

/// Why a flow alerted: MNPWAD's explanation, and its reasons in traffic terms (the inputs that
/// move its score most, `anomaly.reason` as text and `anomaly.reasons` as fields).
pub struct Why<'a> {
    pub explanation: &'a Explanation,
    pub reasons: &'a [crate::model::reasons::Described],
}

/// One alert as a JSON line (no trailing newline), appended to `out`.
#[allow(clippy::too_many_arguments)] // one alert's parts, each from another stage of the pipeline
pub fn write_alert(
    out: &mut String,
    rec: &FlowRecord,
    community_id: &str,
    score: f32,
    cut: f32,
    why: &Why<'_>,
    model: &ModelInfo,
    indicator: Option<&crate::alert::Rule>,
) {
    let mut v = json!({
        "timestamp": eve_timestamp(rec.last_ts),
        "flow_id": rec.id,
        "event_type": "anomaly",
        "src_ip": rec.orig_addr.to_string(),
        "src_port": rec.orig_port,
        "dest_ip": rec.resp_addr.to_string(),
        "dest_port": rec.resp_port,
        "proto": proto_name(rec.proto),
        "community_id": community_id,
        "flow": {
            "pkts_toserver": rec.orig.pkts,
            "pkts_toclient": rec.resp.pkts,
            "bytes_toserver": rec.orig.wire_bytes,
            "bytes_toclient": rec.resp.wire_bytes,
            "start": eve_timestamp(rec.first_ts),
            "end": eve_timestamp(rec.last_ts),
            "reason": rec.end_reason.as_str(),
            "state": rec.conn_state().to_string(),
        },
        "anomaly": anomaly_value(score, cut, why, model, indicator),
    });
    if rec.vlan != 0 {
        v["vlan"] = json!([rec.vlan >> 12, rec.vlan & 0xfff]);
    }
    if let Some(a) = app_proto(rec) {
        v["app_proto"] = json!(a);
    }
    out.push_str(&v.to_string());
}

/// mnpflow's own part of an alert: the score, the cut it passed, the model, the explanation
/// and reasons, the indicator rule (EVE's `anomaly`, ECS's `mnpflow.anomaly`).
pub fn anomaly_value(
    score: f32,
    cut: f32,
    why: &Why<'_>,
    model: &ModelInfo,
    indicator: Option<&crate::alert::Rule>,
) -> serde_json::Value {
    let mut a = json!({
        "type": "flow",
        "score": finite(score),
        "threshold": finite(cut),
        "model": { "name": "mnpwad", "version": model.version, "schema": model.schema },
        "explanation": {
            "reconstruction_error": finite(why.explanation.recon_error),
            "nearest_prototype": why.explanation.prototype,
            "similarity": finite(why.explanation.similarity),
        },
    });
    if !why.reasons.is_empty() {
        a["reason"] = json!(crate::model::reasons::text(why.reasons));
        a["reasons"] = json!(
            why.reasons
                .iter()
                .map(|r| json!({
                    "feature": r.feature,
                    "value": finite(r.value),
                    "typical": [finite(r.typical[0]), finite(r.typical[1])],
                    "effect": finite(r.effect),
                }))
                .collect::<Vec<_>>()
        );
    }
    if let Some(rv) = model.registry_version {
        a["model"]["registry_version"] = json!(rv);
    }
    if let Some(r) = indicator {
        a["indicator"] = json!({ "rule": r.origin, "reason": r.reason });
    }
    a
}

/// JSON has no NaN or infinity: those become null.
pub fn finite(x: f32) -> serde_json::Value {
    if x.is_finite() { json!(x) } else { serde_json::Value::Null }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_as_suricata_writes_them() {
        assert_eq!(
            eve_timestamp(Timestamp(1_767_225_600_163_962_000)),
            "2026-01-01T00:00:00.163962+0000"
        );
        assert_eq!(eve_timestamp(Timestamp(0)), "1970-01-01T00:00:00.000000+0000");
        assert_eq!(
            eve_timestamp(Timestamp(951_825_600_000_001_000)),
            "2000-02-29T12:00:00.000001+0000"
        );
    }
}
