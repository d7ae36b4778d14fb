//! How the Slack adapter reaches the core: the [`Core`] trait, with two implementations.
//!
//! - [`InProcess`] (the default): the core is this process's [`Pipeline`]; one `triage serve`
//!   does everything.
//! - [`super::remote::HttpCore`] (`TRIAGE_CORE_URL` + `TRIAGE_CORE_TOKEN`): the core is another
//!   `triage serve`, reached over its `/v1` API, so the internet-facing Slack endpoint (the
//!   *edge*) runs without models and without the core's database credentials.
//!
//! What stays on the adapter's side of the line in both cases: Slack's requests (signatures,
//! the inbox), the Web API (the outbox, the card table, the users.info / permalink caches) and the
//! rendering of cards. In edge mode those live in the edge's own database (a local SQLite file,
//! `TRIAGE_EDGE_DATABASE_URL`), so Slack's deliveries are acknowledged and stored even while the
//! core is down; the inbound worker retries them against the core, in order, until it answers.
//!
//! Everything that reads or changes tickets crosses the line: ingesting a message, editing or
//! deleting one at its source, adding an internal note, a card's button, and what the card shows
//! (conversation, first message, account, team). Cards follow the core's committed changes through
//! [`Core::changes`]: the pipeline's event bus in process, the core's `GET /v1/events` stream
//! (server-sent events) over HTTP. A [`Feed::Gap`] (the first connection, a reconnect the core
//! could not resume, a subscriber that fell behind) tells the card service to reconcile.
//!
//! Errors: [`CoreError::is_transient`] says whether the same call may succeed later (the core
//! unreachable or overloaded, its models loading, its database down): the inbound worker retries
//! those for as long as they last; anything else counts as a failed attempt.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::domain::{Account, Actor, Change, Conversation, ConversationPatch, Message, NewNote, TeamMember};
use crate::pipeline::{BoxFuture, IncomingMessage, InferenceError, Pipeline, PipelineError};
use crate::store::{ConversationFilter, PageRequest, StoreError};

/// Why a call to the core failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// Worth retrying: the core is unreachable, overloaded, loading its models, its database is
    /// down, or it does not accept our token yet (a configuration being fixed: the delivery is
    /// not at fault and must not be given up).
    #[error("the core is unavailable: {0}")]
    Unavailable(String),
    /// The conversation (or message) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The core refused this request and will refuse it again: invalid input, or a change the
    /// status machine does not allow (the message says why, for the person who pressed).
    #[error("{0}")]
    Refused(String),
    /// Anything else (an internal error, an answer we cannot read).
    #[error("the core failed: {0}")]
    Failed(String),
}

impl CoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CoreError::Unavailable(_))
    }
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => CoreError::Unavailable(e.to_string()),
            StoreError::NotFound(what) => CoreError::NotFound(what.into()),
            StoreError::Conflict(_) | StoreError::Invalid { .. } | StoreError::Refused(_) => {
                CoreError::Refused(e.to_string())
            }
            StoreError::Unexpected(e) => CoreError::Failed(format!("{e:#}")),
        }
    }
}

impl From<PipelineError> for CoreError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Store(e) => e.into(),
            PipelineError::Inference(e @ (InferenceError::NotReady | InferenceError::Overloaded(_))) => {
                CoreError::Unavailable(e.to_string())
            }
            PipelineError::Inference(e @ InferenceError::Failed(_)) => CoreError::Failed(e.to_string()),
        }
    }
}

/// What an edit or deletion at the source did: `None` from the core when it never stored the message.
pub type Edit = Option<bool>;

/// One page of conversations, most recently created first, and the cursor of the next.
pub type ConversationPage = (Vec<Conversation>, Option<String>);

/// What the card service follows.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    /// A committed change, in commit order.
    Change(Change),
    /// Changes may have been missed (start, a reconnect that could not resume, a lag): reconcile.
    Gap,
}

/// The core's ticket operations, as the Slack adapter uses them.
pub trait Core: Send + Sync {
    /// Ingests a message; `true` when it is new, `false` when (channel, ts) was stored before.
    fn ingest(&self, msg: IncomingMessage) -> BoxFuture<'_, Result<bool, CoreError>>;
    /// A message edited at its source: `Some(changed)`, `None` when the core never stored it.
    fn edit_message<'a>(
        &'a self,
        channel: &'a str,
        ts: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Edit, CoreError>>;
    /// A message deleted at its source (a tombstone): as [`Core::edit_message`].
    fn delete_message<'a>(&'a self, channel: &'a str, ts: &'a str) -> BoxFuture<'a, Result<Edit, CoreError>>;
    /// Adds an internal note; `true` when new (`false`: its Slack message was added before).
    fn add_note<'a>(
        &'a self,
        conversation_id: &'a str,
        note: NewNote,
    ) -> BoxFuture<'a, Result<bool, CoreError>>;
    /// A person's change of a conversation (a card's button), as `human:<user>`.
    fn update_conversation<'a>(
        &'a self,
        id: &'a str,
        patch: ConversationPatch,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, CoreError>>;
    fn conversation<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Conversation, CoreError>>;
    /// Conversations, most recently created first, `limit` at a time.
    fn conversations(
        &self,
        cursor: Option<String>,
        limit: u32,
    ) -> BoxFuture<'_, Result<ConversationPage, CoreError>>;
    /// The first message of a conversation (what its card quotes).
    fn first_message<'a>(
        &'a self,
        conversation_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Message>, CoreError>>;
    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Account, CoreError>>;
    /// Team members and their triage channels.
    fn team(&self) -> BoxFuture<'_, Result<Vec<TeamMember>, CoreError>>;
    /// The account of `channel`, created (named `name`, else the channel id; owned by `owner`)
    /// when it has none; `true` when created.
    fn ensure_account<'a>(
        &'a self,
        channel: &'a str,
        name: Option<&'a str>,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(Account, bool), CoreError>>;
    /// Whether `channel` belongs to an account.
    fn has_account<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<bool, CoreError>>;
    /// The channel's name, learned after its account was created under the channel id: the
    /// account takes it (one named otherwise is left alone). `true` when renamed.
    fn name_account<'a>(&'a self, channel: &'a str, name: &'a str) -> BoxFuture<'a, Result<bool, CoreError>>;
    /// The core's committed changes from now on, starting with a [`Feed::Gap`]. Subscribed when
    /// called, so nothing committed afterwards is missed.
    fn changes(&self) -> mpsc::Receiver<Feed>;
}

/// The core in this process: the pipeline and its store.
#[derive(Clone)]
pub struct InProcess {
    pipeline: Pipeline,
}

impl InProcess {
    pub fn new(pipeline: Pipeline) -> Arc<dyn Core> {
        Arc::new(InProcess { pipeline })
    }
}

/// Changes buffered between the bus and the card service before the forwarder waits.
const FEED_BUFFER: usize = 256;

impl Core for InProcess {
    fn ingest(&self, msg: IncomingMessage) -> BoxFuture<'_, Result<bool, CoreError>> {
        Box::pin(async move { Ok(self.pipeline.ingest(msg).await?.created) })
    }

    fn edit_message<'a>(
        &'a self,
        channel: &'a str,
        ts: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Edit, CoreError>> {
        Box::pin(async move {
            let edited = self.pipeline.edit_message(channel, ts, text).await?;
            Ok(edited.map(|e| e.changed))
        })
    }

    fn delete_message<'a>(&'a self, channel: &'a str, ts: &'a str) -> BoxFuture<'a, Result<Edit, CoreError>> {
        Box::pin(async move {
            let deleted = self.pipeline.delete_message(channel, ts).await?;
            Ok(deleted.map(|e| e.changed))
        })
    }

    fn add_note<'a>(
        &'a self,
        conversation_id: &'a str,
        note: NewNote,
    ) -> BoxFuture<'a, Result<bool, CoreError>> {
        Box::pin(async move { Ok(self.pipeline.add_note(conversation_id, note).await?.1) })
    }

    fn update_conversation<'a>(
        &'a self,
        id: &'a str,
        patch: ConversationPatch,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, CoreError>> {
        Box::pin(async move {
            Ok(self
                .pipeline
                .update_conversation(id, patch, Actor::Human(user.to_owned()))
                .await?)
        })
    }

    fn conversation<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Conversation, CoreError>> {
        Box::pin(async move { Ok(self.pipeline.store().get_conversation(id).await?) })
    }

    fn conversations(
        &self,
        cursor: Option<String>,
        limit: u32,
    ) -> BoxFuture<'_, Result<ConversationPage, CoreError>> {
        Box::pin(async move {
            let page = self
                .pipeline
                .store()
                .list_conversations(&ConversationFilter::default(), PageRequest { cursor, limit })
                .await?;
            Ok((page.items, page.next_cursor))
        })
    }

    fn first_message<'a>(
        &'a self,
        conversation_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Message>, CoreError>> {
        Box::pin(async move {
            let page = PageRequest {
                cursor: None,
                limit: 1,
            };
            let first = self.pipeline.store().list_messages(conversation_id, page).await?;
            Ok(first.items.into_iter().next())
        })
    }

    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Account, CoreError>> {
        Box::pin(async move { Ok(self.pipeline.store().get_account(id).await?) })
    }

    fn team(&self) -> BoxFuture<'_, Result<Vec<TeamMember>, CoreError>> {
        Box::pin(async move { Ok(self.pipeline.store().list_team().await?) })
    }

    fn ensure_account<'a>(
        &'a self,
        channel: &'a str,
        name: Option<&'a str>,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(Account, bool), CoreError>> {
        Box::pin(async move { Ok(self.pipeline.ensure_account(channel, name, owner).await?) })
    }

    fn has_account<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<bool, CoreError>> {
        Box::pin(async move { Ok(self.pipeline.has_account(channel).await?) })
    }

    fn name_account<'a>(&'a self, channel: &'a str, name: &'a str) -> BoxFuture<'a, Result<bool, CoreError>> {
        Box::pin(async move { Ok(self.pipeline.name_account(channel, name).await?) })
    }

    fn changes(&self) -> mpsc::Receiver<Feed> {
        let mut rx = self.pipeline.events().subscribe();
        let (tx, out) = mpsc::channel(FEED_BUFFER);
        tokio::spawn(async move {
            if tx.send(Feed::Gap).await.is_err() {
                return;
            }
            loop {
                let feed = match rx.recv().await {
                    Ok(change) => Feed::Change(change),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "triage cards fell behind the event bus; reconciling");
                        Feed::Gap
                    }
                    Err(RecvError::Closed) => return,
                };
                if tx.send(feed).await.is_err() {
                    return;
                }
            }
        });
        out
    }
}
