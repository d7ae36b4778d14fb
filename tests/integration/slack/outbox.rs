//! The outbox and the triage cards against the strict fake, on both backends: a card per new
//! conversation, kept current; transient errors retried, permanent ones not; 429 `Retry-After`
//! and the per-channel pace honoured; exactly one card across an ambiguous failure and a crash.

use std::time::Duration;

use serde_json::{json, Value};
use triage::slack::outbox::now_ms;

use super::fake::Fault;
use super::harness::{eventually, fast, metric, spawn, until, CUSTOMER_CHANNEL, TRIAGE_CHANNEL};
use crate::tickets::helpers::{on_both_backends, send, Backend};

on_both_backends!(
    a_new_conversation_gets_one_card_kept_current,
    an_owners_card_goes_to_the_owners_triage_channel,
    transient_errors_are_retried_and_permanent_ones_are_not,
    rate_limits_and_the_channel_pace_are_honoured,
    an_ambiguous_failure_does_not_post_a_second_card,
    a_crash_mid_send_does_not_post_a_second_card,
);

fn blocks_text(card: &Value) -> String {
    card["blocks"].to_string()
}

async fn a_new_conversation_gets_one_card_kept_current(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    let id = s
        .customer_says("1700000000.000100", "Login fails with error 500")
        .await;
    eventually("the card", || s.card_of(TRIAGE_CHANNEL, &id).len() == 1).await;
    let card = &s.card_of(TRIAGE_CHANNEL, &id)[0];
    let text = blocks_text(card);
    for want in [
        "Wile E. Coyote",
        "Login fails with error 500",
        "*Status*\\nNew",
        "Unassigned",
        "View the customer's message",
        "/archives/CACME/p1700000000000100",
    ] {
        assert!(text.contains(want), "{want} not on the card: {text}");
    }

    // A follow-up and people's changes: the same card, updated.
    s.customer_says("1700000010.000100", "Still failing").await;
    eventually("message count", || {
        blocks_text(&s.card_of(TRIAGE_CHANNEL, &id)[0]).contains("*Messages*\\n2")
    })
    .await;
    let patch =
        json!({"status": "in_progress", "priority": "high", "owner": "UOWNER", "title": "Login broken"});
    let (status, body) = send(s.app.patch(&format!("/v1/conversations/{id}"), &patch)).await;
    assert_eq!(status, 200, "{body}");
    eventually("status, priority, owner and title on the card", || {
        let t = blocks_text(&s.card_of(TRIAGE_CHANNEL, &id)[0]);
        t.contains("In Progress")
            && t.contains("*Priority*\\nHigh")
            && t.contains("<@UOWNER>")
            && t.contains("Login broken")
    })
    .await;
    assert_eq!(s.fake.calls_of("chat.postMessage").len(), 1);
    assert!(!s.fake.calls_of("chat.update").is_empty());
    assert_eq!(s.cards(TRIAGE_CHANNEL).len(), 1);
    // Nothing is left to send, and /metrics says so.
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "triage_slack_calls_total{method=\"chat.postMessage\"}"),
        1.0,
        "{m}"
    );
    let stored = s
        .state
        .pipeline
        .outbox()
        .card(&id)
        .await
        .unwrap()
        .expect("card stored");
    assert_eq!(stored.channel, TRIAGE_CHANNEL);
    assert_eq!(
        stored.ts,
        s.card_of(TRIAGE_CHANNEL, &id)[0]["ts"].as_str().unwrap()
    );
}

async fn an_owners_card_goes_to_the_owners_triage_channel(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    s.fake.add_channel("COWNER", "triage-roadrunner");
    let team = s.app.client.put(format!("{}/v1/team/UOWNER", s.app.address));
    let member = json!({"name": "Road Runner", "triage_channel": "COWNER"});
    let (st, body) = send(team.bearer_auth(crate::tickets::helpers::TOKEN).json(&member)).await;
    assert_eq!(st, 200, "{body}");
    let account = json!({"name": "Acme", "owner": "UOWNER", "channels": [CUSTOMER_CHANNEL]});
    let (st, body) = send(s.app.post("/v1/accounts", &account)).await;
    assert_eq!(st, 201, "{body}");
    let id = s.customer_says("1700000000.000100", "Where is my invoice?").await;
    eventually("the card in the owner's channel", || {
        s.card_of("COWNER", &id).len() == 1
    })
    .await;
    let text = blocks_text(&s.card_of("COWNER", &id)[0]);
    assert!(text.contains("Acme") && text.contains("<@UOWNER>"), "{text}");
    assert!(s.cards(TRIAGE_CHANNEL).is_empty());
}

async fn transient_errors_are_retried_and_permanent_ones_are_not(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    s.fake
        .fail_next(Some("chat.postMessage"), Fault::Error("service_unavailable"));
    s.fake
        .fail_next(Some("chat.postMessage"), Fault::Error("internal_error"));
    let id = s.customer_says("1700000000.000100", "help").await;
    eventually("the card after two transient errors", || {
        s.card_of(TRIAGE_CHANNEL, &id).len() == 1
    })
    .await;
    let posts = s.fake.calls_of("chat.postMessage");
    assert_eq!(posts.len(), 3, "two failures, then the post");
    // internal_error may have applied: the history was read before posting again.
    assert!(!s.fake.calls_of("conversations.history").is_empty());

    // A permanent error: given up after one call.
    s.fake
        .fail_next(Some("chat.postMessage"), Fault::Error("channel_not_found"));
    let other = s.customer_says("1700009000.000100", "another question").await;
    eventually("the row failed", || {
        s.fake.calls_of("chat.postMessage").len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.fake.calls_of("chat.postMessage").len(), 4, "not retried");
    let rows = s.state.pipeline.outbox().history_of(&other).await.unwrap();
    assert_eq!(
        rows,
        vec![("chat.postMessage".to_string(), "failed".to_string(), 1)]
    );
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "triage_slack_retries_total{method=\"chat.postMessage\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "triage_slack_failed_total{method=\"chat.postMessage\"}"),
        1.0,
        "{m}"
    );
}

async fn rate_limits_and_the_channel_pace_are_honoured(backend: Backend) {
    let mut config = fast();
    config.post_interval = Duration::from_millis(250);
    let Some(s) = spawn(backend, config, true).await else {
        return;
    };
    s.fake
        .fail_next(Some("chat.postMessage"), Fault::RateLimited { retry_after: 1 });
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            s.customer_says(&format!("17000{i}0000.000100"), &format!("question {i}"))
                .await,
        );
    }
    eventually("three cards", || s.cards(TRIAGE_CHANNEL).len() == 3).await;
    let posts = s.fake.calls_of("chat.postMessage");
    assert_eq!(posts[0].status, 429);
    // Nothing reached the channel within Retry-After of the 429, then one post per interval.
    assert!(
        posts[1].at.duration_since(posts[0].at) >= Duration::from_millis(990),
        "{:?}",
        posts[1].at - posts[0].at
    );
    for w in posts[1..].windows(2) {
        assert!(
            w[1].at.duration_since(w[0].at) >= Duration::from_millis(240),
            "{:?}",
            w[1].at - w[0].at
        );
    }
    assert_eq!(posts.len(), 4);
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "triage_slack_rate_limited_total{method=\"chat.postMessage\"}"),
        1.0,
        "{m}"
    );
}

async fn an_ambiguous_failure_does_not_post_a_second_card(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    // Slack posts the card but answers internal_error.
    s.fake.fail_next(
        Some("chat.postMessage"),
        Fault::ErrorAfterApplying("internal_error"),
    );
    let id = s.customer_says("1700000000.000100", "help").await;
    eventually("the row done", || {
        s.fake.calls_of("conversations.history").len() == 1
    })
    .await;
    let outbox = s.state.pipeline.outbox();
    let idr = &id;
    until("card recorded", || async move {
        outbox.card(idr).await.unwrap().is_some()
    })
    .await;
    assert_eq!(s.card_of(TRIAGE_CHANNEL, &id).len(), 1);
    assert_eq!(
        s.fake.calls_of("chat.postMessage").len(),
        1,
        "found in the history, not posted again"
    );
    let m = s.metrics().await;
    assert_eq!(metric(&m, "triage_slack_cards_recovered_total"), 1.0, "{m}");
}

async fn a_crash_mid_send_does_not_post_a_second_card(backend: Backend) {
    // No worker: the test plays the process that dies mid-send.
    let mut config = fast();
    config.lease = Duration::from_millis(0);
    let Some(s) = spawn(backend, config, false).await else {
        return;
    };
    let sent = s.customer_says("1700000000.000100", "first customer").await;
    let lost = s.customer_says("1700005000.000100", "second customer").await;
    let outbox = s.state.pipeline.outbox();
    until("two card rows", || async move {
        outbox.due(now_ms(), 0, 10).await.unwrap().len() == 2
    })
    .await;
    let rows = outbox.due(now_ms(), 0, 10).await.unwrap();
    for row in &rows {
        assert!(outbox.claim(row.id, now_ms(), 0).await.unwrap().is_some());
    }
    // The dying process got the first card to Slack, not the second.
    let first = rows
        .iter()
        .find(|r| r.conversation_id.as_deref() == Some(&sent))
        .unwrap();
    let api = s.outbox().api();
    let msg: triage::slack::api::PostMessage = serde_json::from_value(first.body.clone()).unwrap();
    let posted = api.post_message(&msg).await.unwrap();

    // A new worker takes over the expired leases.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let handled = s.outbox().drain().await.unwrap();
    assert!(handled >= 2, "{handled}");
    assert_eq!(s.card_of(TRIAGE_CHANNEL, &sent).len(), 1, "not posted twice");
    assert_eq!(s.card_of(TRIAGE_CHANNEL, &lost).len(), 1, "posted once");
    assert_eq!(s.fake.calls_of("chat.postMessage").len(), 2);
    let card = outbox.card(&sent).await.unwrap().unwrap();
    assert_eq!(card.ts, posted.ts);
    assert!(outbox.card(&lost).await.unwrap().is_some());
}
