//! The Slack edge and its core as two `triage serve` processes (issue 11, point 7).
//!
//! The core: real models, a real database (SQLite and PostgreSQL), `/v1` behind a token, no Slack
//! bot token (it posts no card). The edge: `TRIAGE_CORE_URL` pointing at the core, the fake Slack
//! Web API, its own SQLite file, started in an empty folder (no `models/`) with a
//! `TRIAGE_DATABASE_URL` nobody could connect to (it must never be read), and started *before*
//! the core, so its first delivery waits in its inbox until the core answers.
//!
//! Signed Slack events to the edge become conversations in the core; the card is posted through
//! the fake Slack; a button on the edge's `/slack/interactivity` changes the core's ticket and
//! the card follows; a reply in the card's thread is a note in the core (never a message); an
//! edit and a deletion at the source reach the core's message; the channel's account is created
//! in the core and named after the channel.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use triage::config::Secret;
use triage::slack::signing::sign;

use super::fake::{FakeSlack, BOT_TOKEN};
use super::harness::{fake_slack, CUSTOMER, CUSTOMER_CHANNEL, SIGNING_SECRET, TRIAGE_CHANNEL};
use crate::helpers::TOKEN;
use crate::pipeline::ServerProcess;
use crate::tickets::helpers::{on_both_backends, Backend, TestDb};

on_both_backends!(slack_events_to_an_edge_reach_the_core_and_its_cards_follow);

const AGENT: &str = "UTEAM1";
const OUR_TEAM: &str = "TOURS";

/// A free port on the loopback (released: the core binds it later).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn edge(core_url: &str, fake: &FakeSlack, dir: &std::path::Path) -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_triage"));
    cmd.arg("serve")
        .current_dir(dir)
        .env("TRIAGE_BIND", "127.0.0.1:0")
        .env("TRIAGE_CORE_URL", core_url)
        .env("TRIAGE_CORE_TOKEN", TOKEN)
        .env(
            "TRIAGE_EDGE_DATABASE_URL",
            format!("sqlite://{}", dir.join("edge.db").display()),
        )
        // Never read by an edge: a connection would fail and stop start-up.
        .env("TRIAGE_DATABASE_URL", "postgres://nobody:wrong@127.0.0.1:9/none")
        .env("TRIAGE_MODEL_DIR", dir.join("no-models"))
        .env("TRIAGE_API_TOKENS", "")
        .env("TRIAGE_TEAM_USERS", AGENT)
        .env("TRIAGE_SLACK_API_URL", &fake.api_url)
        .env("TRIAGE_SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("TRIAGE_SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env("TRIAGE_SLACK_TRIAGE_CHANNEL", TRIAGE_CHANNEL)
        .env("TRIAGE_SLACK_POST_INTERVAL_MS", "0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    ServerProcess::spawn(cmd)
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    async fn json(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A core route, authenticated.
    async fn core(&self, core: &str, path: &str) -> Value {
        let (status, body) = self
            .json(self.http.get(format!("{core}{path}")).bearer_auth(TOKEN))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// An Events API delivery, signed as Slack signs it.
    async fn deliver(&self, edge: &str, event_id: &str, event: Value) {
        let body = json!({
            "token": "legacy", "team_id": OUR_TEAM, "api_app_id": "A1", "type": "event_callback",
            "event_id": event_id, "event_time": 1700000000,
            "authorizations": [{"team_id": OUR_TEAM, "user_id": "UTRIAGEBOT", "is_bot": true}],
            "event": event,
        })
        .to_string();
        let ts = chrono::Utc::now().timestamp().to_string();
        let signature = sign(&Secret::new(SIGNING_SECRET), &ts, body.as_bytes());
        let t = Instant::now();
        let (status, answer) = self
            .json(
                self.http
                    .post(format!("{edge}/slack/events"))
                    .header("content-type", "application/json")
                    .header("x-slack-request-timestamp", ts)
                    .header("x-slack-signature", signature)
                    .body(body),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "acknowledged in {:?}",
            t.elapsed()
        );
    }

    async fn press(&self, edge: &str, payload: Value) -> (u16, Value) {
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        let ts = chrono::Utc::now().timestamp().to_string();
        let signature = sign(&Secret::new(SIGNING_SECRET), &ts, body.as_bytes());
        self.json(
            self.http
                .post(format!("{edge}/slack/interactivity"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", ts)
                .header("x-slack-signature", signature)
                .body(body),
        )
        .await
    }
}

/// Polls `cond` (async) until it gives `Some` (60 s at most: the core loads its models meanwhile).
async fn until<T, F, Fut>(what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cards_of(fake: &FakeSlack, conversation: &str) -> Vec<Value> {
    fake.messages(TRIAGE_CHANNEL)
        .into_iter()
        .filter(|m| m["metadata"]["event_payload"]["conversation_id"] == conversation)
        .collect()
}

async fn slack_events_to_an_edge_reach_the_core_and_its_cards_follow(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let fake = fake_slack().await;
    fake.add_user(AGENT, "Road Runner", OUR_TEAM);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let core_url = format!("http://127.0.0.1:{port}");
    let c = Client {
        http: reqwest::Client::new(),
    };

    // The edge first: no models, no core database, the core not there yet.
    let edge = edge(&core_url, &fake, dir.path());
    edge.wait_ready(&c.http).await;
    let e = edge.addr.clone();
    // It serves Slack, not the API or the board (those are the core's).
    let (status, _) = c.json(c.http.get(format!("{e}/v1/conversations"))).await;
    assert_eq!(status, 404);
    let root = "1700000000.000100";
    fake.add_message(CUSTOMER_CHANNEL, root, CUSTOMER, "The export button does nothing");
    let message = json!({"type": "message", "channel": CUSTOMER_CHANNEL, "channel_type": "channel",
        "user": CUSTOMER, "text": "The export button does nothing", "ts": root,
        "team": "TCUSTOMER", "user_team": "TCUSTOMER"});
    // Acknowledged while the core is down; kept in the edge's inbox.
    c.deliver(&e, "Ev0001", message.clone()).await;
    // Slack's retry of it: acknowledged, stored once.
    c.deliver(&e, "Ev0001", message).await;

    let core = ServerProcess::start_with(&db.url, &[("TRIAGE_BIND", &format!("127.0.0.1:{port}"))]);
    core.wait_ready(&c.http).await;
    let k = core.addr.clone();
    assert_eq!(k, core_url);

    // The message reached the core (the edge's worker retried until it answered).
    let conversation = until("the conversation in the core", || async {
        let list = c
            .core(&k, &format!("/v1/conversations?channel={CUSTOMER_CHANNEL}"))
            .await;
        list["items"].as_array().filter(|l| !l.is_empty()).cloned()
    })
    .await;
    assert_eq!(conversation.len(), 1, "{conversation:?}");
    let id = conversation[0]["id"].as_str().unwrap().to_string();
    assert_eq!(conversation[0]["message_count"], 1);

    // The channel's account, created in the core by the edge and named after the channel once
    // the edge learned its name from Slack (conversations.info).
    until("the channel's account, named", || async {
        let accounts = c.core(&k, "/v1/accounts").await;
        accounts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["channels"] == json!([CUSTOMER_CHANNEL]) && a["name"] == "acme-support")
            .then_some(())
    })
    .await;

    // Its card, posted by the edge through the fake Slack, from the core's event stream.
    let card = until("the card", || async {
        let cards = cards_of(&fake, &id);
        (!cards.is_empty()).then(|| cards)
    })
    .await;
    assert_eq!(card.len(), 1, "one card: {card:?}");
    let card = card[0].clone();
    let card_ts = card["ts"].as_str().unwrap().to_string();
    assert!(
        card.to_string().contains("The export button does nothing"),
        "{card}"
    );

    // A button on the edge changes the core's ticket, as the person who pressed.
    let payload = json!({"type": "block_actions", "user": {"id": AGENT, "username": "roadrunner"},
        "response_url": fake.response_url("r1"), "message": card,
        "actions": [{"action_id": "in_progress", "block_id": format!("triage:{id}:actions"), "value": id}]});
    let (status, body) = c.press(&e, payload).await;
    assert_eq!(status, 200, "{body}");
    let now = c.core(&k, &format!("/v1/conversations/{id}")).await;
    assert_eq!(now["status"], "in_progress", "{now}");
    let events = c.core(&k, &format!("/v1/conversations/{id}/events")).await;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|ev| ev["actor"] == format!("human:{AGENT}") && ev["after"] == "in_progress"),
        "{events}"
    );
    // ... and the card follows (chat.update from the core's change).
    until("the card updated", || async {
        fake.calls_of("chat.update")
            .iter()
            .any(|call| {
                call.args["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("[In Progress]"))
            })
            .then_some(())
    })
    .await;

    // A refused change (On Hold without a linked issue) is answered ephemerally, with the reason.
    let hold = json!({"type": "block_actions", "user": {"id": AGENT}, "response_url": fake.response_url("r2"),
        "message": card, "actions": [{"action_id": "set_status", "value": id,
        "selected_option": {"value": "on_hold"}}]});
    assert_eq!(c.press(&e, hold).await.0, 200);
    until("the ephemeral answer", || async {
        (!fake.responses("r2").is_empty()).then_some(())
    })
    .await;
    assert!(
        fake.responses("r2")[0].to_string().contains("Could not"),
        "{:?}",
        fake.responses("r2")
    );
    let now = c.core(&k, &format!("/v1/conversations/{id}")).await;
    assert_eq!(now["status"], "in_progress");

    // A reply in the card's thread is an internal note in the core, never a message.
    let reply = json!({"type": "message", "channel": TRIAGE_CHANNEL, "channel_type": "channel",
        "user": AGENT, "text": "Customer is on the legacy plan, check the flag", "ts": "1700000100.000200",
        "thread_ts": card_ts, "team": OUR_TEAM, "user_team": OUR_TEAM});
    c.deliver(&e, "Ev0002", reply.clone()).await;
    c.deliver(&e, "Ev0003", reply).await; // the same message under a new event id
    let notes = until("the note", || async {
        let notes = c.core(&k, &format!("/v1/conversations/{id}/notes")).await;
        notes["items"].as_array().filter(|n| !n.is_empty()).cloned()
    })
    .await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["author"], AGENT);
    assert_eq!(notes[0]["text"], "Customer is on the legacy plan, check the flag");

    // An edit and a deletion at the source reach the core's message.
    let edit = json!({"type": "message", "subtype": "message_changed", "channel": CUSTOMER_CHANNEL,
        "hidden": true, "ts": "1700000200.000000",
        "message": {"type": "message", "user": CUSTOMER, "text": "The CSV export button does nothing", "ts": root,
                    "edited": {"user": CUSTOMER, "ts": "1700000200.000000"}},
        "previous_message": {"type": "message", "user": CUSTOMER, "text": "The export button does nothing", "ts": root}});
    c.deliver(&e, "Ev0004", edit).await;
    let messages = until("the edit", || async {
        let m = c.core(&k, &format!("/v1/conversations/{id}/messages")).await;
        let items = m["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 1 && items[0]["edited"] == true).then_some(items)
    })
    .await;
    assert_eq!(messages[0]["text"], "The CSV export button does nothing");
    let deleted = json!({"type": "message", "subtype": "message_deleted", "channel": CUSTOMER_CHANNEL,
        "hidden": true, "ts": "1700000300.000000", "deleted_ts": root,
        "previous_message": {"type": "message", "user": CUSTOMER, "text": "The CSV export button does nothing", "ts": root}});
    c.deliver(&e, "Ev0005", deleted).await;
    until("the tombstone", || async {
        let m = c.core(&k, &format!("/v1/conversations/{id}/messages")).await;
        (m["items"][0]["deleted"] == true).then_some(())
    })
    .await;

    // Exactly one card for the conversation, and no message of ours in the customer channel.
    assert_eq!(cards_of(&fake, &id).len(), 1);
    assert!(fake
        .calls_of("chat.postMessage")
        .iter()
        .all(|call| call.args["channel"] != CUSTOMER_CHANNEL));
    // SIGTERM: the edge stops although its event stream from the core is open (a blocking read).
    let mut edge = edge;
    let t = Instant::now();
    let pid = edge.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = loop {
        if let Some(status) = edge.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the edge still runs 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    drop(core);
}
