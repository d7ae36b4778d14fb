//! The inbound worker: takes stored Events API deliveries in arrival order (the inbox of this
//! process's store: the shared database in process, the edge's own SQLite file in edge mode),
//! turns each into operations of the [`Core`] and records what it did. Started with the server,
//! it first replays whatever was acknowledged but not processed before a crash or a restart.
//!
//! Outcomes: `ingested`, `duplicate` (the message (channel, ts) was stored before, e.g. re-sent
//! under a new event id), `edited`, `deleted`, `unchanged`, `unknown_message` (an edit or deletion
//! of a message triage never stored), `note`, `duplicate_note`, `ignored:<reason>` (see
//! [`super::message::Item::Ignored`]; `ignored:<event type>` for events triage does not use), and
//! `failed:<why>` after [`MAX_ATTEMPTS`] failures that are not transient. Transient failures (the
//! models still loading, the embedder's queue full, the database unreachable, in edge mode the
//! core unreachable: [`CoreError::is_transient`]) are retried, in order, with backoff, for as long
//! as they last.

use super::core::{Core, CoreError};
use super::message::{interpret, Item, SlackMessage, Team};
use crate::domain::{NewNote, SlackRef};
use crate::pipeline::Pipeline;
use crate::store::InboxItem;
use crate::telemetry::Metrics;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Failures (other than transient ones) before a delivery is given up as `failed:<why>`.
pub const MAX_ATTEMPTS: u32 = 5;
/// Deliveries taken per read of the inbox.
const BATCH: u32 = 200;
/// How long processed deliveries are kept (their event ids dedupe Slack's retries meanwhile).
const KEEP: chrono::TimeDelta = chrono::TimeDelta::days(2);

/// What the worker needs besides the inbox: the core it forwards to, and who the team is.
#[derive(Clone)]
pub struct Inbound {
    pub core: Arc<dyn Core>,
    /// `TRIAGE_TEAM_USERS`.
    pub team_users: HashSet<String>,
    pub metrics: Metrics,
}

impl Inbound {
    pub fn new(core: Arc<dyn Core>, team_users: HashSet<String>, metrics: Metrics) -> Self {
        Inbound {
            core,
            team_users,
            metrics,
        }
    }
}

/// An Events API request body (`event_callback`), as stored in the inbox.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub challenge: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub event: Option<Value>,
    #[serde(default)]
    pub authorizations: Option<Vec<Authorization>>,
}

#[derive(Debug, Deserialize)]
pub struct Authorization {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub is_bot: bool,
}

impl Envelope {
    /// Our bot's user id in this workspace (Slack names the app's authorizations).
    pub fn bot_user_id(&self) -> Option<String> {
        self.authorizations
            .iter()
            .flatten()
            .find(|a| a.is_bot)
            .and_then(|a| a.user_id.clone())
    }
}

/// Starts the worker over `pipeline`'s inbox (its store: the edge's own in edge mode); `wake` is
/// notified after each stored delivery.
pub fn spawn_worker(pipeline: Pipeline, inbound: Inbound, wake: Arc<Notify>) -> JoinHandle<()> {
    tokio::spawn(run(pipeline, inbound, wake))
}

async fn run(pipeline: Pipeline, inbound: Inbound, wake: Arc<Notify>) {
    let mut pruned: Option<Instant> = None;
    loop {
        if pruned.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            match pipeline.inbox_prune(KEEP).await {
                Ok(n) if n > 0 => tracing::info!(deliveries = n, "pruned processed Slack deliveries"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning the Slack inbox failed"),
            }
            pruned = Some(Instant::now());
        }
        let batch = match pipeline.inbox_pending(BATCH).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "reading the Slack inbox failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            // Another replica may have stored deliveries: look again now and then.
            let _ = tokio::time::timeout(Duration::from_secs(2), wake.notified()).await;
            continue;
        }
        for item in batch {
            if !handle(&pipeline, &inbound, &item).await {
                break;
            }
        }
    }
}

/// Processes one delivery; false when it stays pending (retry later, in order).
async fn handle(pipeline: &Pipeline, inbound: &Inbound, item: &InboxItem) -> bool {
    let outcome = match process(pipeline, inbound, item).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let attempts = pipeline.inbox_failed(item.seq, &e.to_string()).await.unwrap_or(0);
            if let Some(backoff) = retry_after_failure(&e, attempts) {
                tracing::warn!(event_id = %item.event_id, attempts, error = %e, "Slack event failed; retrying");
                tokio::time::sleep(backoff).await;
                return false;
            }
            tracing::error!(event_id = %item.event_id, attempts, error = %e, "Slack event given up");
            format!("failed:{e}")
        }
    };
    inbound.metrics.slack_event(&outcome);
    if let Err(e) = pipeline.inbox_finish(item.seq, &outcome).await {
        // Processing is idempotent: taken again, it comes out as a duplicate.
        tracing::warn!(event_id = %item.event_id, error = %e, "recording a Slack event's outcome failed");
        tokio::time::sleep(Duration::from_secs(1)).await;
        return false;
    }
    true
}

/// After the `attempts`-th failure `e`: how long to wait before trying the delivery again, or
/// `None` to give it up. A transient failure is retried for as long as it lasts (backoff capped
/// at 6.4 s); any other counts, up to [`MAX_ATTEMPTS`].
pub fn retry_after_failure(e: &CoreError, attempts: u32) -> Option<Duration> {
    (e.is_transient() || attempts < MAX_ATTEMPTS)
        .then(|| Duration::from_millis(100 * 2u64.pow(attempts.min(6))))
}

/// What one delivery does, as its outcome.
pub async fn process(pipeline: &Pipeline, inbound: &Inbound, item: &InboxItem) -> Result<String, CoreError> {
    let core = &inbound.core;
    let Ok(envelope) = serde_json::from_str::<Envelope>(&item.payload) else {
        return Ok("failed:unreadable payload".into());
    };
    let Some(event) = envelope.event.as_ref() else {
        return Ok("ignored:no_event".into());
    };
    let kind = event.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "message" {
        return Ok(format!(
            "ignored:{}",
            if kind.is_empty() { "malformed" } else { kind }
        ));
    }
    // Direct messages to the bot are not a customer channel.
    if event.get("channel_type").and_then(Value::as_str) == Some("im") {
        return Ok("ignored:im".into());
    }
    let Ok(msg) = serde_json::from_value::<SlackMessage>(event.clone()) else {
        return Ok("ignored:malformed".into());
    };
    let Some(channel) = msg.channel.clone().filter(|c| !c.is_empty()) else {
        return Ok("ignored:malformed".into());
    };
    let team = Team {
        users: inbound.team_users.clone(),
        bot_user_id: envelope.bot_user_id(),
        bot_id: None,
    };
    let item = interpret(&msg, &channel, envelope.team_id.as_deref(), &team);
    if let Item::New(m) = &item {
        // A reply in a triage card's thread is an internal note, never a message.
        if let Some(thread_ts) = m.thread_ts.as_deref().filter(|_| m.in_thread()) {
            // The outbox knows every card it posted (channel, ts).
            if let Some(conversation) = pipeline.outbox().card_at(&m.channel, thread_ts).await? {
                let note = NewNote {
                    author: m.user.clone(),
                    text: m.title_source(),
                    slack: Some(SlackRef {
                        channel: m.channel.clone(),
                        ts: m.ts.clone(),
                    }),
                };
                let created = core.add_note(&conversation, note).await?;
                return Ok(if created { "note" } else { "duplicate_note" }.into());
            }
        }
    }
    Ok(match item {
        Item::New(m) => {
            if core.ingest(m).await? {
                "ingested"
            } else {
                "duplicate"
            }
        }
        Item::Edit { channel, ts, text } => match core.edit_message(&channel, &ts, &text).await? {
            Some(true) => "edited",
            Some(_) => "unchanged",
            None => "unknown_message",
        },
        Item::Delete { channel, ts } => match core.delete_message(&channel, &ts).await? {
            Some(true) => "deleted",
            Some(_) => "unchanged",
            None => "unknown_message",
        },
        Item::Ignored { reason } => return Ok(format!("ignored:{reason}")),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_failure_is_retried_for_as_long_as_it_lasts_and_any_other_is_counted() {
        let down = CoreError::Unavailable("connection refused".into());
        let refused = CoreError::Refused("text: a message needs text".into());
        for attempts in [1, MAX_ATTEMPTS, 100 * MAX_ATTEMPTS] {
            let wait = retry_after_failure(&down, attempts).expect("retried");
            assert!(wait <= Duration::from_millis(6400));
        }
        for attempts in 1..MAX_ATTEMPTS {
            assert!(retry_after_failure(&refused, attempts).is_some());
        }
        assert_eq!(retry_after_failure(&refused, MAX_ATTEMPTS), None);
        assert_eq!(
            retry_after_failure(&CoreError::Failed("HTTP 500".into()), MAX_ATTEMPTS),
            None
        );
    }
}
