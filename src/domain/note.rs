//! Internal notes: what the team writes about a conversation among themselves (a reply in a
//! triage card's Slack thread, or `POST /v1/conversations/{id}/notes`). A note is never a message:
//! it never reaches the grouper, the status model or a customer's channel.

use super::error::DomainError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest note text accepted (Slack's own message limit is 40,000 characters).
pub const MAX_NOTE_CHARS: usize = 40_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    Note,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub id: String,
    pub conversation_id: String,
    /// Always `note` (the spec's message `kind`), so a client can list notes beside messages.
    pub kind: NoteKind,
    /// A Slack user id, or whoever called the API (`X-Triage-User`).
    pub author: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
    /// The Slack message it came from (a reply in the card's thread): adding it twice is a no-op.
    pub slack_channel: Option<String>,
    pub slack_ts: Option<String>,
}

/// Where a note came from in Slack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackRef {
    pub channel: String,
    pub ts: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewNote {
    pub author: String,
    pub text: String,
    pub slack: Option<SlackRef>,
}

/// A checked note for `conversation_id`, written at `at`.
pub fn build_note(conversation_id: &str, new: NewNote, at: DateTime<Utc>) -> Result<Note, DomainError> {
    if new.text.trim().is_empty() {
        return Err(DomainError::invalid("text", "a note needs text"));
    }
    if new.text.chars().count() > MAX_NOTE_CHARS {
        return Err(DomainError::invalid("text", "a note is at most 40000 characters"));
    }
    if new.author.trim().is_empty() {
        return Err(DomainError::invalid("author", "a note needs an author"));
    }
    let (slack_channel, slack_ts) = match new.slack {
        Some(SlackRef { channel, ts }) => (Some(channel), Some(ts)),
        None => (None, None),
    };
    Ok(Note {
        id: super::new_id(),
        conversation_id: conversation_id.to_owned(),
        kind: NoteKind::Note,
        author: new.author,
        text: new.text,
        created_at: at,
        slack_channel,
        slack_ts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(author: &str, text: &str) -> NewNote {
        NewNote {
            author: author.into(),
            text: text.into(),
            slack: None,
        }
    }

    #[test]
    fn notes_need_text_and_an_author() {
        let at = Utc::now();
        let note = build_note("c1", new("U1", "customer is on the old plan"), at).unwrap();
        assert_eq!((note.conversation_id.as_str(), note.created_at), ("c1", at));
        let json = serde_json::to_value(&note).unwrap();
        assert_eq!(
            (json["kind"].as_str(), json["slack_ts"].is_null()),
            (Some("note"), true)
        );
        let field = |n| match build_note("c1", n, at) {
            Err(DomainError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(new("U1", "  \n")), "text");
        assert_eq!(field(new("U1", &"x".repeat(MAX_NOTE_CHARS + 1))), "text");
        assert_eq!(field(new("", "hi")), "author");
        let from_slack = NewNote {
            slack: Some(SlackRef {
                channel: "CTRIAGE".into(),
                ts: "1700000000.000100".into(),
            }),
            ..new("U1", "hi")
        };
        let note = build_note("c1", from_slack, at).unwrap();
        assert_eq!(
            (note.slack_channel.as_deref(), note.slack_ts.as_deref()),
            (Some("CTRIAGE"), Some("1700000000.000100"))
        );
    }
}
