//! A server with the Slack side switched on, against the fake Web API: the production router with
//! stand-in models (as the tickets tests), the card service and, unless a test drives it by hand,
//! the outbox worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use triage::config::Secret;
use triage::http::{self, AppState, Models};
use triage::slack::api::SlackApi;
use triage::slack::inbound::{spawn_worker, BotUser, Inbound};
use triage::slack::names::{Names, DEFAULT_TTL};
use triage::slack::outbox::{Outbox, OutboxConfig};
use triage::slack::signing::{sign, Verifier};
use triage::slack::Slack;
use triage::store;

use super::fake::{FakeSlack, BOT_TOKEN};
use crate::tickets::helpers::{config, Backend, KeywordClassifier, TestApp, TestDb, TestGrouper};

pub const TRIAGE_CHANNEL: &str = "CTRIAGE";
pub const CUSTOMER_CHANNEL: &str = "CACME";
pub const CUSTOMER: &str = "UCUST";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

pub struct SlackApp {
    pub app: TestApp,
    pub state: AppState,
    pub fake: FakeSlack,
    stop: tokio::sync::watch::Sender<bool>,
    worker: tokio::task::JoinHandle<()>,
}

impl Drop for SlackApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.worker.abort();
    }
}

/// Fast settings for tests: no pacing, quick backoff, a long lease.
pub fn fast() -> OutboxConfig {
    OutboxConfig {
        post_interval: Duration::ZERO,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        poll: Duration::from_millis(20),
        ..OutboxConfig::default()
    }
}

pub async fn fake_slack() -> FakeSlack {
    let fake = FakeSlack::start().await;
    fake.add_channel(TRIAGE_CHANNEL, "triage");
    fake.add_channel(CUSTOMER_CHANNEL, "acme-support");
    fake.add_user(CUSTOMER, "Wile E. Coyote", "TACME");
    fake
}

/// A server over a fresh database with Slack on; the worker runs when `worker` is true.
pub async fn spawn(backend: Backend, outbox: OutboxConfig, worker: bool) -> Option<SlackApp> {
    spawn_with(backend, outbox, worker, true).await
}

/// As [`spawn`]; the card service runs when `cards` is true.
pub async fn spawn_with(
    backend: Backend,
    outbox: OutboxConfig,
    worker: bool,
    cards: bool,
) -> Option<SlackApp> {
    let db = Arc::new(TestDb::create(backend).await?);
    let fake = fake_slack().await;
    let store = store::connect(&db.url).await.expect("connect and migrate");
    let mut cfg = config();
    cfg.slack_verifier = Some(Verifier::system(Secret::new(SIGNING_SECRET)));
    let mut state = AppState::new(
        Models::default(),
        store,
        Arc::new(TestGrouper),
        Arc::new(KeywordClassifier),
        cfg,
    );
    let api = SlackApi::new(
        &fake.api_url,
        Some(Secret::new(BOT_TOKEN)),
        Duration::from_secs(5),
    );
    // Names refetched at once after a failure, so a test sees the next message fill them in.
    let names = Names::new(
        state.pipeline.clone(),
        Some(api.clone()),
        DEFAULT_TTL,
        Duration::ZERO,
    );
    let slack = Slack {
        names: names.clone(),
        bot: BotUser::new(None, Some(api.clone())),
        outbox: Outbox::new(state.pipeline.clone(), api, state.metrics.slack.clone(), outbox),
        triage_channel: Some(TRIAGE_CHANNEL.into()),
        verifier: Some(Verifier::system(Secret::new(SIGNING_SECRET))),
    };
    state.slack = Some(slack.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if cards {
        tokio::spawn(
            slack
                .cards(state.pipeline.clone())
                .run(until_stopped(stopped.clone())),
        );
    }
    if worker {
        tokio::spawn(slack.outbox.clone().run(until_stopped(stopped.clone())));
    }
    // The inbound worker: Slack events through the inbox, names and accounts from the fake.
    let inbound = Inbound::new(state.config.team_users.clone(), state.metrics.clone())
        .with_slack(slack.names.clone(), slack.bot.clone());
    let worker = spawn_worker(state.pipeline.clone(), inbound, state.slack_inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(http::run(listener, state.clone(), until_stopped(stopped)));
    Some(SlackApp {
        app: TestApp {
            address,
            client: reqwest::Client::new(),
            db,
        },
        state,
        fake,
        stop,
        worker,
    })
}

impl SlackApp {
    pub fn outbox(&self) -> &Outbox {
        &self.state.slack.as_ref().unwrap().outbox
    }

    /// A customer message in the customer channel; returns its conversation id.
    pub async fn customer_says(&self, ts: &str, text: &str) -> String {
        self.fake.add_message(CUSTOMER_CHANNEL, ts, CUSTOMER, text);
        let (status, body) = self
            .app
            .message(
                serde_json::json!({"channel": CUSTOMER_CHANNEL, "ts": ts, "user": CUSTOMER, "text": text}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["conversation"]["id"].as_str().unwrap().to_string()
    }

    /// Delivers `event` to `POST /slack/events` as Slack does (an `event_callback`, signed now);
    /// asserts it was acknowledged.
    pub async fn deliver(&self, event_id: &str, event: Value) {
        let body = serde_json::json!({
            "token": "unused", "team_id": "T0TEAM", "api_app_id": "A0TRIAGE",
            "type": "event_callback", "event_id": event_id, "event_time": 1700000000,
            "event": event,
        })
        .to_string();
        let ts = chrono::Utc::now().timestamp().to_string();
        let resp = self
            .app
            .client
            .post(format!("{}/slack/events", self.app.address))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", &ts)
            .header(
                "x-slack-signature",
                sign(&Secret::new(SIGNING_SECRET), &ts, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    /// Waits until the inbound worker has processed every delivery; the outcome counts.
    pub async fn settled(&self) -> std::collections::BTreeMap<String, i64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let counts = self.state.pipeline.inbox_counts().await.unwrap();
            if !counts.contains_key("pending") {
                return counts;
            }
            assert!(Instant::now() < deadline, "deliveries still pending: {counts:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The cards in the triage channel (top-level messages with triage_card metadata).
    pub fn cards(&self, channel: &str) -> Vec<Value> {
        self.fake
            .messages(channel)
            .into_iter()
            .filter(|m| m["metadata"]["event_type"] == "triage_card")
            .collect()
    }

    pub fn card_of(&self, channel: &str, conversation: &str) -> Vec<Value> {
        self.cards(channel)
            .into_iter()
            .filter(|m| m["metadata"]["event_payload"]["conversation_id"] == conversation)
            .collect()
    }

    pub async fn metrics(&self) -> String {
        self.app
            .client
            .get(format!("{}/metrics", self.app.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Polls `cond` until it holds (30 s at most: the test machine may be loaded).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the async `cond` until it holds (30 s at most).
pub async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of a metric line starting with `prefix` (0 when absent).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
