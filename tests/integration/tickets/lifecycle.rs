//! A conversation walked through every status via the API, with the refusals along the way.

use crate::tickets::helpers::{assert_error, on_both_backends, send, spawn_app, Backend, AGENT, TOKEN};
use serde_json::{json, Value};

on_both_backends!(walks_every_status, refuses_bad_requests);

fn at(secs: u64) -> String {
    format!("{}.000100", 1_700_000_000 + secs)
}

fn customer(ts: &str, thread_ts: Option<&str>, text: &str) -> Value {
    json!({"channel": "C1", "ts": ts, "thread_ts": thread_ts, "user": "UCUST", "text": text})
}

fn agent(ts: &str, thread_ts: &str, text: &str) -> Value {
    json!({"channel": "C1", "ts": ts, "thread_ts": thread_ts, "user": AGENT, "text": text})
}

async fn walks_every_status(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let root = at(0);

    let (code, first) = app
        .message(customer(&root, None, "Login is broken since this morning"))
        .await;
    assert_eq!(code, 201, "{first}");
    let conv = first["conversation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(first["conversation"]["status"], "new");
    assert_eq!(
        first["conversation"]["title"],
        "Login is broken since this morning"
    );
    assert_eq!(first["message"]["role"], "customer");
    assert_eq!(first["reasons"][0]["signal"], "time");

    // Replaying (channel, ts) changes nothing and answers with the stored message; a numeric ts is the same ts.
    let (code, replay) = app
        .message(json!({"channel": "C1", "ts": 1_700_000_000.000_1, "user": "UCUST", "text": "x"}))
        .await;
    assert_eq!((code, &replay["message"]["id"]), (200, &first["message"]["id"]));

    let (_, body) = app
        .message(agent(&at(60), &root, "Taking a look, can you send the logs?"))
        .await;
    assert_eq!(body["conversation"]["status"], "in_progress");
    assert_eq!(body["message"]["label"], "in_progress");
    assert_eq!(
        body["conversation"]["first_response_at"],
        "2023-11-14T22:14:20.000100Z"
    );

    let (_, body) = app
        .message(customer(&at(120), Some(&root), "Here they are"))
        .await;
    assert_eq!(
        (
            body["conversation"]["id"].as_str(),
            body["conversation"]["status"].as_str()
        ),
        (Some(&*conv), Some("on_you"))
    );

    let path = format!("/v1/conversations/{conv}");
    let (code, body) = send(app.patch(&path, &json!({"status": "on_hold"}))).await;
    assert_eq!(assert_error(code, &body, 422)["field"], "status");

    let issue = json!({"url": "https://github.com/acme/app/issues/7", "provider": "github", "key": "acme/app#7", "state": "open"});
    let (code, body) = send(
        app.patch(&path, &json!({"status": "on_hold", "linked_issue": issue}))
            .header("x-triage-user", "U7"),
    )
    .await;
    assert_eq!((code, body["status"].as_str()), (200, Some("on_hold")), "{body}");

    // A progress update keeps waiting on the issue.
    let (_, body) = app
        .message(agent(&at(180), &root, "Still waiting on engineering"))
        .await;
    assert_eq!(body["conversation"]["status"], "on_hold");

    let hook = json!({"url": "https://github.com/acme/app/issues/7", "state": "closed"});
    let (code, body) = send(app.post("/v1/webhooks/issues", &hook)).await;
    assert_eq!(
        (code, body["conversations"][0]["status"].as_str()),
        (200, Some("on_you")),
        "{body}"
    );

    let (_, body) = app.message(agent(&at(240), &root, "Fixed in 1.4, closing")).await;
    assert_eq!(body["conversation"]["status"], "closed");
    assert!(body["conversation"]["closed_at"].is_string());

    // A reply in the thread reopens it.
    let (_, body) = app
        .message(customer(&at(250), Some(&root), "Still broken for me"))
        .await;
    assert_eq!(
        (
            body["conversation"]["id"].as_str(),
            body["conversation"]["status"].as_str()
        ),
        (Some(&*conv), Some("on_you"))
    );
    assert!(body["conversation"]["closed_at"].is_null());

    let (_, body) = app.message(agent(&at(260), &root, "Resolved now")).await;
    assert_eq!(body["conversation"]["status"], "closed");

    // Outside the thread, the grouper's pick of a closed conversation starts a new one instead.
    let (code, body) = app.message(customer(&at(270), None, "Another question")).await;
    assert_eq!(code, 201);
    assert_ne!(body["conversation"]["id"].as_str(), Some(&*conv));
    assert_eq!(body["conversation"]["status"], "new");

    // A human's change always wins.
    let patch = json!({"status": "in_progress", "owner": "U7", "priority": "high"});
    let (code, body) = send(app.patch(&path, &patch).header("x-triage-user", "U7")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (
            body["status"].as_str(),
            body["owner"].as_str(),
            body["priority"].as_str()
        ),
        (Some("in_progress"), Some("U7"), Some("high"))
    );
    assert_eq!(body["message_count"], 7);

    let (_, events) = send(app.get(&format!("{path}/events"))).await;
    let trail: Vec<(String, String, String)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().into(),
                e["actor"].as_str().unwrap().into(),
                e["after"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let want = [
        ("status", "model", "in_progress"),
        ("status", "rule:customer_message", "on_you"),
        ("status", "human:U7", "on_hold"),
        ("status", "rule:issue_closed", "on_you"),
        ("status", "model", "closed"),
        ("status", "rule:customer_message", "on_you"),
        ("status", "model", "closed"),
        ("status", "human:U7", "in_progress"),
        ("owner", "human:U7", "U7"),
        ("priority", "human:U7", "high"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(trail, want);
    // The status change by a message names it and the model's prediction at the time.
    let first_event = &events["items"][0];
    assert!(first_event["message_id"].is_string());
    assert_eq!(
        (
            first_event["model_label"].as_str(),
            first_event["model_score"].as_f64()
        ),
        (Some("in_progress"), Some(0.9))
    );

    let (_, messages) = send(app.get(&format!("{path}/messages"))).await;
    let texts: Vec<&str> = messages["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 7);
    assert_eq!(texts[0], "Login is broken since this morning");

    let (code, _) = send(
        app.client
            .delete(format!("{}{path}", app.address))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(code, 204);
    let (code, body) = send(app.get(&path)).await;
    assert_error(code, &body, 404);
}

async fn refuses_bad_requests(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (_, body) = app.message(customer(&at(0), None, "hello")).await;
    let path = format!(
        "/v1/conversations/{}",
        body["conversation"]["id"].as_str().unwrap()
    );

    let (code, body) = send(app.client.get(format!("{}/v1/conversations", app.address))).await;
    assert_eq!(assert_error(code, &body, 401)["code"], "unauthorized");
    let (code, body) = send(
        app.client
            .get(format!("{}/v1/conversations", app.address))
            .bearer_auth("nope"),
    )
    .await;
    assert_error(code, &body, 401);

    let (code, body) = send(app.patch(&path, &json!({"status": "open"}))).await;
    assert_error(code, &body, 422);
    let (code, body) = send(app.patch(&path, &json!({"colour": "red"}))).await;
    assert_error(code, &body, 422);

    let (code, body) = send(app.get("/v1/conversations/does-not-exist")).await;
    assert_eq!(assert_error(code, &body, 404)["code"], "not_found");
    let (code, body) =
        send(app.patch("/v1/conversations/does-not-exist", &json!({"status": "closed"}))).await;
    assert_error(code, &body, 404);

    let malformed = app
        .client
        .patch(format!("{}{path}", app.address))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"status\": ");
    let (code, body) = send(malformed).await;
    assert_eq!(assert_error(code, &body, 400)["code"], "bad_request");

    let huge = json!({"channel": "C1", "ts": "1.0", "user": "U", "text": "x".repeat(1 << 20)});
    let (code, body) = send(app.post("/v1/messages", &huge)).await;
    assert_eq!(assert_error(code, &body, 413)["code"], "payload_too_large");

    let (code, body) = app
        .message(json!({"channel": "C1", "ts": "yesterday", "user": "U", "text": "x"}))
        .await;
    assert_eq!(assert_error(code, &body, 422)["field"], "ts");
    let (code, body) = app
        .message(json!({"channel": "", "ts": "1.0", "user": "U", "text": "x"}))
        .await;
    assert_eq!(assert_error(code, &body, 422)["field"], "channel");

    let (code, body) = send(app.post(
        "/v1/conversations",
        &json!({"channel": "C9", "status": "on_hold"}),
    ))
    .await;
    assert_eq!(assert_error(code, &body, 422)["field"], "status");

    let (code, body) = send(app.get("/v1/nowhere")).await;
    assert_error(code, &body, 404);

    let (code, _) = send(app.client.get(format!("{}/readyz", app.address))).await;
    assert_eq!(code, 200);
}
