//! The outbox worker: sends the Slack Web API writes the store holds, exactly once.
//!
//! Every write is a row first ([`Outbox::enqueue`], or a card's content through
//! [`Outbox::enqueue_card_update`]); the worker claims due rows (a conditional update, safe with
//! several replicas), sends each, and records the outcome:
//!
//! - **Lanes.** A row's lane is its method and channel. One call per lane at a time, in row
//!   order; `chat.postMessage` lanes send at most one message per `post_interval` (Slack allows
//!   about one per second per channel). A 429 closes the lane for its `Retry-After`.
//! - **Errors.** `ok: false` is logged with Slack's code; a transient one (and a 429, a 5xx, a
//!   dropped connection) is retried with exponential backoff (never sooner than `Retry-After`), up
//!   to `max_attempts`; a permanent one fails the row at once.
//! - **Exactly once.** A card post whose earlier attempt may have reached Slack (Slack's
//!   `internal_error` "may have succeeded", a dropped connection, or a process that died while the
//!   row was in flight, found by its expired lease) is first looked up in the channel's history by
//!   its metadata (`triage_card`, the conversation id); when found it is recorded, not posted again,
//!   and brought up to date with a `chat.update`.
//! - **Retention.** Sent rows older than `retention` are deleted now and then (`prune_every`),
//!   except each conversation's latest card row; failed rows stay for diagnosis.
//! - **Cards.** A card's content is versioned in the store; a card row (its post, its updates)
//!   sends the newest content when claimed, never the content it was queued with. A card's rows
//!   are never in flight together: not in this process (a card in flight keeps its other rows
//!   waiting) and not across processes (the claim refuses while another row of the card holds a
//!   live lease, so a call from a dead or slow process cannot land after a newer one). Slack
//!   therefore applies a card's calls in version order; the newest version Slack acknowledged is
//!   recorded, and a row whose version is not newer is dropped. An update is sent to the card's
//!   (channel, ts) once its post is done.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::api::{Args, PostMessage, SlackApi, SlackError};
use crate::pipeline::Pipeline;
use crate::store::{CardRef, NewOutboxItem, OutboxItem, StoreError};
use crate::telemetry::{MethodLabels, SlackMetrics};

pub const POST_MESSAGE: &str = "chat.postMessage";
pub const UPDATE: &str = "chat.update";
/// The pseudo-method of a row posted to an interaction's `response_url` (`{"url", "message"}`).
pub const RESPONSE_URL: &str = "response_url";

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// A row in flight longer than this is taken to belong to a dead process and sent again
    /// (after the history check). Longer than a call's timeout.
    pub lease: Duration,
    /// Between two `chat.postMessage` calls to one channel.
    pub post_interval: Duration,
    /// Attempts before a row is given up.
    pub max_attempts: i32,
    /// First retry delay; doubled per attempt up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Rows sent at once (different lanes).
    pub concurrency: usize,
    /// How often the worker looks for due rows when nothing wakes it.
    pub poll: Duration,
    /// Sent rows older than this are deleted (`TRIAGE_SLACK_OUTBOX_RETENTION_HOURS`), except the
    /// latest card row of each conversation.
    pub retention: Duration,
    /// How often the worker deletes them.
    pub prune_every: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            lease: Duration::from_secs(60),
            post_interval: Duration::from_secs(1),
            max_attempts: 10,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            concurrency: 4,
            poll: Duration::from_millis(500),
            retention: Duration::from_secs(72 * 3600),
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// The outbox: enqueues writes and runs the worker that sends them. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pipeline: Pipeline,
    api: SlackApi,
    metrics: SlackMetrics,
    config: Arc<OutboxConfig>,
    wake: Arc<Notify>,
    /// Lane -> not before (after a post, a 429).
    lanes: Arc<Mutex<HashMap<String, Instant>>>,
}

/// What sending one row came to, short of a Slack error.
enum Outcome {
    Done {
        result: Value,
        card: Option<CardRef>,
    },
    /// A card post found in the channel's history: recorded, then brought up to date.
    Recovered {
        card: CardRef,
    },
    /// Not an attempt: try again after this long (a card update waiting for its post).
    Postponed(Duration),
    /// Dropped without a call, with the reason.
    Dropped(&'static str),
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Outbox {
    pub fn new(pipeline: Pipeline, api: SlackApi, metrics: SlackMetrics, config: OutboxConfig) -> Self {
        Outbox {
            pipeline,
            api,
            metrics,
            config: Arc::new(config),
            wake: Arc::new(Notify::new()),
            lanes: Arc::default(),
        }
    }

    pub fn api(&self) -> &SlackApi {
        &self.api
    }

    /// Stores a write; the worker sends it.
    pub async fn enqueue(&self, item: NewOutboxItem) -> Result<i64, StoreError> {
        let id = self.pipeline.outbox().enqueue(item, now_ms()).await?;
        self.wake.notify_one();
        Ok(id)
    }

    /// Stores a card's new content (a `chat.postMessage` body with the card's metadata): it
    /// replaces the card's post or update still waiting, or becomes a `chat.update`.
    pub async fn enqueue_card_update(&self, conversation_id: &str, body: Value) -> Result<i64, StoreError> {
        let id = self
            .pipeline
            .outbox()
            .enqueue_card_update(conversation_id, body, now_ms())
            .await?;
        self.wake.notify_one();
        Ok(id)
    }

    /// Moves a conversation's card (see [`crate::store::SlackOutbox::move_card`]).
    pub async fn move_card(
        &self,
        conversation_id: &str,
        retire: NewOutboxItem,
        post: NewOutboxItem,
    ) -> Result<(), StoreError> {
        self.pipeline
            .outbox()
            .move_card(conversation_id, retire, post, now_ms())
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Sends rows until `shutdown` resolves, then lets the calls in flight finish.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut running: JoinSet<Vec<String>> = JoinSet::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut pruned: Option<Instant> = None;
        loop {
            if pruned.is_none_or(|t| t.elapsed() >= self.config.prune_every) {
                pruned = Some(Instant::now());
                match self.prune().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "Slack outbox: sent rows past their retention deleted"),
                    Err(e) => tracing::warn!(error = %e, "Slack outbox: deleting old sent rows failed"),
                }
            }
            let next = match self.start_due(&mut running, &mut busy).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "Slack outbox: reading due rows failed");
                    self.config.poll
                }
            };
            tokio::select! {
                Some(done) = running.join_next(), if !running.is_empty() => {
                    match done {
                        Ok(keys) => { for k in keys { busy.remove(&k); } }
                        Err(e) => {
                            // A panicked send leaves its row `sending`: its lease brings it back.
                            tracing::error!(error = %e, "Slack outbox: a send task failed");
                            busy.clear();
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(next) => {}
                _ = &mut shutdown => break,
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Deletes sent rows older than the retention (each conversation's latest card row stays);
    /// returns how many.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let before = now_ms() - self.config.retention.as_millis() as i64;
        self.pipeline.outbox().prune_sent(before).await
    }

    /// Sends every row due now, waiting for lanes closed by the post interval or a
    /// `Retry-After` but not for backoffs, until none is left (tests and tools). Returns the rows
    /// handled.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut handled = 0;
        loop {
            let mut running = JoinSet::new();
            let mut busy = HashSet::new();
            let wait = self.start_due(&mut running, &mut busy).await?;
            if running.is_empty() {
                if wait < self.config.poll {
                    // Rows wait only for a lane to open (post interval, Retry-After).
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Ok(handled);
            }
            while running.join_next().await.is_some() {
                handled += 1;
            }
        }
    }

    /// Claims and starts due rows on free lanes; returns how long to wait before looking again.
    async fn start_due(
        &self,
        running: &mut JoinSet<Vec<String>>,
        busy: &mut HashSet<String>,
    ) -> Result<Duration, StoreError> {
        let outbox = self.pipeline.outbox();
        let counts = outbox.counts().await?;
        self.metrics.outbox_depth.set(counts.depth());
        let now = now_ms();
        let stale = now - self.config.lease.as_millis() as i64;
        let mut wait = self.config.poll;
        // Lanes closed for a while (post interval, Retry-After): their later rows wait too.
        let mut closed = HashSet::new();
        for item in outbox.due(now, stale, 500).await? {
            if running.len() >= self.config.concurrency {
                break;
            }
            let lane = lane(&item);
            // One call per card at a time, whatever the lease says about a slow one.
            let card = card_key(&item);
            if busy.contains(&lane)
                || closed.contains(&lane)
                || card.as_ref().is_some_and(|c| busy.contains(c))
            {
                continue;
            }
            if let Some(left) = self.lane_wait(&lane) {
                wait = wait.min(left);
                closed.insert(lane);
                continue;
            }
            // Sent as it is now: a card row carries the card's newest content.
            let Some(item) = outbox.claim(item.id, now, stale).await? else {
                continue;
            };
            busy.insert(lane.clone());
            let mut keys = vec![lane];
            if let Some(card) = card {
                busy.insert(card.clone());
                keys.push(card);
            }
            let this = self.clone();
            running.spawn(async move {
                this.send(item).await;
                keys
            });
        }
        Ok(wait)
    }

    fn lane_wait(&self, lane: &str) -> Option<Duration> {
        let lanes = self.lanes.lock().unwrap();
        let until = *lanes.get(lane)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    fn close_lane(&self, lane: &str, for_: Duration) {
        let until = Instant::now() + for_;
        let mut lanes = self.lanes.lock().unwrap();
        let entry = lanes.entry(lane.to_string()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Sends one claimed row and records the outcome.
    async fn send(&self, item: OutboxItem) {
        let lane = lane(&item);
        let method = item.method.clone();
        if method == POST_MESSAGE {
            self.close_lane(&lane, self.config.post_interval);
        }
        let outcome = match method.as_str() {
            POST_MESSAGE => self.post(&item).await,
            UPDATE => self.update(&item).await,
            RESPONSE_URL => self.respond(&item).await,
            other => self
                .api
                .call(other, Args::Json(item.body.clone()))
                .await
                .map(|result| Outcome::Done { result, card: None }),
        };
        if let Err(e) = self.record(&item, &lane, outcome).await {
            // The row stays `sending`; its lease brings it back (after a history check).
            tracing::error!(id = item.id, method, error = %e, "Slack outbox: recording an outcome failed");
        }
    }

    async fn post(&self, item: &OutboxItem) -> Result<Outcome, SlackError> {
        let mut msg: PostMessage =
            serde_json::from_value(item.body.clone()).map_err(|e| SlackError::Decode {
                method: POST_MESSAGE.into(),
                message: format!("outbox row {}: {e}", item.id),
            })?;
        // The row's channel wins: a card's later content may have replaced the body.
        if let Some(channel) = &item.channel {
            msg.channel = channel.clone();
        }
        if let (true, Some(conversation)) = (item.uncertain, &item.conversation_id) {
            // Slack may have posted it: look before posting again. A minute of slack for clocks.
            let oldest = format!("{}.000000", (item.created_ms / 1000 - 60).max(0));
            if let Some(ts) = self
                .api
                .find_card(&msg.channel, conversation, Some(&oldest))
                .await?
            {
                tracing::info!(
                    id = item.id,
                    conversation,
                    ts,
                    "card found in the channel's history; not posted again"
                );
                return Ok(Outcome::Recovered {
                    card: CardRef {
                        conversation_id: conversation.clone(),
                        channel: msg.channel.clone(),
                        ts,
                    },
                });
            }
        }
        let posted = self.api.post_message(&msg).await?;
        Ok(Outcome::Done {
            result: json!({"channel": posted.channel, "ts": posted.ts}),
            card: item.conversation_id.clone().map(|conversation_id| CardRef {
                conversation_id,
                channel: posted.channel,
                ts: posted.ts,
            }),
        })
    }

    async fn update(&self, item: &OutboxItem) -> Result<Outcome, SlackError> {
        let Some(conversation) = &item.conversation_id else {
            let result = self.api.call(UPDATE, Args::Json(item.body.clone())).await?;
            return Ok(Outcome::Done { result, card: None });
        };
        let outbox = self.pipeline.outbox();
        let store = |e: StoreError| SlackError::Transport {
            method: UPDATE.into(),
            message: format!("the store: {e}"),
        };
        match (item.version, item.shown_version) {
            (Some(version), Some(shown)) if shown >= version => {
                return Ok(Outcome::Dropped("the card already shows this content or newer"));
            }
            (Some(_), _) => {}
            // A row queued before card contents were versioned.
            (None, _) => {
                if outbox.superseded(item.id, conversation).await.map_err(store)? {
                    return Ok(Outcome::Dropped("superseded by a later update of the card"));
                }
            }
        }
        let Some(card) = outbox.card(conversation).await.map_err(store)? else {
            if outbox
                .has_unsent(conversation, POST_MESSAGE)
                .await
                .map_err(store)?
            {
                return Ok(Outcome::Postponed(Duration::from_secs(1)));
            }
            return Ok(Outcome::Dropped("the conversation has no card"));
        };
        let mut body = item.body.clone();
        body["channel"] = json!(card.channel);
        body["ts"] = json!(card.ts);
        if let Some(o) = body.as_object_mut() {
            o.remove("thread_ts");
        }
        let result = self.api.call(UPDATE, Args::Json(body)).await?;
        Ok(Outcome::Done { result, card: None })
    }

    async fn respond(&self, item: &OutboxItem) -> Result<Outcome, SlackError> {
        let url = item.body["url"].as_str().unwrap_or_default();
        self.api.respond(url, &item.body["message"]).await?;
        Ok(Outcome::Done {
            result: json!({"ok": true}),
            card: None,
        })
    }

    async fn record(
        &self,
        item: &OutboxItem,
        lane: &str,
        outcome: Result<Outcome, SlackError>,
    ) -> Result<(), StoreError> {
        let outbox = self.pipeline.outbox();
        let labels = MethodLabels::of(&item.method);
        let now = now_ms();
        match outcome {
            Ok(Outcome::Done { result, card }) => {
                self.metrics.sent.get_or_create(&labels).inc();
                // A card call Slack acknowledged: the card shows the version the row carried.
                outbox.complete(item.id, result, card, item.version, now).await
            }
            Ok(Outcome::Recovered { card }) => {
                self.metrics.cards_recovered.inc();
                let result = json!({"channel": card.channel, "ts": card.ts, "found_in_history": true});
                // The found card may show an older version than the newest: an update follows.
                outbox.recover_card(item.id, result, card, now).await?;
                self.wake.notify_one();
                Ok(())
            }
            Ok(Outcome::Postponed(after)) => outbox.postpone(item.id, now + after.as_millis() as i64).await,
            Ok(Outcome::Dropped(why)) => {
                tracing::debug!(
                    id = item.id,
                    method = item.method,
                    why,
                    "Slack outbox row dropped"
                );
                outbox
                    .complete(item.id, json!({"dropped": why}), None, None, now)
                    .await
            }
            Err(e) => {
                let code = e.code();
                let attempt = item.attempts + 1;
                if let Some(wait) = e.retry_after() {
                    self.metrics.rate_limited.get_or_create(&labels).inc();
                    self.close_lane(lane, wait);
                }
                if e.is_transient() && attempt < self.config.max_attempts {
                    let delay = self.backoff(attempt).max(e.retry_after().unwrap_or_default());
                    tracing::warn!(id = item.id, method = item.method, code, attempt, retry_in_ms = delay.as_millis() as u64,
                        error = %e, "Slack call failed; retrying");
                    self.metrics.retries.get_or_create(&labels).inc();
                    outbox
                        .retry(
                            item.id,
                            now + delay.as_millis() as i64,
                            &code,
                            e.may_have_applied(),
                        )
                        .await
                } else {
                    tracing::error!(id = item.id, method = item.method, code, attempt, error = %e,
                        "Slack call failed; giving up");
                    self.metrics.failed.get_or_create(&labels).inc();
                    outbox.fail(item.id, &code, now).await
                }
            }
        }
    }

    /// Exponential backoff with ±20% jitter, so rows failed together do not retry together.
    fn backoff(&self, attempt: i32) -> Duration {
        let base = self.config.base_backoff.as_secs_f64() * 2f64.powi((attempt - 1).clamp(0, 20));
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        Duration::from_secs_f64((base * jitter).min(self.config.max_backoff.as_secs_f64()))
    }
}

/// The in-process busy key of a card row (one call per card at a time).
fn card_key(item: &OutboxItem) -> Option<String> {
    let card = item.method == POST_MESSAGE || item.method == UPDATE;
    item.conversation_id
        .as_ref()
        .filter(|_| card)
        .map(|c| format!("card:{c}"))
}

/// A row's lane: its method and channel (rate limits are per method and channel).
fn lane(item: &OutboxItem) -> String {
    format!("{}:{}", item.method, item.channel.as_deref().unwrap_or(""))
}
