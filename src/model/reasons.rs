//! Reasons in traffic terms: the features that move an alert's score most, against the flows
//! its nearest normal prototype stands for.
//!
//! MNPWAD's own explanation (reconstruction error, nearest prototype, similarity) says how
//! far a flow is from normal, not in which way. An analyst needs the way: "dpkts 1, typical
//! 9-14". Each normal prototype stands for the training flows nearest to it; the model file
//! keeps, per prototype, the typical range of each input over those flows ([`Profiles`],
//! made at training time). At scoring time an alert's inputs furthest from its prototype's
//! medians are the candidates, and each candidate is put back to the median in turn and the
//! flow scored again: the features whose return lowers the score most are the reasons, with
//! how much each lowered it. The model decides, not a rule: a feature far from typical that
//! the model ignores is not named. Alerts only (a few in a hundred flows), a few extra rows
//! each, scored in one batch.

use serde::{Deserialize, Serialize};

use super::score::{CpuScorer, Scorer};
use crate::features::tables::Scaler;

/// Reasons kept per alert.
pub const REASONS: usize = 3;
/// Inputs tried per alert: the furthest from typical.
const CANDIDATES: usize = 8;
/// Training rows a profile is fit on at most (an even subsample beyond).
const PROFILE_ROWS: usize = 20_000;

/// Per normal prototype, the typical value of each model input over the training flows
/// nearest to it: median and quartiles, in the model's scaled space (width of the scaler).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profiles {
    pub width: usize,
    pub prototypes: usize,
    /// `[prototypes, width]` row-major.
    pub median: Vec<f32>,
    pub low: Vec<f32>,
    pub high: Vec<f32>,
    /// Training flows nearest to each prototype.
    pub members: Vec<u64>,
}

/// One reason: the scaled input (index into the scaler's kept columns) and how much putting
/// it back to typical lowered the score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub input: u16,
    pub effect: f32,
}

/// Up to [`REASONS`] reasons, strongest first.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reasons {
    pub len: u8,
    pub items: [Option<Reason>; REASONS],
}

impl Reasons {
    pub fn iter(&self) -> impl Iterator<Item = &Reason> {
        self.items.iter().take(self.len as usize).flatten()
    }
}

/// A reason in the schema's words and units, as alerts and the page carry it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Described {
    /// The input's name in the layout (`dpkts`, `state=INT`, `ct_srv_src`).
    pub feature: String,
    /// The flow's value, in the input's own units.
    pub value: f32,
    /// The middle half of the prototype's training flows, same units.
    pub typical: [f32; 2],
    /// How much the score fell with this input at its typical value.
    pub effect: f32,
}

impl Described {
    /// `dpkts 1, typical 9-14`; a one-hot input reads `state INT (rare here)` or
    /// `not state FIN (usual here)`.
    pub fn text(&self) -> String {
        if let Some((name, cat)) = self.feature.split_once('=')
            && self.typical[0] == self.typical[1]
            && (self.value == 0.0 || self.value == 1.0)
        {
            let cat = if cat == "-" { "none" } else { cat };
            return if self.value == 1.0 {
                format!("{name} {cat} (rare here)")
            } else {
                format!("not {name} {cat} (usual here)")
            };
        }
        let (lo, hi) = (num(self.typical[0]), num(self.typical[1]));
        let typical = if lo == hi { lo } else { format!("{lo}-{hi}") };
        format!("{} {}, typical {typical}", self.feature, num(self.value))
    }
}

/// A number as an analyst reads it: integers bare, others with three significant digits.
fn num(x: f32) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == x.round() && x.abs() < 1e9 {
        return format!("{}", x as i64);
    }
    let digits = (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{x:.digits$}")
}

/// A value brought back through the scaler, rid of its rounding (75.99999 is 76).
fn tidy(x: f32) -> f32 {
    let r = x.round();
    if (x - r).abs() <= 1e-4 * r.abs().max(1.0) { r } else { x }
}

/// Texts of several reasons, `; `-joined.
pub fn text(described: &[Described]) -> String {
    described.iter().map(Described::text).collect::<Vec<_>>().join("; ")
}

impl Profiles {
    /// Fits the profiles on `scaled` training rows (normal and unlabeled flows, the scaler's
    /// width `d`): each row goes to its nearest prototype as the model sees it.
    pub fn fit(scorer: &CpuScorer, scaled: &[f32], d: usize) -> Option<Profiles> {
        let n = scaled.len().checked_div(d).unwrap_or(0);
        if n == 0 {
            return None;
        }
        let step = n.div_ceil(PROFILE_ROWS).max(1);
        let rows: Vec<f32> =
            (0..n).step_by(step).flat_map(|i| &scaled[i * d..(i + 1) * d]).copied().collect();
        let m = rows.len() / d;
        let s = scorer.explain(&rows);
        let k = s.prototype.iter().map(|&p| p as usize + 1).max().unwrap_or(0);
        let mut members = vec![0u64; k];
        let (mut median, mut low, mut high) =
            (vec![0.0; k * d], vec![0.0; k * d], vec![0.0; k * d]);
        let mut col: Vec<f32> = Vec::with_capacity(m);
        for p in 0..k {
            let idx: Vec<usize> = (0..m).filter(|&i| s.prototype[i] as usize == p).collect();
            members[p] = idx.len() as u64;
            if idx.is_empty() {
                continue;
            }
            for j in 0..d {
                col.clear();
                col.extend(idx.iter().map(|&i| rows[i * d + j]));
                col.sort_by(f32::total_cmp);
                let q = |f: f64| col[((col.len() - 1) as f64 * f).round() as usize];
                median[p * d + j] = q(0.5);
                low[p * d + j] = q(0.25);
                high[p * d + j] = q(0.75);
            }
        }
        Some(Profiles { width: d, prototypes: k, median, low, high, members })
    }

    /// The reasons of the alerts among `scaled` rows (width [`Profiles::width`]): `alerts`
    /// are their indices, `scores` and `prototypes` the model's output for every row. One
    /// extra scoring of `CANDIDATES` rows per alert, in one batch.
    pub fn reasons(
        &self,
        scorer: &Scorer,
        scaled: &[f32],
        scores: &[f32],
        prototypes: &[u32],
        alerts: &[usize],
        out: &mut Vec<Reasons>,
    ) {
        out.clear();
        let d = self.width;
        if alerts.is_empty() || d == 0 || scaled.len() < d * scores.len() {
            out.resize(alerts.len(), Reasons::default());
            return;
        }
        let c = CANDIDATES.min(d);
        let mut probes: Vec<f32> = Vec::with_capacity(alerts.len() * c * d);
        let mut tried: Vec<u16> = Vec::with_capacity(alerts.len() * c);
        let mut order: Vec<(f32, usize)> = Vec::with_capacity(d);
        for &i in alerts {
            let row = &scaled[i * d..(i + 1) * d];
            let p = (prototypes[i] as usize).min(self.prototypes.saturating_sub(1));
            let med = &self.median[p * d..(p + 1) * d];
            let (lo, hi) = (&self.low[p * d..(p + 1) * d], &self.high[p * d..(p + 1) * d]);
            // Distance outside the middle half, in units of its width (a floor for the
            // inputs that barely vary among the prototype's flows).
            order.clear();
            order.extend((0..d).map(|j| {
                let out = (lo[j] - row[j]).max(row[j] - hi[j]).max(0.0);
                let spread = (hi[j] - lo[j]).max(0.01);
                ((out + (row[j] - med[j]).abs() * 1e-3) / spread, j)
            }));
            order.sort_by(|a, b| b.0.total_cmp(&a.0));
            for &(_, j) in order.iter().take(c) {
                probes.extend_from_slice(row);
                let at = probes.len() - d + j;
                probes[at] = med[j];
                tried.push(j as u16);
            }
        }
        let probed = scorer.explain(&probes).score;
        for (a, &i) in alerts.iter().enumerate() {
            let mut best: Vec<Reason> = (0..c)
                .map(|t| Reason { input: tried[a * c + t], effect: scores[i] - probed[a * c + t] })
                .filter(|r| r.effect > 0.0 && r.effect.is_finite())
                .collect();
            best.sort_by(|x, y| y.effect.total_cmp(&x.effect));
            let mut r = Reasons::default();
            for (slot, reason) in r.items.iter_mut().zip(best) {
                *slot = Some(reason);
                r.len += 1;
            }
            out.push(r);
        }
    }

    /// The reasons in the schema's words and units: `names` are the layout's input columns,
    /// `raw` the flow's unscaled row (layout width), `scaler` the model's.
    pub fn describe(
        &self,
        reasons: &Reasons,
        prototype: u32,
        raw: &[f32],
        names: &[String],
        scaler: &Scaler,
    ) -> Vec<Described> {
        let d = self.width;
        let p = (prototype as usize).min(self.prototypes.saturating_sub(1));
        reasons
            .iter()
            .filter_map(|r| {
                let k = r.input as usize;
                let col = *scaler.keep.get(k)?;
                Some(Described {
                    feature: names.get(col)?.clone(),
                    value: *raw.get(col)?,
                    typical: [
                        tidy(scaler.unscale(k, self.low[p * d + k])),
                        tidy(scaler.unscale(k, self.high[p * d + k])),
                    ],
                    effect: r.effect,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_traffic() {
        let d = |f: &str, v, lo, hi| Described {
            feature: f.into(),
            value: v,
            typical: [lo, hi],
            effect: 0.1,
        };
        assert_eq!(d("dpkts", 1.0, 9.0, 14.0).text(), "dpkts 1, typical 9-14");
        assert_eq!(d("dur", 0.01234, 2.5, 2.5).text(), "dur 0.0123, typical 2.50");
        assert_eq!(d("state=INT", 1.0, 0.0, 0.0).text(), "state INT (rare here)");
        assert_eq!(d("state=FIN", 0.0, 1.0, 1.0).text(), "not state FIN (usual here)");
        assert_eq!(d("service=-", 1.0, 0.0, 0.0).text(), "service none (rare here)");
        assert_eq!(tidy(75.99999), 76.0);
        assert_eq!(tidy(0.5), 0.5);
        assert_eq!(
            text(&[d("sbytes", 40.0, 500.0, 900.0), d("ct_srv_src", 28.0, 1.0, 3.0)]),
            "sbytes 40, typical 500-900; ct_srv_src 28, typical 1-3"
        );
    }
}
