//! Feature cells to model input: numeric values as they are, categorical values one-hot in
//! the schema's category order, unset values as 0. Scaling belongs to the model (it is fit on
//! training data and stored with the model).

use super::{Cell, Column, FeatureType, Schema};

/// Counts of values the encoder could not place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeStats {
    /// Categorical values outside the schema's list (encoded as all zeros).
    pub unknown_categories: u64,
}

/// Encodes rows of one schema; holds each feature's offset in the encoded row.
#[derive(Debug, Clone)]
pub struct RowEncoder {
    schema: Schema,
    offsets: Vec<usize>,
    width: usize,
}

impl RowEncoder {
    pub fn new(schema: &Schema) -> RowEncoder {
        let mut offsets = Vec::with_capacity(schema.features.len());
        let mut width = 0;
        for f in &schema.features {
            offsets.push(width);
            width += f.width();
        }
        RowEncoder { schema: schema.clone(), offsets, width }
    }

    /// Length of an encoded row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Encodes the feature cells of one row (as laid out by `columns`) into `out`.
    pub fn encode(
        &self,
        columns: &[Column],
        cells: &[Cell],
        out: &mut [f32],
        stats: &mut EncodeStats,
    ) {
        assert_eq!(out.len(), self.width, "encoded row buffer has the schema's width");
        out.fill(0.0);
        for (col, cell) in columns.iter().zip(cells) {
            let Some(fi) = col.feature else { continue };
            let at = self.offsets[fi];
            match &self.schema.features[fi].kind {
                FeatureType::Numeric => out[at] = cell.as_f64().unwrap_or(0.0) as f32,
                FeatureType::Categorical(_) if *cell == Cell::Unset => {}
                FeatureType::Categorical(cats) => {
                    match cell.as_text().and_then(|t| cats.iter().position(|c| c == t)) {
                        Some(k) => out[at + k] = 1.0,
                        None => stats.unknown_categories += 1,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::SchemaKind;

    #[test]
    fn one_hot_and_numeric_positions() {
        let s = SchemaKind::Zeek.schema();
        let enc = RowEncoder::new(&s);
        let names = s.encoded_names();
        let columns: Vec<Column> = s
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| Column { name: f.name.clone(), zeek_type: "", feature: Some(i) })
            .collect();
        let mut cells = vec![Cell::Unset; columns.len()];
        cells[s.index_of("proto").unwrap()] = Cell::Text("udp");
        cells[s.index_of("conn_state").unwrap()] = Cell::Text("NOPE");
        cells[s.index_of("orig_pkts").unwrap()] = Cell::Count(7);
        let mut out = vec![9.0; enc.width()];
        let mut stats = EncodeStats::default();
        enc.encode(&columns, &cells, &mut out, &mut stats);
        assert_eq!(out[names.iter().position(|n| n == "proto=udp").unwrap()], 1.0);
        assert_eq!(out[names.iter().position(|n| n == "orig_pkts").unwrap()], 7.0);
        assert_eq!(out.iter().sum::<f32>(), 8.0);
        assert_eq!(stats.unknown_categories, 1);
    }
}
