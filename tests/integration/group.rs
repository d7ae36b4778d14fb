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

/// The support-channel scenes of issue 14 through the committed model's role scorers (text
/// features only, as when no embedding is available).
#[test]
fn committed_model_groups_support_scenes_by_role() {
    use triage::group::{GroupModel, Grouper, IncomingMessage, Role};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/grouping/model.json");
    let model = GroupModel::load(&dir).unwrap();
    assert!(model.roles.is_some(), "the committed model has role scorers");
    let mut g = Grouper::new(model);
    let mut say = |ts: f64, user: &'static str, role: Role, text: &'static str| {
        let ts = format!("{:.6}", 1_700_000_000.0 + ts);
        g.process(
            &IncomingMessage {
                channel: "C1",
                ts: &ts,
                user,
                text,
                system: false,
                action: false,
                thread_ts: None,
                role: Some(role),
                embedding: None,
            },
            false,
        )
        .unwrap()
    };
    use Role::{Agent, Customer};
    // A customer asks in two messages; a minute later the team answers in the channel.
    let q = say(
        0.0,
        "U1",
        Customer,
        "Hi, our webhooks stopped delivering since this morning.",
    );
    let q2 = say(
        20.0,
        "U1",
        Customer,
        "Project 4411, nothing in the delivery log either.",
    );
    assert_eq!(q2.conversation_id, q.conversation_id);
    let a = say(80.0, "U9", Agent, "Taking a look, give me a few minutes.");
    assert_eq!(a.conversation_id, q.conversation_id, "{a:?}");
    assert!(
        a.reasons
            .iter()
            .any(|r| r.signal == "role" && r.detail.contains("waiting for the team")),
        "{a:?}"
    );
    // Two customers at once; the team answers each by mention.
    let b = say(
        600.0,
        "U2",
        Customer,
        "Is there a way to export all tickets as CSV?",
    );
    let c = say(630.0, "U3", Customer, "Login fails with a 502 since your deploy");
    assert_ne!(b.conversation_id, c.conversation_id);
    let to_c = say(700.0, "U8", Agent, "<@U3> we see the 502s too, rolling back now");
    assert_eq!(to_c.conversation_id, c.conversation_id, "{to_c:?}");
    let to_b = say(720.0, "U9", Agent, "<@U2> yes: Settings, Data, Export");
    assert_eq!(to_b.conversation_id, b.conversation_id, "{to_b:?}");
    // Two hours later the first customer asks for an update in the channel.
    let up = say(
        7200.0,
        "U1",
        Customer,
        "Any update on the webhooks? Still nothing delivered.",
    );
    assert_eq!(up.conversation_id, q.conversation_id, "{up:?}");
}

/// `train group --base` takes the open-ticket bounds from `--open-hours` / `--open-conversations`
/// into the trained model, and refuses more open tickets than the store hands the grouper;
/// `--disable` leaves a feature out.
#[test]
fn train_group_sets_the_open_ticket_bounds_within_the_stores_limit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("roles.jsonl");
    let mut lines = Vec::new();
    for c in 0..2 {
        let talk = [
            (
                "UC",
                "customer",
                "webhooks stopped arriving since this morning",
                0,
            ),
            ("UT", "agent", "taking a look at the webhooks now", 0),
            ("UC", "customer", "thanks, still nothing delivered", 0),
            ("UC2", "customer", "how do I export contacts to csv", 3),
            ("UT", "agent", "contacts export is under settings, then export", 3),
        ];
        for (i, (user, role, text, gold)) in talk.iter().enumerate() {
            let parents = if i == *gold {
                vec![i]
            } else {
                vec![i - 1 - usize::from(i == 4)]
            };
            lines.push(
                json!({
                    "id": c * 10 + i, "channel": format!("c{c}"), "idx": i, "ts": 1000.0 + 60.0 * i as f64,
                    "user": user, "text": text, "kind": "msg", "system": false, "role": role, "eval": true,
                    "gold": format!("c{c}:{gold}"), "parents": parents,
                })
                .to_string(),
            );
        }
    }
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/grouping");
    let train = |extra: &[&str], out: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_triage"))
            .args(["train", "group", "--no-embeddings", "--epochs", "1", "--base"])
            .arg(&base)
            .arg("--data")
            .arg(&data)
            .arg("--dev")
            .arg(&data)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = dir.path().join("m");
    let ok = train(&["--open-hours", "48", "--open-conversations", "5"], &out);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let model: Value = serde_json::from_slice(&std::fs::read(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(model["config"]["bounds"]["open"]["seconds"], 172800.0);
    assert_eq!(model["config"]["bounds"]["open"]["conversations"], 5);
    let gap_scale = |m: &Value| {
        let s = &m["roles"]["customer"]["text"];
        let j = s["features"]
            .as_array()
            .unwrap()
            .iter()
            .position(|n| n == "new_log_gap_prev_min");
        s["scale"][j.unwrap()].as_f64().unwrap()
    };
    assert_ne!(
        gap_scale(&model),
        0.0,
        "the gap feature is trained without --disable"
    );
    let refused = train(&["--open-conversations", "21"], &dir.path().join("m2"));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("exceed the store's 20"), "{err}");

    // --disable leaves a feature out of the role scorers (scale 0) and names an unknown one.
    let out = dir.path().join("m3");
    let ok = train(&["--disable", "new_log_gap_prev_min"], &out);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let model: Value = serde_json::from_slice(&std::fs::read(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(gap_scale(&model), 0.0);
    let refused = train(&["--disable", "no_such_feature"], &dir.path().join("m4"));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("no_such_feature"), "{err}");
}
