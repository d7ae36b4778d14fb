//! Persistence: the domain types, the `Store` trait, and its two backends (SQLite, PostgreSQL).
//!
//! Decisions (grouping, status, events) are made by pure code in `pipeline` and `status`; a backend
//! only loads, locks and writes, so both databases behave the same by construction.

// SQL shared by both backends (parameters as `$n`, which SQLite accepts too). Macros rather than
// consts because `concat!` needs literals and sqlx only takes `&'static str` as trusted SQL.
macro_rules! conversation_select {
    () => {
        "SELECT seq, id, status, priority, owner, account_id, channel, title, created_at, \
         first_response_at, closed_at, issue_url, issue_provider, issue_key, issue_state, message_count \
         FROM conversations"
    };
}

macro_rules! message_select {
    () => {
        "SELECT seq, id, conversation_id, channel, ts, thread_ts, user_id, role, text, edited, deleted, \
         label, score FROM messages"
    };
}

macro_rules! event_select {
    () => {
        "SELECT seq, id, conversation_id, kind, actor, message_id, before_value, after_value, model_label, \
         model_score, at FROM events"
    };
}

macro_rules! context_select {
    () => {
        "SELECT m.id, m.conversation_id, c.status AS conversation_status, m.ts, m.thread_ts, m.user_id, \
         m.role, m.text, m.embedding FROM messages m JOIN conversations c ON c.id = m.conversation_id"
    };
}

// Conversation writes, the same SQL and bindings on both backends.

/// `INSERT INTO conversations` of all columns as `$1..$15`, in `bind_conversation!` order.
macro_rules! insert_conversation_sql {
    () => {
        "INSERT INTO conversations (id, status, priority, owner, account_id, channel, title, created_at, \
         first_response_at, closed_at, issue_url, issue_provider, issue_key, issue_state, message_count) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    };
}

/// Binds a conversation's 15 columns in `insert_conversation_sql!` order (any sqlx query type).
macro_rules! bind_conversation {
    ($query:expr, $c:expr) => {{
        let c: &Conversation = $c;
        let issue = c.linked_issue.as_ref();
        $query
            .bind(&c.id)
            .bind(c.status.as_str())
            .bind(c.priority.as_str())
            .bind(&c.owner)
            .bind(&c.account_id)
            .bind(&c.channel)
            .bind(&c.title)
            .bind(c.created_at)
            .bind(c.first_response_at)
            .bind(c.closed_at)
            .bind(issue.map(|i| &i.url))
            .bind(issue.and_then(|i| i.provider.as_ref()))
            .bind(issue.and_then(|i| i.key.as_ref()))
            .bind(issue.map(|i| &i.state))
            .bind(c.message_count)
    }};
}

/// `UPDATE conversations` of every mutable column, taking the same `$1..$15` as
/// `insert_conversation_sql!` (`channel`, `$6`, never changes).
macro_rules! update_conversation_sql {
    () => {
        "UPDATE conversations SET status = $2, priority = $3, owner = $4, account_id = $5, title = $7, \
         created_at = $8, first_response_at = $9, closed_at = $10, issue_url = $11, issue_provider = $12, \
         issue_key = $13, issue_state = $14, message_count = $15 WHERE id = $1 AND CAST($6 AS TEXT) IS NOT NULL"
    };
}

/// Binds a message's 12 `INSERT INTO messages` columns: id, conversation_id, channel, ts,
/// thread_ts, user_id, role, text, label, score, sent_at, embedding (any sqlx query type).
macro_rules! bind_message {
    ($query:expr, $m:expr, $sent_at:expr, $embedding:expr) => {{
        let m: &Message = $m;
        $query
            .bind(&m.id)
            .bind(&m.conversation_id)
            .bind(&m.channel)
            .bind(&m.ts)
            .bind(&m.thread_ts)
            .bind(&m.user)
            .bind(m.role.as_str())
            .bind(&m.text)
            .bind(m.label.map(ReplyLabel::as_str))
            .bind(m.score)
            .bind($sent_at)
            .bind($embedding.map(embedding_to_bytes))
    }};
}

pub mod postgres;
pub mod sqlite;

use crate::pipeline::{ContextMessage, Grouper, IncomingMessage, Prediction, Reason};
use crate::status::{self, ReplyLabel, Status, Trigger};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

/// Boxed so that `Store` stays object-safe: the server holds an `Arc<dyn Store>` chosen at start-up.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Refused(#[from] status::Refusal),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e)
            }
            other => StoreError::Unexpected(other.into()),
        }
    }
}

impl StoreError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// Opens the database named by `url` (`sqlite://...` or `postgres://...`) and runs its migrations.
pub async fn connect(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else {
        anyhow::bail!("unsupported database url (expected sqlite:// or postgres://)")
    }
}

/// Every read and write the service needs. Multi-row changes are atomic in each backend.
pub trait Store: Send + Sync + 'static {
    fn ping(&self) -> StoreFuture<'_, ()>;

    fn list_conversations<'a>(
        &'a self,
        filter: &'a ConversationFilter,
        page: PageRequest,
    ) -> StoreFuture<'a, Page<Conversation>>;
    fn get_conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Conversation>;
    fn create_conversation(&self, new: NewConversation, actor: Actor) -> StoreFuture<'_, Conversation>;
    fn update_conversation<'a>(
        &'a self,
        id: &'a str,
        patch: ConversationPatch,
        actor: Actor,
    ) -> StoreFuture<'a, Conversation>;
    fn delete_conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()>;
    fn list_messages<'a>(
        &'a self,
        conversation_id: &'a str,
        page: PageRequest,
    ) -> StoreFuture<'a, Page<Message>>;
    fn list_events<'a>(&'a self, conversation_id: &'a str, page: PageRequest)
        -> StoreFuture<'a, Page<Event>>;

    /// Moves every message and event of `from` into `into` and deletes `from`.
    fn merge_conversations<'a>(
        &'a self,
        from: &'a str,
        into: &'a str,
        actor: Actor,
    ) -> StoreFuture<'a, Conversation>;
    /// Moves one message to `to`, or to a new conversation when `to` is `None` (a split).
    fn move_message<'a>(
        &'a self,
        message_id: &'a str,
        to: Option<&'a str>,
        actor: Actor,
    ) -> StoreFuture<'a, (Message, Conversation)>;

    fn find_message<'a>(&'a self, channel: &'a str, ts: &'a str) -> StoreFuture<'a, Option<Message>>;
    /// Stores, groups and applies the status machine to one message in one transaction,
    /// serialised per channel. Idempotent on (channel, ts): a replay changes nothing and comes back
    /// with `created: false`. Callers that classify first should check `find_message` before, so
    /// that replays skip inference.
    fn ingest<'a>(
        &'a self,
        msg: &'a IncomingMessage,
        prediction: Option<Prediction>,
        grouper: &'a dyn Grouper,
    ) -> StoreFuture<'a, IngestOutcome>;

    /// Records the new state of an issue; closing it moves its `on_hold` conversations to `on_you`.
    fn issue_changed<'a>(&'a self, change: &'a IssueChange) -> StoreFuture<'a, Vec<Conversation>>;

    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>>;
    fn get_account<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Account>;
    fn create_account(&self, new: AccountInput) -> StoreFuture<'_, Account>;
    fn update_account<'a>(&'a self, id: &'a str, patch: AccountPatch) -> StoreFuture<'a, Account>;

    fn list_team(&self) -> StoreFuture<'_, Vec<TeamMember>>;
    fn put_team_member(&self, member: TeamMember) -> StoreFuture<'_, TeamMember>;

    /// Team replies with a label, oldest first; a human's correction wins over the model's label.
    fn export_status_labels(&self, since: Option<DateTime<Utc>>) -> StoreFuture<'_, Vec<StatusLabelRow>>;
    /// Every message of each channel that has a human-corrected conversation, in ts order per channel.
    fn export_grouping(&self, since: Option<DateTime<Utc>>) -> StoreFuture<'_, Vec<GroupingRow>>;
    fn analytics(&self) -> StoreFuture<'_, Analytics>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    Medium,
    Low,
    None,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
            Priority::None => "none",
        }
    }
}

impl FromStr for Priority {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "urgent" => Priority::Urgent,
            "high" => Priority::High,
            "medium" => Priority::Medium,
            "low" => Priority::Low,
            "none" => Priority::None,
            other => anyhow::bail!("unknown priority `{other}`"),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Agent => "agent",
        }
    }
}

impl FromStr for Role {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "customer" => Role::Customer,
            "agent" => Role::Agent,
            other => anyhow::bail!("unknown role `{other}`"),
        })
    }
}

/// Who made a change: `model`, `human:<user>` or `rule:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Model,
    Human(String),
    Rule(&'static str),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Model => f.write_str("model"),
            Actor::Human(user) => write!(f, "human:{user}"),
            Actor::Rule(name) => write!(f, "rule:{name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIssue {
    pub url: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default = "open")]
    pub state: String,
}

fn open() -> String {
    "open".into()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    pub id: String,
    pub status: Status,
    pub priority: Priority,
    pub owner: Option<String>,
    pub account_id: Option<String>,
    pub channel: String,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub linked_issue: Option<LinkedIssue>,
    pub message_count: i64,
}

impl Conversation {
    /// Sets the status and keeps `closed_at` in step with it.
    pub fn set_status(&mut self, to: Status, at: DateTime<Utc>) {
        if to == Status::Closed && self.status != Status::Closed {
            self.closed_at = Some(at);
        } else if to != Status::Closed {
            self.closed_at = None;
        }
        self.status = to;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user: String,
    pub role: Role,
    pub text: String,
    pub edited: bool,
    pub deleted: bool,
    pub label: Option<ReplyLabel>,
    pub score: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Status,
    Owner,
    Priority,
    Grouping,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Status => "status",
            EventKind::Owner => "owner",
            EventKind::Priority => "priority",
            EventKind::Grouping => "grouping",
        }
    }
}

impl FromStr for EventKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "status" => EventKind::Status,
            "owner" => EventKind::Owner,
            "priority" => EventKind::Priority,
            "grouping" => EventKind::Grouping,
            other => anyhow::bail!("unknown event kind `{other}`"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub conversation_id: String,
    pub kind: EventKind,
    pub actor: String,
    /// The message that caused the change, if one did.
    pub message_id: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    /// The model's prediction at the time, kept so that human overrides become training data.
    pub model_label: Option<ReplyLabel>,
    pub model_score: Option<f32>,
    pub at: DateTime<Utc>,
}

impl Event {
    pub fn new(
        conversation_id: &str,
        kind: EventKind,
        actor: &Actor,
        before: Option<String>,
        after: Option<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Event {
            id: new_id(),
            conversation_id: conversation_id.to_owned(),
            kind,
            actor: actor.to_string(),
            message_id: None,
            before,
            after,
            model_label: None,
            model_score: None,
            at,
        }
    }

    pub fn caused_by(mut self, message_id: &str) -> Self {
        self.message_id = Some(message_id.to_owned());
        self
    }

    pub fn with_prediction(mut self, prediction: Option<(ReplyLabel, f32)>) -> Self {
        self.model_label = prediction.map(|p| p.0);
        self.model_score = prediction.map(|p| p.1);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub owner: Option<String>,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountInput {
    pub name: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub owner: Option<Option<String>>,
    pub channels: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamMember {
    pub slack_user_id: String,
    pub name: String,
    pub triage_channel: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub status: Option<Status>,
    pub owner: Option<String>,
    pub account: Option<String>,
    pub channel: Option<String>,
    /// Full-text query over message text.
    pub q: Option<String>,
}

/// Keyset pagination: `cursor` is the opaque position after which the next page starts.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub cursor: Option<String>,
    pub limit: u32,
}

impl PageRequest {
    /// The cursor of a list keyed by `seq`.
    fn seq_cursor(&self) -> Result<Option<i64>, StoreError> {
        self.cursor
            .as_deref()
            .map(|c| {
                c.parse()
                    .map_err(|_| StoreError::invalid("cursor", "not a cursor from this list"))
            })
            .transpose()
    }

    /// Rows to fetch: one more than the page, to learn whether another page follows.
    fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from rows fetched with `fetch_limit`, each with its keyset position.
    fn from_rows(mut rows: Vec<(String, T)>, limit: u32) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|(key, _)| key.clone())
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(|(_, item)| item).collect(),
            next_cursor,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    pub channel: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: Option<Status>,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub linked_issue: Option<LinkedIssue>,
}

/// A partial update; `Some(None)` clears a nullable field, `None` leaves it alone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationPatch {
    pub status: Option<Status>,
    #[serde(default, deserialize_with = "present")]
    pub owner: Option<Option<String>>,
    pub priority: Option<Priority>,
    pub title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub linked_issue: Option<Option<LinkedIssue>>,
}

/// Distinguishes an explicit `null` (Some(None)) from an absent field (None, via `default`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueChange {
    pub url: Option<String>,
    pub provider: Option<String>,
    pub key: Option<String>,
    pub closed: bool,
}

#[derive(Debug, Clone)]
pub struct IngestOutcome {
    pub message: Message,
    pub conversation: Conversation,
    pub reasons: Vec<Reason>,
    /// False when (channel, ts) had been ingested before; nothing was changed then.
    pub created: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusLabelRow {
    pub text: String,
    pub label: ReplyLabel,
    /// `human` when a person set the status after this reply, `model` otherwise.
    pub source: &'static str,
    pub message_id: String,
    pub conversation_id: String,
    pub model_label: Option<ReplyLabel>,
    pub score: Option<f32>,
}

#[derive(Debug, Clone)]
pub struct GroupingRow {
    pub message: Message,
    pub human_corrected: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DurationStats {
    pub count: i64,
    pub avg_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Analytics {
    pub by_status: BTreeMap<String, i64>,
    pub first_response: DurationStats,
    pub time_to_close: DurationStats,
    /// Conversations not closed, per owner (`null` owner under "unassigned").
    pub open_per_owner: BTreeMap<String, i64>,
}

/// An embedding as stored: little-endian f32s.
pub fn embedding_to_bytes(e: &[f32]) -> Vec<u8> {
    e.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`embedding_to_bytes`]; `None` for a blob that is not whole f32s.
pub fn embedding_from_bytes(b: &[u8]) -> Option<Vec<f32>> {
    (b.len() % 4 == 0 && !b.is_empty()).then(|| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Applies a human's patch: validates it against the status machine and returns the events it causes.
/// `prediction` is the model's latest label in the conversation, recorded on status events.
pub fn apply_patch(
    conv: &mut Conversation,
    patch: ConversationPatch,
    actor: &Actor,
    prediction: Option<(ReplyLabel, f32)>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let mut events = Vec::new();
    if let Some(title) = patch.title {
        conv.title = title;
    }
    if let Some(issue) = patch.linked_issue {
        conv.linked_issue = issue;
    }
    if let Some(to) = patch.status {
        let from = conv.status;
        let next = status::next(
            from,
            Trigger::HumanSet {
                to,
                has_linked_issue: conv.linked_issue.is_some(),
            },
        )?;
        if next != from {
            conv.set_status(next, now);
            events.push(
                Event::new(
                    &conv.id,
                    EventKind::Status,
                    actor,
                    Some(from.to_string()),
                    Some(next.to_string()),
                    now,
                )
                .with_prediction(prediction),
            );
        }
    } else if conv.status == Status::OnHold && conv.linked_issue.is_none() {
        return Err(StoreError::invalid(
            "linked_issue",
            "an on_hold conversation needs its linked issue",
        ));
    }
    if let Some(owner) = patch.owner {
        if owner != conv.owner {
            events.push(Event::new(
                &conv.id,
                EventKind::Owner,
                actor,
                conv.owner.take(),
                owner.clone(),
                now,
            ));
            conv.owner = owner;
        }
    }
    if let Some(priority) = patch.priority {
        if priority != conv.priority {
            let before = Some(conv.priority.as_str().to_owned());
            events.push(Event::new(
                &conv.id,
                EventKind::Priority,
                actor,
                before,
                Some(priority.as_str().into()),
                now,
            ));
            conv.priority = priority;
        }
    }
    Ok(events)
}

/// The conversation a `NewConversation` describes, after checking it against the status machine.
pub fn build_conversation(
    new: NewConversation,
    account: Option<(String, Option<String>)>,
    now: DateTime<Utc>,
) -> Result<Conversation, StoreError> {
    let status = new.status.unwrap_or(Status::New);
    status::next(
        Status::New,
        Trigger::HumanSet {
            to: status,
            has_linked_issue: new.linked_issue.is_some(),
        },
    )?;
    let (account_id, account_owner) = match (new.account_id, account) {
        (Some(id), _) => (Some(id), None),
        (None, Some((id, owner))) => (Some(id), owner),
        (None, None) => (None, None),
    };
    let mut conv = Conversation {
        id: new_id(),
        status: Status::New,
        priority: new.priority.unwrap_or(Priority::None),
        owner: new.owner.or(account_owner),
        account_id,
        channel: new.channel,
        title: new.title,
        created_at: now,
        first_response_at: None,
        closed_at: None,
        linked_issue: new.linked_issue,
        message_count: 0,
    };
    conv.set_status(status, now);
    Ok(conv)
}

/// The reply label implied by a person's status change, kept as training data.
pub fn human_label(events: &[Event]) -> Option<ReplyLabel> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::Status)
        .find_map(|e| e.after.as_deref()?.parse().ok())
}

/// Folds `from` into `into` for a merge: the earliest times and the issue of either survive.
pub fn merge_into(into: &mut Conversation, from: &Conversation) {
    into.created_at = into.created_at.min(from.created_at);
    into.first_response_at = match (into.first_response_at, from.first_response_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if into.linked_issue.is_none() {
        into.linked_issue = from.linked_issue.clone();
    }
    into.message_count += from.message_count;
}

/// A new conversation for a message split out of its conversation.
pub fn split_conversation(
    message: &Message,
    sent_at: DateTime<Utc>,
    account: Option<(String, Option<String>)>,
) -> Conversation {
    let (account_id, owner) = account.map_or((None, None), |(id, owner)| (Some(id), owner));
    Conversation {
        id: new_id(),
        status: Status::New,
        priority: Priority::None,
        owner,
        account_id,
        channel: message.channel.clone(),
        title: crate::pipeline::title_from(&message.text),
        created_at: sent_at,
        first_response_at: None,
        closed_at: None,
        linked_issue: None,
        message_count: 0,
    }
}

/// Status change caused by a linked issue closing, if any.
pub fn apply_issue_closed(conv: &mut Conversation, now: DateTime<Utc>) -> Option<Event> {
    if let Some(issue) = conv.linked_issue.as_mut() {
        issue.state = "closed".into();
    }
    let from = conv.status;
    let to = status::next(from, Trigger::IssueClosed).ok()?;
    (to != from).then(|| {
        conv.set_status(to, now);
        Event::new(
            &conv.id,
            EventKind::Status,
            &Actor::Rule("issue_closed"),
            Some(from.to_string()),
            Some(to.to_string()),
            now,
        )
    })
}

/// Parses a stored enum column; a bad value means the database was written by something else.
fn parse_column<T: FromStr>(value: &str, column: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Unexpected(anyhow::anyhow!("bad value `{value}` in column {column}")))
}

/// Row shapes shared by both backends (`FromRow` is derived generically over the database).
mod rows {
    use super::*;

    #[derive(sqlx::FromRow, serde::Deserialize)]
    pub struct ConversationRow {
        pub seq: i64,
        pub id: String,
        pub status: String,
        pub priority: String,
        pub owner: Option<String>,
        pub account_id: Option<String>,
        pub channel: String,
        pub title: String,
        pub created_at: DateTime<Utc>,
        pub first_response_at: Option<DateTime<Utc>>,
        pub closed_at: Option<DateTime<Utc>>,
        pub issue_url: Option<String>,
        pub issue_provider: Option<String>,
        pub issue_key: Option<String>,
        pub issue_state: Option<String>,
        pub message_count: i64,
    }

    impl ConversationRow {
        pub fn into_domain(self) -> Result<(i64, Conversation), StoreError> {
            let linked_issue = self.issue_url.map(|url| LinkedIssue {
                url,
                provider: self.issue_provider,
                key: self.issue_key,
                state: self.issue_state.unwrap_or_else(open),
            });
            Ok((
                self.seq,
                Conversation {
                    id: self.id,
                    status: parse_column(&self.status, "status")?,
                    priority: parse_column(&self.priority, "priority")?,
                    owner: self.owner,
                    account_id: self.account_id,
                    channel: self.channel,
                    title: self.title,
                    created_at: self.created_at,
                    first_response_at: self.first_response_at,
                    closed_at: self.closed_at,
                    linked_issue,
                    message_count: self.message_count,
                },
            ))
        }
    }

    #[derive(sqlx::FromRow)]
    pub struct MessageRow {
        pub seq: i64,
        pub id: String,
        pub conversation_id: String,
        pub channel: String,
        pub ts: String,
        pub thread_ts: Option<String>,
        pub user_id: String,
        pub role: String,
        pub text: String,
        pub edited: bool,
        pub deleted: bool,
        pub label: Option<String>,
        pub score: Option<f32>,
    }

    impl MessageRow {
        pub fn into_domain(self) -> Result<(i64, Message), StoreError> {
            Ok((
                self.seq,
                Message {
                    id: self.id,
                    conversation_id: self.conversation_id,
                    channel: self.channel,
                    ts: self.ts,
                    thread_ts: self.thread_ts,
                    user: self.user_id,
                    role: parse_column(&self.role, "role")?,
                    text: self.text,
                    edited: self.edited,
                    deleted: self.deleted,
                    label: self
                        .label
                        .as_deref()
                        .map(|l| parse_column(l, "label"))
                        .transpose()?,
                    score: self.score,
                },
            ))
        }
    }

    #[derive(sqlx::FromRow)]
    pub struct EventRow {
        pub seq: i64,
        pub id: String,
        pub conversation_id: String,
        pub kind: String,
        pub actor: String,
        pub message_id: Option<String>,
        pub before_value: Option<String>,
        pub after_value: Option<String>,
        pub model_label: Option<String>,
        pub model_score: Option<f32>,
        pub at: DateTime<Utc>,
    }

    impl EventRow {
        pub fn into_domain(self) -> Result<(i64, Event), StoreError> {
            Ok((
                self.seq,
                Event {
                    id: self.id,
                    conversation_id: self.conversation_id,
                    kind: parse_column(&self.kind, "kind")?,
                    actor: self.actor,
                    message_id: self.message_id,
                    before: self.before_value,
                    after: self.after_value,
                    model_label: self
                        .model_label
                        .as_deref()
                        .map(|l| parse_column(l, "model_label"))
                        .transpose()?,
                    model_score: self.model_score,
                    at: self.at,
                },
            ))
        }
    }

    #[derive(sqlx::FromRow)]
    pub struct ContextRow {
        pub id: String,
        pub conversation_id: String,
        pub conversation_status: String,
        pub ts: String,
        pub thread_ts: Option<String>,
        pub user_id: String,
        pub role: String,
        pub text: String,
        pub embedding: Option<Vec<u8>>,
    }

    impl ContextRow {
        pub fn into_domain(self) -> Result<ContextMessage, StoreError> {
            Ok(ContextMessage {
                id: self.id,
                conversation_id: self.conversation_id,
                conversation_status: parse_column(&self.conversation_status, "status")?,
                ts: self.ts,
                thread_ts: self.thread_ts,
                user: self.user_id,
                role: parse_column(&self.role, "role")?,
                text: self.text,
                embedding: self.embedding.as_deref().and_then(embedding_from_bytes),
            })
        }
    }

    #[derive(sqlx::FromRow)]
    pub struct GroupingSql {
        #[sqlx(flatten)]
        pub message: MessageRow,
        pub human_corrected: bool,
    }

    impl GroupingSql {
        pub fn into_domain(self) -> Result<GroupingRow, StoreError> {
            Ok(GroupingRow {
                message: self.message.into_domain()?.1,
                human_corrected: self.human_corrected,
            })
        }
    }

    #[derive(sqlx::FromRow)]
    pub struct StatusLabelSql {
        pub id: String,
        pub conversation_id: String,
        pub text: String,
        pub label: String,
        pub human_label: Option<String>,
        pub score: Option<f32>,
    }

    impl StatusLabelSql {
        pub fn into_domain(self) -> Result<StatusLabelRow, StoreError> {
            let model_label: ReplyLabel = parse_column(&self.label, "label")?;
            let human: Option<ReplyLabel> = self
                .human_label
                .as_deref()
                .map(|l| parse_column(l, "human_label"))
                .transpose()?;
            Ok(StatusLabelRow {
                text: self.text,
                label: human.unwrap_or(model_label),
                source: if human.is_some() { "human" } else { "model" },
                message_id: self.id,
                conversation_id: self.conversation_id,
                model_label: Some(model_label),
                score: self.score,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Conversation {
        build_conversation(
            NewConversation {
                channel: "C1".into(),
                title: "t".into(),
                status: None,
                priority: None,
                owner: None,
                account_id: None,
                linked_issue: None,
            },
            Some(("A1".into(), Some("U9".into()))),
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn new_conversation_takes_account_owner() {
        let c = conv();
        assert_eq!(
            (c.account_id.as_deref(), c.owner.as_deref()),
            (Some("A1"), Some("U9"))
        );
    }

    #[test]
    fn patch_records_one_event_per_change_and_refuses_on_hold_without_issue() {
        let mut c = conv();
        let actor = Actor::Human("U1".into());
        let patch = ConversationPatch {
            status: Some(Status::OnHold),
            ..Default::default()
        };
        assert!(matches!(
            apply_patch(&mut c, patch, &actor, None, Utc::now()),
            Err(StoreError::Refused(_))
        ));

        let patch = ConversationPatch {
            status: Some(Status::Closed),
            owner: Some(None),
            priority: Some(Priority::High),
            ..Default::default()
        };
        let events = apply_patch(
            &mut c,
            patch,
            &actor,
            Some((ReplyLabel::InProgress, 0.7)),
            Utc::now(),
        )
        .unwrap();
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.actor.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::Status, "human:U1"),
                (EventKind::Owner, "human:U1"),
                (EventKind::Priority, "human:U1")
            ]
        );
        assert_eq!(events[0].model_label, Some(ReplyLabel::InProgress));
        assert!(c.closed_at.is_some());
    }

    #[test]
    fn dropping_the_issue_of_an_on_hold_conversation_is_refused() {
        let mut c = conv();
        c.linked_issue = Some(LinkedIssue {
            url: "u".into(),
            provider: None,
            key: None,
            state: open(),
        });
        c.status = Status::OnHold;
        let patch = ConversationPatch {
            linked_issue: Some(None),
            ..Default::default()
        };
        let err = apply_patch(&mut c, patch, &Actor::Model, None, Utc::now()).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Invalid {
                field: "linked_issue",
                ..
            }
        ));
    }
}
