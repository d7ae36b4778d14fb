//! The history of a conversation: every change of status, owner, priority or grouping is an event
//! with its actor and the message that caused it.

use super::status::ReplyLabel;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Who made a change: `model`, `human:<user>` or `rule:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Model,
    Human(String),
    Rule(&'static str),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Model => f.write_str("model"),
            Actor::Human(user) => write!(f, "human:{user}"),
            Actor::Rule(name) => write!(f, "rule:{name}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Status,
    Owner,
    Priority,
    Grouping,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Status => "status",
            EventKind::Owner => "owner",
            EventKind::Priority => "priority",
            EventKind::Grouping => "grouping",
        }
    }
}

impl FromStr for EventKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "status" => EventKind::Status,
            "owner" => EventKind::Owner,
            "priority" => EventKind::Priority,
            "grouping" => EventKind::Grouping,
            other => anyhow::bail!("unknown event kind `{other}`"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub conversation_id: String,
    pub kind: EventKind,
    pub actor: String,
    /// The message that caused the change, if one did.
    pub message_id: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    /// The model's prediction at the time, kept so that human overrides become training data.
    pub model_label: Option<ReplyLabel>,
    pub model_score: Option<f32>,
    pub at: DateTime<Utc>,
}

impl Event {
    pub fn new(
        conversation_id: &str,
        kind: EventKind,
        actor: &Actor,
        before: Option<String>,
        after: Option<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Event {
            id: super::new_id(),
            conversation_id: conversation_id.to_owned(),
            kind,
            actor: actor.to_string(),
            message_id: None,
            before,
            after,
            model_label: None,
            model_score: None,
            at,
        }
    }

    pub fn caused_by(mut self, message_id: &str) -> Self {
        self.message_id = Some(message_id.to_owned());
        self
    }

    pub fn with_prediction(mut self, prediction: Option<(ReplyLabel, f32)>) -> Self {
        self.model_label = prediction.map(|p| p.0);
        self.model_score = prediction.map(|p| p.1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_and_kinds_round_trip_through_text() {
        let table = [
            (Actor::Model, "model"),
            (Actor::Human("U1".into()), "human:U1"),
            (Actor::Rule("issue_closed"), "rule:issue_closed"),
        ];
        for (actor, text) in table {
            assert_eq!(actor.to_string(), text);
        }
        for kind in [
            EventKind::Status,
            EventKind::Owner,
            EventKind::Priority,
            EventKind::Grouping,
        ] {
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), kind);
        }
        assert!("title".parse::<EventKind>().is_err());
    }
}
