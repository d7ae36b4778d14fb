//! What changed, as published after a commit for the Slack cards and the live board.

use super::conversation::{Conversation, Priority};
use super::event::{Event, EventKind};
use super::message::Message;
use super::note::Note;
use super::status::Status;
use serde::{Deserialize, Serialize};

/// One committed change. Status, owner and priority changes carry the recorded event's actor
/// (`model`, `human:<user>`, `rule:<name>`) and the message that caused them, if one did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    ConversationCreated {
        conversation: Conversation,
    },
    MessageAdded {
        message: Message,
        conversation: Conversation,
    },
    /// The message's text changed at its source (a team reply's status change follows as
    /// [`Change::StatusChanged`]).
    MessageEdited {
        message: Message,
        conversation: Conversation,
    },
    /// The message was deleted at its source; it is kept as a tombstone.
    MessageDeleted {
        message: Message,
        conversation: Conversation,
    },
    /// An internal note was added (never a message: cards and the board show it to the team only).
    NoteAdded {
        note: Note,
    },
    StatusChanged {
        conversation_id: String,
        from: Status,
        to: Status,
        actor: String,
        message_id: Option<String>,
    },
    OwnerChanged {
        conversation_id: String,
        from: Option<String>,
        to: Option<String>,
        actor: String,
    },
    PriorityChanged {
        conversation_id: String,
        from: Priority,
        to: Priority,
        actor: String,
    },
    /// A person renamed the conversation (titles record no event; the cards still show them).
    TitleChanged {
        conversation_id: String,
        title: String,
        actor: String,
    },
    /// `from` was folded into `into` and deleted.
    Merged {
        from: String,
        into: Conversation,
        actor: String,
    },
    /// `message` left `from` for `to` (a conversation created for it when it was split out).
    Moved {
        message: Message,
        from: Conversation,
        to: Conversation,
        actor: String,
    },
    ConversationDeleted {
        id: String,
    },
}

impl Change {
    /// The status, owner and priority changes `events` record, in order. Grouping events are left
    /// out: a merge or move is published whole as [`Change::Merged`] or [`Change::Moved`].
    pub fn from_events(events: &[Event]) -> Vec<Change> {
        events.iter().filter_map(Change::from_event).collect()
    }

    fn from_event(e: &Event) -> Option<Change> {
        let conversation_id = e.conversation_id.clone();
        let actor = e.actor.clone();
        Some(match e.kind {
            EventKind::Status => Change::StatusChanged {
                conversation_id,
                from: e.before.as_deref()?.parse().ok()?,
                to: e.after.as_deref()?.parse().ok()?,
                actor,
                message_id: e.message_id.clone(),
            },
            EventKind::Owner => Change::OwnerChanged {
                conversation_id,
                from: e.before.clone(),
                to: e.after.clone(),
                actor,
            },
            EventKind::Priority => Change::PriorityChanged {
                conversation_id,
                from: e.before.as_deref()?.parse().ok()?,
                to: e.after.as_deref()?.parse().ok()?,
                actor,
            },
            EventKind::Grouping => return None,
        })
    }

    /// The conversation this change is about (the surviving one for a merge, the new home for a move).
    pub fn conversation_id(&self) -> &str {
        match self {
            Change::ConversationCreated { conversation }
            | Change::MessageAdded { conversation, .. }
            | Change::MessageEdited { conversation, .. }
            | Change::MessageDeleted { conversation, .. } => &conversation.id,
            Change::StatusChanged { conversation_id, .. }
            | Change::OwnerChanged { conversation_id, .. }
            | Change::PriorityChanged { conversation_id, .. }
            | Change::TitleChanged { conversation_id, .. } => conversation_id,
            Change::NoteAdded { note } => &note.conversation_id,
            Change::Merged { into, .. } => &into.id,
            Change::Moved { to, .. } => &to.id,
            Change::ConversationDeleted { id } => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::Actor;
    use super::*;
    use chrono::Utc;

    #[test]
    fn events_become_changes() {
        let human = Actor::Human("U1".into());
        let ev = |kind, before: Option<&str>, after: Option<&str>| {
            Event::new(
                "c1",
                kind,
                &human,
                before.map(Into::into),
                after.map(Into::into),
                Utc::now(),
            )
        };
        let table = [
            (
                ev(EventKind::Status, Some("new"), Some("closed")).caused_by("m1"),
                Some(Change::StatusChanged {
                    conversation_id: "c1".into(),
                    from: Status::New,
                    to: Status::Closed,
                    actor: "human:U1".into(),
                    message_id: Some("m1".into()),
                }),
            ),
            (
                ev(EventKind::Owner, None, Some("U2")),
                Some(Change::OwnerChanged {
                    conversation_id: "c1".into(),
                    from: None,
                    to: Some("U2".into()),
                    actor: "human:U1".into(),
                }),
            ),
            (
                ev(EventKind::Priority, Some("none"), Some("urgent")),
                Some(Change::PriorityChanged {
                    conversation_id: "c1".into(),
                    from: Priority::None,
                    to: Priority::Urgent,
                    actor: "human:U1".into(),
                }),
            ),
            (ev(EventKind::Grouping, Some("c0"), Some("c1")), None),
            // A value this build does not know is skipped, not a panic.
            (ev(EventKind::Status, Some("new"), Some("archived")), None),
        ];
        for (event, want) in table {
            assert_eq!(Change::from_event(&event), want, "{event:?}");
        }
        let json = serde_json::to_value(Change::from_event(&ev(
            EventKind::Status,
            Some("new"),
            Some("on_you"),
        )))
        .unwrap();
        assert_eq!(json["type"], "status_changed");
        assert_eq!(json["to"], "on_you");
    }
}
