//! Regrouping by hand: merging two conversations, moving a message to another one, splitting a
//! message out into a new one.

use super::account::AccountRef;
use super::conversation::{title_from, Conversation};
use super::error::DomainError;
use super::event::{Actor, Event, EventKind};
use super::message::Message;
use chrono::{DateTime, Utc};

/// Checks a merge before anything is loaded.
pub fn check_merge(from: &str, into: &str) -> Result<(), DomainError> {
    if from == into {
        return Err(DomainError::invalid(
            "into",
            "cannot merge a conversation into itself",
        ));
    }
    Ok(())
}

/// Folds `from` into `into` (the earliest times and the issue of either survive) and returns the
/// grouping event; `from` is deleted by the caller once its messages and events are moved.
pub fn apply_merge(into: &mut Conversation, from: &Conversation, actor: &Actor, now: DateTime<Utc>) -> Event {
    into.created_at = into.created_at.min(from.created_at);
    into.first_response_at = match (into.first_response_at, from.first_response_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if into.linked_issue.is_none() {
        into.linked_issue = from.linked_issue.clone();
    }
    into.message_count += from.message_count;
    Event::new(
        &into.id,
        EventKind::Grouping,
        actor,
        Some(from.id.clone()),
        Some(into.id.clone()),
        now,
    )
}

/// Checks a move of `message` to `to` (`None`: split into a new conversation).
pub fn check_move(message: &Message, to: Option<&str>) -> Result<(), DomainError> {
    if to == Some(message.conversation_id.as_str()) {
        return Err(DomainError::invalid(
            "conversation_id",
            "the message is already in that conversation",
        ));
    }
    Ok(())
}

/// A new conversation for a message split out of its conversation.
pub fn split_conversation(
    message: &Message,
    sent_at: DateTime<Utc>,
    account: Option<AccountRef>,
) -> Conversation {
    Conversation::open(&message.channel, title_from(&message.text), account, sent_at)
}

/// Moves `message` from `source` to `target`: the counts follow, and each side records a grouping
/// event caused by the message.
pub fn apply_move(
    message: &mut Message,
    source: &mut Conversation,
    target: &mut Conversation,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Vec<Event> {
    source.message_count -= 1;
    target.message_count += 1;
    message.conversation_id = target.id.clone();
    [&source.id, &target.id]
        .into_iter()
        .map(|id| {
            Event::new(
                id,
                EventKind::Grouping,
                actor,
                Some(source.id.clone()),
                Some(target.id.clone()),
                now,
            )
            .caused_by(&message.id)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::conversation::tests::{at, conv, issue};
    use super::super::status::Status;
    use super::*;

    #[test]
    fn merge_keeps_the_earliest_times_and_either_issue() {
        assert!(check_merge("a", "a").is_err());
        assert!(check_merge("a", "b").is_ok());
        // (into: created, first response, issue), (from: ...), want (created, first response, issue)
        type Side = (i64, Option<i64>, bool);
        let table: [(Side, Side, Side); 4] = [
            ((10, None, false), (5, Some(7), true), (5, Some(7), true)),
            ((5, Some(9), true), (10, Some(8), false), (5, Some(8), true)),
            ((5, Some(6), false), (10, None, false), (5, Some(6), false)),
            ((5, None, false), (10, None, false), (5, None, false)),
        ];
        for (into_side, from_side, want) in table {
            let make = |(created, first, has_issue): Side, count| {
                let mut c = conv();
                c.created_at = at(created);
                c.first_response_at = first.map(at);
                c.linked_issue = has_issue.then(issue);
                c.message_count = count;
                c
            };
            let mut into = make(into_side, 2);
            let from = make(from_side, 3);
            let event = apply_merge(&mut into, &from, &Actor::Human("U1".into()), at(20));
            let got = (
                into.created_at,
                into.first_response_at,
                into.linked_issue.is_some(),
            );
            assert_eq!(got, (at(want.0), want.1.map(at), want.2));
            assert_eq!(into.message_count, 5);
            assert_eq!(
                (
                    event.kind,
                    event.conversation_id.as_str(),
                    event.before.as_deref()
                ),
                (EventKind::Grouping, into.id.as_str(), Some(from.id.as_str()))
            );
        }
    }

    #[test]
    fn move_and_split() {
        let mut source = conv();
        source.message_count = 2;
        let mut message = Message {
            id: "M1".into(),
            conversation_id: source.id.clone(),
            channel: "C1".into(),
            ts: "1700000000.000000".into(),
            thread_ts: None,
            user: "U1".into(),
            role: super::super::Role::Customer,
            text: "second question\nmore".into(),
            files: Vec::new(),
            edited: false,
            deleted: false,
            label: None,
            score: None,
        };
        assert!(check_move(&message, Some(&source.id)).is_err());
        assert!(check_move(&message, None).is_ok());
        let account = AccountRef {
            id: "A1".into(),
            owner: None,
        };
        let mut target = split_conversation(&message, at(3), Some(account));
        assert_eq!(
            (
                target.title.as_str(),
                target.status,
                target.created_at,
                target.account_id.as_deref()
            ),
            ("second question", Status::New, at(3), Some("A1"))
        );
        let events = apply_move(
            &mut message,
            &mut source,
            &mut target,
            &Actor::Human("U1".into()),
            at(4),
        );
        assert_eq!((source.message_count, target.message_count), (1, 1));
        assert_eq!(message.conversation_id, target.id);
        let sides: Vec<_> = events.iter().map(|e| e.conversation_id.clone()).collect();
        assert_eq!(sides, [source.id.clone(), target.id.clone()]);
        assert!(events.iter().all(|e| e.message_id.as_deref() == Some("M1")
            && e.before.as_deref() == Some(source.id.as_str())
            && e.after.as_deref() == Some(target.id.as_str())));
    }
}
