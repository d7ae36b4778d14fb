//! Issue-tracker webhooks: signatures, and closing an issue releasing its on_hold conversations.

use crate::tickets::helpers::{
    assert_error, on_both_backends, send, spawn_app, Backend, TestApp, GITHUB_SECRET, LINEAR_SECRET,
};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

on_both_backends!(github_linear_and_generic_hooks);

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn on_hold(app: &TestApp, issue: Value) -> String {
    let body = json!({"channel": "C1", "title": "waiting", "status": "on_hold", "linked_issue": issue});
    let (code, conv) = send(app.post("/v1/conversations", &body)).await;
    assert_eq!(code, 201, "{conv}");
    conv["id"].as_str().unwrap().to_owned()
}

async fn hook(app: &TestApp, body: &[u8], headers: &[(&str, String)]) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/v1/webhooks/issues", app.address))
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    send(request).await
}

async fn github_linear_and_generic_hooks(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };

    // GitHub's documented example signature, delivered as a ping (verified, then ignored).
    let documented = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_owned();
    let (code, body) = hook(
        &app,
        b"Hello, World!",
        &[
            ("x-hub-signature-256", documented.clone()),
            ("x-github-event", "ping".into()),
        ],
    )
    .await;
    assert_eq!((code, body), (200, json!({"conversations": []})));
    let (code, body) = hook(
        &app,
        b"Hello, World?",
        &[
            ("x-hub-signature-256", documented),
            ("x-github-event", "ping".into()),
        ],
    )
    .await;
    assert_error(code, &body, 401);

    let gh = on_hold(
        &app,
        json!({"url": "https://github.com/acme/app/issues/7", "provider": "github", "key": "acme/app#7"}),
    )
    .await;
    let payload = serde_json::to_vec(&json!({
        "action": "closed",
        "issue": {"html_url": "https://github.com/acme/app/issues/7", "number": 7, "state": "closed"},
        "repository": {"full_name": "acme/app"}
    }))
    .unwrap();
    let signature = format!("sha256={}", sign(GITHUB_SECRET, &payload));
    let (code, body) = hook(
        &app,
        &payload,
        &[
            (
                "x-hub-signature-256",
                format!("sha256={}", sign("wrong", &payload)),
            ),
            ("x-github-event", "issues".into()),
        ],
    )
    .await;
    assert_error(code, &body, 401);
    let (code, body) = hook(
        &app,
        &payload,
        &[
            ("x-hub-signature-256", signature),
            ("x-github-event", "issues".into()),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["conversations"][0]["id"].as_str(), Some(&*gh));
    assert_eq!(
        (
            body["conversations"][0]["status"].as_str(),
            body["conversations"][0]["linked_issue"]["state"].as_str()
        ),
        (Some("on_you"), Some("closed"))
    );
    let (_, events) = send(app.get(&format!("/v1/conversations/{gh}/events"))).await;
    let last = events["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["actor"].as_str(), last["before"].as_str()),
        (Some("rule:issue_closed"), Some("on_hold"))
    );

    // Linear, matched by its identifier.
    let linear = on_hold(
        &app,
        json!({"url": "https://linear.app/acme/issue/ENG-42", "provider": "linear", "key": "ENG-42"}),
    )
    .await;
    let linear_event = |sent_ms: i64| {
        serde_json::to_vec(&json!({
            "action": "update", "type": "Issue", "webhookTimestamp": sent_ms,
            "data": {"identifier": "ENG-42", "state": {"type": "completed", "name": "Done"}}
        }))
        .unwrap()
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let payload = linear_event(now_ms);
    let (code, body) = hook(&app, &payload, &[("linear-signature", sign("wrong", &payload))]).await;
    assert_error(code, &body, 401);
    // Correctly signed but ten minutes old: a replay, refused before it changes anything.
    let stale = linear_event(now_ms - 600_000);
    let (code, body) = hook(&app, &stale, &[("linear-signature", sign(LINEAR_SECRET, &stale))]).await;
    assert_eq!(assert_error(code, &body, 422)["field"], "webhookTimestamp");
    let (code, body) = hook(
        &app,
        &payload,
        &[("linear-signature", sign(LINEAR_SECRET, &payload))],
    )
    .await;
    assert_eq!(
        (code, body["conversations"][0]["id"].as_str()),
        (200, Some(&*linear)),
        "{body}"
    );
    assert_eq!(body["conversations"][0]["status"], "on_you");

    // Generic form: needs the bearer token.
    let generic = on_hold(&app, json!({"url": "https://tracker.example/T-1"})).await;
    let payload = json!({"url": "https://tracker.example/T-1", "state": "closed"});
    let (code, body) = hook(&app, payload.to_string().as_bytes(), &[]).await;
    assert_error(code, &body, 401);
    let (code, body) = send(app.post("/v1/webhooks/issues", &json!({"url": "x", "state": "done"}))).await;
    assert_eq!(assert_error(code, &body, 422)["field"], "state");
    let (code, body) = send(app.post("/v1/webhooks/issues", &payload)).await;
    assert_eq!(
        (code, body["conversations"][0]["id"].as_str()),
        (200, Some(&*generic))
    );
    assert_eq!(body["conversations"][0]["status"], "on_you");
}
