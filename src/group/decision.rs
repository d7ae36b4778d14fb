//! What a grouping decision is: shared by the grouper (which makes decisions) and the channel
//! state (which remembers them for idempotency), so neither depends on the other.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// "thread", "mention", "author", "time", "position", "conversation", "text", "similarity",
    /// "role", "system", "new".
    pub signal: String,
    pub detail: String,
    /// Contribution to the chosen candidate's score (log-odds units).
    pub weight: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredCandidate {
    /// The candidate message's ts; `None` for "start a new conversation".
    pub ts: Option<String>,
    pub conversation_id: String,
    pub score: f32,
    pub probability: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub conversation_id: String,
    pub new: bool,
    /// Probability of the chosen conversation (sum over its candidates); 1 for rule decisions.
    pub confidence: f32,
    /// The message this one was linked to (None when it starts a conversation).
    pub linked_ts: Option<String>,
    pub reasons: Vec<Reason>,
    /// The best candidates, most probable first.
    pub candidates: Vec<ScoredCandidate>,
}

/// The id of a conversation started by the message `ts` of `channel`; stable and unique.
pub fn conversation_id(channel: &str, ts: &str) -> String {
    format!("{channel}:{ts}")
}
