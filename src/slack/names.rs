//! Slack user and channel names (`users.info`, `conversations.info`), cached in the database
//! (`slack_names`) so they survive restarts and the board can read them.
//!
//! - A cached name younger than the TTL (`TRIAGE_SLACK_NAMES_TTL_HOURS`, 24 h by default) is used
//!   as is; an older one is still used, and fetched again.
//! - Names never hold up ingestion: the inbound worker only reads the cache and asks for a fetch
//!   in the background ([`Names::refresh`]); when Slack is unreachable the message is stored with
//!   its ids and the names are filled in when a later fetch succeeds (the board reads the cache;
//!   an account named after its channel id is renamed).
//! - A failed fetch is not repeated for the same id for `retry` (a minute by default), and one
//!   fetch per id runs at a time. The in-memory bookkeeping is bounded ([`MAX_TRACKED`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::api::{SlackApi, SlackError};
use crate::pipeline::Pipeline;
use crate::store::NameKind;

/// How long a fetched name is trusted before it is fetched again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// After a failed fetch, how long before the same id is asked for again.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(60);
/// Ids whose next fetch time is remembered in memory; beyond it the map is cleared (the database
/// still has every name, so this only costs a cache read).
pub const MAX_TRACKED: usize = 50_000;

/// The name cache. Cheap to clone.
#[derive(Clone)]
pub struct Names {
    pipeline: Pipeline,
    /// `None` without a bot token: only cached names are known.
    api: Option<SlackApi>,
    ttl: Duration,
    retry: Duration,
    /// (kind, id) -> no fetch before this instant (fresh, failed recently, or being fetched).
    next_fetch: Arc<Mutex<HashMap<(NameKind, String), Instant>>>,
}

impl Names {
    pub fn new(pipeline: Pipeline, api: Option<SlackApi>, ttl: Duration, retry: Duration) -> Self {
        Names {
            pipeline,
            api: api.filter(SlackApi::has_token),
            ttl,
            retry,
            next_fetch: Arc::default(),
        }
    }

    /// The cached name (any age), without asking Slack.
    pub async fn cached(&self, kind: NameKind, id: &str) -> Option<String> {
        match self.pipeline.slack_name(kind, id).await {
            Ok(found) => found.map(|n| n.name),
            Err(e) => {
                tracing::debug!(id, error = %e, "reading a cached Slack name failed");
                None
            }
        }
    }

    /// The name, fetched from Slack when it is not cached or older than the TTL; the cached one
    /// (even stale) when Slack cannot say; `None` when nothing is known.
    pub async fn resolve(&self, kind: NameKind, id: &str) -> Option<String> {
        let cached = self.pipeline.slack_name(kind, id).await.ok().flatten();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let age = cached.as_ref().map(|c| (now_ms - c.fetched_ms).max(0) as u64);
        if let Some(left) = age.and_then(|a| (self.ttl.as_millis() as u64).checked_sub(a)) {
            // Fresh: no fetch (nor cache read for a refresh) until it is not.
            self.hold(kind, id, Duration::from_millis(left));
            return cached.map(|c| c.name);
        }
        if !self.may_fetch(kind, id) {
            return cached.map(|c| c.name);
        }
        match self.fetch(kind, id).await {
            Ok(name) => {
                if let Err(e) = self.pipeline.put_slack_name(kind, id, &name, now_ms).await {
                    tracing::warn!(id, error = %e, "caching a Slack name failed");
                }
                self.hold(kind, id, self.ttl);
                Some(name)
            }
            Err(e) => {
                tracing::debug!(id, kind = kind.as_str(), error = %e, "Slack name not fetched; using what is cached");
                self.hold(kind, id, self.retry);
                cached.map(|c| c.name)
            }
        }
    }

    /// Fetches the name in the background when it is due (not cached, stale, or failed long
    /// enough ago); the task's result is the name, when known.
    pub fn refresh(&self, kind: NameKind, id: &str) -> Option<tokio::task::JoinHandle<Option<String>>> {
        if self.api.is_none() || !self.due(kind, id) {
            return None;
        }
        let this = self.clone();
        let id = id.to_string();
        Some(tokio::spawn(async move { this.resolve(kind, &id).await }))
    }

    /// Whether a fetch of (kind, id) is due (nothing recorded, or its hold has passed).
    fn due(&self, kind: NameKind, id: &str) -> bool {
        let map = self.next_fetch.lock().unwrap();
        map.get(&(kind, id.to_string()))
            .is_none_or(|until| *until <= Instant::now())
    }

    /// Claims the fetch of (kind, id): false when another is running or it failed recently.
    fn may_fetch(&self, kind: NameKind, id: &str) -> bool {
        if self.api.is_none() {
            return false;
        }
        let mut map = self.next_fetch.lock().unwrap();
        let key = (kind, id.to_string());
        let now = Instant::now();
        if map.get(&key).is_some_and(|until| *until > now) {
            return false;
        }
        if map.len() >= MAX_TRACKED {
            map.clear();
        }
        // Held while the fetch runs (a call's timeout is well under a minute).
        map.insert(key, now + Duration::from_secs(60));
        true
    }

    fn hold(&self, kind: NameKind, id: &str, for_: Duration) {
        let mut map = self.next_fetch.lock().unwrap();
        map.insert((kind, id.to_string()), Instant::now() + for_);
    }

    async fn fetch(&self, kind: NameKind, id: &str) -> Result<String, SlackError> {
        let api = self.api.as_ref().ok_or(SlackError::NoToken)?;
        Ok(match kind {
            NameKind::User => api.user_info(id).await?.display_name().to_string(),
            NameKind::Channel => {
                let info = api.conversation_info(id).await?;
                if info.name.is_empty() {
                    id.to_string()
                } else {
                    info.name
                }
            }
        })
    }
}
