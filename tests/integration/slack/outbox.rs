//! The outbox and the triage cards against the strict fake, on both backends: a card per new
//! conversation, kept current; transient errors retried, permanent ones not; 429 `Retry-After`
//! and the per-channel pace honoured; exactly one card across an ambiguous failure and a crash.

use std::time::Duration;

use serde_json::{json, Value};
use triage::slack::outbox::now_ms;
use triage::store::{CardRef, NewOutboxItem};

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
    card_rows_send_the_newest_version_one_at_a_time,
    a_recovered_card_is_brought_to_the_newest_version,
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

fn card_post(conversation: &str, body: Value) -> NewOutboxItem {
    NewOutboxItem {
        method: "chat.postMessage".into(),
        channel: Some(TRIAGE_CHANNEL.into()),
        conversation_id: Some(conversation.into()),
        body,
    }
}

fn card_at(conversation: &str, ts: &str) -> CardRef {
    CardRef {
        conversation_id: conversation.into(),
        channel: TRIAGE_CHANNEL.into(),
        ts: ts.into(),
    }
}

/// The store's side of card ordering, step by step (no worker): a claimed card row carries the
/// newest content and its version, a card's rows are never claimed while another is in flight
/// with a live lease, and content arriving while rows wait and retry is never lost.
async fn card_rows_send_the_newest_version_one_at_a_time(backend: Backend) {
    let Some(s) = spawn(backend, fast(), false).await else {
        return;
    };
    let o = s.state.pipeline.outbox();
    let c = "conversation-ordering";
    let v = |n: i64| json!({"channel": TRIAGE_CHANNEL, "text": format!("v{n}")});
    let text = |i: &triage::store::OutboxItem| i.body["text"].as_str().unwrap().to_string();
    let lease = 60_000;
    let t = now_ms();
    let stale = t - lease;

    let post = o.enqueue(card_post(c, v(1)), t).await.unwrap();
    let p = o.claim(post, t, stale).await.unwrap().expect("the post");
    assert_eq!((text(&p), p.version), ("v1".into(), Some(1)));
    // New content while the post is in flight: a new row, which cannot go while the post is out.
    let u = o.enqueue_card_update(c, v(2), t).await.unwrap();
    assert_ne!(u, post);
    assert!(
        o.claim(u, t, stale).await.unwrap().is_none(),
        "claimed beside the post in flight"
    );
    o.complete(
        post,
        json!({}),
        Some(card_at(c, "1700000000.000001")),
        p.version,
        t,
    )
    .await
    .unwrap();
    let u1 = o.claim(u, t, stale).await.unwrap().expect("the update");
    assert_eq!(
        (text(&u1), u1.version, u1.shown_version),
        ("v2".into(), Some(2), Some(1))
    );
    // v3 while it is in flight (a new row); then it fails and waits for its retry.
    let later = o.enqueue_card_update(c, v(3), t).await.unwrap();
    assert_ne!(later, u);
    o.retry(u, t + 60_000, "internal_error", true).await.unwrap();
    // The later row goes first, with the newest content; v4 arrives meanwhile and waits in the
    // retried row, which then sends it (it used to be dropped there as superseded: a stale card).
    let u2 = o.claim(later, t, stale).await.unwrap().expect("the later row");
    assert_eq!((text(&u2), u2.version), ("v3".into(), Some(3)));
    assert_eq!(o.enqueue_card_update(c, v(4), t).await.unwrap(), u);
    o.complete(later, json!({}), None, u2.version, t).await.unwrap();
    let u3 = o.claim(u, t, stale).await.unwrap().expect("the retried row");
    assert_eq!(
        (text(&u3), u3.version, u3.shown_version),
        ("v4".into(), Some(4), Some(3))
    );
    o.complete(u, json!({}), None, u3.version, t).await.unwrap();
    let content = o.card_content(c).await.unwrap().unwrap();
    assert_eq!((content.version, content.shown_version), (4, 4));

    // A process dies with v5 in flight: another process does not send v6 beside it until the
    // lease is over (the dead call could still land after v6 and put v5 back).
    let dying = o.enqueue_card_update(c, v(5), t).await.unwrap();
    assert!(o.claim(dying, t, stale).await.unwrap().is_some());
    let newer = o.enqueue_card_update(c, v(6), t).await.unwrap();
    let soon = t + 1_000;
    assert!(o.claim(newer, soon, soon - lease).await.unwrap().is_none());
    let after = t + lease + 1;
    let retaken = o
        .claim(dying, after, after - lease)
        .await
        .unwrap()
        .expect("after the lease");
    assert_eq!(
        (text(&retaken), retaken.version, retaken.uncertain),
        ("v6".into(), Some(6), true)
    );
    o.complete(dying, json!({}), None, retaken.version, after)
        .await
        .unwrap();
    let last = o
        .claim(newer, after, after - lease)
        .await
        .unwrap()
        .expect("the newer row");
    // Nothing newer than what the card shows: the worker drops it without a call.
    assert_eq!((last.version, last.shown_version), (Some(6), Some(6)));
}

/// A card post found in Slack's history may show an older version: one `chat.update` follows,
/// unless a waiting card row already will send the newest content.
async fn a_recovered_card_is_brought_to_the_newest_version(backend: Backend) {
    let Some(s) = spawn(backend, fast(), false).await else {
        return;
    };
    let o = s.state.pipeline.outbox();
    let t = now_ms();
    let stale = t - 60_000;
    let v = |n: i64| json!({"channel": TRIAGE_CHANNEL, "text": format!("v{n}")});

    // Content changed while the post was out: the waiting row carries it, no second update.
    let post = o.enqueue(card_post("with-waiting", v(1)), t).await.unwrap();
    o.claim(post, t, stale).await.unwrap().unwrap();
    o.enqueue_card_update("with-waiting", v(2), t).await.unwrap();
    o.recover_card(
        post,
        json!({"found_in_history": true}),
        card_at("with-waiting", "1700000000.000002"),
        t,
    )
    .await
    .unwrap();
    let h = o.history_of("with-waiting").await.unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(
        o.card_content("with-waiting")
            .await
            .unwrap()
            .unwrap()
            .shown_version,
        0
    );

    // Nothing waiting: an update of the newest content is queued with the recovery.
    let post = o.enqueue(card_post("alone", v(1)), t).await.unwrap();
    o.claim(post, t, stale).await.unwrap().unwrap();
    o.recover_card(
        post,
        json!({"found_in_history": true}),
        card_at("alone", "1700000000.000003"),
        t,
    )
    .await
    .unwrap();
    let h = o.history_of("alone").await.unwrap();
    assert_eq!(
        h.iter()
            .map(|(m, st, _)| (m.as_str(), st.as_str()))
            .collect::<Vec<_>>(),
        [("chat.postMessage", "done"), ("chat.update", "pending")]
    );
    assert_eq!(o.card("alone").await.unwrap().unwrap().ts, "1700000000.000003");
}
