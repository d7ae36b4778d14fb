//! The outbox under a loopback load (issue 11's acceptance, outbox part): many conversations over
//! 50 customer channels and 10 owners' triage channels, people's changes while cards are being
//! posted, the fake Slack answering 429 (`Retry-After: 1`) to one call in twenty and
//! `internal_error` to one in fifty (half of those after applying the call), and the worker
//! killed mid-stream (its task aborted, rows left in flight) and replaced. At the end every
//! conversation has exactly one card, showing its current status and message count.
//!
//! `TRIAGE_SLACK_LOAD_CONVERSATIONS` (default 200) sets the size; the figures are printed on
//! stderr (`cargo test --release --test integration slack::load -- --nocapture`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use triage::slack::card::status_label;
use triage::slack::outbox::OutboxConfig;

use super::fake::Fault;
use super::harness::{fast, metric, spawn_with, until, SlackApp, CUSTOMER};
use crate::tickets::helpers::{send, Backend, TOKEN};

const OWNERS: usize = 10;
const CHANNELS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_card_is_posted_once_and_up_to_date_under_faults_and_a_crash() {
    let n: usize = std::env::var("TRIAGE_SLACK_LOAD_CONVERSATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let config = OutboxConfig {
        lease: Duration::from_millis(500),
        concurrency: 8,
        ..fast()
    };
    // The card service and the worker are started (and killed) by hand below.
    let s = spawn_with(Backend::Sqlite, config, false, false)
        .await
        .expect("sqlite");
    setup(&s).await;
    s.fake.fail_every(None, 20, Fault::RateLimited { retry_after: 1 });
    s.fake.fail_every(None, 100, Fault::Error("internal_error"));
    s.fake
        .fail_every(None, 100, Fault::ErrorAfterApplying("internal_error"));

    let started = Instant::now();
    let slack = s.state.slack.clone().unwrap();
    let forever = std::future::pending::<()>;
    let first = tokio::spawn(slack.outbox.clone().run(forever()));
    let first_cards = tokio::spawn(slack.cards(s.state.pipeline.clone()).run(forever()));
    let mut ids = Vec::new();
    for i in 0..n {
        let channel = format!("CCUST{:02}", i % CHANNELS);
        let ts = format!("{}.{:06}", 1_700_000_000 + i * 120, 100);
        s.fake.add_message(&channel, &ts, CUSTOMER, "help");
        let body = json!({"channel": channel, "ts": ts, "user": CUSTOMER, "text": format!("question {i}: the export fails")});
        let (status, body) = s.app.message(body).await;
        assert_eq!(status, 201, "{body}");
        let id = body["conversation"]["id"].as_str().unwrap().to_string();
        // People work on some tickets while their cards are being posted.
        if i % 3 == 0 {
            let patch = json!({"status": "in_progress", "priority": "high"});
            let (st, b) = send(s.app.patch(&format!("/v1/conversations/{id}"), &patch)).await;
            assert_eq!(st, 200, "{b}");
        }
        if i % 5 == 0 {
            let ts = format!("{}.{:06}", 1_700_000_000 + i * 120 + 30, 100);
            let follow = json!({"channel": channel, "ts": ts, "user": CUSTOMER, "text": "any update?"});
            assert_eq!(s.app.message(follow).await.0, 201);
        }
        ids.push(id);
        if i == n / 2 {
            // The process dies: sends in flight are dropped (their rows stay `sending`), and
            // changes committed but not yet turned into card rows are lost with it.
            first.abort();
            first_cards.abort();
        }
    }
    let _ = (first.await, first_cards.await);
    let killed_at = started.elapsed();
    // The new process: cards reconciled with the conversations, then followed; a new worker.
    let cards = slack.cards(s.state.pipeline.clone());
    let reconciled = cards.reconcile(10 * n).await.unwrap();
    let second_cards = tokio::spawn(cards.run(forever()));
    let second = tokio::spawn(slack.outbox.clone().run(forever()));
    let outbox = s.state.pipeline.outbox();
    until("the outbox drained", || async move {
        outbox.counts().await.unwrap().depth() == 0
    })
    .await;
    let drained = started.elapsed();
    second.abort();
    second_cards.abort();

    // Exactly one card per conversation, in its owner's channel, showing its current state.
    let mut cards: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for o in 0..OWNERS {
        for m in s.fake.messages(&format!("CTRI{o}")) {
            if let Some(c) = m["metadata"]["event_payload"]["conversation_id"].as_str() {
                cards.entry(c.to_string()).or_default().push(m.clone());
            }
        }
    }
    let mut stale = 0;
    for id in &ids {
        let posted = cards.get(id).map_or(0, Vec::len);
        if posted != 1 {
            let rows = s.state.pipeline.outbox().history_of(id).await.unwrap();
            let posts: Vec<_> = s
                .fake
                .calls_of("chat.postMessage")
                .into_iter()
                .filter(|c| c.args["metadata"]["event_payload"]["conversation_id"] == id.as_str())
                .map(|c| (c.status, c.error))
                .collect();
            panic!("conversation {id} has {posted} cards; outbox rows {rows:?}; posts {posts:?}");
        }
        let (_, c) = send(s.app.get(&format!("/v1/conversations/{id}"))).await;
        let blocks = cards[id][0]["blocks"].to_string();
        let status = c["status"].as_str().unwrap().parse().unwrap();
        let want_status = format!("*Status*\\n{}", status_label(status));
        let want_count = format!("*Messages*\\n{}", c["message_count"]);
        if !(blocks.contains(&want_status) && blocks.contains(&want_count)) {
            stale += 1;
        }
    }
    assert_eq!(stale, 0, "cards not showing their conversation's current state");
    let m = s.metrics().await;
    eprintln!(
        "slack load: {n} conversations, {CHANNELS} channels, {OWNERS} triage channels; worker killed at {:.1} s, \
         {reconciled} conversations reconciled, outbox drained at {:.1} s; {}; retries {}; cards recovered from history {}; \
         duplicate cards 0, stale cards 0",
        killed_at.as_secs_f64(),
        drained.as_secs_f64(),
        s.fake.summary(),
        metric_sum(&m, "triage_slack_retries_total"),
        metric(&m, "triage_slack_cards_recovered_total"),
    );
}

/// Ten owners, each with a triage channel and an account of five customer channels.
async fn setup(s: &SlackApp) {
    for o in 0..OWNERS {
        let triage = format!("CTRI{o}");
        s.fake.add_channel(&triage, &format!("triage-{o}"));
        let member = json!({"name": format!("Owner {o}"), "triage_channel": triage});
        let put = s
            .app
            .client
            .put(format!("{}/v1/team/UOWN{o}", s.app.address))
            .bearer_auth(TOKEN);
        assert_eq!(send(put.json(&member)).await.0, 200);
        let channels: Vec<String> = (0..CHANNELS)
            .filter(|c| c % OWNERS == o)
            .map(|c| format!("CCUST{c:02}"))
            .collect();
        for c in &channels {
            s.fake.add_channel(c, c);
        }
        let account =
            json!({"name": format!("Customer {o}"), "owner": format!("UOWN{o}"), "channels": channels});
        assert_eq!(send(s.app.post("/v1/accounts", &account)).await.0, 201);
    }
}

fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
