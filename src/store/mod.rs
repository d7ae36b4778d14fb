//! Persistence: the `Store` trait and its two backends (SQLite, PostgreSQL).
//!
//! One core over two backends: the queries ([`queries`]) and the operations with the ingest unit
//! of work ([`ops`]) are written once and expanded in `sqlite.rs` and `postgres.rs`, which keep
//! only what truly differs (locking, text search, batched inserts, the context query).
//!
//! The store only loads, locks and writes. Decisions (grouping, the status machine, patches,
//! merges) are made by the pipeline and the domain; for a new message the store offers a unit of
//! work ([`Store::begin_ingest`]) that holds the channel's lock while the pipeline decides.

#[macro_use]
mod sql;
#[macro_use]
mod queries;
#[macro_use]
mod ops;
#[macro_use]
mod board;
#[macro_use]
mod edits;
#[macro_use]
mod outbox;
#[macro_use]
mod notes;
#[macro_use]
mod inbox;
#[macro_use]
mod slack_names;
mod embeddings;
#[macro_use]
mod open;
mod rows;
mod tx;

pub use board::{CardDetail, MessageReasons};

pub mod postgres;
pub mod sqlite;

use crate::domain::{ChannelContext, DomainError, IncomingMessage, IngestPlan};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

// The store's vocabulary is the domain's.
pub use crate::domain::status::Refusal;
pub use crate::domain::{
    Account, AccountInput, AccountPatch, AccountRef, Actor, Conversation, ConversationPatch, Edited, Event,
    EventKind, FileRef, IssueChange, LinkedIssue, Message, MessageEdit, NewConversation, Note, Priority,
    ReplyLabel, Role, Status, TeamMember,
};
pub use outbox::{CardContent, CardRef, NewOutboxItem, OutboxCounts, OutboxItem, SlackOutbox};
pub use slack_names::{CachedName, NameKind, SlackDirectory};

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
    Refused(#[from] Refusal),
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

impl From<DomainError> for StoreError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Refused(refusal) => StoreError::Refused(refusal),
            DomainError::Invalid { field, message } => StoreError::invalid(field, message),
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
    fn create_conversation(
        &self,
        new: NewConversation,
        actor: Actor,
    ) -> StoreFuture<'_, Written<Conversation>>;
    fn update_conversation<'a>(
        &'a self,
        id: &'a str,
        patch: ConversationPatch,
        actor: Actor,
    ) -> StoreFuture<'a, Written<Conversation>>;
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
    ) -> StoreFuture<'a, Written<Conversation>>;
    /// Moves one message to `to`, or to a new conversation when `to` is `None` (a split).
    fn move_message<'a>(
        &'a self,
        message_id: &'a str,
        to: Option<&'a str>,
        actor: Actor,
    ) -> StoreFuture<'a, Written<Moved>>;

    fn find_message<'a>(&'a self, channel: &'a str, ts: &'a str) -> StoreFuture<'a, Option<Message>>;
    /// Which of these timestamps of `channel` are stored (an import's duplicate check, one query
    /// per chunk of a channel instead of one per message).
    fn stored_ts<'a>(&'a self, channel: &'a str, ts: &'a [String]) -> StoreFuture<'a, Vec<String>>;
    /// Replaces the text of the message (channel, ts), under the channel's lock; an edited team
    /// reply may move the status ([`crate::domain::apply_edit`]).
    fn edit_message<'a>(
        &'a self,
        channel: &'a str,
        ts: &'a str,
        edit: MessageEdit,
    ) -> StoreFuture<'a, Written<Edited>>;
    /// Marks the message (channel, ts) deleted (a tombstone; idempotent).
    fn delete_message<'a>(&'a self, channel: &'a str, ts: &'a str) -> StoreFuture<'a, Written<Edited>>;

    /// Adds an internal note to its conversation; `false`, with the stored note, when a note from
    /// the same Slack message (channel, ts) was added before.
    fn add_note(&self, note: Note) -> StoreFuture<'_, (Note, bool)>;
    /// A conversation's notes, oldest first.
    fn list_notes<'a>(&'a self, conversation_id: &'a str, page: PageRequest) -> StoreFuture<'a, Page<Note>>;

    /// Stores an inbound delivery before it is acknowledged; `false` when its `event_id` is
    /// already stored (a retry: its retry number is remembered, nothing else changes).
    fn inbox_add(&self, entry: InboxEntry) -> StoreFuture<'_, bool>;
    /// Deliveries not processed yet, oldest first.
    fn inbox_pending(&self, limit: u32) -> StoreFuture<'_, Vec<InboxItem>>;
    /// Marks a delivery processed with what processing did.
    fn inbox_finish<'a>(&'a self, seq: i64, outcome: &'a str) -> StoreFuture<'a, ()>;
    /// Records a failed attempt (the delivery stays pending); returns the attempts so far.
    fn inbox_failed<'a>(&'a self, seq: i64, error: &'a str) -> StoreFuture<'a, u32>;
    /// Deliveries per outcome (`pending` for those not processed yet).
    fn inbox_counts(&self) -> StoreFuture<'_, BTreeMap<String, i64>>;
    /// Forgets deliveries processed before `before`; returns how many.
    fn inbox_prune(&self, before: DateTime<Utc>) -> StoreFuture<'_, u64>;
    /// Starts the unit of work that stores one new message of `channel`: a write transaction
    /// holding the channel's lock (across replicas), so grouping decisions in a channel never race.
    /// Dropping the unit without [`IngestUnit::commit`] rolls it back.
    fn begin_ingest<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Box<dyn IngestUnit<'a> + 'a>>;

    /// Records the new state of an issue; closing it moves its `on_hold` conversations to `on_you`.
    fn issue_changed<'a>(&'a self, change: &'a IssueChange) -> StoreFuture<'a, Written<Vec<Conversation>>>;

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

    /// Creates or updates a background import's row. A finished job (`done`, `failed`) is final:
    /// a later write (a late progress update) leaves it as it is.
    fn put_import_job<'a>(&'a self, job: &'a ImportJob) -> StoreFuture<'a, ()>;
    fn get_import_job<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ImportJob>;
    /// What board cards show beyond the conversations `ids` (any order; unknown ids are skipped).
    fn card_details<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<CardDetail>>;
    /// Why each message of a conversation joined it, in message order (messages ingested before
    /// reasons were stored have none).
    fn message_reasons<'a>(&'a self, conversation_id: &'a str) -> StoreFuture<'a, Vec<MessageReasons>>;

    /// The Slack outbox and the triage cards' locations.
    fn outbox(&self) -> &dyn SlackOutbox;
    /// Slack names (cached) and the accounts of channels triage was added to.
    fn directory(&self) -> &dyn SlackDirectory;
}

/// A background import (`POST /v1/import`) as stored: its progress and, once done, its summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportJob {
    pub id: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub total: i64,
    pub done: i64,
    /// The import's summary (JSON) once done.
    pub summary: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One message's ingest inside a [`Store::begin_ingest`] transaction, step by step as the pipeline
/// drives it: load the context, read the conversations the grouper points at, write the plan.
pub trait IngestUnit<'a>: Send {
    /// The channel context for `msg`, or `None` when (channel, ts) is already stored (a replay).
    fn load_context<'b>(&'b mut self, msg: &'b IncomingMessage) -> StoreFuture<'b, Option<ChannelContext>>;
    fn conversation<'b>(&'b mut self, id: &'b str) -> StoreFuture<'b, Option<Conversation>>;
    /// The account `channel` belongs to, which a new conversation there inherits.
    fn channel_account<'b>(&'b mut self, channel: &'b str) -> StoreFuture<'b, Option<AccountRef>>;
    /// Writes the plan (conversation, message, events); false, with nothing to commit, when
    /// (channel, ts) was stored meanwhile.
    fn write<'b>(&'b mut self, plan: &'b IngestPlan, msg: &'b IncomingMessage) -> StoreFuture<'b, bool>;
    /// Records why the message just written joined its conversation (after [`IngestUnit::write`]).
    fn record_reasons<'b>(&'b mut self, reasons: &'b MessageReasons) -> StoreFuture<'b, ()>;
    fn commit(self: Box<Self>) -> StoreFuture<'a, ()>;
    fn rollback(self: Box<Self>) -> StoreFuture<'a, ()>;
}

/// An inbound delivery (a Slack Events API request body), as stored before it is acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEntry {
    pub event_id: String,
    pub team_id: Option<String>,
    pub payload: String,
    pub retry_num: u32,
    pub received_at: DateTime<Utc>,
}

/// A stored delivery waiting for the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxItem {
    pub seq: i64,
    pub event_id: String,
    pub team_id: Option<String>,
    pub payload: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// What a write changed: the new state, and the events it recorded for the pipeline to publish.
#[derive(Debug, Clone)]
pub struct Written<T> {
    pub value: T,
    pub events: Vec<Event>,
}

/// A message moved to another conversation (or split out into a new one), both sides after it.
#[derive(Debug, Clone)]
pub struct Moved {
    pub message: Message,
    pub from: Conversation,
    pub to: Conversation,
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

/// A message's files as stored: a JSON array, NULL when there are none.
pub fn files_column(files: &[FileRef]) -> Option<sqlx::types::Json<Vec<FileRef>>> {
    (!files.is_empty()).then(|| sqlx::types::Json(files.to_vec()))
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
