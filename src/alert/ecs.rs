//! Alerts in Elastic Common Schema (ECS 8) field names, for pipelines that expect them
//! (`--alert-format ecs`): the same alert as [`super::eve`], named as Elastic's Suricata and
//! Zeek integrations name theirs.
//!
//! `@timestamp` (the flow's end), `event.*` (`kind: alert`, `category: [network]`,
//! `type: [connection]`, `id`, `risk_score`: the score, `start`/`end`, `reason`),
//! `source.*`/`destination.*` (ip, port, packets, bytes; the source is the flow's
//! originator), `network.*` (`transport`, `protocol`, `community_id`, `bytes`, `packets`,
//! `vlan.id`), `observer.name` (the sensor id), `rule.*` for an indicator rule. ECS has no
//! field for the model's details: they sit under `mnpflow.anomaly`, as EVE's `anomaly`.

use serde_json::json;

use super::eve::{self, ModelInfo, Why};
use crate::capture::Timestamp;
use crate::flow::FlowRecord;

/// ECS's time format: RFC 3339 in UTC with microseconds.
pub fn ecs_timestamp(ts: Timestamp) -> String {
    let (y, m, d, hh, mm, ss, micros) = ts.civil();
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{micros:06}Z")
}

/// IANA's lower-case transport names, as ECS's `network.transport` wants them.
pub fn transport_name(proto: u8) -> String {
    eve::proto_name(proto).to_ascii_lowercase()
}

/// The alert's identity besides the flow: its event id and the sensor's name.
pub struct Stamp<'a> {
    pub event_id: Option<&'a str>,
    pub sensor_id: Option<&'a str>,
}

/// One alert as an ECS JSON line (no trailing newline), appended to `out`.
#[allow(clippy::too_many_arguments)] // one alert's parts, as eve::write_alert takes them
pub fn write_alert(
    out: &mut String,
    rec: &FlowRecord,
    community_id: &str,
    score: f32,
    cut: f32,
    why: &Why<'_>,
    model: &ModelInfo,
    indicator: Option<&crate::alert::Rule>,
    stamp: &Stamp<'_>,
) {
    let anomaly = eve::anomaly_value(score, cut, why, model, indicator);
    let mut v = json!({
        "@timestamp": ecs_timestamp(rec.last_ts),
        "ecs": { "version": "8.11.0" },
        "event": {
            "kind": "alert",
            "category": ["network"],
            "type": ["connection"],
            "module": "mnpflow",
            "dataset": "mnpflow.anomaly",
            "risk_score": eve::finite(score),
            "start": ecs_timestamp(rec.first_ts),
            "end": ecs_timestamp(rec.last_ts),
        },
        "source": {
            "ip": rec.orig_addr.to_string(),
            "port": rec.orig_port,
            "packets": rec.orig.pkts,
            "bytes": rec.orig.wire_bytes,
        },
        "destination": {
            "ip": rec.resp_addr.to_string(),
            "port": rec.resp_port,
            "packets": rec.resp.pkts,
            "bytes": rec.resp.wire_bytes,
        },
        "network": {
            "transport": transport_name(rec.proto),
            "iana_number": rec.proto.to_string(),
            "community_id": community_id,
            "packets": rec.orig.pkts + rec.resp.pkts,
            "bytes": rec.orig.wire_bytes + rec.resp.wire_bytes,
        },
        "flow": { "id": rec.id.to_string() },
        "mnpflow": {
            "anomaly": anomaly,
            "flow": { "reason": rec.end_reason.as_str(), "state": rec.conn_state().to_string() },
        },
    });
    if let Some(text) = v["mnpflow"]["anomaly"].get("reason").cloned() {
        v["event"]["reason"] = text;
    }
    if let Some(id) = stamp.event_id {
        v["event"]["id"] = json!(id);
    }
    if let Some(s) = stamp.sensor_id {
        v["observer"] = json!({ "name": s, "type": "sensor", "product": "mnpflow" });
    }
    if let Some(r) = indicator {
        v["rule"] = json!({ "name": r.origin, "description": r.reason });
    }
    if rec.vlan != 0 {
        v["network"]["vlan"] = json!({ "id": (rec.vlan & 0xfff).to_string() });
    }
    if let Some(a) = eve::app_proto(rec) {
        v["network"]["protocol"] = json!(a);
    }
    out.push_str(&v.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            ecs_timestamp(Timestamp(1_767_225_600_163_962_000)),
            "2026-01-01T00:00:00.163962Z"
        );
        assert_eq!(transport_name(6), "tcp");
        assert_eq!(transport_name(58), "ipv6-icmp");
    }
}
