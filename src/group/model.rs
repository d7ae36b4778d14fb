//! The learned scorer and the model file.
//!
//! A scorer maps a candidate row to a real score; a softmax over the rows of one message gives the
//! link probabilities. `score = linear . (x * scale) + w2 . relu(W1 (x * scale) + b1)`: with
//! `hidden = 0` it is logistic regression (multinomial over candidates), otherwise a small MLP with
//! a linear skip connection. Features are only scaled (max-abs), never centred, so absent
//! features stay zero and the hidden layer can skip them.

use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::features::{Signal, Window, FEATURE_NAMES, FEATURE_SIGNALS, NUM_FEATURES};
use super::state::{Bounds, OpenBounds};
use super::{GroupError, Role};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scorer {
    /// Feature names, in column order (checked against the code's when loading).
    pub features: Vec<String>,
    /// Multiplies each raw feature; 0 disables a feature.
    pub scale: Vec<f32>,
    pub linear: Vec<f32>,
    pub hidden: usize,
    /// `NUM_FEATURES x hidden`, row-major by feature.
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
}

impl Scorer {
    /// A fresh scorer: linear part zero, hidden layer Glorot-uniform.
    pub fn new(scale: Vec<f32>, hidden: usize, rng: &mut impl Rng) -> Scorer {
        let a = (6.0 / (NUM_FEATURES + hidden) as f32).sqrt();
        let b = (6.0 / (hidden + 1) as f32).sqrt();
        Scorer {
            features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            scale,
            linear: vec![0.0; NUM_FEATURES],
            hidden,
            w1: (0..NUM_FEATURES * hidden)
                .map(|_| rng.random_range(-a..a))
                .collect(),
            b1: vec![0.0; hidden],
            w2: (0..hidden).map(|_| rng.random_range(-b..b)).collect(),
        }
    }

    /// Checks the shapes and puts the columns in this build's feature order. A file written before
    /// features were added loads with those features switched off (scale and weights zero), so
    /// its scores are unchanged; a feature this build does not know is an error.
    fn align(&mut self) -> Result<(), GroupError> {
        let h = self.hidden;
        let n = self.features.len();
        if self.scale.len() != n
            || self.linear.len() != n
            || self.w1.len() != n * h
            || self.b1.len() != h
            || self.w2.len() != h
        {
            return Err(GroupError::Model("weight shapes do not match".into()));
        }
        let names: Vec<&str> = self.features.iter().map(String::as_str).collect();
        if names == FEATURE_NAMES {
            return Ok(());
        }
        let mut col = vec![None; NUM_FEATURES];
        for (k, name) in names.iter().enumerate() {
            let j = FEATURE_NAMES
                .iter()
                .position(|f| f == name)
                .ok_or_else(|| GroupError::Model(format!("unknown feature {name:?}")))?;
            if col[j].replace(k).is_some() {
                return Err(GroupError::Model(format!("feature {name:?} listed twice")));
            }
        }
        let pick = |v: &[f32], k: Option<usize>| k.map_or(0.0, |k| v[k]);
        self.scale = col.iter().map(|&k| pick(&self.scale, k)).collect();
        self.linear = col.iter().map(|&k| pick(&self.linear, k)).collect();
        self.w1 = col
            .iter()
            .flat_map(|&k| (0..h).map(move |u| k.map(|k| k * h + u)))
            .map(|i| i.map_or(0.0, |i| self.w1[i]))
            .collect();
        self.features = FEATURE_NAMES.iter().map(|s| s.to_string()).collect();
        Ok(())
    }

    /// Whether the scorer uses any embedding feature.
    pub fn uses_embeddings(&self) -> bool {
        (0..NUM_FEATURES).any(|j| FEATURE_SIGNALS[j] == Signal::Similarity && self.scale[j] != 0.0)
    }

    /// Score of one row; `h` is scratch of length `hidden` (left holding the pre-activations).
    pub fn score(&self, x: &[f32], h: &mut [f32]) -> f32 {
        // Linear part dense, with independent accumulators so it vectorises.
        let mut acc = [0f32; 8];
        for ((xc, sc), wc) in x.chunks(8).zip(self.scale.chunks(8)).zip(self.linear.chunks(8)) {
            for k in 0..xc.len() {
                acc[k] += xc[k] * sc[k] * wc[k];
            }
        }
        let s: f32 = acc.iter().sum();
        let hd = self.hidden;
        if hd == 0 {
            return s;
        }
        // Hidden layer sparse: most features of a row are zero.
        h.copy_from_slice(&self.b1);
        for (j, &v) in x.iter().enumerate() {
            if v != 0.0 {
                let xs = v * self.scale[j];
                for (hk, wk) in h.iter_mut().zip(&self.w1[j * hd..(j + 1) * hd]) {
                    *hk += xs * wk;
                }
            }
        }
        s + h.iter().zip(&self.w2).map(|(&a, &w)| a.max(0.0) * w).sum::<f32>()
    }

    /// Contribution of each signal to a row's score: the score minus the score with that signal's
    /// features removed (exact for the linear scorer; an occlusion estimate for the MLP).
    pub fn contributions(&self, x: &[f32]) -> Vec<(Signal, f32)> {
        let mut h = vec![0.0; self.hidden];
        let full = self.score(x, &mut h);
        let mut masked = x.to_vec();
        Signal::ALL
            .iter()
            .filter_map(|&sig| {
                let mut any = false;
                for j in 0..NUM_FEATURES {
                    masked[j] = if FEATURE_SIGNALS[j] == sig && x[j] != 0.0 {
                        any = true;
                        0.0
                    } else {
                        x[j]
                    };
                }
                any.then(|| (sig, full - self.score(&masked, &mut h)))
            })
            .collect()
    }
}

/// How the softmax over candidates becomes a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionRule {
    /// Follow the single most probable link.
    Link,
    /// Join the conversation with the largest total probability (its candidates' sum).
    Conversation,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupConfig {
    pub bounds: Bounds,
    pub rule: DecisionRule,
    /// How many scored candidates a decision lists.
    pub top_k: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            bounds: Bounds {
                window_messages: 100,
                window_seconds: 15.0 * 60.0,
                memory_seconds: 24.0 * 3600.0,
                memory_items: 2000,
                open: OpenBounds::default(),
            },
            rule: DecisionRule::Link,
            top_k: 5,
        }
    }
}

impl GroupConfig {
    pub fn window(&self) -> Window {
        Window {
            messages: self.bounds.window_messages,
            seconds: self.bounds.window_seconds,
            open: self.bounds.open,
        }
    }
}

/// A scorer for messages without an embedding and, optionally, one for messages with one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScorerPair {
    pub text: Scorer,
    pub embedding: Option<Scorer>,
}

impl ScorerPair {
    fn align(&mut self) -> Result<(), GroupError> {
        self.text.align()?;
        if self.text.uses_embeddings() {
            return Err(GroupError::Model(
                "the text scorer must not use embedding features".into(),
            ));
        }
        if let Some(e) = &mut self.embedding {
            e.align()?;
        }
        Ok(())
    }

    pub fn get(&self, has_embedding: bool) -> &Scorer {
        match (&self.embedding, has_embedding) {
            (Some(e), true) => e,
            _ => &self.text,
        }
    }
}

/// Scorers for messages whose author's role is known (support channels): one per role, trained
/// on role-labelled data, so a team member's message and a customer's weigh the same evidence
/// differently.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleScorers {
    pub customer: ScorerPair,
    pub agent: ScorerPair,
    /// Learned start cues of the role-labelled training data (feature `new_learned_start_cue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cues: Option<super::cues::StartCues>,
}

/// The model file: configuration, the scorers for messages without a role (chat such as IRC)
/// and, optionally, the role scorers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupModel {
    pub format: u32,
    pub config: GroupConfig,
    pub text: Scorer,
    pub embedding: Option<Scorer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<RoleScorers>,
}

pub const MODEL_FORMAT: u32 = 1;

impl GroupModel {
    pub fn load(path: &Path) -> Result<GroupModel, GroupError> {
        let raw = std::fs::read(path).map_err(|e| GroupError::io(path, e))?;
        let mut m: GroupModel = serde_json::from_slice(&raw)?;
        if m.format != MODEL_FORMAT {
            return Err(GroupError::Model(format!(
                "format {} (expected {MODEL_FORMAT})",
                m.format
            )));
        }
        let mut base = ScorerPair {
            text: m.text,
            embedding: m.embedding,
        };
        base.align()?;
        (m.text, m.embedding) = (base.text, base.embedding);
        if let Some(r) = &mut m.roles {
            r.customer.align()?;
            r.agent.align()?;
        }
        Ok(m)
    }

    pub fn save(&self, path: &Path) -> Result<(), GroupError> {
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(path, json).map_err(|e| GroupError::io(path, e))
    }

    /// The scorer for a message with (or without) an embedding and with (or without) a role.
    pub fn scorer(&self, has_embedding: bool, role: Option<Role>) -> &Scorer {
        match (&self.roles, role) {
            (Some(r), Some(Role::Customer)) => r.customer.get(has_embedding),
            (Some(r), Some(Role::Agent)) => r.agent.get(has_embedding),
            _ => match (&self.embedding, has_embedding) {
                (Some(e), true) => e,
                _ => &self.text,
            },
        }
    }

    /// The learned start cue of a message with a role (0 without role scorers or cues).
    pub fn start_cue(&self, role: Option<Role>, words: &[u64]) -> f32 {
        match (role, self.roles.as_ref().and_then(|r| r.cues.as_ref())) {
            (Some(role), Some(c)) => c.score(role, words),
            _ => 0.0,
        }
    }

    /// The learned embedding start cue of a message with a role and an embedding (0 otherwise).
    pub fn embedding_start_cue(&self, role: Option<Role>, embedding: Option<&[f32]>) -> f32 {
        match (role, embedding, self.roles.as_ref().and_then(|r| r.cues.as_ref())) {
            (Some(role), Some(e), Some(c)) => c.embedding_score(role, e),
            _ => 0.0,
        }
    }

    /// Largest hidden layer of any scorer (scratch size).
    pub fn max_hidden(&self) -> usize {
        let mut all = vec![&self.text];
        all.extend(&self.embedding);
        if let Some(r) = &self.roles {
            for p in [&r.customer, &r.agent] {
                all.push(&p.text);
                all.extend(&p.embedding);
            }
        }
        all.iter().map(|s| s.hidden).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn model_file_round_trips_and_is_checked() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let scale = FEATURE_SIGNALS
            .iter()
            .map(|&s| if s == Signal::Similarity { 0.0 } else { 1.0 })
            .collect();
        let text = Scorer::new(scale, 4, &mut rng);
        let model = GroupModel {
            format: MODEL_FORMAT,
            config: GroupConfig::default(),
            text,
            embedding: None,
            roles: None,
        };
        let path = std::env::temp_dir().join(format!("group-model-test-{}.json", std::process::id()));
        model.save(&path).unwrap();
        let back = GroupModel::load(&path).unwrap();
        assert_eq!(back.text.w1, model.text.w1);
        let mut bad = model.clone();
        bad.text.features[0] = "renamed".into();
        bad.save(&path).unwrap();
        assert!(GroupModel::load(&path).is_err());

        // A file from before a feature existed loads with that feature off and the same scores.
        let mut old = model.clone();
        let drop = NUM_FEATURES - 1;
        old.text.features.remove(drop);
        old.text.scale.remove(drop);
        old.text.linear.remove(drop);
        old.text.w1.drain(drop * 4..drop * 4 + 4);
        old.save(&path).unwrap();
        let back = GroupModel::load(&path).unwrap();
        assert_eq!(back.text.scale[drop], 0.0);
        assert_eq!(back.text.w1[..drop * 4], model.text.w1[..drop * 4]);
        let x: Vec<f32> = (0..NUM_FEATURES).map(|j| (j % 3) as f32).collect();
        let mut hidden = vec![0.0; 4];
        let mut masked = model.text.clone();
        masked.scale[drop] = 0.0;
        assert_eq!(back.text.score(&x, &mut hidden), masked.score(&x, &mut hidden));
        std::fs::remove_file(&path).unwrap();
    }
}
