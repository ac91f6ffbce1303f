//! Text columns of a plain table, read as categories.
//!
//! A table that no feature schema covers (an analyst's export, a public table such as an
//! insurance fraud table) often holds text: months, makes, policy types, "1 to 7" ranges. Such
//! a column is one-hot encoded: one cell per category seen in the rows the model is fit on,
//! plus an [`OTHER`] cell for a category it never saw, so that a later table with a new value
//! still reads, and the reader counts such cells instead of guessing. The categories are part
//! of the model file ([`crate::model::artifact::Layout`]): `score` reads a table with the
//! categories of training, never with its own, so a row encodes the same way in both.
//!
//! A column is text when one of its values is not a number (as pandas decides a column's
//! type); a column of numbers with an empty cell or Zeek's `-` stays numeric. A column with as
//! many distinct values as rows is an identifier (a policy number, a row number): one-hot it
//! gives one column per row and teaches the model nothing that carries over to new rows, and
//! as a number it is an arbitrary order. It is left out with a warning, unless named to keep.
//! Numeric columns count as identifiers only when every value is an integer: distinct
//! measurements (durations, rates) are ordinary in a real table.
//!
//! What this module does not do: read files (`tables`), or decide that a table has no schema.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

/// The name of the cell for a category never seen in training (`column=(other)`).
pub const OTHER: &str = "(other)";

/// Tables with fewer rows than this have no identifiers: in a handful of rows every column
/// may well be all-distinct, and leaving columns out of a small test table would surprise.
pub const MIN_IDENTIFIER_ROWS: usize = 20;

/// A share of numbers above which a text column is probably a number column with a few bad
/// cells, and the user is told so (it is still read as categories, as pandas would).
const MOSTLY_NUMBERS: f64 = 0.9;

/// How a plain table's columns are read: which are categories (and which categories), which
/// are left out; every other column (label and class aside) is a number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextEncoding {
    /// One-hot encoded columns, in table order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<CategoricalColumn>,
    /// Columns left out as identifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

/// One one-hot encoded column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoricalColumn {
    pub name: String,
    /// The categories seen in training, sorted; the encoded cells are these, then [`OTHER`].
    pub categories: Vec<String>,
}

impl CategoricalColumn {
    /// The encoded column names: `name=category` per category, then `name=(other)`.
    pub fn encoded_names(&self) -> impl Iterator<Item = String> + '_ {
        self.categories
            .iter()
            .map(String::as_str)
            .chain([OTHER])
            .map(|c| format!("{}={c}", self.name))
    }
}

impl TextEncoding {
    /// True for a table of numbers only (and for model files written before categories).
    pub fn is_empty(&self) -> bool {
        self.categorical.is_empty() && self.left_out.is_empty()
    }

    pub fn column(&self, name: &str) -> Option<&CategoricalColumn> {
        self.categorical.iter().find(|c| c.name == name)
    }

    pub fn leaves_out(&self, name: &str) -> bool {
        self.left_out.iter().any(|c| c == name)
    }

    /// One line for the user: each encoded column with its number of categories.
    pub fn describe(&self) -> String {
        let cols: Vec<String> = self
            .categorical
            .iter()
            .map(|c| format!("{} ({})", c.name, c.categories.len()))
            .collect();
        format!(
            "{} text column{} one-hot encoded, categories each: {}",
            cols.len(),
            if cols.len() == 1 { "" } else { "s" },
            cols.join(", ")
        )
    }
}

/// The outcome of [`infer`]: the encoding and what the user should hear about it.
#[derive(Debug, Clone, Default)]
pub struct Inferred {
    pub encoding: TextEncoding,
    pub warnings: Vec<String>,
}

/// Decides how each candidate column is read, from the rows a model is fit on.
///
/// `columns` are the candidates (index into a row, name), in table order; `rows` the fields
/// of each row with its file line; `keep` names columns kept even if they look like
/// identifiers; `number` parses a cell as the reader does.
pub fn infer(
    columns: &[(usize, &str)],
    rows: &[(u64, &[String])],
    keep: &[String],
    number: impl Fn(&str) -> Option<f32>,
) -> Inferred {
    let mut out = Inferred::default();
    let n = rows.len();
    for &(c, name) in columns {
        let mut numbers = 0usize;
        let mut integers = true;
        let mut first_text: Option<(u64, &str)> = None;
        for (line, fields) in rows {
            let Some(v) = fields.get(c) else { continue };
            match number(v) {
                Some(x) => {
                    numbers += 1;
                    integers &= x.fract() == 0.0;
                }
                None => {
                    first_text.get_or_insert((*line, v.as_str()));
                }
            }
        }
        let text = first_text.is_some();
        // Distinct values only where they matter: every one for a text column (its
        // categories), and for a column of integers until the first repeat (not an
        // identifier then). A table of measurements and 0/1 columns costs one pass.
        let mut distinct: HashSet<&str> = HashSet::new();
        if text || integers {
            for (_, fields) in rows {
                let Some(v) = fields.get(c) else { continue };
                if !distinct.insert(v.as_str()) && !text {
                    break;
                }
            }
        }
        let identifier = n >= MIN_IDENTIFIER_ROWS && distinct.len() == n && (text || integers);
        if identifier && !keep.iter().any(|k| k == name) {
            out.warnings.push(format!(
                "column {name:?} left out: {n} distinct values in {n} rows, an identifier \
                 (name it with --keep {name} to use it)"
            ));
            out.encoding.left_out.push(name.to_string());
            continue;
        }
        let Some((line, value)) = first_text else { continue };
        if numbers as f64 >= MOSTLY_NUMBERS * n as f64 {
            out.warnings.push(format!(
                "column {name:?} read as categories, though {numbers} of its {n} values are \
                 numbers (the first that is not: {value:?} on line {line}); if it is a number \
                 column, fix those cells or read with --schema none --skip-bad-rows"
            ));
        }
        let categories: BTreeSet<&str> = distinct.into_iter().collect();
        out.encoding.categorical.push(CategoricalColumn {
            name: name.to_string(),
            categories: categories.into_iter().map(str::to_string).collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Option<f32> {
        if s.is_empty() { Some(0.0) } else { s.parse().ok() }
    }

    fn rows_of(table: &[Vec<String>]) -> Vec<(u64, &[String])> {
        table.iter().enumerate().map(|(i, r)| (i as u64 + 2, r.as_slice())).collect()
    }

    #[test]
    fn text_columns_become_sorted_categories_numbers_stay() {
        let t: Vec<Vec<String>> = ["Dec,1,", "Jan,2,3", "Dec,3,4"]
            .iter()
            .map(|r| r.split(',').map(str::to_string).collect())
            .collect();
        let got = infer(&[(0, "month"), (1, "n"), (2, "gap")], &rows_of(&t), &[], num);
        assert_eq!(
            got.encoding.categorical,
            [CategoricalColumn {
                name: "month".into(),
                categories: vec!["Dec".into(), "Jan".into()]
            }]
        );
        assert!(got.encoding.left_out.is_empty() && got.warnings.is_empty());
        let names: Vec<String> = got.encoding.categorical[0].encoded_names().collect();
        assert_eq!(names, ["month=Dec", "month=Jan", "month=(other)"]);
    }

    #[test]
    fn identifiers_left_out_unless_kept_but_not_measurements() {
        let t: Vec<Vec<String>> = (0..MIN_IDENTIFIER_ROWS)
            .map(|i| vec![format!("P{i}"), format!("{}", 100 + i), format!("{i}.5"), "x".into()])
            .collect();
        let cols = [(0, "policy"), (1, "number"), (2, "dur"), (3, "flag")];
        let got = infer(&cols, &rows_of(&t), &[], num);
        assert_eq!(got.encoding.left_out, ["policy", "number"]);
        assert!(got.warnings.iter().all(|w| w.contains("--keep")), "{:?}", got.warnings);
        assert_eq!(got.encoding.categorical.len(), 1);
        let got = infer(&cols, &rows_of(&t), &["policy".into()], num);
        assert_eq!(got.encoding.left_out, ["number"]);
        assert_eq!(got.encoding.categorical[0].categories.len(), MIN_IDENTIFIER_ROWS);
        // Too few rows to call anything an identifier.
        let got = infer(&cols, &rows_of(&t[..5]), &[], num);
        assert!(got.encoding.left_out.is_empty());
    }

    #[test]
    fn mostly_numbers_warns_with_the_line() {
        let mut t: Vec<Vec<String>> = (0..30).map(|i| vec![format!("{}", i % 7)]).collect();
        t[12][0] = "x4".into();
        let got = infer(&[(0, "bytes")], &rows_of(&t), &[], num);
        assert_eq!(got.encoding.categorical.len(), 1);
        assert!(got.warnings[0].contains("\"x4\" on line 14"), "{:?}", got.warnings);
    }

    #[test]
    fn old_model_files_read_as_numbers_only() {
        let e: TextEncoding = serde_json::from_str("{}").unwrap();
        assert!(e.is_empty());
        assert_eq!(serde_json::to_string(&e).unwrap(), "{}");
    }
}
