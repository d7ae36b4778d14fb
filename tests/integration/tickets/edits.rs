//! A message edited or deleted at its source, and files kept on messages: through the pipeline's
//! operations (what the Slack adapter and the export import call) and read back over HTTP.

use crate::tickets::helpers::{on_both_backends, spawn_app, Backend, TestApp, AGENT};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::broadcast::error::TryRecvError;
use triage::domain::{Change, Status};
use triage::pipeline::Pipeline;
use triage::store;

use crate::tickets::helpers::{KeywordClassifier, TestGrouper};

on_both_backends!(
    an_edited_reply_moves_the_status_only_when_it_had_set_it,
    deleted_messages_are_tombstones,
    files_are_kept_and_listed
);

const CHANNEL: &str = "CEDITS";

async fn pipeline(app: &TestApp) -> Pipeline {
    let store = store::connect(&app.db.url).await.unwrap();
    Pipeline::new(store, Arc::new(KeywordClassifier), Arc::new(TestGrouper))
}

async fn post(app: &TestApp, ts: &str, user: &str, text: &str, thread_ts: Option<&str>) -> Value {
    let (code, body) = app
        .message(json!({"channel": CHANNEL, "ts": ts, "user": user, "text": text, "thread_ts": thread_ts}))
        .await;
    assert_eq!(code, 201, "{body}");
    body
}

async fn conversation(app: &TestApp, id: &str) -> Value {
    let (code, body) = crate::tickets::helpers::send(app.get(&format!("/v1/conversations/{id}"))).await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn messages(app: &TestApp, id: &str) -> Vec<Value> {
    let (code, body) =
        crate::tickets::helpers::send(app.get(&format!("/v1/conversations/{id}/messages"))).await;
    assert_eq!(code, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn events(app: &TestApp, id: &str) -> Vec<Value> {
    let (code, body) =
        crate::tickets::helpers::send(app.get(&format!("/v1/conversations/{id}/events"))).await;
    assert_eq!(code, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn an_edited_reply_moves_the_status_only_when_it_had_set_it(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let p = pipeline(&app).await;
    let mut rx = p.events().subscribe();
    let root = post(&app, "1700000000.000100", "UCUST", "Login fails on iOS", None).await;
    let id = root["conversation"]["id"].as_str().unwrap().to_owned();
    let thread = Some("1700000000.000100");
    post(&app, "1700000010.000000", AGENT, "Taking a look", thread).await;
    assert_eq!(conversation(&app, &id).await["status"], "in_progress");

    // The reply that set in_progress now says it is fixed: the status follows.
    let edited = p
        .edit_message(CHANNEL, "1700000010.000000", "It's fixed in 1.4")
        .await
        .unwrap()
        .expect("stored");
    assert!(edited.changed);
    assert_eq!(edited.conversation.status, Status::Closed);
    let conv = conversation(&app, &id).await;
    assert_eq!(conv["status"], "closed");
    assert!(conv["closed_at"].is_string());
    let msgs = messages(&app, &id).await;
    assert_eq!(
        (&msgs[1]["text"], &msgs[1]["edited"], &msgs[1]["label"]),
        (&json!("It's fixed in 1.4"), &json!(true), &json!("closed"))
    );
    let last = events(&app, &id).await.pop().unwrap();
    assert_eq!(
        (
            &last["actor"],
            &last["before"],
            &last["after"],
            &last["message_id"]
        ),
        (
            &json!("model"),
            &json!("in_progress"),
            &json!("closed"),
            &msgs[1]["id"]
        )
    );
    let published: Vec<Change> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(
        matches!(&published[..], [Change::MessageEdited { message, .. }, Change::StatusChanged { to: Status::Closed, actor, .. }]
            if message.text == "It's fixed in 1.4" && actor == "model"),
        "{published:?}"
    );
    // The same text again changes nothing and publishes nothing.
    let again = p
        .edit_message(CHANNEL, "1700000010.000000", "It's fixed in 1.4")
        .await
        .unwrap()
        .unwrap();
    assert!(!again.changed);
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);

    // A person reopens it: editing the old reply no longer moves the status.
    let (code, body) = crate::tickets::helpers::send(
        app.patch(&format!("/v1/conversations/{id}"), &json!({"status": "on_you"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    p.edit_message(CHANNEL, "1700000010.000000", "Still looking")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conversation(&app, &id).await["status"], "on_you");
    assert_eq!(messages(&app, &id).await[1]["label"], "in_progress");

    // A customer's edit changes the text (and the title it gave), never the status.
    let edited = p
        .edit_message(CHANNEL, "1700000000.000100", "Login fails on Android\nsince 2.0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(edited.message.label, None);
    let conv = conversation(&app, &id).await;
    assert_eq!(
        (&conv["status"], &conv["title"]),
        (&json!("on_you"), &json!("Login fails on Android"))
    );
    // The edited text is what search finds.
    let (_, found) = crate::tickets::helpers::send(app.get("/v1/conversations?q=Android")).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    // A message triage never stored.
    assert!(p
        .edit_message(CHANNEL, "1699999999.000000", "x")
        .await
        .unwrap()
        .is_none());
}

async fn deleted_messages_are_tombstones(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let p = pipeline(&app).await;
    let mut rx = p.events().subscribe();
    let root = post(&app, "1700000100.000000", "UCUST", "Export is empty", None).await;
    let id = root["conversation"]["id"].as_str().unwrap().to_owned();
    let deleted = p
        .delete_message(CHANNEL, "1700000100.000000")
        .await
        .unwrap()
        .expect("stored");
    assert!(deleted.changed && deleted.message.deleted);
    let msgs = messages(&app, &id).await;
    assert_eq!(msgs.len(), 1, "kept for the history");
    assert_eq!(
        (&msgs[0]["deleted"], &msgs[0]["text"]),
        (&json!(true), &json!("Export is empty"))
    );
    assert_eq!(conversation(&app, &id).await["message_count"], 1);
    assert!(matches!(
        &std::iter::from_fn(|| rx.try_recv().ok()).collect::<Vec<_>>()[..],
        [Change::MessageDeleted { message, .. }] if message.deleted
    ));
    // Slack may deliver the deletion twice: the second changes and publishes nothing.
    assert!(
        !p.delete_message(CHANNEL, "1700000100.000000")
            .await
            .unwrap()
            .unwrap()
            .changed
    );
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    assert!(p.delete_message(CHANNEL, "1.000000").await.unwrap().is_none());
    // A re-delivery of the original message does not resurrect it.
    let (code, body) = app
        .message(json!({"channel": CHANNEL, "ts": "1700000100.000000", "user": "UCUST", "text": "Export is empty"}))
        .await;
    assert_eq!((code, &body["message"]["deleted"]), (200, &json!(true)));
}

async fn files_are_kept_and_listed(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let files = json!([
        {"name": "crash.log", "permalink": "https://example.slack.com/files/U1/F1/crash.log"},
        {"name": "screenshot.png"}
    ]);
    // An attachment-only message opens a conversation titled after its files.
    let (code, body) = app
        .message(
            json!({"channel": CHANNEL, "ts": "1700000200.000000", "user": "UCUST", "text": "",
                        "files": files}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let want_files = json!([
        {"name": "crash.log", "permalink": "https://example.slack.com/files/U1/F1/crash.log"},
        {"name": "screenshot.png", "permalink": null}
    ]);
    assert_eq!(body["message"]["files"], want_files);
    assert_eq!(body["conversation"]["title"], "crash.log, screenshot.png");
    let id = body["conversation"]["id"].as_str().unwrap();
    // The replay resends the same body (a blank text without files is refused as input).
    let (code, replay) = app
        .message(
            json!({"channel": CHANNEL, "ts": "1700000200.000000", "user": "UCUST", "text": "",
                        "files": files}),
        )
        .await;
    assert_eq!((code, &replay["message"]["files"]), (200, &want_files));
    let listed = messages(&app, id).await;
    assert_eq!(listed[0]["files"], want_files);
    // Without files: an empty list.
    let plain = post(&app, "1700000300.000000", "UOTHER", "hello", None).await;
    assert_eq!(plain["message"]["files"], json!([]));
    // A file without a name is refused, naming it.
    let (code, body) = app
        .message(
            json!({"channel": CHANNEL, "ts": "1700000400.000000", "user": "UCUST", "text": "",
                        "files": [{"permalink": "https://x"}]}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
}
