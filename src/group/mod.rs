//! Online conversation grouping (disentanglement).
//!
//! Messages arrive per channel in time order; for each one the [`Grouper`] links it to one earlier
//! message (joining that message's conversation) or starts a new conversation. Conversations are
//! the connected components of those links, as in Kummerfeld et al. (2019). The link is chosen by
//! a learned scorer ([`model::Scorer`]: logistic regression or a small MLP, softmax over the
//! candidate set) over hand-designed features ([`features`]), plus hard Slack rules (threads,
//! closed conversations).
//!
//! Layout: `text` (tokenising, mentions), `features` (candidate features), `decision` (what a
//! decision is, shared by `state` and `grouper`), `state` (per-channel bounded state behind
//! [`GroupStore`]), `model` (scorers, JSON serialisation), `grouper` (the online
//! API), `train` (SGD/Adam training), `metrics` (VI, 1-1, exact match), `data` (the JSONL corpus
//! and raw f32 embedding files).

use std::sync::{Arc, Mutex, OnceLock};

pub mod cues;
pub mod data;
pub mod decision;
pub mod explain;
pub mod features;
pub mod grouper;
pub mod metrics;
pub mod model;
pub mod state;
pub mod text;
pub mod train;

pub use decision::{Decision, Reason, ScoredCandidate};
pub use grouper::{Grouper, IncomingMessage, KnownMessage};
pub use metrics::{score, Scores};
pub use model::{GroupConfig, GroupModel, Scorer};
pub use state::{ChannelState, GroupStore, MemoryStore};

/// Dimension of the sentence embeddings (all-MiniLM-L6-v2), L2-normalised.
pub const EMBEDDING_DIM: usize = 384;

/// Who wrote a message, when the source knows (Slack: team members are agents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Agent,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "customer" => Some(Role::Customer),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("io error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("incompatible model: {0}")]
    Model(String),
    #[error("state store: {0}")]
    Store(String),
}

impl GroupError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        GroupError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The grouper and its in-memory channel state, once loaded. A std mutex: a decision takes
/// microseconds and never awaits while held.
#[derive(Clone, Default)]
pub struct GroupSlot(Arc<OnceLock<Arc<Mutex<Grouper>>>>);

impl GroupSlot {
    pub fn get(&self) -> Option<&Arc<Mutex<Grouper>>> {
        self.0.get()
    }
    pub fn fill(&self, model: GroupModel) {
        let _ = self.0.set(Arc::new(Mutex::new(Grouper::new(model))));
    }
}
