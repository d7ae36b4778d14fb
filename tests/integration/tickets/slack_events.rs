//! `POST /slack/events` through the real server on port 0, on both backends: signatures checked
//! before parsing, url_verification, every message subtype through the inbox and its worker,
//! Slack's retries and re-sends under a new event id, and the inbox replayed after a restart.

use crate::tickets::helpers::{
    assert_error, config, on_both_backends, send, Backend, KeywordClassifier, TestDb, TestGrouper, AGENT,
    TOKEN,
};
use reqwest::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use triage::http::{self, AppState, Models, Secret};
use triage::slack::inbound::{spawn_worker, Inbound};
use triage::slack::signing::{sign, Verifier};
use triage::store;

on_both_backends!(
    signatures_are_checked_before_parsing,
    every_subtype_through_the_inbox,
    retries_and_new_event_ids_store_each_message_once,
    the_inbox_is_replayed_after_a_restart
);

const SECRET: &str = "slack-signing-secret-for-tests";
const CHANNEL: &str = "CSHARED1";
const OUR_TEAM: &str = "TOURS";
const BOT: &str = "UTRIAGEBOT";

struct SlackApp {
    address: String,
    client: Client,
    state: AppState,
    worker: Option<tokio::task::JoinHandle<()>>,
    // Declared last: the database outlives the server's use of it.
    _db: Arc<TestDb>,
}

impl Drop for SlackApp {
    fn drop(&mut self) {
        if let Some(w) = &self.worker {
            w.abort();
        }
    }
}

/// The production router over `db`, with the inbound worker unless `worker` is false (a server
/// that acknowledged deliveries and died before processing them).
async fn spawn(db: &Arc<TestDb>, worker: bool) -> SlackApp {
    triage::telemetry::init_logging();
    let store = store::connect(&db.url).await.expect("connect");
    let mut cfg = config();
    cfg.slack_verifier = Some(Verifier::system(Secret::new(SECRET)));
    let state = AppState::new(
        Models::default(),
        store,
        Arc::new(TestGrouper),
        Arc::new(KeywordClassifier),
        cfg,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(http::run(listener, state.clone(), std::future::pending()));
    let worker = worker.then(|| {
        let core = triage::slack::core::InProcess::new(state.pipeline.clone());
        let inbound = Inbound::new(core, state.config.team_users.clone(), state.metrics.clone());
        spawn_worker(state.pipeline.clone(), inbound, state.slack_inbox.clone())
    });
    SlackApp {
        address,
        client: Client::new(),
        state,
        worker,
        _db: db.clone(),
    }
}

impl SlackApp {
    /// Delivers `body` as Slack does: signed now, with `X-Slack-Retry-Num` when given.
    async fn deliver(&self, body: &Value, retry: Option<u32>) -> (u16, Value) {
        let raw = body.to_string();
        let ts = chrono::Utc::now().timestamp().to_string();
        let mut req = self
            .client
            .post(format!("{}/slack/events", self.address))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", &ts)
            .header(
                "x-slack-signature",
                sign(&Secret::new(SECRET), &ts, raw.as_bytes()),
            );
        if let Some(n) = retry {
            req = req
                .header("x-slack-retry-num", n.to_string())
                .header("x-slack-retry-reason", "http_timeout");
        }
        let (code, body) = send(req.body(raw)).await;
        (code, body)
    }

    /// Waits until the worker has processed every delivery; the outcome counts.
    async fn settled(&self) -> BTreeMap<String, i64> {
        for _ in 0..200 {
            let counts = self.state.pipeline.inbox_counts().await.unwrap();
            if !counts.contains_key("pending") {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "deliveries still pending: {:?}",
            self.state.pipeline.inbox_counts().await
        );
    }

    async fn get(&self, path: &str) -> Value {
        let (code, body) = send(
            self.client
                .get(format!("{}{path}", self.address))
                .bearer_auth(TOKEN),
        )
        .await;
        assert_eq!(code, 200, "{path}: {body}");
        body
    }

    /// Every conversation of the channel, oldest first, each with its messages.
    async fn conversations(&self) -> Vec<(Value, Vec<Value>)> {
        let list = self.get(&format!("/v1/conversations?channel={CHANNEL}")).await;
        let mut out = Vec::new();
        for c in list["items"].as_array().unwrap().iter().rev() {
            let msgs = self
                .get(&format!(
                    "/v1/conversations/{}/messages",
                    c["id"].as_str().unwrap()
                ))
                .await;
            out.push((c.clone(), msgs["items"].as_array().unwrap().clone()));
        }
        out
    }
}

fn callback(event_id: &str, event: Value) -> Value {
    json!({
        "token": "legacy-verification-token", "team_id": OUR_TEAM, "api_app_id": "A1",
        "type": "event_callback", "event_id": event_id, "event_time": 1700000000,
        "authorizations": [{"team_id": OUR_TEAM, "user_id": BOT, "is_bot": true}],
        "event": event
    })
}

fn message(ts: &str, user: &str, text: &str) -> Value {
    json!({"type": "message", "channel": CHANNEL, "channel_type": "channel", "user": user, "text": text,
           "ts": ts, "team": "TCUSTOMER", "user_team": "TCUSTOMER"})
}

async fn signatures_are_checked_before_parsing(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let db = Arc::new(db);
    let app = spawn(&db, true).await;
    let url = format!("{}/slack/events", app.address);
    let body = json!({"type": "url_verification", "token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"});
    let (code, echoed) = app.deliver(&body, None).await;
    assert_eq!(
        (code, &echoed),
        (
            200,
            &json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
        )
    );

    let raw = body.to_string();
    let now = chrono::Utc::now().timestamp();
    let secret = Secret::new(SECRET);
    let signed = |ts: i64, body: &str| sign(&secret, &ts.to_string(), body.as_bytes());
    // (timestamp header, signature header, body, what the error names)
    let cases: Vec<(Option<String>, Option<String>, String, &str)> = vec![
        (
            Some(now.to_string()),
            Some(signed(now, "{}")),
            raw.clone(),
            "does not match",
        ),
        (
            Some(now.to_string()),
            Some(signed(now, &raw).replace("v0=", "v0=0")),
            raw.clone(),
            "v0=<hex>",
        ),
        (
            Some(now.to_string()),
            None,
            raw.clone(),
            "missing X-Slack-Signature",
        ),
        (
            None,
            Some(signed(now, &raw)),
            raw.clone(),
            "missing X-Slack-Request-Timestamp",
        ),
        (
            Some((now - 301).to_string()),
            Some(signed(now - 301, &raw)),
            raw.clone(),
            "5 minutes",
        ),
        (
            Some((now + 400).to_string()),
            Some(signed(now + 400, &raw)),
            raw.clone(),
            "5 minutes",
        ),
        // Not JSON, but unsigned: refused for the signature, never parsed.
        (
            Some(now.to_string()),
            Some("v0=00".into()),
            "{not json".into(),
            "v0=<hex>",
        ),
    ];
    for (ts, sig, body, names) in cases {
        let mut req = app.client.post(&url).body(body);
        if let Some(ts) = ts {
            req = req.header("x-slack-request-timestamp", ts);
        }
        if let Some(sig) = sig {
            req = req.header("x-slack-signature", sig);
        }
        let (code, err) = send(req).await;
        let err = assert_error(code, &err, 401);
        assert!(err["message"].as_str().unwrap().contains(names), "{err}");
    }
    // Signed but not JSON: 400; signed JSON of the wrong shape: 422.
    let bad = "{not json";
    let (code, err) = send(
        app.client
            .post(&url)
            .header("x-slack-request-timestamp", now.to_string())
            .header("x-slack-signature", signed(now, bad))
            .body(bad),
    )
    .await;
    assert_error(code, &err, 400);
    let (code, err) = app
        .deliver(&json!({"type": "event_callback", "event": {}}), None)
        .await;
    assert_eq!(assert_error(code, &err, 422)["field"], "event_id");
    // Nothing reached the inbox.
    assert_eq!(app.state.pipeline.inbox_counts().await.unwrap(), BTreeMap::new());
    // A server without a signing secret refuses Slack outright.
    let store = store::connect(&db.url).await.unwrap();
    let state = AppState::new(
        Models::default(),
        store,
        Arc::new(TestGrouper),
        Arc::new(KeywordClassifier),
        config(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = format!("http://{}/slack/events", listener.local_addr().unwrap());
    tokio::spawn(http::run(listener, state, std::future::pending()));
    let (code, err) = send(app.client.post(&other).body(raw.clone())).await;
    assert_error(code, &err, 403);
}

async fn every_subtype_through_the_inbox(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let app = spawn(&Arc::new(db), true).await;
    let root = "1700000000.000100";
    let mut agent_reply = message("1700000060.000000", AGENT, "Taking a look");
    agent_reply["thread_ts"] = json!(root);
    agent_reply["user_team"] = json!(OUR_TEAM);
    let mut file_only = message("1700000120.000000", "UCUST", "");
    file_only["subtype"] = json!("file_share");
    file_only["thread_ts"] = json!(root);
    file_only["files"] =
        json!([{"id": "F1", "name": "har.txt", "permalink": "https://x.slack.com/files/UCUST/F1/har.txt"}]);
    let mut broadcast = message("1700000180.000000", "UCUST", "Also seeing it on Android");
    broadcast["subtype"] = json!("thread_broadcast");
    broadcast["thread_ts"] = json!(root);
    let edit = json!({"type": "message", "subtype": "message_changed", "channel": CHANNEL, "hidden": true,
        "ts": "1700000300.000000",
        "message": {"type": "message", "user": AGENT, "text": "It's fixed in 1.4", "ts": "1700000060.000000",
                    "thread_ts": root, "edited": {"user": AGENT, "ts": "1700000300.000000"}},
        "previous_message": {"type": "message", "user": AGENT, "text": "Taking a look", "ts": "1700000060.000000"}});
    let reply_count_only = json!({"type": "message", "subtype": "message_changed", "channel": CHANNEL, "hidden": true,
        "ts": "1700000301.000000",
        "message": {"type": "message", "user": "UCUST", "text": "Login fails", "ts": root, "reply_count": 3},
        "previous_message": {"type": "message", "user": "UCUST", "text": "Login fails", "ts": root}});
    let deleted = json!({"type": "message", "subtype": "message_deleted", "channel": CHANNEL, "hidden": true,
        "ts": "1700000400.000000", "deleted_ts": "1700000180.000000",
        "previous_message": {"type": "message", "user": "UCUST", "text": "Also seeing it on Android", "ts": "1700000180.000000"}});
    let events = [
        message(root, "UCUST", "Login fails"),
        agent_reply,
        file_only,
        broadcast,
        edit,
        reply_count_only,
        deleted,
        json!({"type": "message", "subtype": "bot_message", "channel": CHANNEL, "bot_id": "B1", "text": "Deploy done", "ts": "1700000500.000000"}),
        json!({"type": "message", "channel": CHANNEL, "user": BOT, "bot_id": "BTRIAGE", "text": "card", "ts": "1700000501.000000"}),
        json!({"type": "message", "subtype": "channel_join", "channel": CHANNEL, "user": "UNEW", "text": "<@UNEW> has joined the channel", "ts": "1700000502.000000"}),
        json!({"type": "message", "subtype": "channel_topic", "channel": CHANNEL, "user": "UCUST", "topic": "x", "text": "set the channel topic: x", "ts": "1700000503.000000"}),
        json!({"type": "message", "channel": "DBOT", "channel_type": "im", "user": "UCUST", "text": "hi bot", "ts": "1700000504.000000"}),
        json!({"type": "reaction_added", "user": "UCUST", "reaction": "eyes", "item": {"type": "message", "channel": CHANNEL, "ts": root}}),
        json!({"type": "message", "subtype": "message_changed", "channel": CHANNEL, "hidden": true, "ts": "1700000600.000000",
               "message": {"type": "message", "user": "UCUST", "text": "edited before triage joined", "ts": "1600000000.000000"},
               "previous_message": {"type": "message", "user": "UCUST", "text": "old", "ts": "1600000000.000000"}}),
    ];
    for (i, event) in events.iter().enumerate() {
        let (code, body) = app
            .deliver(&callback(&format!("Ev{i:04}"), event.clone()), None)
            .await;
        assert_eq!((code, &body), (200, &json!({"ok": true})), "{event}");
    }
    let counts = app.settled().await;
    let want: BTreeMap<String, i64> = [
        ("ingested", 4),
        ("edited", 1),
        ("unchanged", 0),
        ("deleted", 1),
        ("ignored:unchanged", 1),
        ("ignored:bot_message", 1),
        ("ignored:own_bot", 1),
        ("ignored:channel_join", 1),
        ("ignored:channel_topic", 1),
        ("ignored:im", 1),
        ("ignored:reaction_added", 1),
        ("unknown_message", 1),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(counts, want);

    let convs = app.conversations().await;
    assert_eq!(convs.len(), 1, "{convs:?}");
    let (conv, msgs) = &convs[0];
    // The agent's reply set in_progress; the customer's file in the thread then moved it to
    // on_you. The reply's later edit ("fixed") is classified again (label closed) but no longer
    // decides the status: the latest status change is the customer's, not that reply's.
    assert_eq!(conv["message_count"], 4);
    assert_eq!(conv["title"], "Login fails");
    let texts: Vec<(&str, &str, bool, bool)> = msgs
        .iter()
        .map(|m| {
            (
                m["text"].as_str().unwrap(),
                m["role"].as_str().unwrap(),
                m["edited"].as_bool().unwrap(),
                m["deleted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("Login fails", "customer", false, false),
            ("It's fixed in 1.4", "agent", true, false),
            ("", "customer", false, false),
            ("Also seeing it on Android", "customer", false, true),
        ]
    );
    assert_eq!(msgs[1]["label"], "closed");
    assert_eq!(msgs[2]["files"][0]["name"], "har.txt");
    assert_eq!(msgs[3]["thread_ts"], root);
    assert_eq!(conv["status"], "on_you");
    // /metrics counts every outcome.
    let (_, metrics) = send(app.client.get(format!("{}/metrics", app.address))).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("triage_slack_events_total{outcome=\"ignored:channel_join\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("triage_slack_events_total{outcome=\"ingested\"} 4"),
        "{metrics}"
    );
}

async fn retries_and_new_event_ids_store_each_message_once(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let app = spawn(&Arc::new(db), true).await;
    let first = callback(
        "EvA",
        message("1700001000.000000", "UCUST", "Billing page is blank"),
    );
    assert_eq!(app.deliver(&first, None).await.0, 200);
    // Slack timed out waiting and retries the same event id, twice: acknowledged, never dropped.
    assert_eq!(app.deliver(&first, Some(1)).await.0, 200);
    assert_eq!(app.deliver(&first, Some(2)).await.0, 200);
    // The same message re-sent under a new event id.
    let resent = callback(
        "EvB",
        message("1700001000.000000", "UCUST", "Billing page is blank"),
    );
    assert_eq!(app.deliver(&resent, Some(1)).await.0, 200);
    let counts = app.settled().await;
    assert_eq!(
        counts,
        BTreeMap::from([("duplicate".to_owned(), 1), ("ingested".to_owned(), 1)])
    );
    let convs = app.conversations().await;
    assert_eq!((convs.len(), convs[0].1.len()), (1, 1));
}

async fn the_inbox_is_replayed_after_a_restart(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let db = Arc::new(db);
    // A server that acknowledges and then dies before its worker ran.
    let dead = spawn(&db, false).await;
    for (i, text) in ["Webhooks are delayed", "Since 10:00 UTC", "Any update?"]
        .iter()
        .enumerate()
    {
        let event = message(&format!("1700002{i:03}.000000"), "UCUST", text);
        assert_eq!(
            dead.deliver(&callback(&format!("EvR{i}"), event), None).await.0,
            200
        );
    }
    assert_eq!(
        dead.state.pipeline.inbox_counts().await.unwrap(),
        BTreeMap::from([("pending".to_owned(), 3)])
    );
    assert!(
        dead.conversations().await.is_empty(),
        "acknowledged, not processed yet"
    );
    drop(dead);
    // The next start replays them.
    let app = spawn(&db, true).await;
    assert_eq!(app.settled().await, BTreeMap::from([("ingested".to_owned(), 3)]));
    let convs = app.conversations().await;
    let texts: Vec<&str> = convs
        .iter()
        .flat_map(|(_, msgs)| msgs.iter().map(|m| m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(texts, ["Webhooks are delayed", "Since 10:00 UTC", "Any update?"]);
}
