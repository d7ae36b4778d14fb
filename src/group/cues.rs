//! Learned start cues (issue 14): per role, how much each word of a top-level message says that it
//! starts a conversation rather than continuing one ("heads up everyone, maintenance tonight" from
//! the team, "hi, quick question" from a customer). Learned from the role-labelled training corpus
//! as smoothed log-odds, not written by hand; a message's cue is the mean over its known words and
//! is one feature of the "new conversation" row, weighed by the role scorers like any other.

use serde::{Deserialize, Serialize};

use super::data::Corpus;
use super::text::analyse;
use super::Role;

/// Word (content-word hash, as [`super::text::TextInfo::words`]) -> log-odds of starting, per role,
/// sorted by word for binary search.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StartCues {
    pub customer: Vec<(u64, f32)>,
    pub agent: Vec<(u64, f32)>,
}

/// Words seen fewer times than this (per role) get no weight.
const MIN_COUNT: u32 = 5;
/// Pseudo-counts pulling a word's rate toward the role's overall start rate.
const SMOOTHING: f64 = 10.0;
/// Most frequent words kept per role.
const MAX_WORDS: usize = 8000;

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

    /// Learns the cues from the annotated top-level messages with a role of `channels` (indices
    /// into `corpus.channels`): a message starts a conversation when its only gold link is itself.
    pub fn learn(corpus: &Corpus, channels: &[usize]) -> StartCues {
        // Per role: word -> (messages, starts), and the totals.
        let mut counts: [std::collections::HashMap<u64, (u32, u32)>; 2] = Default::default();
        let mut totals = [(0u64, 0u64); 2];
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
        StartCues {
            customer: table(0),
            agent: table(1),
        }
    }
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
    fn score_is_the_mean_of_known_words() {
        let cues = StartCues {
            customer: vec![],
            agent: vec![(1, 2.0), (5, -1.0)],
        };
        assert_eq!(cues.score(Role::Agent, &[1, 3, 5]), 0.5);
        assert_eq!(cues.score(Role::Agent, &[3]), 0.0);
        assert_eq!(cues.score(Role::Customer, &[1]), 0.0);
    }
}
