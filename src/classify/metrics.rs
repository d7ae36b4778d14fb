//! Classification metrics: confusion matrix, per-label precision/recall/F1, macro-F1, and the
//! precision-recall curve of the Closed score. Fractions in 0..1; a metric with an empty
//! denominator is 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Label;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_label: BTreeMap<String, LabelMetrics>,
    /// `confusion[gold][predicted]`.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Metrics {
    pub fn compute(gold: &[Label], pred: &[Label]) -> Metrics {
        assert_eq!(gold.len(), pred.len(), "one prediction per example");
        let k = Label::ALL.len();
        let mut m = vec![vec![0usize; k]; k];
        for (g, p) in gold.iter().zip(pred) {
            m[g.index()][p.index()] += 1;
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let mut per_label = BTreeMap::new();
        let mut f1_sum = 0.0;
        for l in Label::ALL {
            let i = l.index();
            let tp = m[i][i];
            let predicted: usize = (0..k).map(|g| m[g][i]).sum();
            let support: usize = m[i].iter().sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            f1_sum += f1;
            per_label.insert(
                l.as_str().to_string(),
                LabelMetrics {
                    precision,
                    recall,
                    f1,
                    support,
                },
            );
        }
        let correct: usize = (0..k).map(|i| m[i][i]).sum();
        let confusion = Label::ALL
            .iter()
            .map(|g| {
                (
                    g.as_str().to_string(),
                    Label::ALL
                        .iter()
                        .map(|p| (p.as_str().to_string(), m[g.index()][p.index()]))
                        .collect(),
                )
            })
            .collect();
        Metrics {
            n: gold.len(),
            accuracy: ratio(correct, gold.len()),
            macro_f1: f1_sum / k as f64,
            per_label,
            confusion,
        }
    }

    pub fn label(&self, l: Label) -> LabelMetrics {
        self.per_label[l.as_str()]
    }
}

/// How one group of rows (a `kind` or a `source`) fared: its size, the gold label mix and the two
/// kinds of error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub n: usize,
    pub gold_closed: usize,
    pub accuracy: f64,
    /// Gold closed, predicted in_progress (a conversation left open).
    pub missed_closed: usize,
    /// Gold in_progress, predicted closed (a conversation closed too early).
    pub wrong_closed: usize,
}

/// Per-group counts for `groups[i]` (the row's kind or source; rows without one are grouped under
/// `"(none)"`), sorted by group name.
pub fn breakdown(groups: &[Option<&str>], gold: &[Label], pred: &[Label]) -> BTreeMap<String, GroupStats> {
    assert!(
        groups.len() == gold.len() && gold.len() == pred.len(),
        "one group per example"
    );
    let mut out: BTreeMap<String, GroupStats> = BTreeMap::new();
    for ((g, gl), pl) in groups.iter().zip(gold).zip(pred) {
        let s = out.entry(g.unwrap_or("(none)").to_string()).or_default();
        s.n += 1;
        if *gl == Label::Closed {
            s.gold_closed += 1;
        }
        match (gl, pl) {
            (Label::Closed, Label::InProgress) => s.missed_closed += 1,
            (Label::InProgress, Label::Closed) => s.wrong_closed += 1,
            _ => s.accuracy += 1.0,
        }
    }
    for s in out.values_mut() {
        s.accuracy /= s.n as f64;
    }
    out
}

/// Precision and recall of "closed" at every distinct threshold on the Closed probability, from the
/// strictest down: `(threshold, precision, recall)`.
pub fn pr_curve(gold: &[Label], p_closed: &[f32]) -> Vec<(f32, f64, f64)> {
    let positives = gold.iter().filter(|g| **g == Label::Closed).count();
    let mut order: Vec<usize> = (0..gold.len()).collect();
    order.sort_by(|&a, &b| p_closed[b].total_cmp(&p_closed[a]).then(a.cmp(&b)));
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0usize, 0usize);
    for (rank, &i) in order.iter().enumerate() {
        if gold[i] == Label::Closed {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = order.get(rank + 1).is_none_or(|&j| p_closed[j] != p_closed[i]);
        if last_of_tie {
            out.push((
                p_closed[i],
                tp as f64 / (tp + fp) as f64,
                if positives == 0 {
                    0.0
                } else {
                    tp as f64 / positives as f64
                },
            ));
        }
    }
    out
}

/// Area under the PR curve (average precision, step-wise).
pub fn average_precision(curve: &[(f32, f64, f64)]) -> f64 {
    let mut prev_r = 0.0;
    let mut ap = 0.0;
    for &(_, p, r) in curve {
        ap += (r - prev_r) * p;
        prev_r = r;
    }
    ap
}

#[cfg(test)]
mod tests {
    use super::*;
    use Label::{Closed as C, InProgress as I};

    #[test]
    fn matches_a_hand_computed_confusion_matrix() {
        // gold I: 4 (3 right, 1 called closed); gold C: 6 (4 right, 2 called in_progress).
        let gold = [I, I, I, I, C, C, C, C, C, C];
        let pred = [I, I, I, C, C, C, C, C, I, I];
        let m = Metrics::compute(&gold, &pred);
        assert_eq!(m.n, 10);
        assert_eq!(m.confusion["in_progress"]["in_progress"], 3);
        assert_eq!(m.confusion["in_progress"]["closed"], 1);
        assert_eq!(m.confusion["closed"]["in_progress"], 2);
        assert_eq!(m.confusion["closed"]["closed"], 4);
        assert!((m.accuracy - 0.7).abs() < 1e-12);
        let c = m.label(C);
        assert!((c.precision - 4.0 / 5.0).abs() < 1e-12);
        assert!((c.recall - 4.0 / 6.0).abs() < 1e-12);
        let f1_c = 2.0 * 0.8 * (4.0 / 6.0) / (0.8 + 4.0 / 6.0);
        let i = m.label(I);
        assert!((i.precision - 3.0 / 5.0).abs() < 1e-12);
        assert!((i.recall - 3.0 / 4.0).abs() < 1e-12);
        let f1_i = 2.0 * 0.6 * 0.75 / (0.6 + 0.75);
        assert!((m.macro_f1 - (f1_c + f1_i) / 2.0).abs() < 1e-12);
        assert_eq!((i.support, c.support), (4, 6));
    }

    #[test]
    fn a_label_never_predicted_has_zero_precision_not_nan() {
        let m = Metrics::compute(&[I, C], &[I, I]);
        assert_eq!(m.label(C).precision, 0.0);
        assert_eq!(m.label(C).f1, 0.0);
    }

    #[test]
    fn breakdown_counts_each_error_kind_per_group() {
        let groups = [
            Some("duplicate"),
            Some("duplicate"),
            Some("ack"),
            None,
            Some("ack"),
        ];
        let gold = [C, C, I, C, I];
        let pred = [C, I, C, C, I];
        let b = breakdown(&groups, &gold, &pred);
        assert_eq!(b.keys().collect::<Vec<_>>(), ["(none)", "ack", "duplicate"]);
        let d = &b["duplicate"];
        assert_eq!(
            (d.n, d.gold_closed, d.missed_closed, d.wrong_closed),
            (2, 2, 1, 0)
        );
        assert!((d.accuracy - 0.5).abs() < 1e-12);
        let a = &b["ack"];
        assert_eq!(
            (a.n, a.gold_closed, a.missed_closed, a.wrong_closed),
            (2, 0, 0, 1)
        );
        assert_eq!(b["(none)"].accuracy, 1.0);
    }

    #[test]
    fn pr_curve_walks_thresholds() {
        let curve = pr_curve(&[C, I, C, I], &[0.9, 0.8, 0.7, 0.1]);
        assert_eq!(curve.len(), 4);
        assert_eq!((curve[0].1, curve[0].2), (1.0, 0.5));
        assert_eq!((curve[2].1, curve[2].2), (2.0 / 3.0, 1.0));
        let ap = average_precision(&curve);
        assert!((ap - (0.5 * 1.0 + 0.5 * 2.0 / 3.0)).abs() < 1e-12);
    }
}
