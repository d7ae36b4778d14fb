//! The core routes a Slack edge uses besides the ticket API: `GET /v1/events` (the committed
//! changes as server-sent events, resumed with `Last-Event-ID`), edits and deletions at the
//! source (`PATCH`/`DELETE /v1/channels/{channel}/messages/{ts}`) and notes with their Slack
//! message (added once).

use std::time::Duration;

use reqwest::Response;
use serde_json::{json, Value};

use crate::tickets::helpers::{
    assert_error, on_both_backends, send, spawn_app, Backend, TestApp, AGENT, TOKEN,
};

on_both_backends!(
    the_event_stream_resumes_after_the_last_event_or_says_it_cannot,
    edits_deletes_and_slack_notes_cross_by_channel_and_ts
);

/// Reads the stream until `done` holds for what arrived so far.
async fn read_until(stream: &mut Response, seen: &mut String, done: impl Fn(&str) -> bool) {
    while !done(seen) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no more events; so far:\n{seen}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended; so far:\n{seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// The id of the last event whose data contains `needle`.
fn id_of(seen: &str, needle: &str) -> String {
    seen.split("\n\n")
        .filter(|e| e.contains(needle))
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("id:")))
        .last()
        .unwrap_or_else(|| panic!("no event with {needle} in:\n{seen}"))
        .trim()
        .to_string()
}

async fn open(app: &TestApp, last: Option<&str>) -> Response {
    let mut req = app.get("/v1/events");
    if let Some(id) = last {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    resp
}

fn customer(ts: &str, text: &str) -> Value {
    json!({"channel": "CEDGE", "ts": ts, "user": "UCUST", "text": text})
}

async fn the_event_stream_resumes_after_the_last_event_or_says_it_cannot(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // The API's token, like every /v1 route.
    let (status, body) = send(app.client.get(format!("{}/v1/events", app.address))).await;
    assert_error(status, &body, 401);

    let mut stream = open(&app, None).await;
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, |s| s.contains("event: hello")).await;
    assert!(!seen.contains("event: lagged"), "{seen}");
    assert_eq!(
        app.message(customer("1700000000.000100", "first question"))
            .await
            .0,
        201
    );
    // Its creation, then the message added (the last change it causes with the stand-in models).
    read_until(&mut stream, &mut seen, |s| {
        s.contains("\"type\":\"message_added\"")
    })
    .await;
    // Whole changes, as JSON, each with an id.
    let created = seen
        .split("\n\n")
        .find(|e| e.contains("\"type\":\"conversation_created\""))
        .expect("a conversation_created event");
    let data: Value = serde_json::from_str(
        created
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(data["conversation"]["channel"], "CEDGE");
    let last = id_of(&seen, "\"type\":\"message_added\"");
    drop(stream);

    // Changes made while the client was away come first when it comes back.
    assert_eq!(
        app.message(customer("1700000100.000100", "second question"))
            .await
            .0,
        201
    );
    let mut again = open(&app, Some(&last)).await;
    let mut replay = String::new();
    read_until(&mut again, &mut replay, |s| s.contains("second question")).await;
    assert!(!replay.contains("event: lagged"), "{replay}");
    assert!(!replay.contains("first question"), "nothing repeated:\n{replay}");

    // A position from another process (a restarted core): `lagged`, re-read.
    let mut foreign = open(&app, Some("not-this-epoch:3")).await;
    let mut said = String::new();
    read_until(&mut foreign, &mut said, |s| s.contains("event: lagged")).await;
}

async fn edits_deletes_and_slack_notes_cross_by_channel_and_ts(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (_, ingested) = app
        .message(customer("1700000000.000100", "The export fails"))
        .await;
    let id = ingested["conversation"]["id"].as_str().unwrap().to_string();
    let at = |ts: &str| format!("{}/v1/channels/CEDGE/messages/{ts}", app.address);

    let edit = |ts: &str, text: &str| {
        app.client
            .patch(at(ts))
            .bearer_auth(TOKEN)
            .json(&json!({ "text": text }))
    };
    let (status, body) = send(edit("1700000000.000100", "The CSV export fails")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["changed"].as_bool(), body["message"]["edited"].as_bool()),
        (Some(true), Some(true))
    );
    let (_, body) = send(edit("1700000000.000100", "The CSV export fails")).await;
    assert_eq!(body["changed"], false);
    // Never stored: 404 naming no field (not the "no such route" 404).
    let (status, body) = send(edit("1600000000.000000", "x")).await;
    assert!(assert_error(status, &body, 404)["field"].is_null(), "{body}");
    let (status, body) = send(edit("yesterday", "x")).await;
    assert_eq!(assert_error(status, &body, 422)["field"], "ts");

    let delete = |ts: &str| app.client.delete(at(ts)).bearer_auth(TOKEN);
    let (status, body) = send(delete("1700000000.000100")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["deleted"], true);
    assert_eq!(send(delete("1600000000.000000")).await.0, 404);

    // A card-thread reply: 201, then 200 with the same note when Slack sends it again.
    let note = json!({"text": "legacy plan", "slack": {"channel": "CTRIAGE", "ts": "1700000200.000300"}});
    let add = || {
        app.post(&format!("/v1/conversations/{id}/notes"), &note)
            .header("x-triage-user", AGENT)
    };
    let (status, first) = send(add()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["author"], AGENT);
    let (status, second) = send(add()).await;
    assert_eq!((status, &second["id"]), (200, &first["id"]), "{second}");
    let (_, notes) = send(app.get(&format!("/v1/conversations/{id}/notes"))).await;
    assert_eq!(notes["items"].as_array().unwrap().len(), 1, "{notes}");
}
