//! Clustering metrics of Kummerfeld et al. (2019), computed exactly as
//! `shared/tools/score_grouping.py`: scaled VI, one-to-one overlap (Hungarian) and exact-match
//! conversation P/R/F1 with single-message conversations excluded on both sides.
//!
//! Inputs are parallel label lists over the scored messages of all channels pooled; labels must
//! already be channel-scoped (e.g. `"chan|conv"`), since clusters never cross channels.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    pub messages: usize,
    /// `100 * (1 - VI / log2(N))`.
    pub vi: f64,
    pub one_to_one: f64,
    pub exact_p: f64,
    pub exact_r: f64,
    pub exact_f1: f64,
}

/// Scores a predicted clustering against the gold one (percentages).
///
/// An empty stream (or a single message) has nothing to disagree on: VI and 1-1 are 100, and
/// exact match is 0 as there are no multi-message conversations (the reference's convention).
pub fn score<G: Eq + Hash, P: Eq + Hash>(gold: &[G], pred: &[P]) -> Scores {
    assert_eq!(
        gold.len(),
        pred.len(),
        "gold and predicted labels must be parallel"
    );
    let n = gold.len();
    let g = dense_ids(gold);
    let p = dense_ids(pred);
    let (ng, np) = (count_ids(&g), count_ids(&p));
    let mut table: HashMap<(u32, u32), u64> = HashMap::new();
    for (&a, &b) in g.iter().zip(&p) {
        *table.entry((a, b)).or_insert(0) += 1;
    }
    let (exact_p, exact_r, exact_f1) = exact_match(&g, &p);
    Scores {
        messages: n,
        vi: scaled_vi(&table, &sizes(&g, ng), &sizes(&p, np), n),
        one_to_one: if n == 0 {
            100.0
        } else {
            100.0 * one_to_one(&table) as f64 / n as f64
        },
        exact_p,
        exact_r,
        exact_f1,
    }
}

fn dense_ids<L: Eq + Hash>(labels: &[L]) -> Vec<u32> {
    let mut ids: HashMap<&L, u32> = HashMap::new();
    labels
        .iter()
        .map(|l| {
            let next = ids.len() as u32;
            *ids.entry(l).or_insert(next)
        })
        .collect()
}

fn count_ids(ids: &[u32]) -> usize {
    ids.iter().max().map_or(0, |&m| m as usize + 1)
}

fn sizes(ids: &[u32], k: usize) -> Vec<u64> {
    let mut s = vec![0u64; k];
    for &i in ids {
        s[i as usize] += 1;
    }
    s
}

fn entropy_term(c: u64, n: f64) -> f64 {
    let q = c as f64 / n;
    -q * q.log2()
}

fn scaled_vi(table: &HashMap<(u32, u32), u64>, gs: &[u64], ps: &[u64], n: usize) -> f64 {
    if n <= 1 {
        return 100.0;
    }
    let nf = n as f64;
    let h_joint: f64 = table.values().map(|&c| entropy_term(c, nf)).sum();
    let h_g: f64 = gs.iter().map(|&c| entropy_term(c, nf)).sum();
    let h_p: f64 = ps.iter().map(|&c| entropy_term(c, nf)).sum();
    let vi = 2.0 * h_joint - h_g - h_p;
    100.0 * (1.0 - vi / nf.log2())
}

/// Maximum total overlap of a one-to-one matching between gold and predicted clusters, solved per
/// connected component of the overlap graph (components are small).
fn one_to_one(table: &HashMap<(u32, u32), u64>) -> u64 {
    // Union-find over gold ids (even) and predicted ids (odd).
    let node = |gold: bool, id: u32| 2 * id as usize + usize::from(!gold);
    let max_node = table
        .keys()
        .map(|&(g, p)| node(true, g).max(node(false, p)))
        .max();
    let Some(max_node) = max_node else { return 0 };
    let mut parent: Vec<usize> = (0..=max_node).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for &(g, p) in table.keys() {
        let (a, b) = (
            find(&mut parent, node(true, g)),
            find(&mut parent, node(false, p)),
        );
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut comps: HashMap<usize, Vec<((u32, u32), u64)>> = HashMap::new();
    for (&k, &c) in table {
        comps
            .entry(find(&mut parent, node(true, k.0)))
            .or_default()
            .push((k, c));
    }
    let mut matched = 0;
    for cells in comps.values() {
        let rows = dense_ids(&cells.iter().map(|((g, _), _)| *g).collect::<Vec<_>>());
        let cols = dense_ids(&cells.iter().map(|((_, p), _)| *p).collect::<Vec<_>>());
        let (nr, nc) = (count_ids(&rows), count_ids(&cols));
        if nr == 1 || nc == 1 {
            // A star: only one pair can be matched.
            matched += cells.iter().map(|(_, c)| *c).max().unwrap_or(0);
            continue;
        }
        let transpose = nr > nc;
        let (r, c) = if transpose { (nc, nr) } else { (nr, nc) };
        let mut w = vec![vec![0i64; c]; r];
        for (k, &(_, cnt)) in cells.iter().enumerate() {
            let (i, j) = (rows[k] as usize, cols[k] as usize);
            if transpose {
                w[j][i] = cnt as i64;
            } else {
                w[i][j] = cnt as i64;
            }
        }
        matched += hungarian_max(&w) as u64;
    }
    matched
}

/// Max-weight assignment of every row (rows <= columns): the O(n^2 m) Hungarian algorithm on
/// cost = -weight, as the reference implementation.
fn hungarian_max(w: &[Vec<i64>]) -> i64 {
    let n = w.len();
    let m = w[0].len();
    const INF: i64 = i64::MAX / 4;
    let (mut u, mut v) = (vec![0i64; n + 1], vec![0i64; m + 1]);
    let (mut p, mut way) = (vec![0usize; m + 1], vec![0usize; m + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![INF; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let (mut delta, mut j1) = (INF, 0);
            for j in 1..=m {
                if !used[j] {
                    let cur = -w[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    (1..=m).filter(|&j| p[j] != 0).map(|j| w[p[j] - 1][j - 1]).sum()
}

/// Exact-match precision / recall / F1 over conversations of two or more messages.
fn exact_match(g: &[u32], p: &[u32]) -> (f64, f64, f64) {
    fn groups(ids: &[u32]) -> HashSet<Vec<usize>> {
        let mut by: Vec<Vec<usize>> = vec![Vec::new(); count_ids(ids)];
        for (k, &i) in ids.iter().enumerate() {
            by[i as usize].push(k);
        }
        by.into_iter().filter(|v| v.len() > 1).collect()
    }
    let (gg, pp) = (groups(g), groups(p));
    let m = gg.intersection(&pp).count() as f64;
    let prec = if pp.is_empty() {
        0.0
    } else {
        100.0 * m / pp.len() as f64
    };
    let rec = if gg.is_empty() {
        0.0
    } else {
        100.0 * m / gg.len() as f64
    };
    let f1 = if m > 0.0 {
        2.0 * prec * rec / (prec + rec)
    } else {
        0.0
    };
    (prec, rec, f1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn identical_clusterings_are_perfect() {
        let s = score(&["a", "a", "b", "c", "c"], &[1, 1, 2, 3, 3]);
        assert!(close(s.vi, 100.0) && close(s.one_to_one, 100.0));
        assert!(close(s.exact_p, 100.0) && close(s.exact_r, 100.0) && close(s.exact_f1, 100.0));
    }

    #[test]
    fn hand_computed_example() {
        // gold {0,1,2} {3,4}; pred {0,1} {2,3,4}.
        let s = score(&["a", "a", "a", "b", "b"], &["x", "x", "y", "y", "y"]);
        // Joint cells 2,1,2 -> H = 1.5219; H(G)=H(P)=0.97095; VI = 2*1.5219-2*0.97095 = 1.10187.
        let h = |c: &[f64]| -> f64 { c.iter().map(|&x| -(x / 5.0) * (x / 5.0).log2()).sum() };
        let vi = 2.0 * h(&[2.0, 1.0, 2.0]) - h(&[3.0, 2.0]) - h(&[2.0, 3.0]);
        assert!(close(s.vi, 100.0 * (1.0 - vi / 5f64.log2())));
        // Best matching a-x (2) + b-y (2) = 4 of 5.
        assert!(close(s.one_to_one, 80.0));
        assert!(close(s.exact_f1, 0.0));
    }

    #[test]
    fn exact_match_skips_singletons() {
        // gold {0,1} {2} {3}; pred {0,1} {2,3}: 1 of 1 gold, 1 of 2 predicted.
        let s = score(&[0, 0, 1, 2], &[5, 5, 6, 6]);
        assert!(close(s.exact_r, 100.0) && close(s.exact_p, 50.0));
        assert!(close(s.exact_f1, 2.0 * 50.0 * 100.0 / 150.0));
    }

    #[test]
    fn one_to_one_needs_the_assignment() {
        let gold = ["a", "a", "a", "b", "b", "c", "a", "b"];
        let pred = ["x", "x", "y", "x", "x", "y", "y", "z"];
        let s = score(&gold, &pred);
        // Overlaps: a-x 2, a-y 2, b-x 2, b-z 1, c-y 1. Best: a-y 2 + b-x 2 (+ c, z unmatched) = 4,
        // or a-x 2 + b-z 1 + c-y 1 = 4; nothing reaches 5.
        assert!(close(s.one_to_one, 50.0));
    }

    #[test]
    fn empty_and_single() {
        let e: [u8; 0] = [];
        let s = score(&e, &e);
        assert_eq!(s.messages, 0);
        assert!(close(s.vi, 100.0) && close(s.one_to_one, 100.0) && close(s.exact_f1, 0.0));
        let s = score(&["a"], &["b"]);
        assert!(close(s.vi, 100.0) && close(s.one_to_one, 100.0));
    }
}
