//! One validation layer, the same answers on SQLite and PostgreSQL. Each case here was a 500 on
//! PostgreSQL, a silently stored value, or an inconsistent answer on main before issue 16 (checked
//! against main's `triage serve`: see the commit message).

use serde_json::{json, Value};

use crate::tickets::helpers::{assert_error, on_both_backends, send, spawn_app, Backend, TestApp, TOKEN};

on_both_backends!(
    nul_characters_are_refused_everywhere,
    long_identifiers_are_refused,
    loose_inputs_are_refused,
    linked_issues_are_checked,
    cursors_are_tied_to_their_query,
    errors_speak_to_users
);

fn message(channel: &str, ts: &str, user: &str, text: &str) -> Value {
    json!({"channel": channel, "ts": ts, "user": user, "text": text})
}

/// Asserts a 422 naming `field`.
fn refused(code: u16, body: &Value, field: &str) {
    let err = assert_error(code, body, 422);
    assert_eq!(err["field"], field, "{body}");
    let m = err["message"].as_str().unwrap();
    assert!(
        !m.is_empty() && !m.contains("struct ") && !m.contains("enum "),
        "{m}"
    );
}

async fn conversation(app: &TestApp) -> String {
    let (code, body) = app
        .message(message("CVAL", "1700000000.000100", "U1", "help please"))
        .await;
    assert_eq!(code, 201, "{body}");
    body["conversation"]["id"].as_str().unwrap().to_owned()
}

async fn nul_characters_are_refused_everywhere(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let id = conversation(&app).await;
    for (query, field) in [
        ("q=%00", "q"),
        ("owner=a%00b", "owner"),
        ("channel=%00", "channel"),
    ] {
        let (code, body) = send(app.get(&format!("/v1/conversations?{query}"))).await;
        refused(code, &body, field);
    }
    let (code, body) = send(app.get("/v1/conversations/ab%00cd")).await;
    refused(code, &body, "path");
    for field in ["text", "channel", "user"] {
        let mut m = message("CVAL", "1700000001.000100", "U1", "hello");
        m[field] = json!("a\u{0}b");
        let (code, body) = app.message(m).await;
        refused(code, &body, field);
    }
    let (code, body) = send(app.patch(&format!("/v1/conversations/{id}"), &json!({"owner": "U\u{0}"}))).await;
    refused(code, &body, "owner");
    let (code, body) = send(app.post(
        "/v1/accounts",
        &json!({"name": "A", "channels": ["C1", "C\u{0}"]}),
    ))
    .await;
    refused(code, &body, "channels[1]");
    // /v1/group reads the same body through the same checks (before any model is needed).
    let (code, body) = send(app.post("/v1/group", &message("C", "1700000000", "U", "x\u{0}"))).await;
    refused(code, &body, "text");
    // Nothing was stored: the one conversation is all there is.
    let (_, list) = send(app.get("/v1/conversations")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

async fn long_identifiers_are_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let id = conversation(&app).await;
    let long = "C".repeat(100_000);
    let (code, body) = app
        .message(message(&long, "1700000001.000100", "U1", "hello"))
        .await;
    refused(code, &body, "channel");
    let (code, body) = app
        .message(message("CVAL", "1700000001.000100", &long, "hello"))
        .await;
    refused(code, &body, "user");
    let (code, body) = send(app.patch(&format!("/v1/conversations/{id}"), &json!({"owner": long}))).await;
    refused(code, &body, "owner");
    let (code, body) = send(app.patch(
        &format!("/v1/conversations/{id}"),
        &json!({"title": "t".repeat(501)}),
    ))
    .await;
    refused(code, &body, "title");
    // (A URL cannot carry 100,000 characters through the client; 10,000 will do.)
    let (code, body) = send(app.get(&format!("/v1/conversations?owner={}", &long[..10_000]))).await;
    refused(code, &body, "owner");
    let (code, body) = send(app.post("/v1/accounts", &json!({"name": "n".repeat(256)}))).await;
    refused(code, &body, "name");
    let (code, body) = app
        .message(message("CVAL", "1700000001.000100", "U1", &"x".repeat(40_001)))
        .await;
    refused(code, &body, "text");
    // The limits themselves are accepted, on both backends.
    let at_limit = "C".repeat(255);
    let (code, body) = app
        .message(message(
            &at_limit,
            "1700000001.000100",
            &"U".repeat(255),
            &"é".repeat(40_000),
        ))
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = send(app.patch(
        &format!("/v1/conversations/{id}"),
        &json!({"owner": "O".repeat(255)}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
}

async fn loose_inputs_are_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for (ts, text, field) in [
        (json!("1700000000.000100"), json!(""), "text"),
        (json!("1700000000.000100"), json!(" \n\t "), "text"),
        (json!("0"), json!("hi"), "ts"),
        (json!("1.7e9"), json!("hi"), "ts"),
        (json!(1e308), json!("hi"), "ts"),
        (json!("-5"), json!("hi"), "ts"),
    ] {
        let body = json!({"channel": "C", "ts": ts, "user": "U", "text": text});
        let (code, resp) = app.message(body.clone()).await;
        refused(code, &resp, field);
        // /v1/group parses the same body with the same function.
        let (code, resp) = send(app.post("/v1/group", &body)).await;
        refused(code, &resp, field);
    }
    let (_, list) = send(app.get("/v1/conversations")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    // The bearer scheme is case-insensitive (RFC 9110).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = app
            .client
            .get(format!("{}/v1/conversations", app.address))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
}

async fn linked_issues_are_checked(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let id = conversation(&app).await;
    let path = format!("/v1/conversations/{id}");
    for (issue, field) in [
        (
            json!({"url": "not a url", "provider": "bogus"}),
            "linked_issue.url",
        ),
        (
            json!({"url": "https://github.com/o/r/issues/1", "provider": "bogus"}),
            "linked_issue.provider",
        ),
        (
            json!({"url": "https://github.com/o/r/issues/1", "state": "done"}),
            "linked_issue.state",
        ),
        (json!({"url": "javascript:alert(1)"}), "linked_issue.url"),
    ] {
        let (code, body) = send(app.patch(&path, &json!({"status": "on_hold", "linked_issue": issue}))).await;
        refused(code, &body, field);
    }
    let (_, conv) = send(app.get(&path)).await;
    assert_eq!(conv["status"], "new", "{conv}");
    let good = json!({"url": "https://github.com/o/r/issues/1", "provider": "github", "key": "o/r#1"});
    let (code, body) = send(app.patch(&path, &json!({"status": "on_hold", "linked_issue": good}))).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("on_hold")), "{body}");
    let (code, body) = send(app.post(
        "/v1/conversations",
        &json!({"channel": "C9", "linked_issue": {"url": "ftp://x/1"}}),
    ))
    .await;
    refused(code, &body, "linked_issue.url");
}

async fn cursors_are_tied_to_their_query(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for i in 0..3u64 {
        let ts = format!("{}.000100", 1_700_000_000 + i * 1000);
        let (code, _) = app
            .message(message("CCUR", &ts, &format!("U{i}"), "a question"))
            .await;
        assert_eq!(code, 201);
    }
    let (_, page) = send(app.get("/v1/conversations?channel=CCUR&limit=1")).await;
    let cursor = page["next_cursor"].as_str().expect("a next page").to_owned();
    let (code, next) =
        send(app.get(&format!("/v1/conversations?channel=CCUR&limit=1&cursor={cursor}"))).await;
    assert_eq!(code, 200, "{next}");
    assert_ne!(next["items"][0]["id"], page["items"][0]["id"]);
    // The same cursor with other filters, or on another list, is refused.
    for query in [
        format!("/v1/conversations?channel=COTHER&limit=1&cursor={cursor}"),
        format!("/v1/conversations?limit=1&cursor={cursor}"),
        format!("/v1/conversations?channel=CCUR&q=question&limit=1&cursor={cursor}"),
    ] {
        let (code, body) = send(app.get(&query)).await;
        assert_eq!(assert_error(code, &body, 400)["field"], "cursor", "{query}");
    }
    let id = page["items"][0]["id"].as_str().unwrap();
    let (code, body) = send(app.get(&format!("/v1/conversations/{id}/events?cursor={cursor}"))).await;
    assert_eq!(assert_error(code, &body, 400)["field"], "cursor");
}

async fn errors_speak_to_users(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // The generic issue webhook body of the wrong shape (was "expected struct GenericEvent").
    let (code, body) = send(app.post("/v1/webhooks/issues", &json!("closed"))).await;
    refused(code, &body, "body");
    let (code, body) = send(app.post("/v1/webhooks/issues", &json!({"url": "https://x/1"}))).await;
    refused(code, &body, "state");
    let (code, body) = app
        .message(json!({"channel": "C", "ts": true, "user": "U", "text": "x"}))
        .await;
    refused(code, &body, "ts");
    let (code, body) = app.message(json!({"channel": "C", "ts": "1", "user": "U"})).await;
    refused(code, &body, "text");
    // Every error has the three keys.
    for (code, body) in [
        send(app.get("/v1/conversations/nope")).await,
        send(app.get("/v1/nowhere")).await,
        send(app.post("/v1/embed", &json!({"inputs": []}))).await,
        send(app.post("/v1/classify", &json!({"text": ""}))).await,
    ] {
        let err = &body["error"];
        assert!(
            code >= 400 && err["code"].is_string() && err["message"].is_string(),
            "{body}"
        );
        assert!(err.as_object().unwrap().contains_key("field"), "{body}");
    }
}
