//! A stored message edited or deleted at its source (Slack's `message_changed` and
//! `message_deleted`).
//!
//! An edited team reply is classified again. The status follows the new label only if the model
//! had set the status from that very message and nothing has changed the status since (the
//! conversation's latest status event is the model's, caused by this message): a person's choice,
//! a customer's follow-up or a later reply is never undone by an old message's edit. A deleted
//! message becomes a tombstone: kept with its text for the history, shown as deleted.

use super::conversation::{title_from, Conversation};
use super::event::{Actor, Event, EventKind};
use super::ingest::Prediction;
use super::message::{Message, Role};
use super::status::{self, Status, Trigger};
use chrono::{DateTime, Utc};

/// The new text of a message and what inference made of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageEdit {
    pub text: String,
    /// The new text's embedding (`None`: none computed, e.g. an empty text).
    pub embedding: Option<Vec<f32>>,
    /// The status model's label of the new text (team replies only).
    pub prediction: Option<Prediction>,
}

/// A message after an edit or a deletion, with its conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Edited {
    pub message: Message,
    pub conversation: Conversation,
    /// False when nothing changed (the same text again, or an already deleted message).
    pub changed: bool,
}

/// Applies an edit to `message` and its conversation `conv`; `last_status` is the conversation's
/// latest status event. Returns the events it causes (a status change, or none).
pub fn apply_edit(
    message: &mut Message,
    conv: &mut Conversation,
    edit: &MessageEdit,
    last_status: Option<&Event>,
    at: DateTime<Utc>,
) -> Vec<Event> {
    // A conversation still titled after this message follows its new first line.
    if !conv.title.is_empty() && conv.title == title_from(&message.text) {
        let title = title_from(&edit.text);
        if !title.is_empty() {
            conv.title = title;
        }
    }
    message.text = edit.text.clone();
    message.edited = true;
    if message.role != Role::Agent {
        return Vec::new();
    }
    message.label = edit.prediction.map(|p| p.label);
    message.score = edit.prediction.map(|p| p.score);
    let (Some(p), Some(last)) = (edit.prediction, last_status) else {
        return Vec::new();
    };
    let set_by_this_reply =
        last.actor == Actor::Model.to_string() && last.message_id.as_deref() == Some(message.id.as_str());
    let Some(before) = last.before.as_deref().and_then(|b| b.parse::<Status>().ok()) else {
        return Vec::new();
    };
    if !set_by_this_reply {
        return Vec::new();
    }
    // The status the reply would have led to, from where it started.
    let to = status::next(before, Trigger::TeamReply(p.label)).unwrap_or(before);
    let from = conv.status;
    if to == from {
        return Vec::new();
    }
    conv.set_status(to, at);
    vec![Event::new(
        &conv.id,
        EventKind::Status,
        &Actor::Model,
        Some(from.to_string()),
        Some(to.to_string()),
        at,
    )
    .caused_by(&message.id)
    .with_prediction(Some((p.label, p.score)))]
}

/// Marks `message` deleted; false when it already was.
pub fn apply_delete(message: &mut Message) -> bool {
    !std::mem::replace(&mut message.deleted, true)
}

#[cfg(test)]
mod tests {
    use super::super::conversation::tests::{at, conv};
    use super::super::status::ReplyLabel;
    use super::*;

    fn reply(conv: &Conversation, role: Role) -> Message {
        Message {
            id: "M1".into(),
            conversation_id: conv.id.clone(),
            channel: "C1".into(),
            ts: "1700000000.000000".into(),
            thread_ts: None,
            user: "U1".into(),
            role,
            text: "Taking a look".into(),
            files: Vec::new(),
            edited: false,
            deleted: false,
            label: Some(ReplyLabel::InProgress),
            score: Some(0.9),
        }
    }

    fn status_event(
        conv: &Conversation,
        actor: &Actor,
        message: Option<&str>,
        from: Status,
        to: Status,
    ) -> Event {
        let e = Event::new(
            &conv.id,
            EventKind::Status,
            actor,
            Some(from.to_string()),
            Some(to.to_string()),
            at(0),
        );
        match message {
            Some(m) => e.caused_by(m),
            None => e,
        }
    }

    fn edit(text: &str, label: Option<ReplyLabel>) -> MessageEdit {
        MessageEdit {
            text: text.into(),
            embedding: None,
            prediction: label.map(|label| Prediction { label, score: 0.8 }),
        }
    }

    #[test]
    fn the_status_follows_only_the_models_own_decision_from_this_reply() {
        let closed = Some(ReplyLabel::Closed);
        let model = Actor::Model;
        let human = Actor::Human("U9".into());
        // (last status event: actor, message, before, after; want status after the edit)
        let table = [
            (
                Some((&model, Some("M1"), Status::New, Status::InProgress)),
                Status::Closed,
            ),
            // From on_hold an in-progress reply had kept it; a concluding one closes it.
            (
                Some((&model, Some("M1"), Status::OnYou, Status::InProgress)),
                Status::Closed,
            ),
            // Set by another reply, by a person, or by a rule: left alone.
            (
                Some((&model, Some("M2"), Status::New, Status::InProgress)),
                Status::InProgress,
            ),
            (
                Some((&human, None, Status::New, Status::InProgress)),
                Status::InProgress,
            ),
            (
                Some((
                    &Actor::Rule("customer_message"),
                    Some("M1"),
                    Status::New,
                    Status::InProgress,
                )),
                Status::InProgress,
            ),
            (None, Status::InProgress),
        ];
        for (last, want) in table {
            let mut c = conv();
            c.status = Status::InProgress;
            let mut m = reply(&c, Role::Agent);
            let last = last.map(|(actor, msg, from, to)| status_event(&c, actor, msg, from, to));
            let events = apply_edit(
                &mut m,
                &mut c,
                &edit("Fixed in 1.4", closed),
                last.as_ref(),
                at(60),
            );
            assert_eq!(c.status, want, "{last:?}");
            assert_eq!(
                (m.text.as_str(), m.edited, m.label),
                ("Fixed in 1.4", true, closed)
            );
            assert_eq!(events.len(), usize::from(want != Status::InProgress), "{last:?}");
            if let Some(e) = events.first() {
                assert_eq!(
                    (
                        e.actor.as_str(),
                        e.message_id.as_deref(),
                        e.before.as_deref(),
                        e.after.as_deref()
                    ),
                    ("model", Some("M1"), Some("in_progress"), Some("closed"))
                );
                assert_eq!(e.model_label, closed);
                assert_eq!(c.closed_at, Some(at(60)));
            }
        }
        // Closed by the reply, edited into an acknowledgement: back to in progress.
        let mut c = conv();
        c.set_status(Status::Closed, at(1));
        let mut m = reply(&c, Role::Agent);
        let last = status_event(&c, &model, Some("M1"), Status::New, Status::Closed);
        let events = apply_edit(
            &mut m,
            &mut c,
            &edit("Looking into it", Some(ReplyLabel::InProgress)),
            Some(&last),
            at(2),
        );
        assert_eq!(
            (c.status, c.closed_at, events.len()),
            (Status::InProgress, None, 1)
        );
        // The same label again: no event.
        let mut c = conv();
        c.status = Status::InProgress;
        let mut m = reply(&c, Role::Agent);
        let last = status_event(&c, &model, Some("M1"), Status::New, Status::InProgress);
        let same = apply_edit(
            &mut m,
            &mut c,
            &edit("On it", Some(ReplyLabel::InProgress)),
            Some(&last),
            at(2),
        );
        assert!(same.is_empty());
    }

    #[test]
    fn customer_edits_change_text_and_title_only() {
        let mut c = conv();
        c.title = title_from("Taking a look");
        c.status = Status::New;
        let mut m = reply(&c, Role::Customer);
        m.label = None;
        let events = apply_edit(&mut m, &mut c, &edit("Login fails\non iOS", None), None, at(5));
        assert!(events.is_empty());
        assert_eq!(
            (c.title.as_str(), c.status, m.label),
            ("Login fails", Status::New, None)
        );
        // A conversation titled by hand keeps its title.
        let mut c = conv();
        c.title = "VIP: login".into();
        let mut m = reply(&c, Role::Customer);
        apply_edit(&mut m, &mut c, &edit("other", None), None, at(5));
        assert_eq!(c.title, "VIP: login");
    }

    #[test]
    fn deleting_is_a_tombstone_once() {
        let c = conv();
        let mut m = reply(&c, Role::Customer);
        assert!(apply_delete(&mut m));
        assert!(m.deleted && m.text == "Taking a look");
        assert!(!apply_delete(&mut m));
    }
}
