//! Grouping through the real server (`/v1/group`) and the CLI's metrics against the reference scorer.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::spawn_app;

fn shared(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(path)
}

#[tokio::test]
async fn group_endpoint_threads_idempotency_and_errors() {
    let app = spawn_app().await;
    let post = |body: Value| app.post("/v1/group").json(&body).send();
    let root: Value = post(json!({"channel": "C1", "ts": "1700000000.000100", "user": "U1",
        "text": "Our nightly export to S3 failed with AccessDenied", "role": "customer"}))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(root["new"], true, "{root}");
    let conv = root["conversation_id"].as_str().unwrap().to_string();

    // Hours later, a reply in the root's thread still joins it: a thread is a hard boundary.
    let reply: Value = post(json!({"channel": "C1", "ts": 1700009000.0002, "user": "U9",
        "text": "Taking a look", "thread_ts": "1700000000.000100", "role": "agent"}))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(reply["conversation_id"], conv.as_str(), "{reply}");
    assert_eq!(reply["new"], false);
    assert!(
        reply["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["signal"] == "thread")),
        "{reply}"
    );

    // Idempotent on (channel, ts): the same message gives the same answer.
    let again: Value = post(json!({"channel": "C1", "ts": "1700000000.000100", "user": "U1",
        "text": "Our nightly export to S3 failed with AccessDenied"}))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(again["conversation_id"], conv.as_str());

    // A dry run answers without recording: asking twice starts "new" both times.
    let body =
        json!({"channel": "C2", "ts": "1700000100.000000", "user": "U2", "text": "hello?", "dry_run": true});
    for _ in 0..2 {
        let d: Value = post(body.clone()).await.unwrap().json().await.unwrap();
        assert_eq!(d["new"], true);
    }

    for (bad, field) in [
        (
            json!({"channel": "", "ts": "1", "user": "U", "text": "x"}),
            "channel",
        ),
        (
            json!({"channel": "C", "ts": "yesterday", "user": "U", "text": "x"}),
            "ts",
        ),
        (
            json!({"channel": "C", "ts": "1", "user": "U", "text": "x", "role": "boss"}),
            "role",
        ),
    ] {
        let r = post(bad).await.unwrap();
        assert_eq!(r.status(), 422);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    let r = post(json!({"channel": "C", "user": "U", "text": "no ts"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    app.stop().await.unwrap();
}

#[test]
fn eval_group_agrees_with_the_reference_scorer_on_the_dev_split() {
    let dev = shared("data/grouping/ubuntu-dev.jsonl");
    let scorer = shared("tools/score_grouping.py");
    let dir = tempfile::tempdir().unwrap();
    let pred = dir.path().join("pred.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["eval", "group", "--no-embeddings", "--model"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/grouping"))
        .arg("--data")
        .arg(&dev)
        .arg("--predictions")
        .arg(&pred)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(ours["messages"], 2500);

    let reference = Command::new("python3")
        .arg(&scorer)
        .arg(&dev)
        .arg(&pred)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let theirs: Value =
        serde_json::from_str(String::from_utf8_lossy(&reference.stdout).lines().last().unwrap()).unwrap();
    for (ours_key, theirs_key) in [
        ("vi", "VI"),
        ("one_to_one", "1-1"),
        ("exact_p", "P"),
        ("exact_r", "R"),
        ("exact_f1", "F"),
    ] {
        let a = ours[ours_key].as_f64().unwrap();
        let b = theirs[theirs_key].as_f64().unwrap();
        assert!((a - b).abs() <= 0.01, "{ours_key}: ours {a} vs reference {b}");
    }
}
