//! Accounts of Slack channels and the Slack names they are shown with: the one place the Slack
//! adapter creates or renames an account and reads or writes a cached name, so these calls can be
//! routed to a remote core like the rest of the pipeline.
//!
//! - When triage is added to a channel, the channel gets an account named after it, owned by the
//!   person who added triage; a message in a channel without an account creates one, unowned.
//!   Either way an account that exists (e.g. made through `/v1/accounts`) is kept as it is.
//! - An account created before the channel's name was known is named after the channel id, and
//!   renamed (only then) once the name arrives.

use super::Pipeline;
use crate::domain::Account;
use crate::store::{CachedName, NameKind, StoreError};

impl Pipeline {
    /// The account of `channel`, created when the channel has none: named `name` (the channel's
    /// name when known, else the channel id), owned by `owner`. `true` when created.
    pub async fn ensure_account(
        &self,
        channel: &str,
        name: Option<&str>,
        owner: Option<&str>,
    ) -> Result<(Account, bool), StoreError> {
        let name = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or(channel);
        let owner = owner.filter(|o| !o.trim().is_empty());
        self.store
            .directory()
            .ensure_channel_account(channel, name, owner)
            .await
    }

    /// Whether `channel` belongs to an account.
    pub async fn has_account(&self, channel: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .directory()
            .channel_account_id(channel)
            .await?
            .is_some())
    }

    /// The channel's name, learned after its account was created under the channel id: the
    /// account takes it (an account named otherwise is left alone). `true` when renamed.
    pub async fn name_account(&self, channel: &str, name: &str) -> Result<bool, StoreError> {
        let name = name.trim();
        if name.is_empty() || name == channel {
            return Ok(false);
        }
        self.store.directory().name_channel_account(channel, name).await
    }

    /// A cached Slack name (any age).
    pub async fn slack_name(&self, kind: NameKind, id: &str) -> Result<Option<CachedName>, StoreError> {
        self.store.directory().name(kind, id).await
    }

    /// Caches a Slack name fetched at `fetched_ms`.
    pub async fn put_slack_name(
        &self,
        kind: NameKind,
        id: &str,
        name: &str,
        fetched_ms: i64,
    ) -> Result<(), StoreError> {
        self.store.directory().put_name(kind, id, name, fetched_ms).await
    }
}
