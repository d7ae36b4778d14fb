//! Issue 11's load acceptance as two processes: the built `triage serve` (real models, a database
//! file or a PostgreSQL database) as a child process, the fake Slack Web API in this process.
//! Signed Events API deliveries of customer questions, thread follow-ups and team replies over
//! 50 channels, 10% re-delivered as Slack's retries (same event id, `X-Slack-Retry-Num`) and 5%
//! re-sent under a new event id, from a few concurrent senders that retry on connection errors
//! as Slack does. Halfway the server is killed with SIGKILL and restarted on the same database.
//! The fake Slack answers 429 (`Retry-After: 1`) to one call in twenty and `internal_error` to one
//! in fifty (half of those after applying the call). At the end: exactly the unique messages are
//! stored, every conversation has exactly one card in its owner's triage channel showing its
//! current status and message count, and the p99 of the acknowledgement time is under 1 s.
//!
//! `TRIAGE_SLACK_ACCEPTANCE_EVENTS` sets the number of message events (default 1,000); the
//! issue's 10,000 run is the ignored `..._10000` test. Deliveries are paced like live traffic
//! (`TRIAGE_SLACK_ACCEPTANCE_RATE` per second, default 150) so that the kill lands while events
//! are being processed and cards sent, not after the last acknowledgement. Figures are printed on stderr
//! (`cargo test --release --test integration slack::acceptance -- --nocapture`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use triage::config::Secret;
use triage::slack::card::status_label;
use triage::slack::signing::sign;
use triage::store::{ConversationFilter, PageRequest, Store};

use super::fake::{FakeSlack, Fault, BOT_TOKEN, BOT_USER};
// The team member `ServerProcess` configures (`TRIAGE_TEAM_USERS`).
use crate::pipeline::{ServerProcess, AGENT};
use crate::tickets::helpers::{send, Backend, TestDb, TOKEN};

const CHANNELS: usize = 50;
const OWNERS: usize = 10;
const SENDERS: usize = 4;
const SECRET: &str = "acceptance-signing-secret";
const OUR_TEAM: &str = "TOURS";
/// Cards of conversations without an owner's channel (none expected: every channel has one).
const DEFAULT_TRIAGE: &str = "CTRIAGE";

const QUESTIONS: &[&str] = &[
    "Our nightly CSV export fails with a 500 error since this morning",
    "Webhooks to our endpoint have been delayed by about ten minutes",
    "Two of our users cannot log in with SSO, they get an invalid SAML response",
    "The invoice for November shows the wrong number of seats",
    "Search returns no results for tickets created today",
    "Our API token stopped working after the rotation, every call returns 401",
    "The mobile app crashes when opening an attachment larger than 10 MB",
    "Can you raise our rate limit? We hit 429s during the nightly sync",
];
const FOLLOW_UPS: &[&str] = &[
    "Any update on this? It is blocking our team",
    "It happened again a few minutes ago, same error",
];
const TEAM_REPLIES: &[&str] = &[
    "Thanks for reporting, we are looking into it now",
    "We deployed a fix, it should work again. Closing this, let us know if it comes back",
    "Could you send us the request id from the response headers?",
    "I've escalated this to engineering and will update you within the hour",
];

/// One Events API delivery: the JSON body and the retry number Slack would send with it.
#[derive(Clone)]
struct Delivery {
    body: String,
    retry: u32,
}

/// The deliveries in sending order and the unique (channel, ts) of the messages in them.
fn stream(events: usize) -> (Vec<Delivery>, BTreeSet<(String, String)>) {
    let mut keyed: Vec<(f64, Delivery)> = Vec::new();
    let mut unique = BTreeSet::new();
    for i in 0..events {
        let c = i % CHANNELS;
        let k = i / CHANNELS;
        // Per channel, groups of five: a customer's question, then thread replies (the customer
        // following up, the team answering).
        let (root, pos) = (k - k % 5, k % 5);
        let channel = format!("CCUST{c:02}");
        let ts = format!("{}.{:06}", 1_700_000_000 + k * 20, c);
        let root_ts = format!("{}.{:06}", 1_700_000_000 + root * 20, c);
        let customer = format!("UCUST{c:02}{}", root % 7);
        let (user, text) = match pos {
            0 => (
                customer,
                format!("{} (ref {c}-{root})", QUESTIONS[(root / 5 + c) % QUESTIONS.len()]),
            ),
            1 | 3 => (customer, FOLLOW_UPS[(pos / 2) % FOLLOW_UPS.len()].to_string()),
            _ => (
                AGENT.to_string(),
                TEAM_REPLIES[(root / 5 + pos + c) % TEAM_REPLIES.len()].to_string(),
            ),
        };
        let mut event = json!({"type": "message", "channel": channel, "channel_type": "channel",
            "user": user, "text": text, "ts": ts, "team": "TCUSTOMER", "user_team": "TCUSTOMER"});
        if pos > 0 {
            event["thread_ts"] = json!(root_ts);
        }
        unique.insert((channel, ts));
        let body = |event_id: String| {
            json!({"token": "legacy", "team_id": OUR_TEAM, "api_app_id": "A1", "type": "event_callback",
                   "event_id": event_id, "event_time": 1_700_000_000 + k * 20,
                   "authorizations": [{"team_id": OUR_TEAM, "user_id": BOT_USER, "is_bot": true}],
                   "event": event.clone()})
            .to_string()
        };
        keyed.push((
            i as f64,
            Delivery {
                body: body(format!("Ev{i:07}")),
                retry: 0,
            },
        ));
        // 10%: Slack did not see the acknowledgement in time and retries the same event.
        if i % 10 == 3 {
            keyed.push((
                i as f64 + 5.5,
                Delivery {
                    body: body(format!("Ev{i:07}")),
                    retry: 1,
                },
            ));
        }
        // 5%: the same message again under a new event id.
        if i % 20 == 11 {
            keyed.push((
                i as f64 + 12.5,
                Delivery {
                    body: body(format!("Ev{i:07}b")),
                    retry: 0,
                },
            ));
        }
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    (keyed.into_iter().map(|(_, d)| d).collect(), unique)
}

fn from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn events_from_env(default: usize) -> usize {
    from_env("TRIAGE_SLACK_ACCEPTANCE_EVENTS", default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_sqlite() {
    run(Backend::Sqlite, events_from_env(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_postgres() {
    run(Backend::Postgres, events_from_env(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the issue's full 10,000-event run takes minutes; run with --ignored (figures in BENCHMARKS.md)"]
async fn sigkill_mid_stream_sqlite_10000() {
    run(Backend::Sqlite, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the issue's full 10,000-event run takes minutes; run with --ignored (figures in BENCHMARKS.md)"]
async fn sigkill_mid_stream_postgres_10000() {
    run(Backend::Postgres, 10_000).await;
}

/// The child's environment: Slack on, against the fake.
fn child_env(fake: &FakeSlack) -> Vec<(&'static str, String)> {
    vec![
        ("TRIAGE_SLACK_SIGNING_SECRET", SECRET.into()),
        ("TRIAGE_SLACK_BOT_TOKEN", BOT_TOKEN.into()),
        ("TRIAGE_SLACK_API_URL", fake.api_url.clone()),
        ("TRIAGE_SLACK_TRIAGE_CHANNEL", DEFAULT_TRIAGE.into()),
        // Slack's one post per second per channel would make the run last as many seconds as
        // a triage channel has cards; the pacing itself is tested in slack::outbox.
        ("TRIAGE_SLACK_POST_INTERVAL_MS", "20".into()),
        // Rows in flight when the process was killed are taken again after 4 s, not a minute.
        ("TRIAGE_SLACK_OUTBOX_LEASE_MS", "4000".into()),
        ("RUST_LOG", "warn".into()),
    ]
}

async fn start(url: &str, env: &[(&'static str, String)]) -> ServerProcess {
    let (url, env) = (url.to_string(), env.to_vec());
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ServerProcess::start_with(&url, &env)
    })
    .await
    .expect("start triage serve")
}

/// What the senders share: the server's current address, the next delivery, the figures.
struct Senders {
    address: Mutex<String>,
    next: AtomicUsize,
    acked: AtomicUsize,
    failed_attempts: AtomicUsize,
    latencies: Mutex<Vec<Duration>>,
}

/// Delivers one event as Slack does: signed now; a failed attempt (connection refused while the
/// server is down, a 5xx) is retried with `X-Slack-Retry-Num`, to whichever server is up.
async fn deliver(client: &reqwest::Client, shared: &Senders, d: &Delivery) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut attempt = 0;
    loop {
        let address = shared.address.lock().unwrap().clone();
        let ts = chrono::Utc::now().timestamp().to_string();
        let mut req = client
            .post(format!("{address}/slack/events"))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", &ts)
            .header(
                "x-slack-signature",
                sign(&Secret::new(SECRET), &ts, d.body.as_bytes()),
            );
        let retry = d.retry + attempt;
        if retry > 0 {
            req = req
                .header("x-slack-retry-num", retry.to_string())
                .header("x-slack-retry-reason", "http_error");
        }
        let started = Instant::now();
        match req.body(d.body.clone()).send().await {
            Ok(r) if r.status() == 200 => {
                let body: Value = r.json().await.unwrap_or_default();
                assert_eq!(body, json!({"ok": true}), "acknowledgement");
                shared.latencies.lock().unwrap().push(started.elapsed());
                shared.acked.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                panic!(
                    "delivery refused: {status} {}",
                    r.text().await.unwrap_or_default()
                );
            }
            Ok(_) | Err(_) => {
                shared.failed_attempts.fetch_add(1, Ordering::SeqCst);
                assert!(Instant::now() < deadline, "no server acknowledged for 10 minutes");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn run(backend: Backend, events: usize) {
    let Some(db) = TestDb::create(backend).await else {
        return; // TestDb printed why (and fails instead under CI).
    };
    let fake = FakeSlack::start().await;
    fake.add_channel(DEFAULT_TRIAGE, "triage");
    for o in 0..OWNERS {
        fake.add_channel(&format!("CTRI{o}"), &format!("triage-{o}"));
        fake.add_user(&format!("UOWN{o}"), &format!("Owner {o}"), OUR_TEAM);
    }
    fake.add_user(AGENT, "Agent One", OUR_TEAM);
    for c in 0..CHANNELS {
        fake.add_channel(&format!("CCUST{c:02}"), &format!("customer-{c:02}"));
        for u in 0..7 {
            fake.add_user(
                &format!("UCUST{c:02}{u}"),
                &format!("Customer {c}.{u}"),
                "TCUSTOMER",
            );
        }
    }
    let (deliveries, unique) = stream(events);
    // The customers' messages exist in Slack (the cards link to the first one).
    for d in &deliveries {
        let e: Value = serde_json::from_str(&d.body).unwrap();
        let e = &e["event"];
        fake.add_message(
            e["channel"].as_str().unwrap(),
            e["ts"].as_str().unwrap(),
            e["user"].as_str().unwrap(),
            e["text"].as_str().unwrap(),
        );
    }
    let env = child_env(&fake);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let first = start(&db.url, &env).await;
    first.wait_ready(&client).await;
    setup(&client, &first.addr).await;
    let store = triage::store::connect(&db.url)
        .await
        .expect("the test's own connection");

    faults(&fake);
    let shared = Arc::new(Senders {
        address: Mutex::new(first.addr.clone()),
        next: AtomicUsize::new(0),
        acked: AtomicUsize::new(0),
        failed_attempts: AtomicUsize::new(0),
        latencies: Mutex::new(Vec::new()),
    });
    let deliveries = Arc::new(deliveries);
    let rate = from_env("TRIAGE_SLACK_ACCEPTANCE_RATE", 150).max(1) as f64;
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (shared, deliveries, client) = (shared.clone(), deliveries.clone(), client.clone());
        senders.spawn(async move {
            loop {
                let i = shared.next.fetch_add(1, Ordering::SeqCst);
                let Some(d) = deliveries.get(i) else { return };
                // Live traffic: delivery i happens about i / rate seconds in.
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                deliver(&client, &shared, d).await;
            }
        });
    }
    // Halfway, the server dies (SIGKILL: no shutdown, calls in flight cut) and a new one
    // starts on the same database; the senders retry against it.
    while shared.acked.load(Ordering::SeqCst) < deliveries.len() / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut first = first;
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    let killed_at = started.elapsed();
    let acked_at_kill = shared.acked.load(Ordering::SeqCst);
    let second = start(&db.url, &env).await;
    *shared.address.lock().unwrap() = second.addr.clone();
    let restarted_in = started.elapsed() - killed_at;
    while let Some(r) = senders.join_next().await {
        r.expect("sender");
    }
    let sent_at = started.elapsed();

    // Drained: every delivery processed, no outbox row left, and Slack quiet for 3 s.
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut quiet_since: Option<(Instant, usize)> = None;
    loop {
        assert!(Instant::now() < deadline, "not drained within 30 minutes");
        let inbox = store.inbox_counts().await.unwrap();
        let depth = store.outbox().counts().await.unwrap().depth();
        let calls = fake.calls().len();
        let idle = !inbox.contains_key("pending") && depth == 0;
        quiet_since = match quiet_since {
            Some((t, n)) if idle && n == calls => {
                if t.elapsed() > Duration::from_secs(3) {
                    break;
                }
                Some((t, n))
            }
            _ if idle => Some((Instant::now(), calls)),
            _ => None,
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained_at = started.elapsed() - Duration::from_secs(3);
    let inbox = store.inbox_counts().await.unwrap();

    // Exactly the unique messages, each once.
    let conversations = all_conversations(store.as_ref()).await;
    let mut stored = Vec::new();
    for c in &conversations {
        let mut page = PageRequest {
            cursor: None,
            limit: 200,
        };
        loop {
            let batch = store.list_messages(&c.id, page.clone()).await.unwrap();
            stored.extend(batch.items.iter().map(|m| (m.channel.clone(), m.ts.clone())));
            match batch.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
    }
    let stored_set: BTreeSet<_> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), stored_set.len(), "a message stored twice");
    assert_eq!(stored_set, unique, "the stored messages are not the unique ones");

    // One card per conversation, in its owner's channel, showing its current state.
    let mut cards: HashMap<String, Vec<Value>> = HashMap::new();
    let channels = (0..OWNERS)
        .map(|o| format!("CTRI{o}"))
        .chain([DEFAULT_TRIAGE.to_string()]);
    for channel in channels {
        for m in fake.messages(&channel) {
            if m["metadata"]["event_type"] == "triage_card" {
                let id = m["metadata"]["event_payload"]["conversation_id"]
                    .as_str()
                    .unwrap();
                cards.entry(id.to_string()).or_default().push(m.clone());
            }
        }
    }
    let ids: BTreeSet<&str> = conversations.iter().map(|c| c.id.as_str()).collect();
    let strays: Vec<&String> = cards.keys().filter(|k| !ids.contains(k.as_str())).collect();
    assert!(strays.is_empty(), "cards of no conversation: {strays:?}");
    let mut stale = Vec::new();
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &conversations {
        let posted = cards.get(&c.id).map_or(0, Vec::len);
        assert_eq!(posted, 1, "conversation {} has {posted} cards", c.id);
        let blocks = cards[&c.id][0]["blocks"].to_string();
        let want_status = format!("*Status*\\n{}", status_label(c.status));
        let want_count = format!("*Messages*\\n{}", c.message_count);
        if !(blocks.contains(&want_status) && blocks.contains(&want_count)) {
            stale.push(format!("{} ({want_status}, {want_count})", c.id));
        }
        *statuses.entry(status_label(c.status)).or_default() += 1;
    }
    assert!(
        stale.is_empty(),
        "cards not showing their conversation's current state: {stale:?}"
    );
    // The team's replies moved tickets (else the cards' updates would say little).
    assert!(statuses.len() >= 2, "statuses {statuses:?}");

    let mut latencies = shared.latencies.lock().unwrap().clone();
    latencies.sort();
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
    let metrics = client
        .get(format!("{}/metrics", second.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    eprintln!(
        "slack acceptance ({backend:?}): {events} message events, {} deliveries ({} unique messages) from {SENDERS} senders \
         at {rate}/s over {CHANNELS} channels; SIGKILL at {:.1} s after {acked_at_kill} acks, restarted in {:.1} s, {} failed attempts retried; \
         all acknowledged at {:.1} s, drained at {:.1} s; ack ms p50 {:.1} p99 {:.1} max {:.1}; inbox {inbox:?}; \
         {} conversations {statuses:?}, {} cards, duplicates 0, stale 0; {}; second process: cards recovered from history {}",
        deliveries.len(),
        unique.len(),
        killed_at.as_secs_f64(),
        restarted_in.as_secs_f64(),
        shared.failed_attempts.load(Ordering::SeqCst),
        sent_at.as_secs_f64(),
        drained_at.as_secs_f64(),
        q(0.5),
        q(0.99),
        q(1.0),
        conversations.len(),
        cards.len(),
        fake.summary(),
        super::harness::metric(&metrics, "triage_slack_cards_recovered_total"),
    );
    assert!(q(0.99) < 1000.0, "p99 acknowledgement {:.1} ms", q(0.99));
    drop(second);
}

/// Slack's faults: 429 to one call in twenty, internal_error to one in fifty (half applied).
fn faults(fake: &FakeSlack) {
    fake.fail_every(None, 20, Fault::RateLimited { retry_after: 1 });
    fake.fail_every(None, 100, Fault::Error("internal_error"));
    fake.fail_every(None, 100, Fault::ErrorAfterApplying("internal_error"));
}

/// Ten owners, each with a triage channel and an account of five customer channels.
async fn setup(client: &reqwest::Client, addr: &str) {
    for o in 0..OWNERS {
        let member = json!({"name": format!("Owner {o}"), "triage_channel": format!("CTRI{o}")});
        let put = client
            .put(format!("{addr}/v1/team/UOWN{o}"))
            .bearer_auth(TOKEN)
            .json(&member);
        let (status, body) = send(put).await;
        assert_eq!(status, 200, "{body}");
        let channels: Vec<String> = (0..CHANNELS)
            .filter(|c| c % OWNERS == o)
            .map(|c| format!("CCUST{c:02}"))
            .collect();
        let account =
            json!({"name": format!("Customer {o}"), "owner": format!("UOWN{o}"), "channels": channels});
        let post = client
            .post(format!("{addr}/v1/accounts"))
            .bearer_auth(TOKEN)
            .json(&account);
        let (status, body) = send(post).await;
        assert_eq!(status, 201, "{body}");
    }
}

async fn all_conversations(store: &dyn Store) -> Vec<triage::domain::Conversation> {
    let mut out = Vec::new();
    let mut page = PageRequest {
        cursor: None,
        limit: 200,
    };
    loop {
        let batch = store
            .list_conversations(&ConversationFilter::default(), page.clone())
            .await
            .unwrap();
        out.extend(batch.items);
        match batch.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return out,
        }
    }
}
