//! Accounts of Slack channels and the Slack name cache, through `POST /slack/events`, the inbound
//! worker and the strict fake, on both backends: triage added to a channel (our bot's
//! `member_joined_channel`) creates the channel's account owned by the inviter; a message in a
//! channel without an account creates one, unowned; an account that exists is never overwritten;
//! names come from `users.info` / `conversations.info`, are cached in the database, never hold up
//! ingestion and are filled in once Slack answers.

use serde_json::{json, Value};
use triage::store::NameKind;

use super::fake::{Fault, BOT_USER};
use super::harness::{eventually, fast, spawn, until, SlackApp, CUSTOMER, CUSTOMER_CHANNEL, TRIAGE_CHANNEL};
use crate::tickets::helpers::{on_both_backends, send, Backend};

on_both_backends!(
    adding_triage_to_a_channel_creates_its_account_owned_by_the_inviter,
    an_existing_account_is_never_overwritten,
    a_message_in_a_new_channel_creates_an_unowned_account,
    names_never_hold_up_ingestion_and_fill_in_later,
);

fn joined(user: &str, inviter: &str) -> Value {
    json!({"type": "member_joined_channel", "user": user, "channel": CUSTOMER_CHANNEL,
           "channel_type": "C", "team": "T0TEAM", "inviter": inviter, "event_ts": "1700000000.000050"})
}

fn message(ts: &str, text: &str) -> Value {
    json!({"type": "message", "channel": CUSTOMER_CHANNEL, "channel_type": "channel", "user": CUSTOMER,
           "text": text, "ts": ts, "event_ts": ts, "team": "TACME"})
}

async fn accounts(s: &SlackApp) -> Vec<Value> {
    let (status, body) = send(s.app.get("/v1/accounts")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// Waits until the (one) account is named after the customer channel (the fake's name for it).
async fn named_after_the_channel(s: &SlackApp) {
    until("the account named after the channel", || async {
        accounts(s)
            .await
            .first()
            .is_some_and(|a| a["name"] == "acme-support")
    })
    .await;
}

/// The conversation (channel, ts) belongs to.
async fn conversation_of(s: &SlackApp, ts: &str) -> Value {
    let (status, body) = send(
        s.app
            .get(&format!("/v1/conversations?channel={CUSTOMER_CHANNEL}")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for c in body["items"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        let (_, msgs) = send(s.app.get(&format!("/v1/conversations/{id}/messages"))).await;
        if msgs["items"].as_array().unwrap().iter().any(|m| m["ts"] == ts) {
            return c.clone();
        }
    }
    panic!("no conversation has {ts}");
}

async fn adding_triage_to_a_channel_creates_its_account_owned_by_the_inviter(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    // Someone else joining is not triage being added.
    s.deliver("Ev1", joined("USOMEONE", "UINVITER")).await;
    let counts = s.settled().await;
    assert_eq!(
        counts.get("ignored:member_joined_channel"),
        Some(&1),
        "{counts:?}"
    );
    assert!(accounts(&s).await.is_empty());

    s.deliver("Ev2", joined(BOT_USER, "UINVITER")).await;
    let counts = s.settled().await;
    assert_eq!(counts.get("account_created"), Some(&1), "{counts:?}");
    // Our bot's id came from auth.test, asked once; the name from conversations.info.
    assert_eq!(s.fake.calls_of("auth.test").len(), 1);
    named_after_the_channel(&s).await;
    let list = accounts(&s).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["owner"], "UINVITER");
    assert_eq!(list[0]["channels"], json!([CUSTOMER_CHANNEL]));
    let info = s.fake.calls_of("conversations.info");
    assert!(!info.is_empty());
    assert_eq!(info[0].args, json!({"channel": CUSTOMER_CHANNEL}));
    assert_eq!(info[0].error, None);

    // The account's owner owns the channel's new conversations; the card names the account.
    s.deliver("Ev3", message("1700000100.000100", "Our exports are empty"))
        .await;
    s.settled().await;
    let conv = conversation_of(&s, "1700000100.000100").await;
    assert_eq!(conv["owner"], "UINVITER");
    assert_eq!(conv["account_id"], list[0]["id"]);
    let id = conv["id"].as_str().unwrap().to_string();
    eventually("the card", || s.card_of(TRIAGE_CHANNEL, &id).len() == 1).await;
    let card = s.card_of(TRIAGE_CHANNEL, &id)[0]["blocks"].to_string();
    assert!(card.contains("*Account*\\nacme-support"), "{card}");
    assert!(card.contains("Wile E. Coyote"), "{card}");

    // Triage removed and added again by someone else: the account stays as it is.
    s.deliver("Ev4", joined(BOT_USER, "UOTHER")).await;
    let counts = s.settled().await;
    assert_eq!(counts.get("account_kept"), Some(&1), "{counts:?}");
    let again = accounts(&s).await;
    assert_eq!(again, list);
    assert_eq!(s.fake.calls_of("auth.test").len(), 1, "remembered");
}

async fn an_existing_account_is_never_overwritten(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    let account = json!({"name": "Acme Corp", "owner": "UOWNER", "channels": [CUSTOMER_CHANNEL]});
    let (status, created) = send(s.app.post("/v1/accounts", &account)).await;
    assert_eq!(status, 201, "{created}");
    s.deliver("Ev1", joined(BOT_USER, "UINVITER")).await;
    s.deliver("Ev2", message("1700000100.000100", "Hello?")).await;
    let counts = s.settled().await;
    assert_eq!(counts.get("account_kept"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("ingested"), Some(&1), "{counts:?}");
    // Give a background rename the time it would take; nothing may change.
    until("the channel's name cached", || async {
        s.state
            .pipeline
            .slack_name(NameKind::Channel, CUSTOMER_CHANNEL)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let list = accounts(&s).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0], created);
    let conv = conversation_of(&s, "1700000100.000100").await;
    assert_eq!(conv["owner"], "UOWNER");
    assert_eq!(conv["account_id"], created["id"]);
}

async fn a_message_in_a_new_channel_creates_an_unowned_account(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    s.deliver("Ev1", message("1700000100.000100", "Is the API down?"))
        .await;
    s.deliver("Ev2", message("1700000200.000100", "Still down")).await;
    let counts = s.settled().await;
    assert_eq!(counts.get("ingested"), Some(&2), "{counts:?}");
    named_after_the_channel(&s).await;
    let list = accounts(&s).await;
    assert_eq!(list.len(), 1, "one account for the channel: {list:?}");
    assert_eq!(list[0]["owner"], Value::Null);
    assert_eq!(list[0]["channels"], json!([CUSTOMER_CHANNEL]));
    let conv = conversation_of(&s, "1700000200.000100").await;
    assert_eq!(conv["owner"], Value::Null);
    // Messages never wait for auth.test (only a join needs to know who our bot is).
    assert!(s.fake.calls_of("auth.test").is_empty());
}

async fn names_never_hold_up_ingestion_and_fill_in_later(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    // Slack's read methods are down.
    for method in ["users.info", "conversations.info"] {
        s.fake
            .fail_every(Some(method), 1, Fault::Error("service_unavailable"));
    }
    s.deliver("Ev1", message("1700000100.000100", "Invoices are wrong"))
        .await;
    let counts = s.settled().await;
    assert_eq!(counts.get("ingested"), Some(&1), "stored with ids: {counts:?}");
    let conv = conversation_of(&s, "1700000100.000100").await;
    let id = conv["id"].as_str().unwrap().to_string();
    let list = accounts(&s).await;
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0]["name"], CUSTOMER_CHANNEL,
        "named after the id until the name is known"
    );
    eventually("the card, with the customer's id", || {
        s.card_of(TRIAGE_CHANNEL, &id).len() == 1
    })
    .await;
    let card = s.card_of(TRIAGE_CHANNEL, &id)[0]["blocks"].to_string();
    assert!(card.contains(&format!("*Customer*\\n{CUSTOMER}")), "{card}");
    let detail = s.state.store.card_details(&[id.clone()]).await.unwrap();
    assert_eq!(detail[0].customer.as_deref(), Some(CUSTOMER));
    assert!(!s.fake.calls_of("users.info").is_empty(), "it was asked");

    // Slack is back: the next message fills the names in.
    s.fake.clear_faults();
    s.deliver("Ev2", message("1700000200.000100", "Also the totals"))
        .await;
    s.settled().await;
    named_after_the_channel(&s).await;
    until("the customer's name cached for the board", || async {
        let d = s.state.store.card_details(&[id.clone()]).await.unwrap();
        d[0].customer.as_deref() == Some("Wile E. Coyote")
    })
    .await;
    let cached = s
        .state
        .pipeline
        .slack_name(NameKind::User, CUSTOMER)
        .await
        .unwrap()
        .expect("cached");
    assert_eq!(cached.name, "Wile E. Coyote");
    // The board shows the name.
    let cookie = crate::board::sign_in(&s.app, "alice").await;
    let board = s
        .app
        .client
        .get(format!("{}/board", s.app.address))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(board.status(), 200);
    let html = board.text().await.unwrap();
    assert!(html.contains("Wile E. Coyote"), "{html}");
    assert!(html.contains("acme-support"), "the account's name: {html}");
}
