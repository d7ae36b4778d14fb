//! Planning one incoming message: what the store must write once the grouper has chosen its
//! conversation (or none), with the status machine applied.

use super::account::AccountRef;
use super::conversation::{title_from, Conversation};
use super::event::{Actor, Event, EventKind};
use super::message::{IncomingMessage, Message, Role};
use super::status::{self, ReplyLabel, Status, Trigger};

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
    /// The latest messages before the incoming one (at most [`CONTEXT_MESSAGES`]), oldest first.
    pub recent: Vec<ContextMessage>,
    /// The stored messages of the incoming message's thread (its root and replies), oldest first.
    pub thread: Vec<ContextMessage>,
    /// The first and the latest message (before the incoming one) of the channel's open
    /// conversations, at most [`OPEN_CONVERSATIONS`] of them (the newest), oldest first: a busy
    /// channel pushes an open ticket out of `recent` long before its customer comes back.
    pub open: Vec<ContextMessage>,
}

/// How many earlier messages of a channel the grouper is shown.
pub const CONTEXT_MESSAGES: i64 = 50;

/// How many of a channel's open conversations the grouper is shown beyond `recent`.
pub const OPEN_CONVERSATIONS: i64 = 20;

/// The status model's label on a team reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub label: ReplyLabel,
    pub score: f32,
}

/// What the store must write for one new message.
#[derive(Debug, Clone)]
pub struct IngestPlan {
    pub conversation: Conversation,
    pub new_conversation: bool,
    pub message: Message,
    pub events: Vec<Event>,
}

/// Applies the status machine to `target` (or a new conversation, inheriting `account`) for one
/// message. `target` must be a conversation the message may join (`status::accepts`).
pub fn plan_ingest(
    msg: &IncomingMessage,
    prediction: Option<Prediction>,
    target: Option<Conversation>,
    account: Option<AccountRef>,
) -> IngestPlan {
    let at = msg.sent_at();
    let new_conversation = target.is_none();
    let mut conv = target
        .unwrap_or_else(|| Conversation::open(&msg.channel, title_from(&msg.title_source()), account, at));
    let message = Message {
        id: super::new_id(),
        conversation_id: conv.id.clone(),
        channel: msg.channel.clone(),
        ts: msg.ts.clone(),
        thread_ts: msg.thread_ts.clone(),
        user: msg.user.clone(),
        role: msg.role,
        text: msg.text.clone(),
        files: msg.files.clone(),
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

#[cfg(test)]
mod tests {
    use super::super::message::ts_to_time;
    use super::*;

    fn msg(role: Role, thread_ts: Option<&str>) -> IncomingMessage {
        IncomingMessage {
            channel: "C1".into(),
            ts: "1700000100.000000".into(),
            thread_ts: thread_ts.map(Into::into),
            user: "U1".into(),
            role,
            text: "hello\nsecond line".into(),
            files: Vec::new(),
            embedding: None,
        }
    }

    #[test]
    fn new_customer_message_opens_a_new_conversation() {
        let account = AccountRef {
            id: "A1".into(),
            owner: Some("U9".into()),
        };
        let plan = plan_ingest(&msg(Role::Customer, None), None, None, Some(account));
        assert!(plan.new_conversation);
        let c = &plan.conversation;
        assert_eq!(
            (c.status, c.title.as_str(), c.owner.as_deref(), c.message_count),
            (Status::New, "hello", Some("U9"), 1)
        );
        assert_eq!(c.created_at, ts_to_time("1700000100.000000").unwrap());
        assert_eq!(plan.message.conversation_id, c.id);
        assert!(plan.events.is_empty());
    }

    #[test]
    fn status_table() {
        let p = |label| Some(Prediction { label, score: 0.8 });
        let thread = Some("1700000000.000000");
        // (current status, role, thread, prediction, want status, want event actor)
        let table = [
            (
                Status::New,
                Role::Agent,
                None,
                p(ReplyLabel::Closed),
                Status::Closed,
                Some("model"),
            ),
            (
                Status::New,
                Role::Agent,
                None,
                p(ReplyLabel::InProgress),
                Status::InProgress,
                Some("model"),
            ),
            (Status::New, Role::Agent, None, None, Status::New, None),
            (Status::New, Role::Customer, None, None, Status::New, None),
            (
                Status::InProgress,
                Role::Customer,
                None,
                None,
                Status::OnYou,
                Some("rule:customer_message"),
            ),
            (
                Status::Closed,
                Role::Customer,
                thread,
                None,
                Status::OnYou,
                Some("rule:customer_message"),
            ),
            (Status::Closed, Role::Customer, None, None, Status::Closed, None),
            (
                Status::OnHold,
                Role::Agent,
                thread,
                p(ReplyLabel::InProgress),
                Status::OnHold,
                None,
            ),
            (
                Status::OnHold,
                Role::Agent,
                thread,
                p(ReplyLabel::Closed),
                Status::Closed,
                Some("model"),
            ),
        ];
        for (from, role, thread_ts, prediction, want, actor) in table {
            let mut existing = plan_ingest(&msg(Role::Customer, None), None, None, None).conversation;
            existing.status = from;
            let plan = plan_ingest(&msg(role, thread_ts), prediction, Some(existing), None);
            let row = format!("{from} {role:?} {thread_ts:?} {prediction:?}");
            assert!(!plan.new_conversation);
            assert_eq!(plan.conversation.status, want, "{row}");
            assert_eq!(plan.conversation.message_count, 2, "{row}");
            assert_eq!(plan.events.first().map(|e| e.actor.as_str()), actor, "{row}");
            assert_eq!(
                plan.conversation.first_response_at.is_some(),
                role == Role::Agent,
                "{row}"
            );
            if let Some(ev) = plan.events.first() {
                assert_eq!(
                    (
                        ev.message_id.as_deref(),
                        ev.before.as_deref(),
                        ev.after.as_deref()
                    ),
                    (
                        Some(plan.message.id.as_str()),
                        Some(from.as_str()),
                        Some(want.as_str())
                    ),
                    "{row}"
                );
                assert_eq!(ev.model_label, prediction.map(|p| p.label), "{row}");
            }
            assert_eq!(plan.message.label, prediction.map(|p| p.label), "{row}");
        }
    }
}
