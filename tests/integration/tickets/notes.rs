//! Internal notes: added over HTTP and through the pipeline (as the Slack card thread does), listed
//! per conversation, never messages (not listed, counted, searched, classified or grouped), moved
//! by a merge, added once per Slack message.

use crate::tickets::helpers::{
    assert_error, on_both_backends, send, spawn_app, Backend, KeywordClassifier, TestApp, TestGrouper, AGENT,
};
use serde_json::{json, Value};
use std::sync::Arc;
use triage::domain::{Change, NewNote, SlackRef};
use triage::pipeline::Pipeline;
use triage::store;

on_both_backends!(
    notes_are_never_messages,
    slack_notes_are_added_once_and_follow_a_merge
);

const CHANNEL: &str = "CNOTES";

async fn ingest(app: &TestApp, ts: &str, user: &str, text: &str) -> Value {
    let (code, body) = app
        .message(json!({"channel": CHANNEL, "ts": ts, "user": user, "text": text}))
        .await;
    assert_eq!(code, 201, "{body}");
    body
}

async fn notes(app: &TestApp, id: &str) -> Vec<Value> {
    let (code, body) = send(app.get(&format!("/v1/conversations/{id}/notes"))).await;
    assert_eq!(code, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn notes_are_never_messages(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let first = ingest(&app, "1700000000.000000", "UCUST", "Invoices are missing").await;
    let id = first["conversation"]["id"].as_str().unwrap().to_owned();
    // A note that reads like a closing reply must not close anything.
    let (code, note) = send(
        app.post(
            &format!("/v1/conversations/{id}/notes"),
            &json!({"text": "Fixed and resolved, closing (internal: billing job was stuck)"}),
        )
        .header("x-triage-user", AGENT),
    )
    .await;
    assert_eq!(code, 201, "{note}");
    assert_eq!(
        (&note["kind"], &note["author"], &note["conversation_id"]),
        (&json!("note"), &json!(AGENT), &json!(id))
    );
    let listed = notes(&app, &id).await;
    assert_eq!(listed, vec![note.clone()]);
    let (_, conv) = send(app.get(&format!("/v1/conversations/{id}"))).await;
    assert_eq!(
        (&conv["status"], &conv["message_count"]),
        (&json!("new"), &json!(1))
    );
    let (_, msgs) = send(app.get(&format!("/v1/conversations/{id}/messages"))).await;
    assert_eq!(msgs["items"].as_array().unwrap().len(), 1);
    let (_, events) = send(app.get(&format!("/v1/conversations/{id}/events"))).await;
    assert_eq!(events["items"], json!([]));
    let (_, found) = send(app.get("/v1/conversations?q=stuck")).await;
    assert_eq!(
        found["items"],
        json!([]),
        "notes are not searched as customer text"
    );
    // The next customer message groups and moves status as if the note did not exist.
    let second = ingest(&app, "1700000030.000000", "UCUST", "Any news?").await;
    assert_eq!(second["conversation"]["id"], json!(id));
    assert_eq!(second["conversation"]["status"], "new");

    // Bad input: named errors; an unknown conversation: 404.
    let bad = [
        (json!({"text": "  "}), 422, Some("text")),
        (json!({"text": "x".repeat(40_001)}), 422, Some("text")),
        (json!({"text": "x", "to_customer": true}), 422, None),
        (json!({}), 422, None),
    ];
    for (body, want, field) in bad {
        let (code, err) = send(app.post(&format!("/v1/conversations/{id}/notes"), &body)).await;
        let err = assert_error(code, &err, want);
        if let Some(field) = field {
            assert_eq!(err["field"], field, "{body}");
        }
    }
    let (code, err) = send(app.post("/v1/conversations/nope/notes", &json!({"text": "x"}))).await;
    assert_error(code, &err, 404);
    let (code, err) = send(app.get("/v1/conversations/nope/notes")).await;
    assert_error(code, &err, 404);
    assert_eq!(notes(&app, &id).await.len(), 1);
}

async fn slack_notes_are_added_once_and_follow_a_merge(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let store = store::connect(&app.db.url).await.unwrap();
    let pipeline = Pipeline::new(store, Arc::new(KeywordClassifier), Arc::new(TestGrouper));
    let mut rx = pipeline.events().subscribe();
    let a = ingest(&app, "1700001000.000000", "UCUST", "SSO login broken").await;
    let b = ingest(&app, "1700009000.000000", "UCUST", "SSO still broken").await;
    let (a, b) = (
        a["conversation"]["id"].as_str().unwrap().to_owned(),
        b["conversation"]["id"].as_str().unwrap().to_owned(),
    );
    assert_ne!(a, b);
    let from_card_thread = || NewNote {
        author: AGENT.into(),
        text: "Asked the IdP team".into(),
        slack: Some(SlackRef {
            channel: "CTRIAGE".into(),
            ts: "1700001500.000100".into(),
        }),
    };
    let (note, created) = pipeline.add_note(&a, from_card_thread()).await.unwrap();
    assert!(created);
    assert_eq!(note.created_at.timestamp(), 1_700_001_500);
    // Slack re-delivers the thread reply: the same note, not a second one.
    let (again, created) = pipeline.add_note(&a, from_card_thread()).await.unwrap();
    assert!(!created);
    assert_eq!(again, note);
    let published: Vec<Change> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(published, vec![Change::NoteAdded { note: note.clone() }]);
    assert_eq!(notes(&app, &a).await.len(), 1);
    // Merging a into b carries its notes along.
    let (code, body) = send(app.post(&format!("/v1/conversations/{a}/merge"), &json!({"into": b}))).await;
    assert_eq!(code, 200, "{body}");
    let moved = notes(&app, &b).await;
    assert_eq!(
        (moved.len(), &moved[0]["slack_ts"], &moved[0]["conversation_id"]),
        (1, &json!("1700001500.000100"), &json!(b))
    );
}
