//! The pipeline's seams implemented with the real models.
//!
//! [`ModelInference`] embeds a message through the embedder's queue (so it batches with every
//! other request) and labels team replies with the status head. [`ModelGrouping`] runs the trained
//! grouper over the channel history the store loaded under its per-channel lock: the grouper's view
//! is rebuilt from stored rows for every message, so human merges, moves and splits count at once
//! and every replica reading the same rows makes the same decision.

use std::collections::HashSet;

use super::{
    Analysis, BoxFuture, ChannelContext, ContextMessage, GroupDecision, Grouping, IncomingMessage, Inference,
    InferenceError, Prediction, Reason, Signal, Target,
};
use crate::classify::{Label, StatusSlot};
use crate::domain::{ReplyLabel, Role, Status};
use crate::group::{self, GroupSlot, KnownMessage};
use crate::queue::{EmbedSlot, QueueError};

/// Embeds every message and labels team replies.
#[derive(Clone, Default)]
pub struct ModelInference {
    embed: EmbedSlot,
    status: StatusSlot,
}

impl ModelInference {
    /// Uses the models once their slots are filled (until then: [`InferenceError::NotReady`]).
    pub fn new(embed: EmbedSlot, status: StatusSlot) -> Self {
        ModelInference { embed, status }
    }
}

impl From<QueueError> for InferenceError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Overloaded(_) => InferenceError::Overloaded(e.to_string()),
            QueueError::ShuttingDown => InferenceError::NotReady,
            e => InferenceError::Failed(e.to_string()),
        }
    }
}

impl Inference for ModelInference {
    fn analyse<'a>(&'a self, text: &'a str, role: Role) -> BoxFuture<'a, Result<Analysis, InferenceError>> {
        Box::pin(async move {
            // A file share or an emoji-only message: nothing to embed or read.
            if text.trim().is_empty() {
                return Ok(Analysis::default());
            }
            let handle = self.embed.get().ok_or(InferenceError::NotReady)?;
            let status = match role {
                Role::Agent => Some(self.status.get().ok_or(InferenceError::NotReady)?),
                Role::Customer => None,
            };
            let missing = || InferenceError::Failed("the embedder returned no vector".into());
            // The grouper reads the shared embedding; a fine-tuned status model its own, made in
            // the same forward pass.
            let (embedding, tuned) = if status.is_some_and(|m| m.needs_tail()) {
                let (mut pairs, _) = handle.embed_with_tail(vec![text.to_owned()]).await?;
                let (shared, tuned) = pairs.pop().ok_or_else(missing)?;
                (shared, Some(tuned))
            } else {
                let (mut vectors, _) = handle.embed(vec![text.to_owned()]).await?;
                (vectors.pop().ok_or_else(missing)?, None)
            };
            let prediction = match status {
                Some(model) => predict(
                    model,
                    &[text],
                    std::slice::from_ref(tuned.as_ref().unwrap_or(&embedding)),
                )?
                .pop()
                .ok_or_else(|| InferenceError::Failed("the status model returned nothing".into()))?,
                None => None,
            };
            Ok(Analysis {
                embedding: Some(embedding),
                prediction,
            })
        })
    }

    /// One queue call for the customers' messages and one (through the fine-tuned tail, when the
    /// status model has one) for the team's: the embedder batches them by its token budget.
    fn analyse_batch<'a>(
        &'a self,
        inputs: &'a [(String, Role)],
    ) -> BoxFuture<'a, Result<Vec<Analysis>, InferenceError>> {
        Box::pin(async move {
            let mut out = vec![Analysis::default(); inputs.len()];
            let pick = |agent: bool| -> Vec<usize> {
                (0..inputs.len())
                    .filter(|&i| !inputs[i].0.trim().is_empty() && (inputs[i].1 == Role::Agent) == agent)
                    .collect()
            };
            let (customers, agents) = (pick(false), pick(true));
            if customers.is_empty() && agents.is_empty() {
                return Ok(out);
            }
            let handle = self.embed.get().ok_or(InferenceError::NotReady)?;
            let texts = |idx: &[usize]| idx.iter().map(|&i| inputs[i].0.clone()).collect::<Vec<_>>();
            // Both calls are queued before either is awaited, so they share forward batches.
            let agent_run = async {
                if agents.is_empty() {
                    return Ok::<_, InferenceError>(None);
                }
                let model = self.status.get().ok_or(InferenceError::NotReady)?;
                let (shared, tuned) = if model.needs_tail() {
                    let (pairs, _) = handle.embed_with_tail(texts(&agents)).await?;
                    let (shared, tuned): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
                    (shared, Some(tuned))
                } else {
                    (handle.embed(texts(&agents)).await?.0, None)
                };
                let agent_texts: Vec<&str> = agents.iter().map(|&i| inputs[i].0.as_str()).collect();
                let labels = predict(model, &agent_texts, tuned.as_ref().unwrap_or(&shared))?;
                Ok(Some((shared, labels)))
            };
            let customer_run = async {
                if customers.is_empty() {
                    return Ok::<_, InferenceError>(Vec::new());
                }
                Ok(handle.embed(texts(&customers)).await?.0)
            };
            let (agent_out, customer_out) = tokio::join!(agent_run, customer_run);
            if let Some((shared, labels)) = agent_out? {
                for ((i, e), p) in agents.iter().zip(shared).zip(labels) {
                    out[*i] = Analysis {
                        embedding: Some(e),
                        prediction: p,
                    };
                }
            }
            for (i, e) in customers.iter().zip(customer_out?) {
                out[*i].embedding = Some(e);
            }
            Ok(out)
        })
    }
}

/// The status model's labels for team replies and the embeddings it reads.
fn predict(
    model: &crate::classify::StatusModel,
    texts: &[&str],
    embeddings: &[Vec<f32>],
) -> Result<Vec<Option<Prediction>>, InferenceError> {
    let predictions = model
        .predict(texts, embeddings)
        .map_err(|e| InferenceError::Failed(e.to_string()))?;
    if predictions.len() != texts.len() {
        return Err(InferenceError::Failed(
            "the status model returned too few labels".into(),
        ));
    }
    Ok(predictions
        .into_iter()
        .map(|p| {
            let label = match p.label {
                Label::InProgress => ReplyLabel::InProgress,
                Label::Closed => ReplyLabel::Closed,
            };
            Some(Prediction {
                label,
                score: p.score(p.label),
            })
        })
        .collect())
}

/// The trained grouper over the store's channel context.
#[derive(Clone, Default)]
pub struct ModelGrouping {
    grouper: GroupSlot,
}

impl ModelGrouping {
    /// Shares the slot (and its grouper) with `/v1/group`; this path never touches its memory.
    pub fn new(grouper: GroupSlot) -> Self {
        ModelGrouping { grouper }
    }
}

fn role(r: Role) -> group::Role {
    match r {
        Role::Customer => group::Role::Customer,
        Role::Agent => group::Role::Agent,
    }
}

/// The spec's five signals; the grouper's finer ones fold into the nearest.
fn signal(name: &str) -> Signal {
    match name {
        "thread" => Signal::Thread,
        "mention" => Signal::Mention,
        "author" | "conversation" | "role" => Signal::Author,
        "similarity" | "text" => Signal::Similarity,
        _ => Signal::Time,
    }
}

impl Grouping for ModelGrouping {
    fn group(&self, msg: &IncomingMessage, ctx: &ChannelContext) -> GroupDecision {
        // A thread reply joins its thread's conversation, however old the root is.
        if msg.in_thread() {
            if let Some(root) = ctx.thread.first() {
                return GroupDecision::by_rule(
                    Target::Existing(root.conversation_id.clone()),
                    Signal::Thread,
                    format!("reply in thread {}", msg.thread_key()),
                );
            }
        }
        let Some(grouper) = self.grouper.get() else {
            return GroupDecision::by_rule(Target::New, Signal::Time, "grouping model not loaded");
        };
        // The open conversations' first and latest messages, the recent messages and the thread,
        // once each, oldest first: replayed in order, the open ones leave the grouper's window and
        // stay candidates as open support conversations (bounded by the model's `open` bounds).
        let mut seen = HashSet::new();
        let mut rows: Vec<&ContextMessage> = ctx
            .open
            .iter()
            .chain(&ctx.recent)
            .chain(&ctx.thread)
            .filter(|m| seen.insert(m.id.as_str()))
            .collect();
        rows.sort_by(|a, b| a.ts.cmp(&b.ts));
        let history: Vec<KnownMessage> = rows
            .iter()
            .map(|m| KnownMessage {
                msg: group::IncomingMessage {
                    channel: &msg.channel,
                    ts: &m.ts,
                    user: &m.user,
                    text: &m.text,
                    system: false,
                    action: false,
                    thread_ts: m.thread_ts.as_deref(),
                    role: Some(role(m.role)),
                    embedding: m.embedding.as_deref(),
                },
                conversation_id: &m.conversation_id,
                closed: m.conversation_status == Status::Closed,
            })
            .collect();
        let incoming = group::IncomingMessage {
            channel: &msg.channel,
            ts: &msg.ts,
            user: &msg.user,
            text: &msg.text,
            system: false,
            action: false,
            thread_ts: msg.thread_ts.as_deref(),
            role: Some(role(msg.role)),
            embedding: msg.embedding.as_deref(),
        };
        let decided = match grouper.lock() {
            Ok(mut g) => g.decide_with_history(&history, &incoming),
            Err(_) => return GroupDecision::by_rule(Target::New, Signal::Time, "grouper unavailable"),
        };
        let d = match decided {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, channel = %msg.channel, ts = %msg.ts, "grouping failed; new conversation");
                return GroupDecision::by_rule(Target::New, Signal::Time, format!("grouping failed: {e}"));
            }
        };
        let known = rows.iter().any(|m| m.conversation_id == d.conversation_id);
        let target = if !d.new && known {
            Target::Existing(d.conversation_id)
        } else {
            Target::New
        };
        GroupDecision {
            target,
            confidence: d.confidence,
            reasons: d
                .reasons
                .into_iter()
                .filter(|r| r.signal != "system")
                .map(|r| Reason {
                    signal: signal(&r.signal),
                    detail: r.detail,
                    weight: r.weight,
                })
                .collect(),
        }
    }
}
