//! The inbound worker: takes stored Events API deliveries in arrival order (the inbox of this
//! process's store: the shared database in process, the edge's own SQLite file in edge mode),
//! turns each into operations of the [`Core`] and records what it did. Started with the server,
//! it first replays whatever was acknowledged but not processed before a crash or a restart.
//!
//! Outcomes: `ingested`, `duplicate` (the message (channel, ts) was stored before, e.g. re-sent
//! under a new event id), `edited`, `deleted`, `unchanged`, `unknown_message` (an edit or deletion
//! of a message triage never stored), `note`, `duplicate_note`, `account_created` /
//! `account_kept` (our bot's `member_joined_channel`: triage was added to a channel), `ignored:<reason>` (see
//! [`super::message::Item::Ignored`]; `ignored:<event type>` for events triage does not use), and
//! `failed:<why>` after [`MAX_ATTEMPTS`] failures that are not transient. Transient failures (the
//! models still loading, the embedder's queue full, the database unreachable, in edge mode the
//! core unreachable: [`CoreError::is_transient`]) are retried, in order, with backoff, for as long
//! as they last.
//!
//! Accounts: a message in a channel without an account creates one, unowned; our bot joining a
//! channel creates one owned by the inviter; an existing account is kept as it is (all through
//! the [`Core`]). Names (`users.info`, `conversations.info`) are only read from the cache here
//! (this process's store: Slack's data, kept on the Slack side) and fetched in the background
//! ([`super::names`]); a message waits at most [`NAME_WAIT`] for its author's name, so Slack
//! being slow or down holds up a message by at most a second.

use super::api::SlackApi;
use super::core::{Core, CoreError};
use super::message::{interpret, Item, SlackMessage, Team};
use super::names::Names;
use crate::domain::{NewNote, SlackRef};
use crate::pipeline::Pipeline;
use crate::store::{InboxItem, NameKind};
use crate::telemetry::Metrics;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Failures (other than transient ones) before a delivery is given up as `failed:<why>`.
pub const MAX_ATTEMPTS: u32 = 5;
/// The longest a message waits for its author's name to be fetched (only when the name is not
/// cached and no fetch failed recently).
pub const NAME_WAIT: Duration = Duration::from_secs(1);
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
    /// User and channel names (absent without a bot token: accounts are named after channel ids).
    pub names: Option<Names>,
    /// Who our bot is, for `member_joined_channel`.
    pub bot: BotUser,
    /// Channels known to have an account (so a message costs no account lookup); bounded.
    accounted: Arc<Mutex<HashSet<String>>>,
}

/// Channels remembered in [`Inbound`]'s set before it is cleared (the database still knows).
const MAX_ACCOUNTED: usize = 10_000;

impl Inbound {
    pub fn new(core: Arc<dyn Core>, team_users: HashSet<String>, metrics: Metrics) -> Self {
        Inbound {
            core,
            team_users,
            metrics,
            names: None,
            bot: BotUser::default(),
            accounted: Arc::default(),
        }
    }

    /// With the Slack side: names from the Web API (cached) and the bot's identity.
    pub fn with_slack(mut self, names: Names, bot: BotUser) -> Self {
        self.names = Some(names);
        self.bot = bot;
        self
    }
}

/// Our bot's Slack user id: `TRIAGE_SLACK_BOT_USER` when set; else asked of Slack with `auth.test`
/// (once it answers, remembered for the process); else, while Slack cannot be asked, the bot
/// authorization Slack put in the event envelope.
#[derive(Clone, Default)]
pub struct BotUser {
    configured: Option<String>,
    api: Option<SlackApi>,
    learned: Arc<Mutex<Option<String>>>,
}

impl BotUser {
    pub fn new(configured: Option<String>, api: Option<SlackApi>) -> Self {
        BotUser {
            configured: configured.filter(|c| !c.trim().is_empty()),
            api: api.filter(SlackApi::has_token),
            learned: Arc::default(),
        }
    }

    pub async fn id(&self, envelope: &Envelope) -> Option<String> {
        if let Some(id) = &self.configured {
            return Some(id.clone());
        }
        let learned = self.learned.lock().unwrap().clone();
        if learned.is_some() {
            return learned;
        }
        if let Some(api) = &self.api {
            match api.auth_test().await {
                Ok(id) => {
                    *self.learned.lock().unwrap() = Some(id.clone());
                    return Some(id);
                }
                Err(e) => tracing::warn!(error = %e, "auth.test failed; using the event's bot authorization"),
            }
        }
        envelope.bot_user_id()
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
    if kind == "member_joined_channel" {
        return joined(pipeline, inbound, &envelope, event).await;
    }
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
            account_for(pipeline, inbound, &m.channel).await?;
            if let Some(names) = &inbound.names {
                // Names hold up a message for at most NAME_WAIT (the delivery is already
                // acknowledged): fetched in the background, and the first card shows the name
                // when Slack answers in time; otherwise the name is shown once known.
                if let Some(fetch) = names.refresh(NameKind::User, &m.user) {
                    let _ = tokio::time::timeout(NAME_WAIT, fetch).await;
                }
            }
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

/// `member_joined_channel`: when the member is our bot (triage was added to the channel), the
/// channel gets an account named after it and owned by whoever added triage (`inviter`). An
/// account the channel already has is kept as it is.
async fn joined(
    pipeline: &Pipeline,
    inbound: &Inbound,
    envelope: &Envelope,
    event: &Value,
) -> Result<String, CoreError> {
    let text = |k: &str| event.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let (Some(user), Some(channel)) = (text("user"), text("channel")) else {
        return Ok("ignored:malformed".into());
    };
    if inbound.bot.id(envelope).await.as_deref() != Some(user) {
        return Ok("ignored:member_joined_channel".into());
    }
    let name = match &inbound.names {
        Some(names) => names.cached(NameKind::Channel, channel).await,
        None => None,
    };
    let (_, created) = inbound
        .core
        .ensure_account(channel, name.as_deref(), text("inviter"))
        .await?;
    remember_account(inbound, channel);
    learn_channel_name(pipeline, inbound, channel);
    Ok(if created {
        "account_created"
    } else {
        "account_kept"
    }
    .into())
}

/// A message's channel without an account gets one, unowned, named after the channel (its id
/// until the name is known).
async fn account_for(pipeline: &Pipeline, inbound: &Inbound, channel: &str) -> Result<(), CoreError> {
    if !inbound.accounted.lock().unwrap().contains(channel) {
        ensure_unowned(inbound, channel).await?;
    }
    // After the account exists, so the name reaches it. Due once per TTL per channel (after a
    // failed fetch, once per retry period).
    learn_channel_name(pipeline, inbound, channel);
    Ok(())
}

async fn ensure_unowned(inbound: &Inbound, channel: &str) -> Result<(), CoreError> {
    if !inbound.core.has_account(channel).await? {
        let name = match &inbound.names {
            Some(names) => names.cached(NameKind::Channel, channel).await,
            None => None,
        };
        let (account, created) = inbound
            .core
            .ensure_account(channel, name.as_deref(), None)
            .await?;
        if created {
            tracing::info!(
                channel,
                account = account.id,
                name = account.name,
                "account created for a new channel"
            );
        }
    }
    remember_account(inbound, channel);
    Ok(())
}

fn remember_account(inbound: &Inbound, channel: &str) {
    let mut set = inbound.accounted.lock().unwrap();
    if set.len() >= MAX_ACCOUNTED {
        set.clear();
    }
    set.insert(channel.to_string());
}

/// Fetches the channel's name in the background; its account, named after the channel id so far,
/// takes it.
fn learn_channel_name(_pipeline: &Pipeline, inbound: &Inbound, channel: &str) {
    let Some(task) = inbound
        .names
        .as_ref()
        .and_then(|n| n.refresh(NameKind::Channel, channel))
    else {
        return;
    };
    let (core, channel) = (inbound.core.clone(), channel.to_string());
    tokio::spawn(async move {
        if let Ok(Some(name)) = task.await {
            match core.name_account(&channel, &name).await {
                Ok(true) => tracing::info!(channel, name, "account named after its channel"),
                Ok(false) => {}
                Err(e) => tracing::warn!(channel, error = %e, "naming a channel's account failed"),
            }
        }
    });
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
