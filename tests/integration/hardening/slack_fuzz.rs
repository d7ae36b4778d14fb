//! Fuzzing the Slack parsers (issue 16): signed, generated and mutated bodies for
//! `POST /slack/events` and `POST /slack/interactivity`, on both backends, with a fixed seed and a
//! bounded number of cases.
//!
//! - Every answer is below 500 and a 2xx is never empty.
//! - Every event the endpoint acknowledged is then processed by the inbox worker without a panic
//!   and without giving up (`failed:*`): at the end nothing is pending and no outcome is a
//!   failure, so a malformed delivery can neither wedge the inbox nor be retried forever.
//! - A fraction of the cases carries a broken signature or timestamp: always 401.
//!
//! Valid templates (plain messages, thread replies, edits, deletes, file shares, bot messages, a
//! bot joining; each card button) are mutated at any depth: one or two fields replaced by any JSON
//! value (NULs, long strings, unicode, odd numbers) or removed.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use triage::config::Secret;
use triage::slack::signing::sign;

use super::properties::{any_json, nasty_string, odd_ts, runner};
use crate::slack::harness::{fast, spawn_with, SlackApp, SIGNING_SECRET, TRIAGE_CHANNEL};
use crate::tickets::helpers::{send, Backend, AGENT, TOKEN};

const CASES: u32 = 150;
const CHANNEL: &str = "CFUZZSLACK";
const BOT: &str = "UTRIAGEBOT";

/// Every JSON pointer inside `v` (objects and arrays, at any depth), the root excluded.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, &p, out);
            }
        }
        _ => {}
    }
}

/// Replaces (or, when `replacement` is `None`, removes) the value at `pointer`.
fn mutate(v: &mut Value, pointer: &str, replacement: Option<Value>) {
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer below the root");
    let key = last.replace("~1", "/").replace("~0", "~");
    let Some(parent) = v.pointer_mut(parent) else {
        return; // an earlier mutation removed it
    };
    match (parent, replacement) {
        (Value::Object(o), Some(r)) => {
            o.insert(key, r);
        }
        (Value::Object(o), None) => {
            o.remove(&key);
        }
        (Value::Array(a), r) => {
            if let Ok(i) = key.parse::<usize>() {
                if i < a.len() {
                    match r {
                        Some(r) => a[i] = r,
                        None => {
                            a.remove(i);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// One of `templates`, with one or two values at any depth replaced (by anything, a nasty string
/// or an odd `ts`) or removed; now and then the whole body is any JSON value.
fn mutated_any_depth(templates: Vec<Value>) -> impl Strategy<Value = Value> {
    let n = templates.len();
    let replacement = prop_oneof![
        3 => any_json().prop_map(Some),
        2 => nasty_string().prop_map(|s| Some(Value::from(s))),
        1 => odd_ts().prop_map(Some),
        1 => Just(None),
    ];
    let one = (any::<prop::sample::Index>(), replacement);
    let mutated = (0..n, proptest::collection::vec(one, 1..3)).prop_map(move |(t, edits)| {
        let mut body = templates[t].clone();
        for (at, replacement) in edits {
            let mut all = Vec::new();
            pointers(&body, "", &mut all);
            if all.is_empty() {
                break;
            }
            let p = at.get(&all).clone();
            mutate(&mut body, &p, replacement);
        }
        body
    });
    prop_oneof![9 => mutated, 1 => any_json()]
}

fn message_events() -> Vec<Value> {
    let msg = |extra: Value| {
        let mut m = json!({"type": "message", "channel": CHANNEL, "user": "UCUSTOMER", "text": "the export fails",
                           "ts": "1700000000.000100", "channel_type": "channel", "team": "TOURS", "user_team": "TOURS"});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m
    };
    let events = [
        msg(json!({})),
        msg(json!({"thread_ts": "1700000000.000050", "parent_user_id": "UCUSTOMER"})),
        msg(json!({"user": AGENT, "text": "Taking a look", "thread_ts": "1700000000.000100"})),
        msg(
            json!({"subtype": "thread_broadcast", "thread_ts": "1700000000.000050", "root": {"ts": "1700000000.000050"}}),
        ),
        msg(
            json!({"subtype": "file_share", "text": "", "files": [{"id": "F1", "name": "trace.log",
                   "permalink": "https://example.slack.com/files/F1", "mimetype": "text/plain"}]}),
        ),
        json!({"type": "message", "subtype": "message_changed", "channel": CHANNEL, "ts": "1700000001.000100",
               "hidden": true, "message": {"type": "message", "user": "UCUSTOMER", "text": "edited text",
               "ts": "1700000000.000100", "edited": {"user": "UCUSTOMER", "ts": "1700000001.000100"}},
               "previous_message": {"type": "message", "user": "UCUSTOMER", "text": "the export fails",
               "ts": "1700000000.000100"}}),
        json!({"type": "message", "subtype": "message_deleted", "channel": CHANNEL, "ts": "1700000002.000100",
               "hidden": true, "deleted_ts": "1700000000.000100",
               "previous_message": {"type": "message", "user": "UCUSTOMER", "text": "x", "ts": "1700000000.000100"}}),
        json!({"type": "message", "subtype": "bot_message", "channel": CHANNEL, "bot_id": "B1",
               "username": "deploybot", "text": "deployed", "ts": "1700000003.000100"}),
        msg(json!({"subtype": "channel_join", "user": "UNEW", "text": "<@UNEW> has joined the channel"})),
        json!({"type": "member_joined_channel", "user": BOT, "channel": CHANNEL, "channel_type": "C",
               "team": "TOURS", "inviter": AGENT}),
    ];
    events
        .into_iter()
        .map(|event| {
            json!({"token": "legacy", "team_id": "TOURS", "api_app_id": "AFUZZ", "type": "event_callback",
                   "event_id": "EvFUZZ", "event_time": 1700000000, "event": event,
                   "authorizations": [{"team_id": "TOURS", "user_id": BOT, "is_bot": true}]})
        })
        .chain([json!({"type": "url_verification", "token": "legacy", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})])
        .collect()
}

fn interaction_payloads(conversation: &str) -> Vec<Value> {
    let action = |a: Value| {
        json!({"type": "block_actions", "user": {"id": AGENT, "username": "agent", "team_id": "TOURS"},
               "team": {"id": "TOURS"}, "trigger_id": "1.2.3", "response_url": "http://127.0.0.1:9/respond",
               "container": {"type": "message", "channel_id": TRIAGE_CHANNEL, "message_ts": "1700000000.000900"},
               "message": {"ts": "1700000000.000900", "metadata": {"event_type": "triage_card",
                           "event_payload": {"conversation_id": conversation}}},
               "actions": [a]})
    };
    let block = format!("triage:{conversation}:controls");
    vec![
        action(
            json!({"action_id": "acknowledge", "block_id": block, "value": conversation, "type": "button"}),
        ),
        action(
            json!({"action_id": "in_progress", "block_id": block, "value": conversation, "type": "button"}),
        ),
        action(
            json!({"action_id": "set_status", "block_id": block, "type": "static_select",
                      "selected_option": {"value": "on_hold", "text": {"type": "plain_text", "text": "On Hold"}}}),
        ),
        action(
            json!({"action_id": "set_priority", "block_id": block, "type": "static_select",
                      "selected_option": {"value": "high"}}),
        ),
        action(
            json!({"action_id": "set_owner", "block_id": block, "type": "users_select",
                      "selected_user": "UOWNER2"}),
        ),
        json!({"type": "view_submission", "user": {"id": AGENT}, "view": {"id": "V1"}}),
    ]
}

#[derive(Debug, Clone)]
enum Request {
    Event(Vec<u8>),
    Interaction(Vec<u8>),
}

impl Request {
    fn path(&self) -> &'static str {
        match self {
            Request::Event(_) => "/slack/events",
            Request::Interaction(_) => "/slack/interactivity",
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            Request::Event(b) | Request::Interaction(b) => b,
        }
    }
}

/// Broken signing headers: none, a wrong signature, a timestamp that is not a number or is stale.
#[derive(Debug, Clone)]
enum Signing {
    Good,
    Bad {
        timestamp: Option<String>,
        signature: Option<String>,
    },
}

fn signing() -> impl Strategy<Value = Signing> {
    let timestamp = prop_oneof![
        Just(None),
        nasty_string().prop_map(Some),
        Just(Some("1531420618".to_owned())),
    ];
    let signature = prop_oneof![
        Just(None),
        nasty_string().prop_map(Some),
        "v0=[0-9a-f]{64}".prop_map(Some),
    ];
    prop_oneof![
        9 => Just(Signing::Good),
        1 => (timestamp, signature).prop_map(|(timestamp, signature)| Signing::Bad { timestamp, signature }),
    ]
}

async fn fuzz(backend: Backend) {
    // Slack on (events verified, the inbox worker with names and accounts from the fake Slack,
    // the card controls answered); the outbox is not sent, so nothing leaves for a fuzzed
    // `response_url`.
    let Some(app) = spawn_with(backend, fast(), false, false).await else {
        return; // no PostgreSQL here (TestDb printed why; CI requires it)
    };
    // A conversation for the buttons to act on.
    let (code, created) = send(
        app.app
            .client
            .post(format!("{}/v1/messages", app.app.address))
            .bearer_auth(TOKEN)
            .json(
                &json!({"channel": CHANNEL, "ts": "1699999999.000100", "user": "UCUSTOMER",
                          "text": "webhooks are not delivered"}),
            ),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let conversation = created["conversation"]["id"].as_str().unwrap().to_owned();

    // Values that a database refuses (NUL, an identifier too long for a PostgreSQL index) in the
    // controls' fields, every time: answered (an ephemeral explanation), never a 5xx.
    let base = interaction_payloads(&conversation);
    for (template, pointer) in [
        (4, "/actions/0/selected_user"),
        (0, "/user/id"),
        (0, "/actions/0/value"),
    ] {
        for nasty in ["x".repeat(100_000), "a\u{0}b".to_owned()] {
            let mut payload = base[template].clone();
            *payload.pointer_mut(pointer).unwrap() = Value::from(nasty.clone());
            let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
            let (status, text) = post_signed(
                &app,
                "/slack/interactivity",
                "application/x-www-form-urlencoded",
                body.into_bytes(),
            )
            .await;
            assert!(status < 500, "{pointer} = {:.20}...: {status} {text}", nasty);
        }
    }

    let events = mutated_any_depth(message_events()).prop_map(|v| v.to_string().into_bytes());
    let interactions = mutated_any_depth(interaction_payloads(&conversation)).prop_map(|v| {
        serde_urlencoded::to_string([("payload", v.to_string())])
            .unwrap()
            .into_bytes()
    });
    let request = prop_oneof![
        6 => events.prop_map(Request::Event),
        3 => interactions.prop_map(Request::Interaction),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Request::Event),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Request::Interaction),
    ];

    let rt = tokio::runtime::Handle::current();
    let checked = std::cell::Cell::new(0u32);
    let case = std::cell::Cell::new(0u32);
    let mut runner = runner(CASES);
    // proptest's runner is synchronous: run it on a blocking thread of this runtime.
    let result = tokio::task::block_in_place(|| {
        runner.run(&(request, signing()), |(request, signing)| {
            case.set(case.get() + 1);
            let n = case.get();
            let body = unique(request.body(), n);
            let (status, text) = rt.block_on(async {
                let now = chrono::Utc::now().timestamp().to_string();
                let mut req = app
                    .app
                    .client
                    .post(format!("{}{}", app.app.address, request.path()))
                    .header(
                        "content-type",
                        match request {
                            Request::Event(_) => "application/json",
                            Request::Interaction(_) => "application/x-www-form-urlencoded",
                        },
                    );
                req = match &signing {
                    Signing::Good => req.header("x-slack-request-timestamp", &now).header(
                        "x-slack-signature",
                        sign(&Secret::new(SIGNING_SECRET), &now, &body),
                    ),
                    Signing::Bad { timestamp, signature } => {
                        if let Some(t) = timestamp.as_deref().and_then(header_value) {
                            req = req.header("x-slack-request-timestamp", t);
                        }
                        if let Some(s) = signature.as_deref().and_then(header_value) {
                            req = req.header("x-slack-signature", s);
                        }
                        req
                    }
                };
                let response = req.body(body.clone()).send().await.expect("the server answers");
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            });
            prop_assert!(status < 500, "{} answered {status}: {text}", request.path());
            prop_assert!(
                !(200..300).contains(&status)
                    || !text.is_empty()
                    || matches!(request, Request::Interaction(_)),
                "{}: empty {status}",
                request.path()
            );
            if let Signing::Bad { .. } = signing {
                prop_assert_eq!(status, 401, "a broken signature was accepted: {}", text);
            }
            if status >= 400 {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                prop_assert!(
                    v["error"]["message"].is_string(),
                    "{} {status}: not the JSON error shape: {text}",
                    request.path()
                );
            }
            checked.set(checked.get() + 1);
            Ok(())
        })
    });
    result.unwrap();
    assert_eq!(checked.get(), CASES);

    // Every acknowledged delivery is processed: nothing pending, nothing given up.
    let outcomes = settled(&app).await;
    eprintln!(
        "{backend:?}: {} cases, inbox outcomes {outcomes:?}",
        checked.get()
    );
    let failed: Vec<_> = outcomes.keys().filter(|k| k.starts_with("failed")).collect();
    assert!(failed.is_empty(), "deliveries given up: {outcomes:?}");
    let processed: i64 = outcomes.values().sum();
    assert!(
        processed > 20,
        "too few deliveries reached the worker: {outcomes:?}"
    );
    // And the server is still well.
    let (code, body) = send(
        app.app
            .client
            .get(format!("{}/v1/conversations?channel={CHANNEL}", app.app.address))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Outcomes named after fuzzed event types stay plain metric labels.
    let (_, metrics) = send(app.app.client.get(format!("{}/metrics", app.app.address))).await;
    for line in metrics
        .as_str()
        .expect("the Prometheus text")
        .lines()
        .filter(|l| l.starts_with("triage_slack_events_total"))
    {
        let label = line
            .split("outcome=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        assert!(
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':'),
            "a metric label from a fuzzed event: {line}"
        );
    }
}

async fn post_signed(app: &SlackApp, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let now = chrono::Utc::now().timestamp().to_string();
    let response = app
        .app
        .client
        .post(format!("{}{path}", app.app.address))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", &now)
        .header(
            "x-slack-signature",
            sign(&Secret::new(SIGNING_SECRET), &now, &body),
        )
        .body(body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Gives the templates' fixed event id and `ts` a per-case value, so that deduplication does not
/// hide later cases from the worker.
fn unique(body: &[u8], case: u32) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(body) else {
        return body.to_vec();
    };
    text.replace("EvFUZZ", &format!("EvFUZZ{case}"))
        .replace("1700000000.000100", &format!("{}.000100", 1_700_000_000 + case))
        .into_bytes()
}

/// A header value when `s` can be one (reqwest refuses control characters).
fn header_value(s: &str) -> Option<String> {
    reqwest::header::HeaderValue::from_str(s)
        .ok()
        .map(|_| s.to_owned())
}

/// Waits until the inbox worker has processed every delivery; the outcome counts.
async fn settled(app: &SlackApp) -> BTreeMap<String, i64> {
    // Failures back off (up to a few seconds each) before they are given up: allow a minute.
    for _ in 0..1200 {
        let counts = app.state.pipeline.inbox_counts().await.unwrap();
        if !counts.contains_key("pending") {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "deliveries still pending: {:?}",
        app.state.pipeline.inbox_counts().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_slack_requests_never_get_a_5xx_sqlite() {
    fuzz(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_slack_requests_never_get_a_5xx_postgres() {
    fuzz(Backend::Postgres).await;
}
