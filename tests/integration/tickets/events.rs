//! The event bus: what the pipeline and the ticket operations publish after each commit, and
//! that nothing is published for a replay or a refused change.

use crate::tickets::helpers::{on_both_backends, Backend, KeywordClassifier, TestDb, TestGrouper, AGENT};
use std::sync::Arc;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::broadcast::Receiver;
use triage::domain::{
    Actor, Change, ConversationPatch, IncomingMessage, IssueChange, LinkedIssue, NewConversation, Priority,
    Role, Status,
};
use triage::pipeline::Pipeline;
use triage::store;

on_both_backends!(every_committed_change_is_published_once_in_order);

fn msg(ts: &str, user: &str, role: Role, text: &str, thread_ts: Option<&str>) -> IncomingMessage {
    IncomingMessage {
        channel: "CEVENTS".into(),
        ts: ts.into(),
        thread_ts: thread_ts.map(Into::into),
        user: user.into(),
        role,
        text: text.into(),
        files: Vec::new(),
        embedding: None,
    }
}

/// Everything published so far.
fn drain(rx: &mut Receiver<Change>) -> Vec<Change> {
    let mut changes = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(change) => changes.push(change),
            Err(TryRecvError::Empty) => return changes,
            Err(e) => panic!("{e}"),
        }
    }
}

fn types(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| {
            serde_json::to_value(c).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn every_committed_change_is_published_once_in_order(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let store = store::connect(&db.url).await.unwrap();
    let pipeline = Pipeline::new(store, Arc::new(KeywordClassifier), Arc::new(TestGrouper));
    let mut rx = pipeline.events().subscribe();
    let person = || Actor::Human("ULEAD".into());

    // A customer's message opens a conversation.
    let root = msg(
        "1700000000.000000",
        "UCUST",
        Role::Customer,
        "the export fails",
        None,
    );
    let first = pipeline.ingest(root.clone()).await.unwrap();
    let c1 = first.conversation.id.clone();
    let changes = drain(&mut rx);
    assert_eq!(types(&changes), ["conversation_created", "message_added"]);
    assert_eq!(changes[1].conversation_id(), c1);

    // A team reply in its thread; the model moves the conversation to in_progress.
    let reply = msg(
        "1700000010.000000",
        AGENT,
        Role::Agent,
        "looking into it",
        Some("1700000000.000000"),
    );
    let reply = pipeline.ingest(reply).await.unwrap();
    let changes = drain(&mut rx);
    assert_eq!(types(&changes), ["message_added", "status_changed"]);
    assert_eq!(
        changes[1],
        Change::StatusChanged {
            conversation_id: c1.clone(),
            from: Status::New,
            to: Status::InProgress,
            actor: "model".into(),
            message_id: Some(reply.message.id.clone()),
        }
    );

    // A replay changes nothing and publishes nothing.
    assert!(!pipeline.ingest(root).await.unwrap().created);
    assert_eq!(drain(&mut rx), []);

    // A person's patch: one change per field, with the person as actor.
    let patch = ConversationPatch {
        status: Some(Status::Closed),
        owner: Some(Some("UOWNER".into())),
        priority: Some(Priority::High),
        ..Default::default()
    };
    pipeline.update_conversation(&c1, patch, person()).await.unwrap();
    let changes = drain(&mut rx);
    assert_eq!(
        types(&changes),
        ["status_changed", "owner_changed", "priority_changed"]
    );
    assert!(matches!(
        &changes[2],
        Change::PriorityChanged { from: Priority::None, to: Priority::High, actor, .. }
            if actor == "human:ULEAD"
    ));

    // A refused change publishes nothing.
    let on_hold = ConversationPatch {
        status: Some(Status::OnHold),
        ..Default::default()
    };
    assert!(pipeline
        .update_conversation(&c1, on_hold, person())
        .await
        .is_err());
    assert_eq!(drain(&mut rx), []);

    // Split the reply out, then merge it back.
    let (_, split) = pipeline
        .move_message(&reply.message.id, None, person())
        .await
        .unwrap();
    let changes = drain(&mut rx);
    let [Change::Moved {
        message,
        from,
        to,
        actor,
    }] = &changes[..]
    else {
        panic!("{changes:?}");
    };
    assert_eq!(
        (
            message.id.as_str(),
            from.id.as_str(),
            to.id.as_str(),
            actor.as_str()
        ),
        (
            reply.message.id.as_str(),
            c1.as_str(),
            split.id.as_str(),
            "human:ULEAD"
        )
    );
    assert_eq!((from.message_count, to.message_count), (1, 1));
    pipeline
        .merge_conversations(&split.id, &c1, person())
        .await
        .unwrap();
    let changes = drain(&mut rx);
    let [Change::Merged { from, into, .. }] = &changes[..] else {
        panic!("{changes:?}");
    };
    assert_eq!(
        (from.as_str(), into.id.as_str(), into.message_count),
        (split.id.as_str(), c1.as_str(), 2)
    );

    // A conversation waiting on an issue is released when the issue closes.
    let url = "https://github.com/acme/app/issues/7";
    let new = NewConversation {
        channel: "CEVENTS".into(),
        title: "waiting".into(),
        status: Some(Status::OnHold),
        priority: None,
        owner: None,
        account_id: None,
        linked_issue: Some(LinkedIssue {
            url: url.into(),
            provider: None,
            key: None,
            state: "open".into(),
        }),
    };
    let waiting = pipeline.create_conversation(new, person()).await.unwrap();
    assert_eq!(types(&drain(&mut rx)), ["conversation_created", "status_changed"]);
    let change = IssueChange {
        url: Some(url.into()),
        provider: None,
        key: None,
        closed: true,
    };
    pipeline.issue_changed(&change).await.unwrap();
    assert_eq!(
        drain(&mut rx),
        [Change::StatusChanged {
            conversation_id: waiting.id.clone(),
            from: Status::OnHold,
            to: Status::OnYou,
            actor: "rule:issue_closed".into(),
            message_id: None,
        }]
    );

    pipeline.delete_conversation(&waiting.id).await.unwrap();
    assert_eq!(drain(&mut rx), [Change::ConversationDeleted { id: waiting.id }]);
}
