//! Human corrections of grouping: merge, move and split, each recorded as a `grouping` event.

use crate::tickets::helpers::{assert_error, on_both_backends, send, spawn_app, Backend, TestApp};
use serde_json::{json, Value};

on_both_backends!(merge_move_and_split);

async fn start(app: &TestApp, secs: u64, user: &str, text: &str) -> (String, Value) {
    let ts = format!("{}.000100", 1_700_000_000 + secs);
    let (code, body) = app
        .message(json!({"channel": "C1", "ts": ts, "user": user, "text": text}))
        .await;
    assert_eq!(code, 201, "{body}");
    (
        body["conversation"]["id"].as_str().unwrap().to_owned(),
        body["message"].clone(),
    )
}

async fn count(app: &TestApp, id: &str) -> i64 {
    let (_, conv) = send(app.get(&format!("/v1/conversations/{id}"))).await;
    conv["message_count"].as_i64().unwrap()
}

async fn merge_move_and_split(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (a, a_root) = start(&app, 0, "U1", "Export fails").await;
    let reply = json!({"channel": "C1", "ts": "1700000001.000100", "thread_ts": a_root["ts"], "user": "U1", "text": "also on Safari"});
    let (_, body) = app.message(reply).await;
    let a_reply = body["message"]["id"].as_str().unwrap().to_owned();
    let (b, _) = start(&app, 100, "U2", "Export is slow").await;
    let (c, c_root) = start(&app, 200, "U3", "Exports broken for us too").await;
    assert_eq!(count(&app, &a).await, 2);

    let (code, body) = send(
        app.post(&format!("/v1/conversations/{b}/merge"), &json!({"into": a}))
            .header("x-triage-user", "U7"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (
            body["conversation"]["id"].as_str(),
            body["conversation"]["message_count"].as_i64()
        ),
        (Some(&*a), Some(3))
    );
    let (code, body) = send(app.get(&format!("/v1/conversations/{b}"))).await;
    assert_error(code, &body, 404);
    let (code, body) = send(app.post(&format!("/v1/conversations/{a}/merge"), &json!({"into": a}))).await;
    assert_eq!(assert_error(code, &body, 422)["field"], "into");
    let (code, body) = send(app.post(&format!("/v1/conversations/{b}/merge"), &json!({"into": a}))).await;
    assert_error(code, &body, 404);

    // Move C's message into A.
    let c_msg = c_root["id"].as_str().unwrap();
    let (code, body) = send(app.post(
        &format!("/v1/messages/{c_msg}/move"),
        &json!({"conversation_id": a}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (
            body["message"]["conversation_id"].as_str(),
            body["conversation"]["message_count"].as_i64()
        ),
        (Some(&*a), Some(4))
    );
    assert_eq!(count(&app, &c).await, 0);
    let (code, body) = send(app.post(
        &format!("/v1/messages/{c_msg}/move"),
        &json!({"conversation_id": a}),
    ))
    .await;
    assert_eq!(assert_error(code, &body, 422)["field"], "conversation_id");

    // Split A's thread reply out into a new conversation.
    let (code, body) = send(app.post(
        &format!("/v1/messages/{a_reply}/move"),
        &json!({"conversation_id": null}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    let d = body["conversation"]["id"].as_str().unwrap().to_owned();
    assert!(![&a, &b, &c].contains(&&d));
    assert_eq!(
        (
            body["conversation"]["status"].as_str(),
            body["conversation"]["message_count"].as_i64()
        ),
        (Some("new"), Some(1))
    );
    assert_eq!(body["conversation"]["title"], "also on Safari");
    assert_eq!(count(&app, &a).await, 3);

    let (code, body) = send(app.post("/v1/messages/nope/move", &json!({"conversation_id": null}))).await;
    assert_error(code, &body, 404);

    let (_, events) = send(app.get(&format!("/v1/conversations/{a}/events"))).await;
    let grouping: Vec<(&str, &str, &str)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "grouping")
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["before"].as_str().unwrap(),
                e["after"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        grouping,
        [
            ("human:U7", &*b, &*a),
            ("human:api", &*c, &*a),
            ("human:api", &*a, &*d)
        ]
    );

    // The corrected channel is exported as grouping gold: A's three messages form one chain.
    let response = app.get("/v1/export/labels?kind=grouping").send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let gold: Vec<(&str, &Value)> = lines
        .iter()
        .map(|l| (l["gold"].as_str().unwrap(), &l["parents"]))
        .collect();
    assert_eq!(
        gold,
        [
            ("C1:0", &json!([0])),
            ("C1:1", &json!([1])),
            ("C1:0", &json!([0])),
            ("C1:0", &json!([2]))
        ]
    );
    assert!(lines.iter().all(|l| l["eval"] == true));
}
