//! The inbound worker: takes stored Events API deliveries in arrival order ([`crate::pipeline`]'s
//! inbox), turns each into pipeline operations and records what it did. Started with the server,
//! it first replays whatever was acknowledged but not processed before a crash or a restart.
//!
//! Outcomes: `ingested`, `duplicate` (the message (channel, ts) was stored before, e.g. re-sent
//! under a new event id), `edited`, `deleted`, `unchanged`, `unknown_message` (an edit or deletion
//! of a message triage never stored), `note`, `duplicate_note`, `account_created` /
//! `account_kept` (our bot's `member_joined_channel`: triage was added to a channel), `ignored:<reason>` (see
//! [`super::message::Item::Ignored`]; `ignored:<event type>` for events triage does not use), and
//! `failed:<why>` after [`MAX_ATTEMPTS`] failures that are not transient. Transient failures (the
//! models still loading, the embedder's queue full, the database unreachable) are retried, in
//! order, with backoff, for as long as they last.
//!
//! Accounts: a message in a channel without an account creates one, unowned; our bot joining a
//! channel creates one owned by the inviter; an existing account is kept as it is. Names
//! (`users.info`, `conversations.info`) are only read from the cache here and fetched in the
//! background ([`super::names`]), so Slack being slow or down never holds up a message.

use super::api::SlackApi;
use super::message::{interpret, Item, SlackMessage, Team};
use super::names::Names;
use crate::domain::{NewNote, SlackRef};
use crate::pipeline::{InferenceError, Pipeline, PipelineError};
use crate::store::{InboxItem, NameKind, StoreError};
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
/// Deliveries taken per read of the inbox.
const BATCH: u32 = 200;
/// How long processed deliveries are kept (their event ids dedupe Slack's retries meanwhile).
const KEEP: chrono::TimeDelta = chrono::TimeDelta::days(2);

/// What the worker needs besides the pipeline.
#[derive(Clone)]
pub struct Inbound {
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
    pub fn new(team_users: HashSet<String>, metrics: Metrics) -> Self {
        Inbound {
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

/// Starts the worker; `wake` is notified after each stored delivery.
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
            let transient = is_transient(&e);
            let attempts = pipeline.inbox_failed(item.seq, &e.to_string()).await.unwrap_or(0);
            if transient || attempts < MAX_ATTEMPTS {
                tracing::warn!(event_id = %item.event_id, attempts, error = %e, "Slack event failed; retrying");
                let backoff = Duration::from_millis(100 * 2u64.pow(attempts.min(6)));
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

fn is_transient(e: &PipelineError) -> bool {
    matches!(
        e,
        PipelineError::Inference(InferenceError::NotReady | InferenceError::Overloaded(_))
            | PipelineError::Store(StoreError::Unavailable(_))
    )
}

/// What one delivery does, as its outcome.
pub async fn process(
    pipeline: &Pipeline,
    inbound: &Inbound,
    item: &InboxItem,
) -> Result<String, PipelineError> {
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
                let (_, created) = pipeline.add_note(&conversation, note).await?;
                return Ok(if created { "note" } else { "duplicate_note" }.into());
            }
        }
    }
    Ok(match item {
        Item::New(m) => {
            account_for(pipeline, inbound, &m.channel).await?;
            if let Some(names) = &inbound.names {
                // Names never hold up a message: fetched in the background, shown once known.
                names.refresh(NameKind::User, &m.user);
            }
            if pipeline.ingest(m).await?.created {
                "ingested"
            } else {
                "duplicate"
            }
        }
        Item::Edit { channel, ts, text } => match pipeline.edit_message(&channel, &ts, &text).await? {
            Some(e) if e.changed => "edited",
            Some(_) => "unchanged",
            None => "unknown_message",
        },
        Item::Delete { channel, ts } => match pipeline.delete_message(&channel, &ts).await? {
            Some(e) if e.changed => "deleted",
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
) -> Result<String, PipelineError> {
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
    let (_, created) = pipeline
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
async fn account_for(pipeline: &Pipeline, inbound: &Inbound, channel: &str) -> Result<(), StoreError> {
    if !inbound.accounted.lock().unwrap().contains(channel) {
        ensure_unowned(pipeline, inbound, channel).await?;
    }
    // After the account exists, so the name reaches it. Due once per TTL per channel (after a
    // failed fetch, once per retry period).
    learn_channel_name(pipeline, inbound, channel);
    Ok(())
}

async fn ensure_unowned(pipeline: &Pipeline, inbound: &Inbound, channel: &str) -> Result<(), StoreError> {
    if !pipeline.has_account(channel).await? {
        let name = match &inbound.names {
            Some(names) => names.cached(NameKind::Channel, channel).await,
            None => None,
        };
        let (account, created) = pipeline.ensure_account(channel, name.as_deref(), None).await?;
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
fn learn_channel_name(pipeline: &Pipeline, inbound: &Inbound, channel: &str) {
    let Some(task) = inbound
        .names
        .as_ref()
        .and_then(|n| n.refresh(NameKind::Channel, channel))
    else {
        return;
    };
    let (pipeline, channel) = (pipeline.clone(), channel.to_string());
    tokio::spawn(async move {
        if let Ok(Some(name)) = task.await {
            match pipeline.name_account(&channel, &name).await {
                Ok(true) => tracing::info!(channel, name, "account named after its channel"),
                Ok(false) => {}
                Err(e) => tracing::warn!(channel, error = %e, "naming a channel's account failed"),
            }
        }
    });
}
