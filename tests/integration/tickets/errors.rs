//! One error shape across the whole router: every JSON route documented in `/openapi.json` answers
//! a malformed body with the same 400 JSON error; unknown routes and methods answer JSON too.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::tickets::helpers::{on_both_backends, send, spawn_app, Backend, TOKEN};

on_both_backends!(
    a_malformed_body_gets_the_same_400_on_every_json_route,
    unknown_routes_get_json
);

/// The error object's keys and code, which must be the same for every route.
fn shape(body: &Value) -> (BTreeSet<String>, BTreeSet<String>, String) {
    let outer = body
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let inner = body["error"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    (outer, inner, body["error"]["code"].to_string())
}

async fn a_malformed_body_gets_the_same_400_on_every_json_route(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (code, doc) = send(app.get("/openapi.json")).await;
    assert_eq!(code, 200);
    let mut shapes = BTreeSet::new();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["requestBody"]["content"]["application/json"].is_null() {
                continue;
            }
            let url = format!(
                "{}{}",
                app.address,
                path.replace("{id}", "nope").replace("{slack_user_id}", "UNOPE")
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let request = app
                .client
                .request(method.clone(), url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{oops");
            let (code, body) = send(request).await;
            assert_eq!(code, 400, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "bad_request", "{method} {path}: {body}");
            assert!(
                body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{method} {path}: {body}"
            );
            assert_eq!(body["error"]["field"], "body", "{method} {path}: {body}");
            shapes.insert(shape(&body));
            routes.push(format!("{method} {path}"));
        }
    }
    // embed, classify, group, messages, move, conversations (post, patch), merge, accounts (post,
    // patch), team, issue webhook.
    assert!(routes.len() >= 12, "{routes:?}");
    assert_eq!(shapes.len(), 1, "different error shapes: {shapes:?}");
}

async fn unknown_routes_get_json(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for path in ["/nowhere", "/v1/nowhere", "/v1/conversations/x/y/z"] {
        let (code, body) = send(app.get(path)).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    let (code, body) = send(
        app.client
            .delete(format!("{}/v1/team", app.address))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(code, 405, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
}
