//! Features: flow records become rows of a published vocabulary.
//!
//! The schemas in the repository's `features/` folder define each vocabulary once
//! ([`schema`]); [`unsw`] and [`zeek`] compute their values from exported flows, with the
//! UNSW-NB15 `ct_*` counts over a sliding window of records ([`window`]). A row is a list of
//! [`Cell`]s: identity columns first (addresses, ports, times, IDs), then the schema's
//! features in schema order. [`encode`] turns the feature cells into the model's `f32` input.
//! Published and analysts' tables are read into the same layout by [`tables`], text columns
//! of tables no schema covers as categories ([`categories`]).
//! Nothing here knows of threads, channels or burn.

pub mod categories;
pub mod encode;
pub mod schema;
pub mod tables;
pub mod unsw;
pub mod window;
pub mod zeek;

use std::net::IpAddr;

use crate::capture::Timestamp;
use crate::flow::{FlowRecord, ShortText};

pub use schema::{Feature, FeatureType, Schema, SchemaError, SchemaKind};

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A real number.
    Num(f64),
    /// A non-negative count.
    Count(u64),
    /// A category or other fixed text.
    Text(&'static str),
    /// Text built per record (Zeek's history).
    Str(String),
    /// Short text built per record (uid, community ID), kept inline.
    Short(ShortText),
    Addr(IpAddr),
    Port(u16),
    Time(Timestamp),
    /// Zeek's unset value (`-`).
    Unset,
}

impl Cell {
    /// The numeric value of a numeric cell.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Num(v) => Some(*v),
            Cell::Count(v) => Some(*v as f64),
            Cell::Port(p) => Some(*p as f64),
            _ => None,
        }
    }

    /// The text of a categorical cell.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Cell::Text(t) => Some(t),
            Cell::Str(s) => Some(s),
            Cell::Short(s) => Some(s.as_str()),
            _ => None,
        }
    }
}

/// A column of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// Zeek log type (`time`, `addr`, `port`, `count`, `double`, `interval`, `string`, `enum`).
    pub zeek_type: &'static str,
    /// Index into the schema's features when the column is a model input.
    pub feature: Option<usize>,
}

/// Computes rows of one vocabulary from exported flows.
pub trait RecordExtractor: Send {
    fn schema(&self) -> &Schema;
    /// Every column, identity columns first, then the schema's features.
    fn columns(&self) -> &[Column];
    /// Fills `out` (cleared first) with one cell per column.
    fn extract(&mut self, rec: &FlowRecord, out: &mut Vec<Cell>);
}

/// Why a schema cannot be served by an extractor.
#[derive(Debug, thiserror::Error)]
#[error("schema {schema}: feature {feature:?} has no extractor (known: {known})")]
pub struct UnknownFeature {
    pub schema: String,
    pub feature: String,
    pub known: String,
}

/// The extractor for a vocabulary, with its bundled schema.
pub fn extractor(kind: SchemaKind, community_id_seed: u16) -> Box<dyn RecordExtractor> {
    extractor_for(kind, kind.schema(), community_id_seed)
        .expect("bundled schemas only name known features")
}

/// The extractor for a vocabulary with a given (possibly edited) schema.
pub fn extractor_for(
    kind: SchemaKind,
    schema: Schema,
    community_id_seed: u16,
) -> Result<Box<dyn RecordExtractor>, UnknownFeature> {
    Ok(match kind {
        SchemaKind::Unsw => Box::new(unsw::UnswExtractor::new(schema, community_id_seed)?),
        SchemaKind::Zeek => Box::new(zeek::ZeekExtractor::new(schema, community_id_seed)?),
    })
}

/// Zeek-style uid of a flow: `C` plus 17 base62 characters derived from what identifies the
/// record (clock epoch, start time, 5-tuple, VLAN), never from the flow id, which depends on
/// how many flow workers numbered it: `flows` and `replay` with any worker count name a record
/// alike, so labels given against one output find it in the other. Six bits per character, no
/// divisions: this runs once per exported flow.
pub fn uid(rec: &FlowRecord) -> String {
    uid_text(rec).as_str().to_owned()
}

/// [`uid`], kept inline (no allocation).
pub fn uid_text(rec: &FlowRecord) -> ShortText {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // splitmix64 steps folded over the identifying fields, two seeds for two words.
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let bits = |a: IpAddr| match a {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let (o, r) = (bits(rec.orig_addr), bits(rec.resp_addr));
    let fields = [
        rec.first_ts.0 as u64,
        u64::from(rec.last_clock.epoch) << 40 | u64::from(rec.proto) << 32 | u64::from(rec.vlan),
        u64::from(rec.orig_port) << 16 | u64::from(rec.resp_port),
        o as u64,
        (o >> 64) as u64,
        r as u64,
        (r >> 64) as u64,
    ];
    let fold = |seed: u64| fields.iter().fold(seed, |h, &x| mix(h ^ x));
    let mut buf = [b'C'; 18];
    let words = [fold(0), fold(0xA5A5_A5A5_A5A5_A5A5)];
    for (i, b) in buf[1..].iter_mut().enumerate() {
        let bits = (words[i / 9] >> ((i % 9) * 6)) & 63;
        *b = DIGITS[(bits % 62) as usize];
    }
    ShortText::from_ascii(&buf).expect("18 ASCII digits fit")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A uid or a community ID is kept inline without making a cell larger than a `String`
    /// cell.
    #[test]
    fn a_cell_stays_32_bytes() {
        assert_eq!(std::mem::size_of::<Cell>(), 32);
    }

    #[test]
    fn uids_look_like_zeek_and_differ() {
        let meta = crate::decode::PacketMeta {
            ts: Timestamp(0),
            vlan: 0,
            src: IpAddr::from([1, 2, 3, 4]),
            dst: IpAddr::from([5, 6, 7, 8]),
            proto: 17,
            sport: 1,
            dport: 2,
            wire_len: 60,
            ip_len: 40,
            payload_len: 12,
            ttl: 64,
            tcp: Default::default(),
            frag: crate::decode::Fragment::Whole,
            tunneled: false,
            payload: &[],
        };
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u16 {
            let m = crate::decode::PacketMeta {
                ts: Timestamp(i64::from(i % 100)),
                sport: i / 100,
                ..meta
            };
            let mut rec = FlowRecord::new(u64::from(i), &m, false);
            let u = uid(&rec);
            assert!(
                u.len() == 18 && u.starts_with('C') && u.chars().all(|c| c.is_ascii_alphanumeric()),
                "{u}"
            );
            assert!(seen.insert(u.clone()));
            // The flow id (which worker numbered it) does not change the name; the epoch does.
            rec.id += 7;
            assert_eq!(uid(&rec), u);
            rec.last_clock.epoch = 1;
            assert_ne!(uid(&rec), u);
        }
    }
}
