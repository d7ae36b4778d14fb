//! The inbound inbox: deliveries stored before they are acknowledged (so a crash between the ack
//! and the processing loses nothing), then taken in arrival order by an adapter's worker, which
//! runs each through the pipeline's operations and records the outcome.

use super::Pipeline;
use crate::store::{InboxEntry, InboxItem, StoreError};
use std::collections::BTreeMap;

impl Pipeline {
    /// Stores a delivery; `false` when its event id was stored before (a retry).
    pub async fn inbox_accept(&self, entry: InboxEntry) -> Result<bool, StoreError> {
        self.store.inbox_add(entry).await
    }

    /// Deliveries waiting, oldest first.
    pub async fn inbox_pending(&self, limit: u32) -> Result<Vec<InboxItem>, StoreError> {
        self.store.inbox_pending(limit).await
    }

    /// Records what processing a delivery did; it is not taken again.
    pub async fn inbox_finish(&self, seq: i64, outcome: &str) -> Result<(), StoreError> {
        self.store.inbox_finish(seq, outcome).await
    }

    /// Records a failed attempt; the delivery stays pending. Returns the attempts so far.
    pub async fn inbox_failed(&self, seq: i64, error: &str) -> Result<u32, StoreError> {
        self.store.inbox_failed(seq, error).await
    }

    /// Deliveries per outcome (`pending` for those waiting).
    pub async fn inbox_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        self.store.inbox_counts().await
    }

    /// Forgets deliveries processed more than `keep` ago (their event ids no longer dedupe).
    pub async fn inbox_prune(&self, keep: chrono::Duration) -> Result<u64, StoreError> {
        self.store.inbox_prune(chrono::Utc::now() - keep).await
    }
}
