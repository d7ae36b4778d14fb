//! Issue 14's support-channel scenes through `POST /v1/messages` of the real server, with the
//! committed grouping model (its role scorers) and status model, on both backends. Every message
//! is top-level (no thread): the grouper alone decides.

use serde_json::{json, Value};

use crate::helpers::{self, spawn_app_with, TestApp, TOKEN};
use crate::tickets::helpers::{Backend, TestDb};

const TEAM: [&str; 2] = ["UTEAMSAM", "UTEAMLEE"];
const T0: u64 = 1_700_000_000;

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

on_both_backends!(
    team_reply_in_the_channel_joins_the_waiting_ticket,
    any_update_two_hours_later_joins_the_open_ticket,
    a_new_question_the_day_after_closing_starts_a_new_ticket,
    two_customers_at_once_get_their_own_answers,
    any_update_joins_the_open_ticket_in_a_busy_channel,
    a_team_announcement_starts_its_own_conversation,
);

/// The real server over a fresh database of `backend` (None when PostgreSQL is absent here).
async fn app(backend: Backend) -> Option<(TestApp, TestDb)> {
    let db = TestDb::create(backend).await?;
    let mut s = helpers::settings();
    s.team_users = TEAM.iter().map(|u| u.to_string()).collect();
    s.database_url = db.url.clone();
    Some((spawn_app_with(s).await, db))
}

/// Slack ts of a message `secs` after T0.
fn ts(secs: u64) -> String {
    format!("{}.000100", T0 + secs)
}

/// Posts a top-level message `secs` after T0; returns the response body (status 201 checked).
async fn say(app: &TestApp, secs: u64, user: &str, text: &str) -> Value {
    post(
        app,
        json!({"channel": "CHELP", "ts": ts(secs), "user": user, "text": text}),
    )
    .await
}

/// Posts a reply in the thread of the message sent `root` seconds after T0.
async fn reply(app: &TestApp, root: u64, secs: u64, user: &str, text: &str) -> Value {
    post(
        app,
        json!({"channel": "CHELP", "ts": ts(secs), "thread_ts": ts(root), "user": user, "text": text}),
    )
    .await
}

async fn post(app: &TestApp, body: Value) -> Value {
    let r = app
        .client
        .post(format!("{}/v1/messages", app.addr))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("json body");
    assert_eq!(status, 201, "{body}");
    body
}

fn conv(body: &Value) -> &str {
    body["conversation"]["id"].as_str().expect("conversation id")
}

async fn team_reply_in_the_channel_joins_the_waiting_ticket(backend: Backend) {
    let Some((app, _db)) = app(backend).await else {
        return;
    };
    let q = say(
        &app,
        0,
        "UCUST1",
        "Hi, our webhooks stopped delivering since this morning.",
    )
    .await;
    let q2 = say(
        &app,
        20,
        "UCUST1",
        "Project 4411, nothing in the delivery log either.",
    )
    .await;
    assert_eq!(conv(&q2), conv(&q), "{q2}");
    assert_eq!(q2["conversation"]["status"], "new");
    let a = say(&app, 80, TEAM[0], "Taking a look, give me a few minutes.").await;
    assert_eq!(
        conv(&a),
        conv(&q),
        "the team's top-level reply joins the ticket: {a}"
    );
    assert_eq!(a["conversation"]["status"], "in_progress", "{a}");
    let reasons = a["reasons"].to_string();
    assert!(reasons.contains("waiting for the team"), "{reasons}");
}

async fn two_customers_at_once_get_their_own_answers(backend: Backend) {
    let Some((app, _db)) = app(backend).await else {
        return;
    };
    let b = say(&app, 0, "UCUSTB", "Is there a way to export all tickets as CSV?").await;
    let c = say(
        &app,
        30,
        "UCUSTC",
        "Login to the dashboard fails with a 502 since your deploy",
    )
    .await;
    assert_ne!(conv(&b), conv(&c));
    let to_c = say(
        &app,
        100,
        TEAM[0],
        "<@UCUSTC> we see the 502s too, rolling back now",
    )
    .await;
    assert_eq!(conv(&to_c), conv(&c), "{to_c}");
    let to_b = say(
        &app,
        130,
        TEAM[1],
        "<@UCUSTB> yes: Settings, Data, Export emails you the file",
    )
    .await;
    assert_eq!(conv(&to_b), conv(&b), "{to_b}");
}

async fn a_team_announcement_starts_its_own_conversation(backend: Backend) {
    let Some((app, _db)) = app(backend).await else {
        return;
    };
    let q = say(
        &app,
        0,
        "UCUST1",
        "Search returns nothing for tags with a dash in them",
    )
    .await;
    let a = say(
        &app,
        120,
        TEAM[0],
        "Thanks, reproduced it, we are working on a fix",
    )
    .await;
    assert_eq!(conv(&a), conv(&q), "{a}");
    let ann = say(
        &app,
        3600,
        TEAM[1],
        "Heads up everyone: scheduled maintenance tonight 22:00-23:00 UTC, the API will be read-only.",
    )
    .await;
    assert_ne!(
        conv(&ann),
        conv(&q),
        "an announcement is not a reply to the open ticket: {ann}"
    );
}

/// UCUST1's webhooks question at T0, answered in the channel by the team 90 s later; the body of
/// the question.
async fn webhooks_ticket(app: &TestApp) -> Value {
    let q = say(
        app,
        0,
        "UCUST1",
        "Hi, our webhooks stopped delivering since this morning.",
    )
    .await;
    let a = say(app, 90, TEAM[0], "Taking a look, give me a few minutes.").await;
    assert_eq!(conv(&a), conv(&q), "{a}");
    q
}

/// UCUST1's "any update?" two hours later, in the channel: it joins the ticket `q`, On You.
async fn any_update_joins(app: &TestApp, q: &Value) {
    let up = say(
        app,
        7200,
        "UCUST1",
        "Any update on the webhooks? Still nothing delivered.",
    )
    .await;
    assert_eq!(conv(&up), conv(q), "the follow-up joins the open ticket: {up}");
    assert_eq!(up["conversation"]["status"], "on_you", "{up}");
}

async fn any_update_two_hours_later_joins_the_open_ticket(backend: Backend) {
    let Some((app, _db)) = app(backend).await else {
        return;
    };
    let q = webhooks_ticket(&app).await;
    let other = say(&app, 1800, "UCUST2", "How do I rename a project?").await;
    assert_ne!(conv(&other), conv(&q), "{other}");
    any_update_joins(&app, &q).await;
}

async fn a_new_question_the_day_after_closing_starts_a_new_ticket(backend: Backend) {
    let Some((app, _db)) = app(backend).await else {
        return;
    };
    let q = say(&app, 0, "UCUST1", "How do I change the billing email?").await;
    let a = say(
        &app,
        90,
        TEAM[0],
        "Billing, Contacts: edit the address there. Done on our side, closing this.",
    )
    .await;
    assert_eq!(conv(&a), conv(&q), "{a}");
    let r = app
        .client
        .patch(format!("{}/v1/conversations/{}", app.addr, conv(&q)))
        .bearer_auth(TOKEN)
        .json(&json!({"status": "closed"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let next = say(
        &app,
        90_000,
        "UCUST1",
        "Different question: can we get SAML for our second workspace?",
    )
    .await;
    assert_ne!(conv(&next), conv(&q), "{next}");
    assert_eq!(next["conversation"]["status"], "new", "{next}");
}

/// A busy channel: four other customers' tickets take 80 messages (their questions, then their
/// threads with the team) between the customer's ticket and their "any update?" two hours later,
/// so the ticket's messages are far outside the channel's recent messages. The store's open
/// conversations still bring it to the grouper.
async fn any_update_joins_the_open_ticket_in_a_busy_channel(backend: Backend) {
    let Some((app, _db)) = app(backend).await else {
        return;
    };
    let q = webhooks_ticket(&app).await;
    let others = [
        ("UCUST2", "How do I rename a project?"),
        ("UCUST3", "Can we get invoices sent to a second billing address?"),
        ("UCUST4", "The CSV export is missing the custom fields column"),
        ("UCUST5", "Is there an API to bulk-archive old tickets?"),
    ];
    let mut roots = Vec::new();
    for (k, (user, text)) in others.iter().enumerate() {
        let secs = 300 + 60 * k as u64;
        let b = say(&app, secs, user, text).await;
        assert_ne!(conv(&b), conv(&q), "{b}");
        roots.push((secs, *user, conv(&b).to_string()));
    }
    // 76 thread replies, alternating customer and team, every 80 seconds.
    for n in 0..76u64 {
        let (root, user, id) = &roots[(n % 4) as usize];
        let (who, text) = if n % 8 < 4 {
            (
                *user,
                format!("Thanks, one more detail on this: step {n} still shows the old value."),
            )
        } else {
            (TEAM[1], format!("Checked step {}: try again now please.", n - 4))
        };
        let r = reply(&app, *root, 600 + 80 * n, who, &text).await;
        assert_eq!(conv(&r), id, "{r}");
    }
    any_update_joins(&app, &q).await;
}
