//! The Slack adapter: Slack's wire format in and out, turned into pipeline operations. An adapter
//! like the HTTP API: it calls [`crate::pipeline`], never the store directly (the outbox rows
//! are the store's, reached through the pipeline).
//!
//! - [`signing`]: `X-Slack-Signature` over `v0:{timestamp}:{raw body}`, the clock injected.
//! - [`message`]: a Slack message object (Events API `message` events and export files) and the
//!   one function that decides what it means for triage ([`message::interpret`]).
//! - [`api`]: the Web API client (`chat.postMessage`, `chat.update`, `chat.getPermalink`,
//!   `conversations.history`, `conversations.info`, `users.info`, `response_url`), Slack's
//!   `{"ok": false, "error"}` and HTTP 429 `Retry-After` as typed errors.
//! - [`outbox`]: every Web API write stored first, then sent by a worker (lanes per method and
//!   channel, backoff, `Retry-After`, exactly once across crashes).
//! - [`card`] renders a conversation's triage card (Block Kit); [`cards`] keeps every card
//!   current from the pipeline's event bus; [`interactivity`] turns the card's buttons into
//!   ticket operations (`POST /slack/interactivity`).
//! - [`events`]: `POST /slack/events`: verified, stored in the inbox, acknowledged at once.
//! - [`inbound`]: the worker that processes the inbox through the pipeline (replayed at start);
//!   `member_joined_channel` of our bot gives the channel an account.
//! - [`names`]: user and channel names, cached in the database with a TTL.
//! - `manifest.yml`: the Slack app manifest (scopes, events, interactivity URL).

pub mod api;
pub mod card;
pub mod cards;
pub mod events;
pub mod inbound;
pub mod interactivity;
pub mod message;
pub mod names;
pub mod outbox;
pub mod signing;

use std::time::Duration;

use crate::config::Settings;
use crate::pipeline::Pipeline;
use crate::telemetry::SlackMetrics;

/// The Slack app manifest, as committed.
pub const MANIFEST: &str = include_str!("manifest.yml");

/// The Slack side of a running server: the outbox (and its Web API client), where unowned
/// conversations' cards go, and the verifier of Slack's requests. Present when a bot token is
/// configured.
#[derive(Clone)]
pub struct Slack {
    pub outbox: outbox::Outbox,
    /// User and channel names (`users.info`, `conversations.info`), cached.
    pub names: names::Names,
    /// `TRIAGE_SLACK_BOT_USER`, or learned with `auth.test`.
    pub bot: inbound::BotUser,
    pub triage_channel: Option<String>,
    /// `TRIAGE_SLACK_SIGNING_SECRET`; without it Slack's requests are refused.
    pub verifier: Option<signing::Verifier>,
}

impl Slack {
    /// From the configuration; `None` without `TRIAGE_SLACK_BOT_TOKEN`.
    pub fn from_settings(s: &Settings, pipeline: Pipeline, metrics: SlackMetrics) -> Option<Slack> {
        if s.slack_bot_token.is_empty() {
            return None;
        }
        // A call outlives its lease never: the lease is at least twice the call's timeout.
        let lease = Duration::from_millis(s.slack_outbox_lease_ms.max(200));
        let api = api::SlackApi::new(
            &s.slack_api_url,
            Some(s.slack_bot_token.clone()),
            api::DEFAULT_TIMEOUT.min(lease / 2),
        );
        let config = outbox::OutboxConfig {
            post_interval: Duration::from_millis(s.slack_post_interval_ms),
            retention: Duration::from_secs(s.slack_outbox_retention_hours * 3600),
            lease,
            ..outbox::OutboxConfig::default()
        };
        let names = names::Names::new(
            pipeline.clone(),
            Some(api.clone()),
            Duration::from_secs(s.slack_names_ttl_hours * 3600),
            names::DEFAULT_RETRY,
        );
        Some(Slack {
            bot: inbound::BotUser::new(s.slack_bot_user.clone(), Some(api.clone())),
            names,
            outbox: outbox::Outbox::new(pipeline, api, metrics, config),
            triage_channel: s.slack_triage_channel.clone(),
            verifier: (!s.slack_signing_secret.is_empty())
                .then(|| signing::Verifier::system(s.slack_signing_secret.clone())),
        })
    }

    /// The card service for this outbox (subscribed to the pipeline's events from now on).
    pub fn cards(&self, pipeline: Pipeline) -> cards::Cards {
        cards::Cards::new(
            pipeline,
            self.outbox.clone(),
            self.names.clone(),
            self.triage_channel.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_manifest_names_our_routes_and_the_scopes_the_client_needs() {
        let m = super::MANIFEST;
        for want in [
            "/slack/events",
            "/slack/interactivity",
            "is_enabled: true",
            "chat:write",
            "channels:history",
            "groups:history",
            "channels:read",
            "users:read",
            "message.channels",
            "member_joined_channel",
        ] {
            assert!(m.contains(want), "manifest lacks {want}");
        }
    }
}
