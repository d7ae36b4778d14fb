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

use crate::domain::IngestPlan;
use crate::domain::{self, status, Change, Conversation, Message, Role};
use crate::store::{IngestUnit, MessageReasons, Store, StoreError};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Where a store unit of work spent its time (summed over its messages).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitTimings {
    /// Waiting for the channel's lock and starting the transaction.
    pub lock: Duration,
    /// Loading each message's channel context.
    pub context: Duration,
    /// The grouper's decisions.
    pub group: Duration,
    /// Reading the target conversation, planning and writing.
    pub write: Duration,
    pub commit: Duration,
}

/// One message's part of a unit of work.
enum Step {
    /// Written (not committed yet): the plan and why the message joined.
    Written(Box<(IngestPlan, Vec<Reason>)>),
    /// (channel, ts) was already stored: nothing written.
    Stored,
    /// The message insert found (channel, ts) taken after the context said it was free.
    Raced,
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

/// Timestamps per duplicate-check query (bounded: SQLite's JSON argument and PostgreSQL's array
/// stay small).
const STORED_CHECK_CHUNK: usize = 2_000;

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
        let mut clock = UnitTimings::default();
        match self.ingest_in(&mut *unit, msg, prediction, &mut clock).await? {
            Step::Written(done) => {
                unit.commit().await?;
                Ok(self.published(*done))
            }
            Step::Stored => {
                // Stored while this one was being analysed: the stored outcome.
                unit.rollback().await?;
                self.replayed(msg, "message deleted while ingested").await
            }
            Step::Raced => {
                // Unreachable while the channel lock is held, but the unique key is the real guarantee.
                unit.rollback().await?;
                self.replayed(msg, "message ingested concurrently").await
            }
        }
    }

    /// [`Pipeline::ingest_analysed`] for many analysed messages of one channel, in order, in one
    /// store unit of work: the channel's lock and one transaction for the whole batch instead of
    /// one per message (a bulk import's writer). Each message is grouped exactly as alone: its
    /// context is loaded inside the transaction, so it sees the batch's earlier messages. Changes
    /// are published after the commit. Should a write find its (channel, ts) taken, which the
    /// lock makes unreachable, the batch is rolled back and ingested message by message.
    pub async fn ingest_analysed_batch(
        &self,
        channel: &str,
        batch: &[(IncomingMessage, Option<Prediction>)],
    ) -> Result<(Vec<IngestOutcome>, UnitTimings), StoreError> {
        let mut clock = UnitTimings::default();
        if batch.is_empty() {
            return Ok((Vec::new(), clock));
        }
        if let Some((m, _)) = batch.iter().find(|(m, _)| m.channel != channel) {
            return Err(StoreError::Invalid {
                field: "channel",
                message: format!("a batch of {channel} holds a message of {}", m.channel),
            });
        }
        let started = Instant::now();
        let mut unit = self.store.begin_ingest(channel).await?;
        clock.lock += started.elapsed();
        let mut steps = Vec::with_capacity(batch.len());
        for (msg, prediction) in batch {
            match self.ingest_in(&mut *unit, msg, *prediction, &mut clock).await? {
                Step::Raced => {
                    unit.rollback().await?;
                    let mut out = Vec::with_capacity(batch.len());
                    for (msg, prediction) in batch {
                        out.push(self.ingest_analysed(msg, *prediction).await?);
                    }
                    return Ok((out, clock));
                }
                step => steps.push(step),
            }
        }
        let committing = Instant::now();
        unit.commit().await?;
        clock.commit += committing.elapsed();
        let mut out = Vec::with_capacity(batch.len());
        for ((msg, _), step) in batch.iter().zip(steps) {
            out.push(match step {
                Step::Written(done) => self.published(*done),
                _ => self.replayed(msg, "message deleted while ingested").await?,
            });
        }
        Ok((out, clock))
    }

    /// One message inside a unit of work: context, grouping, plan, writes (nothing committed).
    async fn ingest_in(
        &self,
        unit: &mut (dyn IngestUnit<'_> + '_),
        msg: &IncomingMessage,
        prediction: Option<Prediction>,
        clock: &mut UnitTimings,
    ) -> Result<Step, StoreError> {
        let t = Instant::now();
        let Some(ctx) = unit.load_context(msg).await? else {
            return Ok(Step::Stored);
        };
        clock.context += t.elapsed();
        let t = Instant::now();
        let decision = self.grouping.group(msg, &ctx);
        clock.group += t.elapsed();
        let t = Instant::now();
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
            return Ok(Step::Raced);
        }
        // Why it joined, in the same unit of work: the board shows it beside the message.
        unit.record_reasons(&MessageReasons {
            message_id: plan.message.id.clone(),
            confidence: decision.confidence,
            reasons: serde_json::to_value(&decision.reasons).unwrap_or_default(),
        })
        .await?;
        clock.write += t.elapsed();
        Ok(Step::Written(Box::new((plan, decision.reasons))))
    }

    /// Publishes a committed ingest's changes; its outcome.
    fn published(&self, (plan, reasons): (IngestPlan, Vec<Reason>)) -> IngestOutcome {
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
        IngestOutcome {
            message: plan.message,
            conversation: plan.conversation,
            reasons,
            created: true,
        }
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

    /// Which of these timestamps of `channel` have been ingested, in chunks of
    /// [`STORED_CHECK_CHUNK`] per query.
    pub async fn stored_ts(&self, channel: &str, ts: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut stored = HashSet::new();
        for chunk in ts.chunks(STORED_CHECK_CHUNK) {
            stored.extend(self.store.stored_ts(channel, chunk).await?);
        }
        Ok(stored)
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
