//! `triage::slack::api` against the strict fake: the wire format each method uses, Slack's errors
//! as typed errors, 429 with `Retry-After`, and the fake's own strictness (so a test passing here
//! means the client spoke Slack's format, not just the fake's).

use std::time::Duration;

use serde_json::{json, Value};
use triage::config::Secret;
use triage::slack::api::{Args, HistoryQuery, Metadata, PostMessage, SlackApi, SlackError, UpdateMessage};

use super::fake::{FakeSlack, Fault, BOT_TOKEN};

fn client(fake: &FakeSlack) -> SlackApi {
    SlackApi::new(
        &fake.api_url,
        Some(Secret::new(BOT_TOKEN)),
        Duration::from_secs(5),
    )
}

async fn fake() -> FakeSlack {
    let fake = FakeSlack::start().await;
    fake.add_channel("CTRIAGE", "triage");
    fake.add_channel("CACME", "acme-support");
    fake.add_user("UCUST", "Wile E. Coyote", "TACME");
    fake
}

fn card(conversation: &str, text: &str) -> PostMessage {
    PostMessage {
        channel: "CTRIAGE".into(),
        text: text.into(),
        blocks: Some(json!([{"type": "section", "text": {"type": "mrkdwn", "text": text}}])),
        metadata: Some(Metadata::card(conversation)),
        ..PostMessage::default()
    }
}

#[tokio::test]
async fn post_update_and_permalink_speak_slacks_wire_format() {
    let fake = fake().await;
    let api = client(&fake);
    let posted = api.post_message(&card("conv-1", "first")).await.unwrap();
    assert_eq!(posted.channel, "CTRIAGE");
    let updated = api
        .update_message(&UpdateMessage {
            channel: posted.channel.clone(),
            ts: posted.ts.clone(),
            text: "second".into(),
            blocks: Some(json!([{"type": "divider"}])),
            ..UpdateMessage::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.ts, posted.ts);
    let link = api.get_permalink("CTRIAGE", &posted.ts).await.unwrap();
    assert!(link.ends_with(&posted.ts.replace('.', "")), "{link}");

    let calls = fake.calls();
    assert_eq!(calls.len(), 3);
    for c in &calls {
        assert_eq!(c.authorization.as_deref(), Some(&*format!("Bearer {BOT_TOKEN}")));
        assert_eq!(c.error, None, "{c:?}");
    }
    // Write methods: JSON with a charset, blocks and metadata as JSON values.
    assert_eq!(
        calls[0].content_type.as_deref(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(calls[0].args["metadata"]["event_type"], "triage_card");
    assert_eq!(
        calls[0].args["metadata"]["event_payload"]["conversation_id"],
        "conv-1"
    );
    assert!(calls[0].args["blocks"].is_array());
    // Read methods: form fields.
    assert_eq!(
        calls[2].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        calls[2].args,
        json!({"channel": "CTRIAGE", "message_ts": posted.ts})
    );
    let stored = fake.messages("CTRIAGE");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["text"], "second");
    assert_eq!(
        stored[0]["metadata"]["event_payload"]["conversation_id"],
        "conv-1"
    );
}

#[tokio::test]
async fn slack_errors_are_typed_and_say_whether_they_are_transient() {
    let fake = fake().await;
    let api = client(&fake);
    let mut msg = card("conv-1", "x");
    msg.channel = "CNOPE".into();
    let e = api.post_message(&msg).await.unwrap_err();
    assert_eq!(
        e,
        SlackError::Api {
            method: "chat.postMessage".into(),
            code: "channel_not_found".into()
        }
    );
    assert!(!e.is_transient());

    fake.fail_next(Some("chat.postMessage"), Fault::Error("internal_error"));
    let e = api.post_message(&card("conv-1", "x")).await.unwrap_err();
    assert_eq!(e.code(), "internal_error");
    assert!(e.is_transient() && e.may_have_applied());
    assert!(fake.messages("CTRIAGE").is_empty(), "Fault::Error does nothing");

    fake.fail_next(Some("chat.update"), Fault::RateLimited { retry_after: 7 });
    let e = api
        .update_message(&UpdateMessage {
            channel: "CTRIAGE".into(),
            ts: "1.000001".into(),
            text: "y".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert!(e.is_transient() && !e.may_have_applied());
    assert_eq!(fake.calls_of("chat.update")[0].status, 429);

    // Slack may apply a call and still answer internal_error.
    fake.fail_next(
        Some("chat.postMessage"),
        Fault::ErrorAfterApplying("internal_error"),
    );
    assert_eq!(
        api.post_message(&card("conv-2", "x")).await.unwrap_err().code(),
        "internal_error"
    );
    assert_eq!(fake.messages("CTRIAGE").len(), 1);
    // One call in three of any method.
    fake.fail_every(None, 3, Fault::Error("service_unavailable"));
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(
            api.user_info("UCUST")
                .await
                .map(|_| "ok".to_string())
                .unwrap_or_else(|e| e.code()),
        );
    }
    assert_eq!(
        codes,
        [
            "ok",
            "ok",
            "service_unavailable",
            "ok",
            "ok",
            "service_unavailable"
        ]
    );

    // Nothing listening: a transport error, transient.
    let dead = SlackApi::new(
        "http://127.0.0.1:9/api",
        Some(Secret::new(BOT_TOKEN)),
        Duration::from_secs(2),
    );
    let e = dead.user_info("UCUST").await.unwrap_err();
    assert!(
        matches!(e, SlackError::Transport { .. }) && e.is_transient(),
        "{e:?}"
    );

    // No token configured: nothing is sent.
    let before = fake.calls().len();
    let none = SlackApi::new(&fake.api_url, None, Duration::from_secs(2));
    assert_eq!(none.user_info("UCUST").await.unwrap_err(), SlackError::NoToken);
    assert_eq!(fake.calls().len(), before);
}

#[tokio::test]
async fn the_fake_is_strict_about_tokens_content_types_and_arguments() {
    let fake = fake().await;
    let http = reqwest::Client::new();
    let url = |m: &str| format!("{}/{m}", fake.api_url);
    let error = |v: Value| v["error"].as_str().unwrap_or("ok").to_string();
    let send =
        |req: reqwest::RequestBuilder| async move { error(req.send().await.unwrap().json().await.unwrap()) };

    // Tokens.
    let body = json!({"channel": "CTRIAGE", "text": "hi"});
    assert_eq!(
        send(http.post(url("chat.postMessage")).json(&body)).await,
        "not_authed"
    );
    assert_eq!(
        send(
            http.post(url("chat.postMessage"))
                .bearer_auth("xoxb-wrong")
                .json(&body)
        )
        .await,
        "invalid_auth"
    );
    // A JSON body's token must be in the header; a form's may be a field.
    let with_token = json!({"channel": "CTRIAGE", "text": "hi", "token": BOT_TOKEN});
    assert_eq!(
        send(http.post(url("chat.postMessage")).json(&with_token)).await,
        "not_authed"
    );
    let form = [("channel", "CTRIAGE"), ("text", "hi"), ("token", BOT_TOKEN)];
    assert_eq!(send(http.post(url("chat.postMessage")).form(&form)).await, "ok");

    // Content types.
    let raw = http
        .post(url("chat.postMessage"))
        .bearer_auth(BOT_TOKEN)
        .body("channel=CTRIAGE&text=hi");
    assert_eq!(send(raw).await, "missing_post_type");
    let xml = http
        .post(url("chat.postMessage"))
        .bearer_auth(BOT_TOKEN)
        .header("content-type", "text/xml")
        .body("<x/>");
    assert_eq!(send(xml).await, "invalid_post_type");
    let broken = http
        .post(url("chat.postMessage"))
        .bearer_auth(BOT_TOKEN)
        .header("content-type", "application/json")
        .body("{");
    assert_eq!(send(broken).await, "invalid_json");
    // A read method does not read JSON: the channel is missing.
    let json_read = http
        .post(url("conversations.history"))
        .bearer_auth(BOT_TOKEN)
        .json(&json!({"channel": "CTRIAGE"}));
    assert_eq!(send(json_read).await, "channel_not_found");

    // Required arguments, through the client's generic call.
    let api = client(&fake);
    let code = |r: Result<Value, SlackError>| r.map(|_| "ok".to_string()).unwrap_or_else(|e| e.code());
    let j = |v: Value| Args::Json(v);
    assert_eq!(
        code(api.call("chat.postMessage", j(json!({"text": "hi"}))).await),
        "channel_not_found"
    );
    assert_eq!(
        code(
            api.call("chat.postMessage", j(json!({"channel": "CTRIAGE"})))
                .await
        ),
        "no_text"
    );
    assert_eq!(
        code(
            api.call(
                "chat.postMessage",
                j(json!({"channel": "CTRIAGE", "text": "x", "blocks": {"type": "divider"}}))
            )
            .await
        ),
        "invalid_blocks_format"
    );
    assert_eq!(
        code(
            api.call(
                "chat.postMessage",
                j(json!({"channel": "CTRIAGE", "text": "x", "metadata": {"event_type": "triage_card"}}))
            )
            .await
        ),
        "invalid_metadata_format"
    );
    assert_eq!(
        code(
            api.call("chat.update", j(json!({"channel": "CTRIAGE", "text": "x"})))
                .await
        ),
        "message_not_found"
    );
    assert_eq!(
        code(
            api.call(
                "chat.getPermalink",
                Args::Form(vec![("channel".into(), "CTRIAGE".into())])
            )
            .await
        ),
        "message_not_found"
    );
    assert_eq!(
        code(api.call("users.info", Args::Form(vec![])).await),
        "user_not_found"
    );
    assert_eq!(
        code(api.call("conversations.info", Args::Form(vec![])).await),
        "channel_not_found"
    );
    // Only the bot's own messages can be updated.
    fake.add_message("CACME", "1700000000.000100", "UCUST", "help");
    let theirs = json!({"channel": "CACME", "ts": "1700000000.000100", "text": "x"});
    assert_eq!(
        code(api.call("chat.update", j(theirs)).await),
        "cant_update_message"
    );
}

#[tokio::test]
async fn history_pages_newest_first_and_finds_a_card_by_its_metadata() {
    let fake = fake().await;
    let api = client(&fake);
    let mut posted = Vec::new();
    for i in 0..7 {
        posted.push(
            api.post_message(&card(&format!("conv-{i}"), &format!("card {i}")))
                .await
                .unwrap()
                .ts,
        );
    }
    // A thread reply is not in the channel's history.
    api.post_message(&PostMessage {
        channel: "CTRIAGE".into(),
        text: "a note".into(),
        thread_ts: Some(posted[0].clone()),
        ..PostMessage::default()
    })
    .await
    .unwrap();
    let mut q = HistoryQuery {
        channel: "CTRIAGE".into(),
        limit: Some(3),
        ..HistoryQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = api.history(&q).await.unwrap();
        assert!(
            page.messages.iter().all(|m| m.metadata.is_none()),
            "metadata only when asked"
        );
        seen.extend(page.messages.into_iter().map(|m| m.ts));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    let mut newest_first = posted.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    for (i, ts) in posted.iter().enumerate() {
        let found = api
            .find_card("CTRIAGE", &format!("conv-{i}"), None)
            .await
            .unwrap();
        assert_eq!(found.as_deref(), Some(ts.as_str()));
    }
    assert_eq!(api.find_card("CTRIAGE", "conv-404", None).await.unwrap(), None);
    // `oldest` bounds the search.
    assert_eq!(
        api.find_card("CTRIAGE", "conv-0", Some(&posted[1]))
            .await
            .unwrap(),
        None
    );
    let history_calls = fake.calls_of("conversations.history");
    assert!(history_calls
        .iter()
        .any(|c| c.args["include_all_metadata"] == "true"));
}

#[tokio::test]
async fn conversation_and_user_info_and_response_urls() {
    let fake = fake().await;
    let api = client(&fake);
    let channel = api.conversation_info("CACME").await.unwrap();
    assert_eq!(
        (channel.id.as_str(), channel.name.as_str()),
        ("CACME", "acme-support")
    );
    let user = api.user_info("UCUST").await.unwrap();
    assert_eq!(user.display_name(), "Wile E. Coyote");
    assert_eq!(user.team_id.as_deref(), Some("TACME"));
    assert_eq!(
        api.user_info("UNOBODY").await.unwrap_err().code(),
        "user_not_found"
    );

    let url = fake.response_url("interaction-1");
    let msg = json!({"response_type": "ephemeral", "replace_original": false, "text": "On Hold needs a linked issue"});
    api.respond(&url, &msg).await.unwrap();
    assert_eq!(fake.responses("interaction-1"), vec![msg.clone()]);
    let e = api
        .respond(&format!("{}/respond/unknown", fake.origin), &msg)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SlackError::Http { status: 404, body, .. } if body == "expired_url"),
        "{e:?}"
    );
    assert!(!e.is_transient());
}
