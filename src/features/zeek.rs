//! Zeek conn.log records (the IoT-23 vocabulary).
//!
//! Columns and meanings follow Zeek's `Conn::Info` (`scripts/base/protocols/conn/main.zeek`),
//! plus `community_id` as the zeek-community-id package adds it. As Zeek does, a connection
//! whose first and last packets share a timestamp leaves `duration`, `orig_bytes` and
//! `resp_bytes` unset (`-`); the model reads unset values as 0. `local_orig`/`local_resp` are
//! unset: we have no notion of local networks. `tunnel_parents` is unset too: tunneled
//! connections are decapsulated and not linked to their outer connection.

use super::{Cell, Column, FeatureType, RecordExtractor, Schema, UnknownFeature};
use crate::flow::FlowRecord;
use crate::flow::record::zeek_proto_name;

/// conn.log columns, in Zeek's order, with their Zeek types.
const CONN_LOG: [(&str, &str); 22] = [
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),
    ("service", "string"),
    ("duration", "interval"),
    ("orig_bytes", "count"),
    ("resp_bytes", "count"),
    ("conn_state", "string"),
    ("local_orig", "bool"),
    ("local_resp", "bool"),
    ("missed_bytes", "count"),
    ("history", "string"),
    ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"),
    ("resp_pkts", "count"),
    ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"),
    ("community_id", "string"),
];

pub struct ZeekExtractor {
    schema: Schema,
    columns: Vec<Column>,
    identity: super::IdentityText,
}

impl ZeekExtractor {
    pub fn new(schema: Schema, community_id_seed: u16) -> Result<ZeekExtractor, UnknownFeature> {
        for f in &schema.features {
            if !CONN_LOG.iter().any(|(n, _)| *n == f.name) {
                return Err(UnknownFeature {
                    schema: schema.name.clone(),
                    feature: f.name.clone(),
                    known: CONN_LOG.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
                });
            }
            if let FeatureType::Categorical(_) = f.kind
                && !matches!(f.name.as_str(), "proto" | "service" | "conn_state")
            {
                return Err(UnknownFeature {
                    schema: schema.name.clone(),
                    feature: format!("{} (as categorical)", f.name),
                    known: "proto, service, conn_state".into(),
                });
            }
        }
        let columns = CONN_LOG
            .iter()
            .map(|(n, t)| Column { name: n.to_string(), zeek_type: t, feature: schema.index_of(n) })
            .collect();
        Ok(ZeekExtractor { schema, columns, identity: super::IdentityText::new(community_id_seed) })
    }
}

impl RecordExtractor for ZeekExtractor {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn write_identity_text(&mut self, on: bool) {
        self.identity.on = on;
    }

    fn extract(&mut self, r: &FlowRecord, out: &mut Vec<Cell>) {
        out.clear();
        let dur = r.zeek_duration_secs();
        let timed = r.zeek_last_ts > r.first_ts;
        let opt_count = |v: u64| if timed { Cell::Count(v) } else { Cell::Unset };
        out.extend([
            Cell::Time(r.first_ts),
            self.identity.uid(r),
            Cell::Addr(r.orig_addr),
            Cell::Port(r.orig_port),
            Cell::Addr(r.resp_addr),
            Cell::Port(r.resp_port),
            Cell::Text(zeek_proto_name(r.proto)),
            Cell::Text(r.zeek_service().as_str()),
            if timed { Cell::Num(dur) } else { Cell::Unset },
            opt_count(r.orig_bytes()),
            opt_count(r.resp_bytes()),
            Cell::Text(r.conn_state().as_str()),
            Cell::Unset,
            Cell::Unset,
            Cell::Count(r.orig.seq.missed_bytes + r.resp.seq.missed_bytes),
            // Inline when it fits (nearly always): no allocation per record.
            match crate::flow::ShortText::new(r.history.as_str()) {
                Some(h) => Cell::Short(h),
                None => Cell::Str(r.history.as_str().to_owned()),
            },
            Cell::Count(r.orig.pkts),
            Cell::Count(r.orig.ip_bytes),
            Cell::Count(r.resp.pkts),
            Cell::Count(r.resp.ip_bytes),
            Cell::Unset,
            self.identity.community_id(r),
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_feature_is_a_conn_log_column() {
        let e = ZeekExtractor::new(crate::features::SchemaKind::Zeek.schema(), 0).unwrap();
        let features = e.columns().iter().filter(|c| c.feature.is_some()).count();
        assert_eq!(features, e.schema().features.len());
    }
}
