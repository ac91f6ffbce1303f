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
    /// Text built per record, too long to keep inline (a Zeek history past 30 letters).
    Str(String),
    /// Short text built per record (uid, community ID, Zeek history), kept inline.
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
    /// With `false`, `extract` leaves the uid and community ID cells `Unset`. Model rows never
    /// read them: a stage that only encodes rows (the streaming features stage when no flow
    /// records are written, rows to train on) saves a SHA-1 and two hash folds per flow, a
    /// tenth of extracting a UNSW-NB15 record. On from the start.
    fn write_identity_text(&mut self, on: bool);
}

/// A flow's text identity as both extractors write it: its uid and its community ID (under
/// `seed`), or neither when a stage only encodes rows ([`RecordExtractor::write_identity_text`]).
#[derive(Debug, Clone, Copy)]
struct IdentityText {
    seed: u16,
    on: bool,
}

impl IdentityText {
    fn new(community_id_seed: u16) -> IdentityText {
        IdentityText { seed: community_id_seed, on: true }
    }

    fn uid(&self, rec: &FlowRecord) -> Cell {
        if self.on { Cell::Short(uid_text(rec)) } else { Cell::Unset }
    }

    fn community_id(&self, rec: &FlowRecord) -> Cell {
        if self.on { Cell::Short(rec.community_id_text(self.seed)) } else { Cell::Unset }
    }
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

    /// With the identity text off, the uid and community ID cells are unset and every other
    /// cell, and so every model row, is the same (both vocabularies, the bundled capture).
    #[test]
    fn identity_text_off_changes_only_uid_and_community_id() {
        let capture = concat!(env!("CARGO_MANIFEST_DIR"), "/captures/demo.pcap");
        for kind in [SchemaKind::Unsw, SchemaKind::Zeek] {
            let flow = crate::flow::FlowConfig::default().for_cut(kind.cut_policy());
            let mut recs = Vec::new();
            crate::pipeline::offline::run_files(&[capture.into()], &flow, |r| recs.push(*r))
                .expect("bundled capture reads");
            let mut with = extractor(kind, 0);
            let mut without = extractor(kind, 0);
            without.write_identity_text(false);
            let columns = with.columns().to_vec();
            let encoder = encode::RowEncoder::new(with.schema());
            let mut stats = encode::EncodeStats::default();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (mut row_a, mut row_b) = (vec![0.0; encoder.width()], vec![0.0; encoder.width()]);
            for r in &recs {
                with.extract(r, &mut a);
                without.extract(r, &mut b);
                for (c, (x, y)) in columns.iter().zip(a.iter().zip(&b)) {
                    if matches!(c.name.as_str(), "uid" | "community_id") {
                        assert!(matches!(x, Cell::Short(_)), "{kind:?} {}: {x:?}", c.name);
                        assert_eq!(y, &Cell::Unset, "{kind:?} {}", c.name);
                    } else {
                        assert_eq!(x, y, "{kind:?} {}", c.name);
                    }
                }
                encoder.encode(&columns, &a, &mut row_a, &mut stats);
                encoder.encode(&columns, &b, &mut row_b, &mut stats);
                assert_eq!(row_a, row_b, "{kind:?}");
            }
            assert!(recs.len() > 1000, "{kind:?}: {} records", recs.len());
        }
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
