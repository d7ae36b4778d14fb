//! A card follows its conversation's owner to the owner's triage channel, and sent outbox rows
//! are deleted after their retention, on both backends against the strict fake.

use std::time::Duration;

use serde_json::{json, Value};
use triage::slack::outbox::{Outbox, OutboxConfig};

use super::harness::{eventually, fast, spawn, until, SlackApp, CUSTOMER_CHANNEL, TRIAGE_CHANNEL};
use crate::tickets::helpers::{on_both_backends, send, Backend, TOKEN};

on_both_backends!(
    an_owner_change_moves_the_card_to_the_new_owners_channel,
    sent_rows_are_deleted_after_their_retention,
);

fn blocks(card: &Value) -> String {
    card["blocks"].to_string()
}

async fn member(s: &SlackApp, user: &str, name: &str, channel: &str) {
    s.fake
        .add_channel(channel, &format!("triage-{}", name.to_lowercase()));
    let req = s.app.client.put(format!("{}/v1/team/{user}", s.app.address));
    let body = json!({"name": name, "triage_channel": channel});
    let (status, reply) = send(req.bearer_auth(TOKEN).json(&body)).await;
    assert_eq!(status, 200, "{reply}");
}

async fn an_owner_change_moves_the_card_to_the_new_owners_channel(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    member(&s, "UALICE", "Alice", "CALICE").await;
    member(&s, "UBOB", "Bob", "CBOB").await;
    let account = json!({"name": "Acme", "owner": "UALICE", "channels": [CUSTOMER_CHANNEL]});
    assert_eq!(send(s.app.post("/v1/accounts", &account)).await.0, 201);
    let id = s.customer_says("1700000000.000100", "Refund please").await;
    eventually("the card in Alice's channel", || {
        s.card_of("CALICE", &id).len() == 1
    })
    .await;
    let old_ts = s.card_of("CALICE", &id)[0]["ts"].as_str().unwrap().to_string();

    let (status, body) = send(
        s.app
            .patch(&format!("/v1/conversations/{id}"), &json!({"owner": "UBOB"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually("the card in Bob's channel", || s.card_of("CBOB", &id).len() == 1).await;
    eventually("the old card says where it went", || {
        blocks(&s.card_of("CALICE", &id)[0]).contains("Moved to <#CBOB>")
    })
    .await;
    let old = &s.card_of("CALICE", &id)[0];
    assert_eq!(
        old["ts"],
        old_ts.as_str(),
        "the old card was updated, not reposted"
    );
    assert!(
        old["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] != "actions"),
        "no controls left on the old card: {}",
        blocks(old)
    );
    let new = blocks(&s.card_of("CBOB", &id)[0]);
    assert!(new.contains("<@UBOB>") && new.contains("acknowledge"), "{new}");
    assert!(s.cards(TRIAGE_CHANNEL).is_empty());
    // The worker records the new card once Slack answered the post, which is after the fake
    // shows it: wait for the row as well.
    let outbox = s.state.pipeline.outbox();
    until("the moved card recorded", || async {
        outbox.card(&id).await.unwrap().is_some()
    })
    .await;
    let card = outbox.card(&id).await.unwrap().unwrap();
    assert_eq!(card.channel, "CBOB");

    // Later changes update the new card only; the old one stays as it is.
    let before = s.card_of("CALICE", &id)[0].clone();
    s.customer_says("1700000060.000100", "Any news?").await;
    eventually("the new card counts two messages", || {
        blocks(&s.card_of("CBOB", &id)[0]).contains("*Messages*\\n2")
    })
    .await;
    assert_eq!(s.card_of("CALICE", &id)[0], before);
    assert_eq!(s.card_of("CBOB", &id).len(), 1);
    assert_eq!(
        s.fake.calls_of("chat.postMessage").len(),
        2,
        "one card per channel"
    );

    // A reply in the old card's thread is still an internal note of the conversation.
    let reply = json!({"type": "message", "channel": "CALICE", "channel_type": "channel", "user": "UALICE",
                       "text": "Bob has it now", "ts": "1700000100.000200", "thread_ts": old_ts});
    s.deliver("EvNote", reply).await;
    let counts = s.settled().await;
    assert_eq!(counts.get("note"), Some(&1), "{counts:?}");
    let (status, notes) = send(s.app.get(&format!("/v1/conversations/{id}/notes"))).await;
    assert_eq!(status, 200, "{notes}");
    assert_eq!(notes["items"][0]["text"], "Bob has it now");
}

async fn sent_rows_are_deleted_after_their_retention(backend: Backend) {
    let mut config = fast();
    config.retention = Duration::ZERO;
    config.prune_every = Duration::from_millis(50);
    // No worker yet: the test sends the rows itself first.
    let Some(s) = spawn(backend, config, false).await else {
        return;
    };
    let id = s.customer_says("1700000000.000100", "Login fails").await;
    until("the card", || async {
        s.outbox().drain().await.unwrap();
        s.card_of(TRIAGE_CHANNEL, &id).len() == 1
    })
    .await;
    for priority in ["high", "low", "urgent"] {
        let (status, body) = send(
            s.app
                .patch(&format!("/v1/conversations/{id}"), &json!({"priority": priority})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    until("the last change on the card", || async {
        s.outbox().drain().await.unwrap();
        blocks(&s.card_of(TRIAGE_CHANNEL, &id)[0]).contains("*Priority*\\nUrgent")
    })
    .await;
    let outbox = s.state.pipeline.outbox();
    let sent = outbox.history_of(&id).await.unwrap();
    assert!(sent.len() >= 2, "a post and updates: {sent:?}");
    assert!(sent.iter().all(|r| r.1 == "done"), "{sent:?}");

    // The default retention (72 h) keeps rows this young.
    let default = Outbox::new(
        s.state.pipeline.clone(),
        s.outbox().api().clone(),
        s.state.metrics.slack.clone(),
        OutboxConfig::default(),
    );
    assert_eq!(default.prune().await.unwrap(), 0);
    assert_eq!(outbox.history_of(&id).await.unwrap(), sent);

    // The worker (retention zero here) deletes every sent row but the card's latest.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(s.outbox().clone().run(async move {
        let mut rx = stopped;
        let _ = rx.wait_for(|s| *s).await;
    }));
    until("sent rows deleted but the card's latest", || async {
        outbox.history_of(&id).await.unwrap().len() == 1
    })
    .await;
    let rows = outbox.history_of(&id).await.unwrap();
    assert_eq!(rows[0], sent[sent.len() - 1], "the latest card row stays");
    assert_eq!(outbox.counts().await.unwrap().done, 1);
    // What the card shows is still known: nothing is sent again for an unchanged card.
    let updates = s.fake.calls_of("chat.update").len();
    let cards = s.state.slack.as_ref().unwrap().cards();
    cards.reconcile(100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.fake.calls_of("chat.update").len(), updates);
    assert_eq!(outbox.counts().await.unwrap().depth(), 0);
    let _ = stop.send(true);
    let _ = worker.await;
}
