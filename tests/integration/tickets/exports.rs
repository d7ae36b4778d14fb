//! Accounts, team, status-label export and analytics.

use crate::tickets::helpers::{assert_error, on_both_backends, send, spawn_app, Backend, AGENT};
use serde_json::{json, Value};

on_both_backends!(accounts_team_labels_and_analytics);

async fn accounts_team_labels_and_analytics(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };

    let (_, acme) = send(app.post("/v1/accounts", &json!({"name": "Acme", "channels": ["C1"]}))).await;
    let id = acme["id"].as_str().unwrap();
    let (code, body) = send(app.post("/v1/accounts", &json!({"name": "Other", "channels": ["C1"]}))).await;
    assert_error(code, &body, 409);
    let (code, body) = send(app.patch(
        &format!("/v1/accounts/{id}"),
        &json!({"owner": "U9", "channels": ["C1", "C2"]}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": id, "name": "Acme", "owner": "U9", "channels": ["C1", "C2"]})
    );
    let (_, all) = send(app.get("/v1/accounts")).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let (code, body) = send(app.get("/v1/accounts/nope")).await;
    assert_error(code, &body, 404);

    let member = json!({"name": "Ada", "triage_channel": "CTRIAGE"});
    let (code, _) = send(
        app.client
            .put(format!("{}/v1/team/{AGENT}", app.address))
            .bearer_auth(crate::tickets::helpers::TOKEN)
            .json(&member),
    )
    .await;
    assert_eq!(code, 200);
    let (_, team) = send(app.get("/v1/team")).await;
    assert_eq!(
        team["items"],
        json!([{"slack_user_id": AGENT, "name": "Ada", "triage_channel": "CTRIAGE"}])
    );

    // Two replies labelled by the model; a person then overrides the second one's outcome.
    let root = "1700000000.000100";
    let (_, first) = app
        .message(json!({"channel": "C2", "ts": root, "user": "UC", "text": "Help"}))
        .await;
    let conv = first["conversation"]["id"].as_str().unwrap();
    assert_eq!(first["conversation"]["owner"], "U9");
    app.message(json!({"channel": "C2", "ts": "1700000100.000100", "thread_ts": root, "user": AGENT, "text": "Fixed, closing"})).await;
    app.message(json!({"channel": "C2", "ts": "1700000200.000100", "thread_ts": root, "user": "UC", "text": "Not for me"})).await;
    app.message(json!({"channel": "C2", "ts": "1700000300.000100", "thread_ts": root, "user": AGENT, "text": "Deployed a patch"})).await;
    let (code, _) = send(app.patch(&format!("/v1/conversations/{conv}"), &json!({"status": "closed"}))).await;
    assert_eq!(code, 200);

    let response = app.get("/v1/export/labels?kind=status").send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let labels: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["text"].as_str().unwrap(),
                l["label"].as_str().unwrap(),
                l["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            ("Fixed, closing", "closed", "model"),
            ("Deployed a patch", "closed", "human")
        ]
    );
    assert_eq!(lines[1]["model_label"], "in_progress");

    let (_, none) = send(app.get("/v1/export/labels?kind=status&since=2030-01-01T00:00:00Z")).await;
    assert_eq!(none, Value::String(String::new()));
    let (code, body) = send(app.get("/v1/export/labels?kind=status&since=yesterday")).await;
    assert_eq!(assert_error(code, &body, 422)["field"], "since");
    let (code, body) = send(app.get("/v1/export/labels?kind=everything")).await;
    assert_eq!(assert_error(code, &body, 422)["field"], "kind");

    let (code, stats) = send(app.get("/v1/analytics")).await;
    assert_eq!(code, 200, "{stats}");
    assert_eq!(stats["first_response"]["count"], 1);
    assert!(
        (stats["first_response"]["avg_seconds"].as_f64().unwrap() - 100.0).abs() < 0.01,
        "{stats}"
    );
    assert_eq!(stats["time_to_close"]["count"], 1);
    assert_eq!(stats["by_status"], json!({"closed": 1}));
    assert_eq!(stats["open_per_owner"], json!({}));
}
