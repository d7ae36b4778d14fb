//! Conversations (tickets) and the rules a person's or a tracker's change goes through: patches,
//! creation, merges, moves and splits, a linked issue closing or reopening.

use super::account::{present, AccountRef};
use super::error::DomainError;
use super::event::{Actor, Event, EventKind};
use super::status::{self, ReplyLabel, Status, Trigger};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    Medium,
    Low,
    None,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
            Priority::None => "none",
        }
    }
}

impl FromStr for Priority {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "urgent" => Priority::Urgent,
            "high" => Priority::High,
            "medium" => Priority::Medium,
            "low" => Priority::Low,
            "none" => Priority::None,
            other => anyhow::bail!("unknown priority `{other}`"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIssue {
    pub url: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default = "LinkedIssue::open")]
    pub state: String,
}

impl LinkedIssue {
    /// The state of an issue nobody reported closed.
    pub fn open() -> String {
        "open".into()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub status: Status,
    pub priority: Priority,
    pub owner: Option<String>,
    pub account_id: Option<String>,
    pub channel: String,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub linked_issue: Option<LinkedIssue>,
    pub message_count: i64,
}

impl Conversation {
    /// An empty `new` conversation in `channel`, inheriting the channel's account and owner.
    pub fn open(
        channel: &str,
        title: String,
        account: Option<AccountRef>,
        created_at: DateTime<Utc>,
    ) -> Self {
        let (account_id, owner) = account.map_or((None, None), |a| (Some(a.id), a.owner));
        Conversation {
            id: super::new_id(),
            status: Status::New,
            priority: Priority::None,
            owner,
            account_id,
            channel: channel.to_owned(),
            title,
            created_at,
            first_response_at: None,
            closed_at: None,
            linked_issue: None,
            message_count: 0,
        }
    }

    /// Sets the status and keeps `closed_at` in step with it.
    pub fn set_status(&mut self, to: Status, at: DateTime<Utc>) {
        if to == Status::Closed && self.status != Status::Closed {
            self.closed_at = Some(at);
        } else if to != Status::Closed {
            self.closed_at = None;
        }
        self.status = to;
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    pub channel: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: Option<Status>,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub linked_issue: Option<LinkedIssue>,
}

/// A partial update; `Some(None)` clears a nullable field, `None` leaves it alone.
/// Serialises back to the same body (absent fields left out, a cleared one as `null`): the
/// Slack edge sends it to its core as it is.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub owner: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub linked_issue: Option<Option<LinkedIssue>>,
}

/// An issue tracker's news about an issue, matched to conversations by URL or by provider key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueChange {
    pub url: Option<String>,
    pub provider: Option<String>,
    pub key: Option<String>,
    pub closed: bool,
}

/// Applies a person's patch: validates it against the status machine and returns the events it
/// causes. `prediction` is the model's latest label in the conversation, recorded on status events.
pub fn apply_patch(
    conv: &mut Conversation,
    patch: ConversationPatch,
    actor: &Actor,
    prediction: Option<(ReplyLabel, f32)>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, DomainError> {
    let mut events = Vec::new();
    if let Some(title) = patch.title {
        conv.title = title;
    }
    if let Some(issue) = patch.linked_issue {
        conv.linked_issue = issue;
    }
    if let Some(to) = patch.status {
        let from = conv.status;
        let next = status::next(
            from,
            Trigger::HumanSet {
                to,
                has_linked_issue: conv.linked_issue.is_some(),
            },
        )?;
        if next != from {
            conv.set_status(next, now);
            events.push(
                Event::new(
                    &conv.id,
                    EventKind::Status,
                    actor,
                    Some(from.to_string()),
                    Some(next.to_string()),
                    now,
                )
                .with_prediction(prediction),
            );
        }
    } else if conv.status == Status::OnHold && conv.linked_issue.is_none() {
        return Err(DomainError::invalid(
            "linked_issue",
            "an on_hold conversation needs its linked issue",
        ));
    }
    if let Some(owner) = patch.owner {
        if owner != conv.owner {
            events.push(Event::new(
                &conv.id,
                EventKind::Owner,
                actor,
                conv.owner.take(),
                owner.clone(),
                now,
            ));
            conv.owner = owner;
        }
    }
    if let Some(priority) = patch.priority {
        if priority != conv.priority {
            let before = Some(conv.priority.as_str().to_owned());
            events.push(Event::new(
                &conv.id,
                EventKind::Priority,
                actor,
                before,
                Some(priority.as_str().into()),
                now,
            ));
            conv.priority = priority;
        }
    }
    Ok(events)
}

/// The conversation a `NewConversation` describes, checked against the status machine, and the
/// status event when it does not start as `new`. `account` is the channel's, used when the
/// request names none.
pub fn build_conversation(
    new: NewConversation,
    account: Option<AccountRef>,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<(Conversation, Option<Event>), DomainError> {
    let status = new.status.unwrap_or(Status::New);
    status::next(
        Status::New,
        Trigger::HumanSet {
            to: status,
            has_linked_issue: new.linked_issue.is_some(),
        },
    )?;
    let account = match new.account_id {
        Some(id) => Some(AccountRef { id, owner: None }),
        None => account,
    };
    let mut conv = Conversation::open(&new.channel, new.title, account, now);
    if new.owner.is_some() {
        conv.owner = new.owner;
    }
    conv.priority = new.priority.unwrap_or(Priority::None);
    conv.linked_issue = new.linked_issue;
    conv.set_status(status, now);
    let event = (status != Status::New).then(|| {
        Event::new(
            &conv.id,
            EventKind::Status,
            actor,
            Some(Status::New.to_string()),
            Some(status.to_string()),
            now,
        )
    });
    Ok((conv, event))
}

/// The reply label implied by a person's status change, kept as training data.
pub fn human_label(events: &[Event]) -> Option<ReplyLabel> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::Status)
        .find_map(|e| e.after.as_deref()?.parse().ok())
}

/// Records a linked issue closing; an `on_hold` conversation returns to `on_you` (the event).
pub fn apply_issue_closed(conv: &mut Conversation, now: DateTime<Utc>) -> Option<Event> {
    if let Some(issue) = conv.linked_issue.as_mut() {
        issue.state = "closed".into();
    }
    let from = conv.status;
    let to = status::next(from, Trigger::IssueClosed).ok()?;
    (to != from).then(|| {
        conv.set_status(to, now);
        Event::new(
            &conv.id,
            EventKind::Status,
            &Actor::Rule("issue_closed"),
            Some(from.to_string()),
            Some(to.to_string()),
            now,
        )
    })
}

/// Records a linked issue reopening; the status stays as it is.
pub fn apply_issue_reopened(conv: &mut Conversation) {
    if let Some(issue) = conv.linked_issue.as_mut() {
        issue.state = LinkedIssue::open();
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    pub(crate) fn conv() -> Conversation {
        let new = NewConversation {
            channel: "C1".into(),
            title: "t".into(),
            status: None,
            priority: None,
            owner: None,
            account_id: None,
            linked_issue: None,
        };
        let account = AccountRef {
            id: "A1".into(),
            owner: Some("U9".into()),
        };
        build_conversation(new, Some(account), &Actor::Model, at(0))
            .unwrap()
            .0
    }

    pub(crate) fn issue() -> LinkedIssue {
        LinkedIssue {
            url: "https://tracker/1".into(),
            provider: None,
            key: None,
            state: LinkedIssue::open(),
        }
    }

    #[test]
    fn creation_table() {
        let base = || NewConversation {
            channel: "C1".into(),
            title: "t".into(),
            status: None,
            priority: None,
            owner: None,
            account_id: None,
            linked_issue: None,
        };
        let channel_account = Some(AccountRef {
            id: "A1".into(),
            owner: Some("U9".into()),
        });
        // (request, account of the channel, want: Ok((account, owner, status, event)) or the error)
        type Want = Result<(Option<&'static str>, Option<&'static str>, Status, bool), DomainError>;
        let table: Vec<(NewConversation, Option<AccountRef>, Want)> = vec![
            (
                base(),
                channel_account.clone(),
                Ok((Some("A1"), Some("U9"), Status::New, false)),
            ),
            (base(), None, Ok((None, None, Status::New, false))),
            (
                NewConversation {
                    owner: Some("U2".into()),
                    ..base()
                },
                channel_account.clone(),
                Ok((Some("A1"), Some("U2"), Status::New, false)),
            ),
            (
                NewConversation {
                    account_id: Some("A2".into()),
                    ..base()
                },
                channel_account.clone(),
                Ok((Some("A2"), None, Status::New, false)),
            ),
            (
                NewConversation {
                    status: Some(Status::Closed),
                    ..base()
                },
                None,
                Ok((None, None, Status::Closed, true)),
            ),
            (
                NewConversation {
                    status: Some(Status::OnHold),
                    ..base()
                },
                None,
                Err(DomainError::Refused(status::Refusal::OnHoldWithoutIssue)),
            ),
            (
                NewConversation {
                    status: Some(Status::OnHold),
                    linked_issue: Some(issue()),
                    ..base()
                },
                None,
                Ok((None, None, Status::OnHold, true)),
            ),
        ];
        for (i, (new, account, want)) in table.into_iter().enumerate() {
            let got = build_conversation(new, account, &Actor::Human("U1".into()), at(0)).map(|(c, e)| {
                assert_eq!(c.closed_at.is_some(), c.status == Status::Closed, "row {i}");
                (
                    c.account_id.clone(),
                    c.owner.clone(),
                    c.status,
                    e.is_some_and(|e| e.after.as_deref() == Some(c.status.as_str())),
                )
            });
            let want = want.map(|(a, o, s, e)| (a.map(Into::into), o.map(Into::into), s, e));
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn patch_table() {
        let human = Actor::Human("U1".into());
        let on_hold = || {
            let mut c = conv();
            c.linked_issue = Some(issue());
            c.status = Status::OnHold;
            c
        };
        // (conversation, patch, want: Ok(event kinds) or the error)
        let table: Vec<(
            Conversation,
            ConversationPatch,
            Result<Vec<EventKind>, DomainError>,
        )> = vec![
            (conv(), ConversationPatch::default(), Ok(vec![])),
            (
                conv(),
                ConversationPatch {
                    title: Some("renamed".into()),
                    ..Default::default()
                },
                Ok(vec![]),
            ),
            (
                conv(),
                ConversationPatch {
                    status: Some(Status::OnHold),
                    ..Default::default()
                },
                Err(DomainError::Refused(status::Refusal::OnHoldWithoutIssue)),
            ),
            (
                conv(),
                ConversationPatch {
                    status: Some(Status::OnHold),
                    linked_issue: Some(Some(issue())),
                    ..Default::default()
                },
                Ok(vec![EventKind::Status]),
            ),
            (
                conv(),
                ConversationPatch {
                    status: Some(Status::Closed),
                    owner: Some(None),
                    priority: Some(Priority::High),
                    ..Default::default()
                },
                Ok(vec![EventKind::Status, EventKind::Owner, EventKind::Priority]),
            ),
            // Unchanged values record nothing.
            (
                conv(),
                ConversationPatch {
                    status: Some(Status::New),
                    owner: Some(Some("U9".into())),
                    priority: Some(Priority::None),
                    ..Default::default()
                },
                Ok(vec![]),
            ),
            (
                on_hold(),
                ConversationPatch {
                    linked_issue: Some(None),
                    ..Default::default()
                },
                Err(DomainError::invalid(
                    "linked_issue",
                    "an on_hold conversation needs its linked issue",
                )),
            ),
            (
                on_hold(),
                ConversationPatch {
                    status: Some(Status::InProgress),
                    linked_issue: Some(None),
                    ..Default::default()
                },
                Ok(vec![EventKind::Status]),
            ),
        ];
        for (i, (mut c, patch, want)) in table.into_iter().enumerate() {
            let got = apply_patch(&mut c, patch, &human, Some((ReplyLabel::InProgress, 0.7)), at(5));
            let kinds = got.map(|events| {
                for e in &events {
                    assert_eq!(e.actor, "human:U1", "row {i}");
                    let prediction = (e.model_label, e.model_score);
                    let want = match e.kind {
                        EventKind::Status => (Some(ReplyLabel::InProgress), Some(0.7)),
                        _ => (None, None),
                    };
                    assert_eq!(prediction, want, "row {i}");
                }
                events.iter().map(|e| e.kind).collect::<Vec<_>>()
            });
            assert_eq!(kinds, want, "row {i}");
            assert_eq!(c.closed_at.is_some(), c.status == Status::Closed, "row {i}");
        }
    }

    #[test]
    fn human_label_is_the_last_status_a_person_set() {
        let mut c = conv();
        let patch = ConversationPatch {
            status: Some(Status::Closed),
            priority: Some(Priority::Low),
            ..Default::default()
        };
        let events = apply_patch(&mut c, patch, &Actor::Human("U1".into()), None, at(1)).unwrap();
        assert_eq!(human_label(&events), Some(ReplyLabel::Closed));
        let patch = ConversationPatch {
            status: Some(Status::OnYou),
            ..Default::default()
        };
        let events = apply_patch(&mut c, patch, &Actor::Human("U1".into()), None, at(2)).unwrap();
        // on_you is not a reply label.
        assert_eq!(human_label(&events), None);
    }

    #[test]
    fn issue_closing_table() {
        // (status, has issue, want status, want event)
        let table = [
            (Status::OnHold, true, Status::OnYou, true),
            (Status::InProgress, true, Status::InProgress, false),
            (Status::Closed, true, Status::Closed, false),
            (Status::New, false, Status::New, false),
        ];
        for (from, has_issue, want, want_event) in table {
            let mut c = conv();
            c.status = from;
            c.linked_issue = has_issue.then(issue);
            let event = apply_issue_closed(&mut c, at(9));
            assert_eq!((c.status, event.is_some()), (want, want_event), "{from}");
            if let Some(e) = event {
                assert_eq!(e.actor, "rule:issue_closed");
            }
            if has_issue {
                assert_eq!(c.linked_issue.as_ref().unwrap().state, "closed");
                apply_issue_reopened(&mut c);
                assert_eq!(c.linked_issue.as_ref().unwrap().state, "open");
                assert_eq!(c.status, want, "reopening changes no status");
            }
        }
    }

    #[test]
    fn titles() {
        let long = "x".repeat(100);
        let table = [
            ("hello\nsecond line", "hello".to_owned()),
            ("  padded  ", "padded".to_owned()),
            ("", String::new()),
            (long.as_str(), format!("{}…", "x".repeat(80))),
        ];
        for (text, want) in table {
            assert_eq!(title_from(text), want, "{text}");
        }
    }
}
