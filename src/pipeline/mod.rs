//! The message pipeline: the one way a message enters triage, whichever adapter received it
//! (the HTTP API today, Slack events and the Slack import next).
//!
//! [`Pipeline::ingest`]: a replay check, inference outside any lock ([`Inference`]), then one store
//! unit of work that holds the channel's lock, loads the channel context, lets the grouper decide
//! ([`Grouping`]), applies the domain's plan, writes and commits, then publishes what changed on the
//! [`EventBus`]. The ticket operations people make (patch, merge, move, split) go through here
//! too, so their changes are published the same way, and so do a message's edit and deletion at
//! its source ([`Pipeline::edit_message`], [`Pipeline::delete_message`]). The store knows nothing
//! of groupers or plans; the domain knows nothing of either. [`ml`] implements both seams with the
//! real models.

mod accounts;
mod bus;
mod edits;
mod inbox;
pub mod ml;
mod notes;
mod tickets;

use crate::domain::{self, status, Change, Conversation, Message, Role};
use crate::store::{MessageReasons, Store, StoreError};
use serde::Serialize;
use std::sync::Arc;

pub use crate::domain::{
    normalize_ts, ts_to_time, BadTs, ChannelContext, ContextMessage, IncomingMessage, Prediction,
};
pub use bus::{EventBus, DEFAULT_CAPACITY};

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Existing(String),
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Thread,
    Mention,
    Author,
    Time,
    Similarity,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub signal: Signal,
    pub detail: String,
    pub weight: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupDecision {
    pub target: Target,
    pub confidence: f32,
    pub reasons: Vec<Reason>,
}

impl GroupDecision {
    /// A decision made by a rule, not a score: full confidence and one reason.
    pub fn by_rule(target: Target, signal: Signal, detail: impl Into<String>) -> Self {
        Self {
            target,
            confidence: 1.0,
            reasons: vec![Reason {
                signal,
                detail: detail.into(),
                weight: 1.0,
            }],
        }
    }
}

/// The grouping seam: decides which conversation a message belongs to. Called while the channel
/// is locked, so it must be quick and must not block on I/O.
pub trait Grouping: Send + Sync {
    fn group(&self, msg: &IncomingMessage, ctx: &ChannelContext) -> GroupDecision;
}

/// What inference adds to a message before it is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    /// The sentence embedding, when the grouper uses one.
    pub embedding: Option<Vec<f32>>,
    /// The status label of a team reply (`None` for customer messages).
    pub prediction: Option<Prediction>,
}

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("the models are still loading; retry shortly")]
    NotReady,
    #[error("{0}")]
    Overloaded(String),
    #[error("inference failed: {0}")]
    Failed(String),
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The inference seam: embeds a message and labels a team reply. May be slow (model inference),
/// so it runs before the store's unit of work, never under a lock.
pub trait Inference: Send + Sync {
    fn analyse<'a>(&'a self, text: &'a str, role: Role) -> BoxFuture<'a, Result<Analysis, InferenceError>>;

    /// Analyses many messages at once (an import): one result per input, in order. The default
    /// runs [`Inference::analyse`] on each; the real models embed the whole batch in one call.
    fn analyse_batch<'a>(
        &'a self,
        inputs: &'a [(String, Role)],
    ) -> BoxFuture<'a, Result<Vec<Analysis>, InferenceError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(inputs.len());
            for (text, role) in inputs {
                out.push(self.analyse(text, *role).await?);
            }
            Ok(out)
        })
    }
}

/// Why a message could not be ingested.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct IngestOutcome {
    pub message: Message,
    pub conversation: Conversation,
    pub reasons: Vec<Reason>,
    /// False when (channel, ts) had been ingested before; nothing was changed then.
    pub created: bool,
}

/// The pipeline's seams, the store it writes to and the bus it publishes on. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    store: Arc<dyn Store>,
    inference: Arc<dyn Inference>,
    grouping: Arc<dyn Grouping>,
    events: EventBus,
}

impl Pipeline {
    pub fn new(store: Arc<dyn Store>, inference: Arc<dyn Inference>, grouping: Arc<dyn Grouping>) -> Self {
        Pipeline {
            store,
            inference,
            grouping,
            events: EventBus::default(),
        }
    }

    /// Where committed changes are published.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The Slack outbox (rows the Slack adapter sends) and where each triage card is.
    pub fn outbox(&self) -> &dyn crate::store::SlackOutbox {
        self.store.outbox()
    }

    /// Stores one message: grouped into a conversation, labelled, the status machine applied.
    /// Idempotent on (channel, ts): a replay skips inference, changes nothing and comes back with
    /// `created: false`.
    pub async fn ingest(&self, msg: IncomingMessage) -> Result<IngestOutcome, PipelineError> {
        if let Some(outcome) = self.stored(&msg).await? {
            return Ok(outcome);
        }
        let analysis = self.inference.analyse(&msg.text, msg.role).await?;
        let msg = IncomingMessage {
            embedding: analysis.embedding,
            ..msg
        };
        Ok(self.ingest_analysed(&msg, analysis.prediction).await?)
    }

    /// The part of [`Pipeline::ingest`] after inference, for callers that already have the
    /// embedding and the prediction: one store unit of work, serialised per channel.
    pub async fn ingest_analysed(
        &self,
        msg: &IncomingMessage,
        prediction: Option<Prediction>,
    ) -> Result<IngestOutcome, StoreError> {
        let mut unit = self.store.begin_ingest(&msg.channel).await?;
        let Some(ctx) = unit.load_context(msg).await? else {
            // Stored while this one was being analysed: the stored outcome.
            unit.rollback().await?;
            return self.replayed(msg, "message deleted while ingested").await;
        };
        let decision = self.grouping.group(msg, &ctx);
        let target = match &decision.target {
            Target::Existing(id) => unit
                .conversation(id)
                .await?
                .filter(|c| status::accepts(c.status, msg.in_thread())),
            Target::New => None,
        };
        let account = match target {
            None => unit.channel_account(&msg.channel).await?,
            Some(_) => None,
        };
        let plan = domain::plan_ingest(msg, prediction, target, account);
        if !unit.write(&plan, msg).await? {
            // Unreachable while the channel lock is held, but the unique key is the real guarantee.
            unit.rollback().await?;
            return self.replayed(msg, "message ingested concurrently").await;
        }
        // Why it joined, in the same unit of work: the board shows it beside the message.
        unit.record_reasons(&MessageReasons {
            message_id: plan.message.id.clone(),
            confidence: decision.confidence,
            reasons: serde_json::to_value(&decision.reasons).unwrap_or_default(),
        })
        .await?;
        unit.commit().await?;
        let created = plan.new_conversation.then(|| Change::ConversationCreated {
            conversation: plan.conversation.clone(),
        });
        let added = Change::MessageAdded {
            message: plan.message.clone(),
            conversation: plan.conversation.clone(),
        };
        self.events.publish(
            created
                .into_iter()
                .chain([added])
                .chain(Change::from_events(&plan.events)),
        );
        Ok(IngestOutcome {
            message: plan.message,
            conversation: plan.conversation,
            reasons: decision.reasons,
            created: true,
        })
    }

    /// Analyses a batch of messages (text, role) for [`Pipeline::ingest_analysed`]: the path of
    /// bulk imports, at the embedder's batch rate rather than its one-message latency.
    pub async fn analyse_batch(&self, inputs: Vec<(String, Role)>) -> Result<Vec<Analysis>, InferenceError> {
        let out = self.inference.analyse_batch(&inputs).await?;
        if out.len() != inputs.len() {
            return Err(InferenceError::Failed(format!(
                "{} analyses for {} messages",
                out.len(),
                inputs.len()
            )));
        }
        Ok(out)
    }

    /// Whether (channel, ts) has been ingested.
    pub async fn is_stored(&self, channel: &str, ts: &str) -> Result<bool, StoreError> {
        Ok(self.store.find_message(channel, ts).await?.is_some())
    }

    /// The stored outcome of a message already ingested, if it was.
    async fn stored(&self, msg: &IncomingMessage) -> Result<Option<IngestOutcome>, StoreError> {
        let Some(message) = self.store.find_message(&msg.channel, &msg.ts).await? else {
            return Ok(None);
        };
        let conversation = self.store.get_conversation(&message.conversation_id).await?;
        Ok(Some(IngestOutcome {
            message,
            conversation,
            reasons: Vec::new(),
            created: false,
        }))
    }

    async fn replayed(&self, msg: &IncomingMessage, gone: &str) -> Result<IngestOutcome, StoreError> {
        self.stored(msg)
            .await?
            .ok_or_else(|| StoreError::Conflict(gone.to_owned()))
    }
}
