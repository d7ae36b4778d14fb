//! Learned start cues (issue 14): per role, how much each word of a top-level message says that it
//! starts a conversation rather than continuing one ("heads up everyone, maintenance tonight" from
//! the team, "hi, quick question" from a customer). Learned from the role-labelled training corpus
//! as smoothed log-odds, not written by hand; a message's cue is the mean over its known words and
//! is one feature of the "new conversation" row, weighed by the role scorers like any other.
//! Beside the words, a logistic regression per role on the message's sentence embedding gives a
//! second cue (feature `new_embedding_start_cue`), which reads how a message is put ("I'm trying
//! to set up X and get this error" against "that worked, thanks") rather than single words.

use serde::{Deserialize, Serialize};

use super::data::{Corpus, Embeddings};
use super::text::analyse;
use super::{Role, EMBEDDING_DIM};

/// Word (content-word hash, as [`super::text::TextInfo::words`]) -> log-odds of starting, per role,
/// sorted by word for binary search.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StartCues {
    pub customer: Vec<(u64, f32)>,
    pub agent: Vec<(u64, f32)>,
    /// Per role, the embedding cue's weights followed by its bias (`EMBEDDING_DIM + 1` floats;
    /// empty when it was not learned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customer_embedding: Vec<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_embedding: Vec<f32>,
}

/// Words seen fewer times than this (per role) get no weight.
const MIN_COUNT: u32 = 5;
/// Pseudo-counts pulling a word's rate toward the role's overall start rate.
const SMOOTHING: f64 = 10.0;
/// Most frequent words kept per role.
const MAX_WORDS: usize = 8000;
/// The embedding cue: full-batch Adam steps, step size and L2 penalty (per message) of the
/// logistic regression, and the bound on the logit it reports.
const EMB_STEPS: usize = 300;
const EMB_LR: f32 = 0.05;
const EMB_L2: f32 = 1e-4;
const EMB_MAX_LOGIT: f32 = 8.0;

impl StartCues {
    /// Mean log-odds of the message's known words (0 when none is known).
    pub fn score(&self, role: Role, words: &[u64]) -> f32 {
        let table = match role {
            Role::Customer => &self.customer,
            Role::Agent => &self.agent,
        };
        let (mut sum, mut n) = (0.0f32, 0u32);
        for w in words {
            if let Ok(i) = table.binary_search_by_key(w, |e| e.0) {
                sum += table[i].1;
                n += 1;
            }
        }
        if n == 0 {
            0.0
        } else {
            sum / n as f32
        }
    }

    /// The embedding cue of a message: the log-odds that it starts a conversation, as its role's
    /// logistic regression on the sentence embedding reads it (0 when not learned), bounded.
    pub fn embedding_score(&self, role: Role, embedding: &[f32]) -> f32 {
        let w = match role {
            Role::Customer => &self.customer_embedding,
            Role::Agent => &self.agent_embedding,
        };
        if w.len() != EMBEDDING_DIM + 1 || embedding.len() != EMBEDDING_DIM {
            return 0.0;
        }
        let z: f32 = w[EMBEDDING_DIM] + w.iter().zip(embedding).map(|(a, b)| a * b).sum::<f32>();
        if z.is_finite() {
            z.clamp(-EMB_MAX_LOGIT, EMB_MAX_LOGIT)
        } else {
            0.0
        }
    }

    /// Learns the cues from the annotated top-level messages with a role of `channels` (indices
    /// into `corpus.channels`): a message starts a conversation when its only gold link is itself.
    /// With `emb` (row i = line i of the corpus) the embedding cues are learned too.
    pub fn learn(corpus: &Corpus, channels: &[usize], emb: Option<&Embeddings>) -> StartCues {
        // Per role: word -> (messages, starts), and the totals.
        let mut counts: [std::collections::HashMap<u64, (u32, u32)>; 2] = Default::default();
        let mut totals = [(0u64, 0u64); 2];
        // Per role: (line, starts) for the embedding cue.
        let mut rows: [Vec<(usize, bool)>; 2] = Default::default();
        for &c in channels {
            for &line in &corpus.channels[c] {
                let r = &corpus.records[line];
                let Some(role) = r.role else { continue };
                if !r.eval || r.parents.is_empty() || r.thread_ts.as_deref().is_some_and(|t| t != r.key) {
                    continue;
                }
                let start = r.parents.iter().all(|&p| p == r.idx);
                let k = usize::from(role == Role::Agent);
                totals[k].0 += 1;
                totals[k].1 += u64::from(start);
                rows[k].push((line, start));
                for w in analyse(&r.text).words {
                    let e = counts[k].entry(w).or_default();
                    e.0 += 1;
                    e.1 += u32::from(start);
                }
            }
        }
        let table = |k: usize| -> Vec<(u64, f32)> {
            let (n, s) = totals[k];
            if n == 0 || s == 0 || s == n {
                return Vec::new();
            }
            let p = s as f64 / n as f64;
            let prior = (p / (1.0 - p)).ln();
            let mut words: Vec<(u64, u32, u32)> = counts[k]
                .iter()
                .filter(|(_, &(n, _))| n >= MIN_COUNT)
                .map(|(&w, &(n, s))| (w, n, s))
                .collect();
            // Most frequent first (ties by word, so the result does not depend on hash order).
            words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            words.truncate(MAX_WORDS);
            let mut out: Vec<(u64, f32)> = words
                .into_iter()
                .map(|(w, n, s)| {
                    let odds = (s as f64 + SMOOTHING * p) / ((n - s) as f64 + SMOOTHING * (1.0 - p));
                    (w, (odds.ln() - prior) as f32)
                })
                .collect();
            out.sort_by_key(|e| e.0);
            out
        };
        let embedding = |k: usize| match emb {
            Some(e) => fit_logistic(&rows[k], |line| e.row(line)),
            None => Vec::new(),
        };
        StartCues {
            customer: table(0),
            agent: table(1),
            customer_embedding: embedding(0),
            agent_embedding: embedding(1),
        }
    }
}

/// L2-penalised logistic regression of the rows' labels (`(line, starts)`) on their embeddings
/// by full-batch Adam from zero (deterministic): `EMBEDDING_DIM` weights then the bias; empty when
/// one class is missing.
fn fit_logistic<'e>(rows: &[(usize, bool)], row: impl Fn(usize) -> &'e [f32]) -> Vec<f32> {
    let n = rows.len();
    let positives = rows.iter().filter(|r| r.1).count();
    if positives == 0 || positives == n {
        return Vec::new();
    }
    let d = EMBEDDING_DIM + 1;
    let (mut w, mut m, mut v) = (vec![0f32; d], vec![0f32; d], vec![0f32; d]);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut g = vec![0f64; d];
    for step in 1..=EMB_STEPS {
        g.iter_mut().for_each(|x| *x = 0.0);
        for &(line, label) in rows {
            let x = row(line);
            let z = w[EMBEDDING_DIM] + w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
            let err = (1.0 / (1.0 + (-z).exp()) - f32::from(u8::from(label))) as f64;
            for (gj, xj) in g.iter_mut().zip(x) {
                *gj += err * *xj as f64;
            }
            g[EMBEDDING_DIM] += err;
        }
        let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for j in 0..d {
            let penalty = if j < EMBEDDING_DIM { EMB_L2 * w[j] } else { 0.0 };
            let gj = (g[j] / n as f64) as f32 + penalty;
            m[j] = b1 * m[j] + (1.0 - b1) * gj;
            v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
            w[j] -= EMB_LR * (m[j] / c1) / ((v[j] / c2).sqrt() + eps);
        }
    }
    w
}

/// The cross-fitting fold of a channel (0 or 1): copies of one source channel (`name-<n>`) share
/// a fold, so a message's cue in training never comes from its own text.
pub fn fold(channel: &str) -> usize {
    let stem = channel
        .rsplit_once('-')
        .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .map_or(channel, |(s, _)| s);
    (super::text::fnv1a(stem) % 2) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_keeps_copies_together() {
        assert_eq!(fold("scenes/03-0"), fold("scenes/03-24"));
        assert_eq!(fold("x"), fold("x"));
        assert!(fold("a-b") < 2);
    }

    #[test]
    fn embedding_cue_separates_starts_from_replies() {
        // Starts point one way, replies another, with a shared component; 3:1 replies.
        let vec_of = |start: bool, k: usize| {
            let mut e = vec![0.0f32; EMBEDDING_DIM];
            e[usize::from(!start)] = 0.8;
            e[2] = 0.6;
            e[3 + k % 7] = 0.05;
            e
        };
        let embs: Vec<Vec<f32>> = (0..40).map(|i| vec_of(i % 4 == 0, i)).collect();
        let rows: Vec<(usize, bool)> = (0..40).map(|i| (i, i % 4 == 0)).collect();
        let w = fit_logistic(&rows, |i| &embs[i]);
        assert_eq!(w.len(), EMBEDDING_DIM + 1);
        let cues = StartCues {
            agent_embedding: w,
            ..StartCues::default()
        };
        let (start, reply) = (vec_of(true, 100), vec_of(false, 100));
        assert!(cues.embedding_score(Role::Agent, &start) > 1.0);
        assert!(cues.embedding_score(Role::Agent, &reply) < -1.0);
        // No cue for the other role, for a wrong length, or without both classes.
        assert_eq!(cues.embedding_score(Role::Customer, &start), 0.0);
        assert_eq!(cues.embedding_score(Role::Agent, &start[..10]), 0.0);
        assert!(fit_logistic(&rows[1..4], |i| &embs[i]).is_empty());
    }

    #[test]
    fn score_is_the_mean_of_known_words() {
        let cues = StartCues {
            customer: vec![],
            agent: vec![(1, 2.0), (5, -1.0)],
            ..StartCues::default()
        };
        assert_eq!(cues.score(Role::Agent, &[1, 3, 5]), 0.5);
        assert_eq!(cues.score(Role::Agent, &[3]), 0.0);
        assert_eq!(cues.score(Role::Customer, &[1]), 0.0);
    }
}
