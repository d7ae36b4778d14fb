//! Per-channel grouping state: the recent messages (the candidate window), the conversations they
//! belong to, what each author did last, and the decisions already returned (idempotency).
//!
//! Everything is bounded (window by count and time, conversations and authors by age and count,
//! decisions by count) and serialisable, so a store can persist it between messages.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use super::decision::{conversation_id, Decision};
use super::text::TextInfo;
use super::{GroupError, Role};

/// A message kept in the candidate window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Position in the channel's stream (0, 1, ...).
    pub seq: u64,
    pub ts: f64,
    pub key: String,
    pub user: String,
    pub user_key: u64,
    pub text: TextInfo,
    pub system: bool,
    pub action: bool,
    pub role: Option<Role>,
    /// Serial of its conversation in [`ChannelState::conversations`].
    pub conversation: u64,
    pub embedding: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub start_seq: u64,
    pub last_seq: u64,
    pub last_ts: f64,
    pub size: u32,
    /// Distinct authors (nick keys), capped: only membership tests need it.
    pub authors: Vec<u64>,
    /// Sum of member embeddings (its direction is the centroid's) and that sum's norm, kept so
    /// each new message costs one dot product per conversation.
    pub embedding_sum: Option<Vec<f32>>,
    pub embedding_norm: f32,
    /// Root ts of the Slack thread this conversation holds, if any.
    pub thread: Option<String>,
    pub closed: bool,
    /// Support roles (messages that carry a role only): who started it, who spoke last, whether
    /// the team has spoken in it, and when the customer last did.
    #[serde(default)]
    pub roles: ConversationRoles,
}

/// What a conversation's roles say about whose turn it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationRoles {
    /// Some message of the conversation carried a role (it is a support ticket).
    pub known: bool,
    /// Author (nick key) and role of its first message.
    pub starter: Option<u64>,
    pub starter_role: Option<Role>,
    /// Role of its latest message.
    pub last_role: Option<Role>,
    /// A team member wrote in it.
    pub team_replied: bool,
    /// Time of the latest customer message.
    pub last_customer_ts: Option<f64>,
    /// Time of the latest team message.
    #[serde(default)]
    pub last_team_ts: Option<f64>,
    /// Time of its first message with a role (how long the ticket has been open).
    #[serde(default)]
    pub start_ts: Option<f64>,
    /// Content words of its messages with a role (sorted hashes, the first
    /// [`MAX_CONVERSATION_WORDS`] distinct ones): what the ticket is about, for messages that
    /// come back to it long after its last message left the window.
    #[serde(default)]
    pub words: Vec<u64>,
}

impl ConversationRoles {
    /// The customer spoke last: the conversation waits for the team.
    pub fn waits_for_team(&self) -> bool {
        self.last_role == Some(Role::Customer)
    }
}

const MAX_CONVERSATION_AUTHORS: usize = 32;
/// Distinct content words kept per support conversation.
pub const MAX_CONVERSATION_WORDS: usize = 96;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorInfo {
    pub nick: String,
    pub last_seq: u64,
    pub last_ts: f64,
    pub last_conversation: u64,
    /// The message this author's last message linked to (None: it started a conversation).
    pub last_parent_seq: Option<u64>,
}

/// Bounds of the state; part of the model's [`super::GroupConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// Candidate window: at most this many previous messages...
    pub window_messages: usize,
    /// ...no older than this many seconds.
    pub window_seconds: f64,
    /// Conversations and authors idle longer than this are forgotten (thread replies still find
    /// their root's conversation id through the decision memory).
    pub memory_seconds: f64,
    /// At most this many conversations / authors / remembered decisions per channel.
    pub memory_items: usize,
    /// Open support conversations as candidates (messages with a role only).
    #[serde(default)]
    pub open: OpenBounds,
}

/// How long a support conversation (one whose messages carry roles) stays a candidate after its
/// messages left the window: its first and latest messages are kept as candidates for messages
/// with a role, so a customer's follow-up hours later or a team member's late reply can join it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OpenBounds {
    /// Idle time after which an open conversation stops being a candidate.
    pub seconds: f64,
    /// At most this many such conversations (the most recently active) per decision.
    pub conversations: usize,
    /// Conversations that live in a Slack thread are candidates too (a customer's top-level
    /// "any update?" after the team answered in the thread). Off by default: a top-level message
    /// then never joins a threaded conversation.
    #[serde(default)]
    pub threads: bool,
}

impl Default for OpenBounds {
    fn default() -> Self {
        OpenBounds {
            seconds: 3.0 * 86_400.0,
            conversations: 30,
            threads: false,
        }
    }
}

/// Hasher for keys that are already hashes or serials (nick keys, conversation serials): the
/// default SipHash showed up in profiles.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// The conversation a message joins.
#[derive(Debug, Clone, PartialEq)]
pub enum ConvRef {
    Known(u64),
    /// A conversation not in the state (yet), by id.
    New(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChannelState {
    pub next_seq: u64,
    pub next_conversation: u64,
    pub window: VecDeque<StoredMessage>,
    /// First and latest messages of open support conversations that left the window, oldest
    /// first (entries that stopped being either are dropped lazily).
    #[serde(default)]
    pub parked: VecDeque<StoredMessage>,
    pub conversations: IdMap<Conversation>,
    pub authors: IdMap<AuthorInfo>,
    /// Decisions by message ts, oldest first in `decided_order`.
    pub decided: HashMap<String, Decision>,
    pub decided_order: VecDeque<String>,
}

/// How a message joins the state.
pub struct Commit<'a> {
    pub channel: &'a str,
    pub key: &'a str,
    pub ts: f64,
    pub user: &'a str,
    pub user_key: u64,
    pub text: TextInfo,
    pub system: bool,
    pub action: bool,
    pub role: Option<Role>,
    pub embedding: Option<&'a [f32]>,
    pub conversation: ConvRef,
    pub parent_seq: Option<u64>,
    pub thread: Option<&'a str>,
}

impl ChannelState {
    /// A candidate message by index: `0..window.len()` are the window, the rest the parked
    /// messages.
    pub fn msg(&self, i: usize) -> &StoredMessage {
        match i.checked_sub(self.window.len()) {
            None => &self.window[i],
            Some(k) => &self.parked[k],
        }
    }

    /// Whether a parked message still stands for its open support conversation at `now`.
    pub fn parked_live(&self, m: &StoredMessage, now: f64, open: &OpenBounds) -> bool {
        self.conversations.get(&m.conversation).is_some_and(|c| {
            (c.start_seq == m.seq || c.last_seq == m.seq)
                && c.roles.known
                && !c.closed
                && (open.threads || c.thread.is_none())
                && now - c.last_ts <= open.seconds
        })
    }

    pub fn newest_ts(&self) -> Option<f64> {
        self.window.back().map(|m| m.ts)
    }

    /// Conversation of the message with this ts: in the state if possible, else its id from the
    /// decision memory.
    pub fn conversation_of_ts(&self, key: &str) -> Option<ConvRef> {
        if let Some(m) = self.window.iter().rev().find(|m| m.key == key) {
            return Some(ConvRef::Known(m.conversation));
        }
        let id = &self.decided.get(key)?.conversation_id;
        Some(match self.conversations.iter().find(|(_, c)| c.id == *id) {
            Some((&serial, _)) => ConvRef::Known(serial),
            None => ConvRef::New(id.clone()),
        })
    }

    pub fn conversation_id(&self, serial: u64) -> &str {
        self.conversations.get(&serial).map_or("", |c| c.id.as_str())
    }

    /// Adds a decided message.
    pub fn commit(&mut self, c: Commit<'_>, bounds: &Bounds) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (serial, new_id) = match c.conversation {
            ConvRef::Known(s) if self.conversations.contains_key(&s) => (s, None),
            // Conversations with messages in the window are never evicted, so this is only a
            // safety net: the message starts a conversation of its own.
            ConvRef::Known(_) => (self.next_conversation, Some(conversation_id(c.channel, c.key))),
            ConvRef::New(id) => (self.next_conversation, Some(id)),
        };
        if new_id.is_some() {
            self.next_conversation += 1;
        }
        let conv = self.conversations.entry(serial).or_insert_with(|| Conversation {
            id: new_id.unwrap_or_default(),
            start_seq: seq,
            last_seq: seq,
            last_ts: c.ts,
            size: 0,
            authors: Vec::new(),
            embedding_sum: None,
            embedding_norm: 0.0,
            thread: None,
            closed: false,
            roles: ConversationRoles::default(),
        });
        conv.size += 1;
        if let Some(role) = c.role.filter(|_| !c.system) {
            let r = &mut conv.roles;
            if !r.known {
                r.known = true;
                r.start_ts = Some(c.ts);
                if conv.start_seq == seq {
                    r.starter = Some(c.user_key);
                    r.starter_role = Some(role);
                }
            }
            r.last_role = Some(role);
            match role {
                Role::Agent => {
                    r.team_replied = true;
                    r.last_team_ts = Some(c.ts);
                }
                Role::Customer => r.last_customer_ts = Some(c.ts),
            }
            if r.words.len() < MAX_CONVERSATION_WORDS {
                merge_words(&mut r.words, &c.text.words, MAX_CONVERSATION_WORDS);
            }
        }
        conv.last_seq = seq;
        conv.last_ts = conv.last_ts.max(c.ts);
        if !c.system && !conv.authors.contains(&c.user_key) && conv.authors.len() < MAX_CONVERSATION_AUTHORS {
            conv.authors.push(c.user_key);
        }
        if let Some(e) = c.embedding {
            let sum = conv.embedding_sum.get_or_insert_with(|| vec![0.0; e.len()]);
            sum.iter_mut().zip(e).for_each(|(s, x)| *s += x);
            conv.embedding_norm = super::text::dot(sum, sum).sqrt();
        }
        if let Some(t) = c.thread {
            conv.thread = Some(t.to_string());
        }
        // System lines (joins/quits) say nothing about what their author talks about.
        if !c.system {
            self.authors.insert(
                c.user_key,
                AuthorInfo {
                    nick: c.user.to_string(),
                    last_seq: seq,
                    last_ts: c.ts,
                    last_conversation: serial,
                    last_parent_seq: c.parent_seq,
                },
            );
        }
        self.window.push_back(StoredMessage {
            seq,
            ts: c.ts,
            key: c.key.to_string(),
            user: c.user.to_string(),
            user_key: c.user_key,
            text: c.text,
            system: c.system,
            action: c.action,
            role: c.role,
            conversation: serial,
            embedding: c.embedding.map(|e| e.to_vec()),
        });
        self.evict(c.ts, bounds);
    }

    pub fn remember(&mut self, key: &str, decision: Decision, bounds: &Bounds) {
        if self.decided.insert(key.to_string(), decision).is_none() {
            self.decided_order.push_back(key.to_string());
        }
        while self.decided_order.len() > bounds.memory_items {
            if let Some(old) = self.decided_order.pop_front() {
                self.decided.remove(&old);
            }
        }
    }

    fn evict(&mut self, now: f64, b: &Bounds) {
        let open = b.open;
        while self.window.len() > b.window_messages
            || self.window.front().is_some_and(|m| now - m.ts > b.window_seconds)
        {
            if let Some(m) = self.window.pop_front() {
                // Support conversations keep their first and latest messages as candidates.
                if self.parked_live(&m, now, &open) {
                    self.parked.push_back(m);
                }
            }
        }
        // Sweeping the maps is O(size): do it every 64 messages, or at once when over the cap.
        // Conversations with a message in the window stay (their serials are referenced).
        let sweep = self.next_seq % 64 == 0;
        let in_window = self.window.front().map_or(u64::MAX, |m| m.seq);
        let keep = |ts: f64| now - ts <= b.memory_seconds;
        let open_keep = |c: &Conversation| c.roles.known && !c.closed && now - c.last_ts <= open.seconds;
        if sweep || self.parked.len() > 4 * open.conversations {
            let mut parked = std::mem::take(&mut self.parked);
            parked.retain(|m| self.parked_live(m, now, &open));
            // The most recently active conversations win when there are too many.
            while parked.len() > 4 * open.conversations {
                parked.pop_front();
            }
            self.parked = parked;
        }
        if sweep || self.conversations.len() > b.memory_items {
            self.conversations
                .retain(|_, c| c.last_seq >= in_window || keep(c.last_ts) || open_keep(c));
            trim_oldest(&mut self.conversations, b.memory_items, |c| {
                if c.last_seq >= in_window {
                    f64::INFINITY
                } else {
                    c.last_ts
                }
            });
        }
        if sweep || self.authors.len() > b.memory_items {
            self.authors.retain(|_, a| keep(a.last_ts));
            trim_oldest(&mut self.authors, b.memory_items, |a| a.last_ts);
        }
    }
}

/// Adds the sorted unique `new` hashes to the sorted unique `words`, at most `max` in all (the
/// smallest hashes of the new ones win when full, so the result does not depend on anything but
/// the messages).
fn merge_words(words: &mut Vec<u64>, new: &[u64], max: usize) {
    for &w in new {
        if words.len() >= max {
            break;
        }
        if let Err(at) = words.binary_search(&w) {
            words.insert(at, w);
        }
    }
}

/// Drops the entries with the oldest timestamps until at most `max` remain.
fn trim_oldest<V>(map: &mut IdMap<V>, max: usize, ts: impl Fn(&V) -> f64) {
    if map.len() <= max {
        return;
    }
    let mut times: Vec<f64> = map.values().map(&ts).collect();
    times.sort_by(|a, b| b.total_cmp(a));
    let cutoff = times[max.max(1) - 1];
    map.retain(|_, v| ts(v) >= cutoff);
}

/// Where per-channel state lives between messages. The grouper takes a channel's state out,
/// updates it and puts it back, so a persistent store only needs to (de)serialise
/// [`ChannelState`].
pub trait GroupStore {
    fn take(&mut self, channel: &str) -> Result<Option<ChannelState>, GroupError>;
    fn put(&mut self, channel: &str, state: ChannelState) -> Result<(), GroupError>;
}

/// In-memory store (one process, lost on restart).
#[derive(Debug, Default)]
pub struct MemoryStore {
    channels: HashMap<String, ChannelState>,
}

impl GroupStore for MemoryStore {
    fn take(&mut self, channel: &str) -> Result<Option<ChannelState>, GroupError> {
        Ok(self.channels.remove(channel))
    }

    fn put(&mut self, channel: &str, state: ChannelState) -> Result<(), GroupError> {
        self.channels.insert(channel.to_string(), state);
        Ok(())
    }
}
