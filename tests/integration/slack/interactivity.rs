//! `POST /slack/interactivity` on both backends: every control of a card, signed as Slack signs
//! it, changes the ticket as `human:<slack user>` and the card follows; a refused change answers
//! the person ephemerally through `response_url`; unsigned, forged and stale requests get 401.

use serde_json::{json, Value};
use triage::config::Secret;
use triage::slack::signing::sign;

use super::harness::{eventually, fast, spawn, SlackApp, SIGNING_SECRET, TRIAGE_CHANNEL};
use crate::tickets::helpers::{assert_error, on_both_backends, send, Backend};

on_both_backends!(
    each_control_changes_the_ticket_and_the_card,
    unsigned_forged_and_stale_requests_are_refused
);

fn form(payload: &Value) -> String {
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

async fn post(s: &SlackApp, body: String, timestamp: i64, secret: &str) -> (u16, Value) {
    let ts = timestamp.to_string();
    let signature = sign(&Secret::new(secret), &ts, body.as_bytes());
    send(
        s.app
            .client
            .post(format!("{}/slack/interactivity", s.app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", signature)
            .body(body),
    )
    .await
}

async fn press(s: &SlackApp, payload: Value) {
    let (status, body) = post(s, form(&payload), chrono::Utc::now().timestamp(), SIGNING_SECRET).await;
    assert_eq!(status, 200, "{body}");
}

fn action(user: &str, response_url: &str, card: &Value, action: Value) -> Value {
    json!({"type": "block_actions", "user": {"id": user, "username": "roadrunner"}, "response_url": response_url,
           "message": card, "actions": [action]})
}

async fn conversation(s: &SlackApp, id: &str) -> Value {
    let (status, body) = send(s.app.get(&format!("/v1/conversations/{id}"))).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn each_control_changes_the_ticket_and_the_card(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    let id = s
        .customer_says("1700000000.000100", "The export button does nothing")
        .await;
    eventually("the card", || s.card_of(TRIAGE_CHANNEL, &id).len() == 1).await;
    let card = s.card_of(TRIAGE_CHANNEL, &id)[0].clone();
    let url = s.fake.response_url("r1");
    let block = |kind: &str| format!("triage:{id}:{kind}");
    let card_text = || s.card_of(TRIAGE_CHANNEL, &id)[0]["blocks"].to_string();

    // Buttons carry the conversation id as their value.
    press(
        &s,
        action(
            "UAGENT1",
            &url,
            &card,
            json!({"type": "button", "action_id": "in_progress", "block_id": block("buttons"), "value": id}),
        ),
    )
    .await;
    assert_eq!(conversation(&s, &id).await["status"], "in_progress");
    eventually("In Progress on the card", || {
        card_text().contains("*Status*\\nIn Progress")
    })
    .await;

    // Selects carry no value: the block id names the conversation.
    let priority = json!({"type": "static_select", "action_id": "set_priority", "block_id": block("pickers"),
                          "selected_option": {"text": {"type": "plain_text", "text": "Urgent"}, "value": "urgent"}});
    press(&s, action("UAGENT1", &url, &card, priority)).await;
    let owner = json!({"type": "users_select", "action_id": "set_owner", "block_id": block("pickers"), "selected_user": "UOWNER"});
    press(&s, action("UAGENT1", &url, &card, owner)).await;
    let c = conversation(&s, &id).await;
    assert_eq!(
        (c["priority"].as_str(), c["owner"].as_str()),
        (Some("urgent"), Some("UOWNER"))
    );
    eventually("priority and owner on the card", || {
        let t = card_text();
        t.contains("*Priority*\\nUrgent") && t.contains("*Owner*\\n<@UOWNER>")
    })
    .await;

    // On Hold needs a linked issue: refused, said ephemerally, nothing changes.
    let on_hold = json!({"type": "static_select", "action_id": "set_status", "block_id": block("pickers"),
                         "selected_option": {"text": {"type": "plain_text", "text": "On Hold"}, "value": "on_hold"}});
    press(&s, action("UAGENT1", &url, &card, on_hold)).await;
    eventually("an ephemeral answer", || !s.fake.responses("r1").is_empty()).await;
    let answer = &s.fake.responses("r1")[0];
    assert_eq!(answer["response_type"], "ephemeral");
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains("On Hold") && text.contains("issue"), "{text}");
    assert_eq!(conversation(&s, &id).await["status"], "in_progress");

    // set_status with a status, then Close and Acknowledge both close.
    let on_you = json!({"type": "static_select", "action_id": "set_status", "block_id": block("pickers"),
                        "selected_option": {"text": {"type": "plain_text", "text": "On You"}, "value": "on_you"}});
    press(&s, action("UAGENT2", &url, &card, on_you.clone())).await;
    assert_eq!(conversation(&s, &id).await["status"], "on_you");
    press(
        &s,
        action(
            "UAGENT2",
            &url,
            &card,
            json!({"type": "button", "action_id": "close", "value": id}),
        ),
    )
    .await;
    assert_eq!(conversation(&s, &id).await["status"], "closed");
    press(&s, action("UAGENT2", &url, &card, on_you.clone())).await;
    // The card's metadata names the conversation when the action does not.
    press(
        &s,
        action(
            "UAGENT1",
            &url,
            &card,
            json!({"type": "button", "action_id": "acknowledge"}),
        ),
    )
    .await;
    assert_eq!(conversation(&s, &id).await["status"], "closed");
    eventually("Closed on the card", || card_text().contains("*Status*\\nClosed")).await;

    // Every change is recorded as the Slack user who pressed.
    let (_, events) = send(s.app.get(&format!("/v1/conversations/{id}/events"))).await;
    let actors: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert!(
        actors.contains(&"human:UAGENT1") && actors.contains(&"human:UAGENT2"),
        "{actors:?}"
    );
    assert_eq!(s.fake.calls_of("chat.postMessage").len(), 1, "one card");
}

async fn unsigned_forged_and_stale_requests_are_refused(backend: Backend) {
    let Some(s) = spawn(backend, fast(), true).await else {
        return;
    };
    let id = s.customer_says("1700000000.000100", "help").await;
    let body = form(&json!({"type": "block_actions", "user": {"id": "U1"},
                            "actions": [{"action_id": "acknowledge", "value": id}]}));
    let now = chrono::Utc::now().timestamp();
    let unsigned = send(
        s.app
            .client
            .post(format!("{}/slack/interactivity", s.app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone()),
    )
    .await;
    assert_error(unsigned.0, &unsigned.1, 401);
    let (st, b) = post(&s, body.clone(), now, "not-the-secret").await;
    assert_error(st, &b, 401);
    let (st, b) = post(&s, body.clone(), now - 6 * 60, SIGNING_SECRET).await;
    assert_error(st, &b, 401);
    assert_eq!(conversation(&s, &id).await["status"], "new", "nothing applied");
    let (st, b) = post(&s, "text=hello".into(), now, SIGNING_SECRET).await;
    assert_error(st, &b, 400);
}
