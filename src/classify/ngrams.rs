//! A lexical status head: TF-IDF over hashed word 1-2-grams and character 2-5-grams within
//! words, read by an L2-regularised logistic regression.
//!
//! Why it exists: on real maintainers' replies, what a reply *does* (promise or done, ask or
//! answer) is carried by function words and short phrases ("is out", "let me know if", "could
//! you", "will"), which a sentence embedding trained for semantic similarity mostly averages away.
//! Measured on the real dev files, this head generalises better across repositories than any head
//! over the frozen embedding (BENCHMARKS.md, status tenth round). It needs no encoder forward.
//!
//! Features, per text (lower-cased):
//! - *words*: maximal runs of alphanumeric characters or `_` of at least two characters; every
//!   word and every pair of adjacent words;
//! - *chars*: for every whitespace-separated token, padded with one space on each side, every
//!   substring of 2 to 5 characters (a token shorter than n yields itself once);
//!
//! each hashed (FNV-1a, 64-bit, a namespace byte first) into [`BUCKETS`] buckets. A bucket is kept
//! when it occurs in at least `min_df` training texts; its value is `(1 + ln tf) * idf` with
//! `idf = ln((1 + n) / (1 + df)) + 1`, and each of the two blocks is scaled to unit length. The
//! logistic regression minimises `C * sum_i s_i * logloss_i + |w|^2 / 2` (intercept not penalised;
//! `s_i` the row's source and class weight) with L-BFGS from zero, so training is deterministic.
//! With [`NgramConfig::nb_alpha`] > 0 every n-gram column is first scaled by its smoothed
//! log-count ratio between the classes (NB-SVM, Wang and Manning 2012); the factor is folded into
//! the saved weights, so the file and inference do not change.
//!
//! On disk (`model.safetensors`): `words.bucket` / `chars.bucket` (u32), `*.idf` and `*.weight`
//! (f32) for the kept buckets in ascending order, `bias` and `temperature` (f32 scalars).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::head::prediction;
use super::Prediction;

/// `metadata.json` `head` (and `triage train status --heads`) of this head.
pub const HEAD_NAME: &str = "ngrams";

/// Hash space of each block.
pub const BUCKETS: u64 = 1 << 20;

/// Training settings (recorded in `metadata.json` `hyper_parameters.ngrams`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NgramConfig {
    /// Inverse regularisation strength.
    pub c: f64,
    /// A word bucket is kept when at least this many training texts contain it.
    pub min_df_words: usize,
    /// A character bucket is kept when at least this many training texts contain it.
    pub min_df_chars: usize,
    /// L-BFGS iterations at most.
    pub max_iter: usize,
    /// Also read the lexical cue features ([`super::cues`], 0/1 each, times this factor); 0: not.
    #[serde(default)]
    pub cue_scale: f32,
    /// Longest run of adjacent words in the word block (1: words only, 2: and pairs, ...).
    #[serde(default = "default_word_max_n")]
    pub word_max_n: usize,
    /// Longest character n-gram of the character block (from 2).
    #[serde(default = "default_char_max_n")]
    pub char_max_n: usize,
    /// NB-SVM-style scaling (Wang and Manning 2012): each n-gram column is scaled by its
    /// log-count ratio between the classes, smoothed by this count; 0: off.
    #[serde(default)]
    pub nb_alpha: f32,
}

fn default_word_max_n() -> usize {
    2
}

fn default_char_max_n() -> usize {
    5
}

/// The n-gram lengths a model reads (stored with the model when not the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lengths {
    word_max_n: usize,
    char_max_n: usize,
}

impl Default for Lengths {
    fn default() -> Self {
        Lengths {
            word_max_n: default_word_max_n(),
            char_max_n: default_char_max_n(),
        }
    }
}

impl From<&NgramConfig> for Lengths {
    fn from(cfg: &NgramConfig) -> Self {
        Lengths {
            word_max_n: cfg.word_max_n.max(1),
            char_max_n: cfg.char_max_n.max(2),
        }
    }
}

impl Default for NgramConfig {
    fn default() -> Self {
        NgramConfig {
            c: 1.0,
            min_df_words: 2,
            min_df_chars: 3,
            max_iter: 1000,
            cue_scale: 0.0,
            word_max_n: default_word_max_n(),
            char_max_n: default_char_max_n(),
            nb_alpha: 0.0,
        }
    }
}

fn fnv1a(namespace: u8, s: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(namespace).chain(s.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % BUCKETS) as u32
}

/// Bucket counts of the word block: words and runs of up to `max_n` adjacent words.
fn word_counts(text: &str, max_n: usize) -> HashMap<u32, u32> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.chars().count() >= 2)
        .collect();
    let mut counts = HashMap::new();
    for w in &words {
        *counts.entry(fnv1a(b'w', w)).or_insert(0) += 1;
    }
    for n in 2..=max_n {
        for run in words.windows(n) {
            *counts.entry(fnv1a(b'w', &run.join(" "))).or_insert(0) += 1;
        }
    }
    counts
}

/// Bucket counts of the character block: 2- to `max_n`-character substrings of each padded token.
fn char_counts(text: &str, max_n: usize) -> HashMap<u32, u32> {
    let lower = text.to_lowercase();
    let mut counts = HashMap::new();
    let mut gram = String::new();
    for token in lower.split_whitespace() {
        let padded: Vec<char> = std::iter::once(' ')
            .chain(token.chars())
            .chain(std::iter::once(' '))
            .collect();
        for n in 2..=max_n {
            if padded.len() <= n {
                gram.clear();
                gram.extend(&padded);
                *counts.entry(fnv1a(b'c', &gram)).or_insert(0) += 1;
                break;
            }
            for window in padded.windows(n) {
                gram.clear();
                gram.extend(window);
                *counts.entry(fnv1a(b'c', &gram)).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// One block's vocabulary: kept bucket -> (column, idf).
#[derive(Debug, Clone, Default)]
struct Block {
    columns: HashMap<u32, (usize, f32)>,
}

impl Block {
    fn fit(counts: &[HashMap<u32, u32>], min_df: usize, first_column: usize) -> Block {
        let mut df: HashMap<u32, usize> = HashMap::new();
        for c in counts {
            for b in c.keys() {
                *df.entry(*b).or_default() += 1;
            }
        }
        let n = counts.len() as f64;
        let mut kept: Vec<(u32, usize)> = df.into_iter().filter(|(_, d)| *d >= min_df).collect();
        kept.sort_unstable();
        let columns = kept
            .into_iter()
            .enumerate()
            .map(|(i, (b, d))| {
                let idf = ((1.0 + n) / (1.0 + d as f64)).ln() + 1.0;
                (b, (first_column + i, idf as f32))
            })
            .collect();
        Block { columns }
    }

    /// Sparse, unit-length TF-IDF row of one text's counts.
    fn row(&self, counts: &HashMap<u32, u32>, out: &mut Vec<(usize, f32)>) {
        let start = out.len();
        for (b, tf) in counts {
            if let Some((col, idf)) = self.columns.get(b) {
                out.push((*col, (1.0 + (*tf as f32).ln()) * idf));
            }
        }
        // Column order, so that every sum over the row is taken in the same order on every run
        // (the counts' hash map iterates in a random order).
        out[start..].sort_unstable_by_key(|e| e.0);
        let norm = out[start..].iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut out[start..] {
                *v /= norm;
            }
        }
    }

    fn sorted(&self) -> Vec<(u32, usize, f32)> {
        let mut v: Vec<(u32, usize, f32)> = self.columns.iter().map(|(b, (c, i))| (*b, *c, *i)).collect();
        v.sort_unstable_by_key(|e| e.0);
        v
    }
}

/// A trained lexical head.
#[derive(Debug, Clone)]
pub struct NgramModel {
    words: Block,
    chars: Block,
    /// One weight per column (word columns first).
    weights: Vec<f32>,
    /// The cue features' factor and weights (empty when the model does not read them).
    cue_scale: f32,
    cue_weights: Vec<f32>,
    lengths: Lengths,
    bias: f32,
    pub temperature: f32,
}

/// Sparse feature rows and the vocabulary they were built with.
struct Design {
    words: Block,
    chars: Block,
    rows: Vec<Vec<(usize, f32)>>,
    columns: usize,
}

/// The cue columns (after the n-gram columns) of one text, when `scale > 0`.
fn cue_row(text: &str, scale: f32, first_column: usize, out: &mut Vec<(usize, f32)>) {
    if scale > 0.0 {
        for (i, v) in super::cues::cues(text).iter().enumerate() {
            if *v != 0.0 {
                out.push((first_column + i, v * scale));
            }
        }
    }
}

fn design(texts: &[&str], cfg: &NgramConfig) -> Design {
    let n = Lengths::from(cfg);
    let wc: Vec<_> = texts.iter().map(|t| word_counts(t, n.word_max_n)).collect();
    let cc: Vec<_> = texts.iter().map(|t| char_counts(t, n.char_max_n)).collect();
    let words = Block::fit(&wc, cfg.min_df_words, 0);
    let chars = Block::fit(&cc, cfg.min_df_chars, words.columns.len());
    let grams = words.columns.len() + chars.columns.len();
    let rows = wc
        .iter()
        .zip(&cc)
        .zip(texts)
        .map(|((w, c), t)| {
            let mut r = Vec::new();
            words.row(w, &mut r);
            chars.row(c, &mut r);
            cue_row(t, cfg.cue_scale, grams, &mut r);
            r
        })
        .collect();
    let cues = if cfg.cue_scale > 0.0 {
        super::cues::N_CUES
    } else {
        0
    };
    let columns = grams + cues;
    Design {
        words,
        chars,
        rows,
        columns,
    }
}

impl NgramModel {
    /// Fits on `texts` with labels `closed[i]` and per-row loss weights `weights[i]` (source
    /// balance times class balance).
    pub fn fit(texts: &[&str], closed: &[bool], weights: &[f32], cfg: &NgramConfig) -> NgramModel {
        let mut d = design(texts, cfg);
        let grams = d.words.columns.len() + d.chars.columns.len();
        let ratio = (cfg.nb_alpha > 0.0).then(|| {
            let r = log_count_ratio(&d.rows, grams, closed, cfg.nb_alpha);
            for row in &mut d.rows {
                for (j, v) in row.iter_mut() {
                    if *j < grams {
                        *v *= r[*j];
                    }
                }
            }
            r
        });
        let (w, b) = fit_logistic(&d.rows, d.columns, closed, weights, cfg.c, cfg.max_iter);
        let mut w: Vec<f32> = w.iter().map(|x| *x as f32).collect();
        // The scaling folds into the weights: w_j * (r_j * x_j) = (w_j * r_j) * x_j.
        if let Some(r) = ratio {
            for (wj, rj) in w.iter_mut().zip(&r) {
                *wj *= rj;
            }
        }
        NgramModel {
            words: d.words,
            chars: d.chars,
            weights: w[..grams].to_vec(),
            cue_scale: cfg.cue_scale,
            cue_weights: w[grams..].to_vec(),
            lengths: Lengths::from(cfg),
            bias: b as f32,
            temperature: 1.0,
        }
    }

    /// Number of kept word and character buckets.
    pub fn vocabulary(&self) -> (usize, usize) {
        (self.words.columns.len(), self.chars.columns.len())
    }

    /// The Closed-vs-In-progress logit margin of one text, before the temperature.
    pub fn margin(&self, text: &str) -> f32 {
        let mut r = Vec::new();
        self.words
            .row(&word_counts(text, self.lengths.word_max_n), &mut r);
        self.chars
            .row(&char_counts(text, self.lengths.char_max_n), &mut r);
        let grams = self.weights.len();
        if !self.cue_weights.is_empty() {
            cue_row(text, self.cue_scale, grams, &mut r);
        }
        self.bias
            + r.iter()
                .map(|(c, v)| {
                    let w = if *c < grams {
                        self.weights[*c]
                    } else {
                        self.cue_weights[c - grams]
                    };
                    w * v
                })
                .sum::<f32>()
    }

    /// Two-class logits `[in_progress, closed]` (the margin on Closed), before the temperature.
    pub fn logits(&self, text: &str) -> [f32; 2] {
        [0.0, self.margin(text)]
    }

    pub fn predict(&self, texts: &[&str]) -> Vec<Prediction> {
        texts
            .iter()
            .map(|t| prediction(&self.logits(t), self.temperature))
            .collect()
    }

    pub fn save(&self, path: &Path) -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        for (name, block) in [("words", &self.words), ("chars", &self.chars)] {
            let s = block.sorted();
            let n = s.len();
            tensors.insert(
                format!("{name}.bucket"),
                Tensor::from_vec(s.iter().map(|e| e.0).collect::<Vec<u32>>(), n, &dev)?,
            );
            tensors.insert(
                format!("{name}.idf"),
                Tensor::from_vec(s.iter().map(|e| e.2).collect::<Vec<f32>>(), n, &dev)?,
            );
            tensors.insert(
                format!("{name}.weight"),
                Tensor::from_vec(s.iter().map(|e| self.weights[e.1]).collect::<Vec<f32>>(), n, &dev)?,
            );
        }
        if !self.cue_weights.is_empty() {
            tensors.insert(
                "cues.weight".into(),
                Tensor::from_vec(self.cue_weights.clone(), self.cue_weights.len(), &dev)?,
            );
            tensors.insert("cues.scale".into(), Tensor::new(self.cue_scale, &dev)?);
        }
        // Only when not the defaults, so models of the default lengths keep their bytes.
        if self.lengths != Lengths::default() {
            let n = [self.lengths.word_max_n as u32, self.lengths.char_max_n as u32];
            tensors.insert("lengths".into(), Tensor::from_vec(n.to_vec(), 2, &dev)?);
        }
        tensors.insert("bias".into(), Tensor::new(self.bias, &dev)?);
        tensors.insert("temperature".into(), Tensor::new(self.temperature, &dev)?);
        candle_core::safetensors::save(&tensors, path)
    }

    pub fn load(path: &Path) -> Result<NgramModel, String> {
        let t = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| e.to_string())?;
        let get = |k: &str| t.get(k).ok_or_else(|| format!("missing tensor {k:?}"));
        let scalar = |k: &str| -> Result<f32, String> {
            get(k)?
                .to_dtype(DType::F32)
                .and_then(|x| x.to_scalar::<f32>())
                .map_err(|e| format!("{k}: {e}"))
        };
        let mut weights = Vec::new();
        let mut blocks = Vec::new();
        for name in ["words", "chars"] {
            let vec_u32 = |k: String| -> Result<Vec<u32>, String> {
                get(&k)?.to_vec1::<u32>().map_err(|e| format!("{k}: {e}"))
            };
            let vec_f32 = |k: String| -> Result<Vec<f32>, String> {
                get(&k)?.to_vec1::<f32>().map_err(|e| format!("{k}: {e}"))
            };
            let buckets = vec_u32(format!("{name}.bucket"))?;
            let idf = vec_f32(format!("{name}.idf"))?;
            let w = vec_f32(format!("{name}.weight"))?;
            if buckets.len() != idf.len() || buckets.len() != w.len() {
                return Err(format!("{name}: bucket, idf and weight lengths differ"));
            }
            let first = weights.len();
            let columns = buckets
                .iter()
                .zip(&idf)
                .enumerate()
                .map(|(i, (b, f))| (*b, (first + i, *f)))
                .collect();
            weights.extend(w);
            blocks.push(Block { columns });
        }
        let chars = blocks.pop().expect("two blocks");
        let words = blocks.pop().expect("two blocks");
        let (cue_scale, cue_weights) = match t.get("cues.weight") {
            None => (0.0, Vec::new()),
            Some(w) => {
                let w = w.to_vec1::<f32>().map_err(|e| format!("cues.weight: {e}"))?;
                if w.len() != super::cues::N_CUES {
                    return Err(format!(
                        "cues.weight has {} entries, this build has {} cues",
                        w.len(),
                        super::cues::N_CUES
                    ));
                }
                (scalar("cues.scale")?, w)
            }
        };
        let lengths = match t.get("lengths") {
            None => Lengths::default(),
            Some(n) => match n.to_vec1::<u32>().map_err(|e| format!("lengths: {e}"))?[..] {
                [w, c] if (1..=8).contains(&w) && (2..=10).contains(&c) => Lengths {
                    word_max_n: w as usize,
                    char_max_n: c as usize,
                },
                ref other => return Err(format!("lengths {other:?}: expected [1..=8, 2..=10]")),
            },
        };
        Ok(NgramModel {
            words,
            chars,
            weights,
            cue_scale,
            cue_weights,
            lengths,
            bias: scalar("bias")?,
            temperature: scalar("temperature")?,
        })
    }
}

/// Per n-gram column, `ln((p_j / |p|) / (q_j / |q|))` with `p = alpha + sum of the Closed rows'
/// values` and `q` the same over the other rows.
fn log_count_ratio(rows: &[Vec<(usize, f32)>], grams: usize, closed: &[bool], alpha: f32) -> Vec<f32> {
    let mut p = vec![f64::from(alpha); grams];
    let mut q = vec![f64::from(alpha); grams];
    for (row, &y) in rows.iter().zip(closed) {
        let acc = if y { &mut p } else { &mut q };
        for (j, v) in row {
            if *j < grams {
                acc[*j] += f64::from(*v);
            }
        }
    }
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    p.iter()
        .zip(&q)
        .map(|(a, b)| ((a / sp) / (b / sq)).ln() as f32)
        .collect()
}

/// Weighted L2 logistic regression by L-BFGS: minimises
/// `c * sum_i s_i * log(1 + exp(-y_i (x_i w + b))) + |w|^2 / 2`. Returns `(w, b)`.
fn fit_logistic(
    rows: &[Vec<(usize, f32)>],
    columns: usize,
    closed: &[bool],
    s: &[f32],
    c: f64,
    max_iter: usize,
) -> (Vec<f64>, f64) {
    let dim = columns + 1; // the intercept last
    let objective = |theta: &[f64], grad: &mut [f64]| -> f64 {
        let (w, b) = (&theta[..columns], theta[columns]);
        let mut f = 0.5 * w.iter().map(|x| x * x).sum::<f64>();
        grad[..columns].copy_from_slice(w);
        grad[columns] = 0.0;
        for ((row, &y), &si) in rows.iter().zip(closed).zip(s) {
            let y = if y { 1.0 } else { -1.0 };
            let z = b + row.iter().map(|(j, v)| w[*j] * f64::from(*v)).sum::<f64>();
            let m = y * z;
            // log(1 + exp(-m)) and its derivative, stably.
            let loss = if m > 0.0 {
                (-m).exp().ln_1p()
            } else {
                -m + m.exp().ln_1p()
            };
            let sig = 1.0 / (1.0 + m.exp()); // d loss / d m = -sig
            let k = c * f64::from(si);
            f += k * loss;
            let g = -k * sig * y;
            for (j, v) in row {
                grad[*j] += g * f64::from(*v);
            }
            grad[columns] += g;
        }
        f
    };
    let theta = lbfgs(dim, objective, max_iter);
    let b = theta[columns];
    let mut w = theta;
    w.truncate(columns);
    (w, b)
}

/// Minimises a smooth convex function from zero with L-BFGS (memory 10, backtracking Armijo line
/// search); stops when the largest gradient entry is below 1e-5 or after `max_iter` iterations.
fn lbfgs(dim: usize, mut f: impl FnMut(&[f64], &mut [f64]) -> f64, max_iter: usize) -> Vec<f64> {
    const MEMORY: usize = 10;
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut x = vec![0.0; dim];
    let mut g = vec![0.0; dim];
    let mut fx = f(&x, &mut g);
    let mut hist: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> = Default::default();
    let mut x_new = vec![0.0; dim];
    let mut g_new = vec![0.0; dim];
    for _ in 0..max_iter {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < 1e-5 {
            break;
        }
        // Two-loop recursion: d = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, y, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(y) {
                *qi -= a * yi;
            }
            alphas.push(a);
        }
        let gamma = hist
            .back()
            .map_or(1.0 / dot(&g, &g).sqrt().max(1e-12), |(s, y, _)| {
                dot(s, y) / dot(y, y)
            });
        for qi in &mut q {
            *qi *= gamma;
        }
        for ((s, y, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let bcoef = rho * dot(y, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - bcoef) * si;
            }
        }
        let d: Vec<f64> = q.iter().map(|v| -v).collect();
        let slope = dot(&g, &d);
        if slope >= 0.0 {
            hist.clear();
            continue;
        }
        let mut step = 1.0;
        let mut f_new;
        loop {
            for ((xn, xi), di) in x_new.iter_mut().zip(&x).zip(&d) {
                *xn = xi + step * di;
            }
            f_new = f(&x_new, &mut g_new);
            if f_new <= fx + 1e-4 * step * slope || step < 1e-12 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let converged = (fx - f_new).abs() <= 1e-10 * fx.abs().max(1.0);
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        fx = f_new;
        if sy > 1e-12 {
            if hist.len() == MEMORY {
                hist.pop_front();
            }
            hist.push_back((s, y, 1.0 / sy));
        }
        if converged {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_pairs_are_counted_case_blind() {
        let c = word_counts("Fixed in 1.4, FIXED. a", 2);
        // "fixed" twice, "in" once ("1", "4" and "a" are too short), pairs: "fixed in", "in fixed"
        assert_eq!(c[&fnv1a(b'w', "fixed")], 2);
        assert_eq!(c[&fnv1a(b'w', "in")], 1);
        assert_eq!(c[&fnv1a(b'w', "fixed in")], 1);
        assert_eq!(c[&fnv1a(b'w', "in fixed")], 1);
        assert!(!c.contains_key(&fnv1a(b'w', "a")));
        assert_eq!(c.values().sum::<u32>(), 5);
    }

    #[test]
    fn character_grams_stay_within_padded_tokens() {
        let c = char_counts("ok", 5);
        // " ok " -> 2-grams " o", "ok", "k "; 3-grams " ok", "ok "; 4-gram " ok "; 5: token too short
        for g in [" o", "ok", "k ", " ok", "ok ", " ok "] {
            assert_eq!(c[&fnv1a(b'c', g)], 1, "{g:?}");
        }
        assert_eq!(c.values().sum::<u32>(), 6);
    }

    #[test]
    fn lbfgs_finds_the_minimum_of_a_quadratic() {
        // f(x) = (x0 - 3)^2 + 10 (x1 + 1)^2
        let x = lbfgs(
            2,
            |x, g| {
                g[0] = 2.0 * (x[0] - 3.0);
                g[1] = 20.0 * (x[1] + 1.0);
                (x[0] - 3.0).powi(2) + 10.0 * (x[1] + 1.0).powi(2)
            },
            100,
        );
        assert!((x[0] - 3.0).abs() < 1e-5 && (x[1] + 1.0).abs() < 1e-5, "{x:?}");
    }

    fn toy() -> (Vec<&'static str>, Vec<bool>) {
        let closed = [
            "fixed in the latest release",
            "this is fixed now, closing",
            "released in 2.1, let me know if it still happens",
            "done, the fix is deployed",
            "merged and released, thanks",
            "fixed, please update",
        ];
        let open = [
            "can you send the logs?",
            "taking a look now",
            "could you share your config?",
            "we will look into it next week",
            "which version are you on?",
            "looking into it, can you send a screenshot?",
        ];
        let texts: Vec<&str> = closed.iter().chain(open.iter()).copied().collect();
        let y = (0..12).map(|i| i < 6).collect();
        (texts, y)
    }

    #[test]
    fn learns_a_toy_problem_deterministically_and_round_trips() {
        let (texts, y) = toy();
        let cfg = NgramConfig {
            c: 10.0,
            min_df_words: 1,
            min_df_chars: 1,
            max_iter: 500,
            ..Default::default()
        };
        let w = vec![1.0; texts.len()];
        let m = NgramModel::fit(&texts, &y, &w, &cfg);
        let m2 = NgramModel::fit(&texts, &y, &w, &cfg);
        for (t, yi) in texts.iter().zip(&y) {
            assert_eq!(m.margin(t) > 0.0, *yi, "{t}");
            assert_eq!(m.margin(t).to_bits(), m2.margin(t).to_bits());
        }
        // Unseen wording that shares the closers' and the askers' words.
        assert!(m.margin("the fix is released") > 0.0);
        assert!(m.margin("could you send your version?") < 0.0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        m.save(&path).unwrap();
        let back = NgramModel::load(&path).unwrap();
        assert_eq!(back.vocabulary(), m.vocabulary());
        for t in &texts {
            assert!((back.margin(t) - m.margin(t)).abs() < 1e-6);
        }
    }

    #[test]
    fn longer_word_runs_and_shorter_character_grams_are_read_and_kept_with_the_model() {
        let c = word_counts("it is fixed now", 3);
        assert_eq!(c[&fnv1a(b'w', "is fixed now")], 1);
        assert_eq!(c.values().sum::<u32>(), 4 + 3 + 2);
        assert_eq!(word_counts("it is fixed now", 1).len(), 4);
        assert!(!char_counts("fixed", 3).contains_key(&fnv1a(b'c', "fixe")));

        let (texts, y) = toy();
        let w = vec![1.0; texts.len()];
        let base = NgramConfig {
            c: 10.0,
            min_df_words: 1,
            min_df_chars: 1,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let saved = |cfg: &NgramConfig, name: &str| {
            let m = NgramModel::fit(&texts, &y, &w, cfg);
            let path = dir.path().join(name);
            m.save(&path).unwrap();
            let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
            (
                m,
                NgramModel::load(&path).unwrap(),
                tensors.contains_key("lengths"),
            )
        };
        let (m, back, stored) = saved(
            &NgramConfig {
                word_max_n: 3,
                char_max_n: 4,
                ..base
            },
            "long.safetensors",
        );
        assert!(stored);
        assert_eq!(back.lengths, m.lengths);
        let (d, _, stored) = saved(&base, "default.safetensors");
        assert!(
            !stored,
            "default lengths are not written, so such models keep their bytes"
        );
        assert_ne!(m.vocabulary(), d.vocabulary());
        for t in texts.iter().chain(["the fix is released in 2.2"].iter()) {
            assert_eq!(back.margin(t).to_bits(), m.margin(t).to_bits(), "{t}");
        }
    }

    #[test]
    fn log_count_ratios_favour_the_class_a_column_occurs_in() {
        // Column 0 only in Closed rows, column 1 only in the others, column 2 in both alike.
        let rows = vec![vec![(0, 1.0), (2, 1.0)], vec![(1, 1.0), (2, 1.0)]];
        let r = log_count_ratio(&rows, 3, &[true, false], 0.1);
        assert!(r[0] > 1.0 && r[1] < -1.0, "{r:?}");
        assert!(r[2].abs() < 1e-6, "{r:?}");
        assert!((r[0] + r[1]).abs() < 1e-6, "symmetric: {r:?}");
    }

    #[test]
    fn the_nb_scaling_is_folded_into_the_saved_weights() {
        let (texts, y) = toy();
        let w = vec![1.0; texts.len()];
        let cfg = NgramConfig {
            c: 10.0,
            min_df_words: 1,
            min_df_chars: 1,
            nb_alpha: 0.3,
            ..Default::default()
        };
        let m = NgramModel::fit(&texts, &y, &w, &cfg);
        for (t, yi) in texts.iter().zip(&y) {
            assert_eq!(m.margin(t) > 0.0, *yi, "{t}");
        }
        let plain = NgramModel::fit(&texts, &y, &w, &NgramConfig { nb_alpha: 0.0, ..cfg });
        assert_ne!(
            m.margin("the fix is released"),
            plain.margin("the fix is released")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nb.safetensors");
        m.save(&path).unwrap();
        let back = NgramModel::load(&path).unwrap();
        for t in texts.iter().chain(["the fix is released"].iter()) {
            assert_eq!(back.margin(t).to_bits(), m.margin(t).to_bits(), "{t}");
        }
    }

    #[test]
    fn a_weighted_row_pulls_harder() {
        // The same text labelled both ways: the heavier row wins.
        let texts = ["try the new version", "try the new version"];
        let y = [true, false];
        let cfg = NgramConfig {
            min_df_words: 1,
            min_df_chars: 1,
            ..Default::default()
        };
        let m = NgramModel::fit(&texts, &y, &[3.0, 1.0], &cfg);
        assert!(m.margin("try the new version") > 0.0);
        let m = NgramModel::fit(&texts, &y, &[1.0, 3.0], &cfg);
        assert!(m.margin("try the new version") < 0.0);
    }
}
