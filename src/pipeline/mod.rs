//! The ingest pipeline's seams (grouper and classifier traits) and its pure planning step.
//!
//! A store calls `plan_ingest` inside its transaction, after loading the channel context and asking
//! the `Grouper`; the classifier runs before the transaction so inference never holds a lock.
//! [`models`] implements both seams with the real models.

pub mod models;

use crate::status::{self, ReplyLabel, Status, Trigger};
use crate::store::{new_id, Actor, Conversation, Event, EventKind, Message, Priority, Role};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

/// A message entering the pipeline, `ts`/`thread_ts` normalised by `normalize_ts`.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingMessage {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user: String,
    pub role: Role,
    pub text: String,
    /// Its sentence embedding (from [`Classifier::analyse`]); stored with the message so any
    /// replica can rebuild the grouper's view of the channel.
    pub embedding: Option<Vec<f32>>,
}

impl IncomingMessage {
    /// True for a reply inside a Slack thread (a thread's root has `thread_ts == ts`).
    pub fn in_thread(&self) -> bool {
        self.thread_ts.as_deref().is_some_and(|t| t != self.ts)
    }

    /// The key shared by a thread's root and its replies.
    pub fn thread_key(&self) -> &str {
        self.thread_ts.as_deref().unwrap_or(&self.ts)
    }

    pub fn sent_at(&self) -> DateTime<Utc> {
        ts_to_time(&self.ts).unwrap_or_else(Utc::now)
    }
}

/// A stored message of the channel, as the grouper sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextMessage {
    pub id: String,
    pub conversation_id: String,
    pub conversation_status: Status,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user: String,
    pub role: Role,
    pub text: String,
    pub embedding: Option<Vec<f32>>,
}

/// What the store knows about the channel when a message arrives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelContext {
    /// The latest messages before the incoming one (at most `CONTEXT_MESSAGES`), oldest first.
    pub recent: Vec<ContextMessage>,
    /// The stored messages of the incoming message's thread (its root and replies), oldest first.
    pub thread: Vec<ContextMessage>,
}

/// How many earlier messages of a channel the grouper is shown.
pub const CONTEXT_MESSAGES: i64 = 50;

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

/// Decides which conversation a message belongs to. Called while the channel is locked, so it
/// must be quick and must not block on I/O.
pub trait Grouper: Send + Sync {
    fn group(&self, msg: &IncomingMessage, ctx: &ChannelContext) -> GroupDecision;
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub label: ReplyLabel,
    pub score: f32,
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

/// Embeds a message and labels a team reply. May be slow (model inference), so it runs before the
/// store's transaction, never under a lock.
pub trait Classifier: Send + Sync {
    fn analyse<'a>(&'a self, text: &'a str, role: Role) -> BoxFuture<'a, Result<Analysis, InferenceError>>;
}

/// What the store must write for one new message.
#[derive(Debug, Clone)]
pub struct IngestPlan {
    pub conversation: Conversation,
    pub new_conversation: bool,
    pub message: Message,
    pub events: Vec<Event>,
}

/// Applies the status machine to `target` (or a new conversation) for one message.
/// `target` must be a conversation the message may join (`status::accepts`).
pub fn plan_ingest(
    msg: &IncomingMessage,
    prediction: Option<Prediction>,
    target: Option<Conversation>,
    account: Option<(String, Option<String>)>,
) -> IngestPlan {
    let at = msg.sent_at();
    let new_conversation = target.is_none();
    let mut conv = target.unwrap_or_else(|| {
        let (account_id, owner) = account.map_or((None, None), |(id, owner)| (Some(id), owner));
        Conversation {
            id: new_id(),
            status: Status::New,
            priority: Priority::None,
            owner,
            account_id,
            channel: msg.channel.clone(),
            title: title_from(&msg.text),
            created_at: at,
            first_response_at: None,
            closed_at: None,
            linked_issue: None,
            message_count: 0,
        }
    });
    let message = Message {
        id: new_id(),
        conversation_id: conv.id.clone(),
        channel: msg.channel.clone(),
        ts: msg.ts.clone(),
        thread_ts: msg.thread_ts.clone(),
        user: msg.user.clone(),
        role: msg.role,
        text: msg.text.clone(),
        edited: false,
        deleted: false,
        label: prediction.map(|p| p.label),
        score: prediction.map(|p| p.score),
    };
    let trigger = match (msg.role, prediction) {
        (Role::Agent, Some(p)) => Some((Trigger::TeamReply(p.label), Actor::Model)),
        // Without a prediction (no classifier configured) a team message leaves the status alone.
        (Role::Agent, None) => None,
        (Role::Customer, _) => Some((
            Trigger::CustomerMessage {
                in_thread: msg.in_thread(),
            },
            Actor::Rule("customer_message"),
        )),
    };
    if msg.role == Role::Agent && conv.first_response_at.is_none() {
        conv.first_response_at = Some(at);
    }
    let mut events = Vec::new();
    if let Some((trigger, actor)) = trigger {
        let from = conv.status;
        // Message-driven triggers are never refused; only a human's on_hold can be.
        let to = status::next(from, trigger).unwrap_or(from);
        if to != from {
            conv.set_status(to, at);
            events.push(
                Event::new(
                    &conv.id,
                    EventKind::Status,
                    &actor,
                    Some(from.to_string()),
                    Some(to.to_string()),
                    at,
                )
                .caused_by(&message.id)
                .with_prediction(prediction.map(|p| (p.label, p.score))),
            );
        }
    }
    conv.message_count += 1;
    IngestPlan {
        conversation: conv,
        new_conversation,
        message,
        events,
    }
}

/// A conversation's default title: the first line of its first message, shortened.
pub fn title_from(text: &str) -> String {
    const MAX: usize = 80;
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Slack timestamp: {0}")]
pub struct BadTs(pub String);

/// Normalises a Slack ts (`"1700000000.000100"`, `"1700000000"` or a JSON number) to
/// `seconds.microseconds` with six digits, so equal instants compare equal as text.
pub fn normalize_ts(value: &serde_json::Value) -> Result<String, BadTs> {
    let bad = || BadTs(value.to_string());
    let text = match value {
        serde_json::Value::String(s) => s.trim().to_owned(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(bad()),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((&text, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    let micros: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    Ok(format!("{secs}.{micros}"))
}

pub fn ts_to_time(ts: &str) -> Option<DateTime<Utc>> {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    Utc.timestamp_opt(secs.parse().ok()?, micros.parse::<u32>().ok()?.checked_mul(1000)?)
        .single()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(role: Role, thread_ts: Option<&str>) -> IncomingMessage {
        IncomingMessage {
            channel: "C1".into(),
            ts: "1700000100.000000".into(),
            thread_ts: thread_ts.map(Into::into),
            user: "U1".into(),
            role,
            text: "hello\nsecond line".into(),
            embedding: None,
        }
    }

    #[test]
    fn normalises_slack_timestamps() {
        assert_eq!(
            normalize_ts(&json!("1700000000.0001")).unwrap(),
            "1700000000.000100"
        );
        assert_eq!(normalize_ts(&json!("1700000000")).unwrap(), "1700000000.000000");
        assert_eq!(normalize_ts(&json!(1700000000)).unwrap(), "1700000000.000000");
        assert_eq!(normalize_ts(&json!(1700000000.5)).unwrap(), "1700000000.500000");
        assert!(normalize_ts(&json!("-1")).is_err());
        assert!(normalize_ts(&json!("abc")).is_err());
        assert!(normalize_ts(&json!(null)).is_err());
    }

    #[test]
    fn new_customer_message_opens_a_new_conversation() {
        let plan = plan_ingest(
            &msg(Role::Customer, None),
            None,
            None,
            Some(("A1".into(), Some("U9".into()))),
        );
        assert!(plan.new_conversation);
        assert_eq!(plan.conversation.status, Status::New);
        assert_eq!(plan.conversation.title, "hello");
        assert_eq!(plan.conversation.owner.as_deref(), Some("U9"));
        assert_eq!(
            plan.conversation.created_at,
            ts_to_time("1700000100.000000").unwrap()
        );
        assert!(plan.events.is_empty());
    }

    #[test]
    fn first_team_reply_sets_first_response_and_the_label() {
        let first = plan_ingest(&msg(Role::Customer, None), None, None, None);
        let p = Prediction {
            label: ReplyLabel::Closed,
            score: 0.8,
        };
        let plan = plan_ingest(
            &msg(Role::Agent, Some("1700000000.000000")),
            Some(p),
            Some(first.conversation),
            None,
        );
        assert_eq!(plan.conversation.status, Status::Closed);
        assert!(plan.conversation.first_response_at.is_some() && plan.conversation.closed_at.is_some());
        let ev = &plan.events[0];
        assert_eq!(
            (ev.actor.as_str(), ev.after.as_deref()),
            ("model", Some("closed"))
        );
        assert_eq!(
            (ev.message_id.as_deref(), ev.model_label),
            (Some(plan.message.id.as_str()), Some(ReplyLabel::Closed))
        );
        assert_eq!(plan.conversation.message_count, 2);
    }
}
