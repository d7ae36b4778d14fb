//! The Slack outbox and card locations: every Slack Web API write is a row here before it is
//! sent, and each conversation's triage card is remembered once it is posted. The store only
//! keeps the rows; when and how they are sent is the Slack adapter's (`slack::outbox`).
//!
//! `outbox_ops!(Backend)` expands inside `sqlite.rs` and `postgres.rs` (the SQL is the dialect both
//! share). Claiming is a conditional `UPDATE` (`WHERE state = 'pending'`), so several replicas on
//! one PostgreSQL database never send one row twice at once; a row left `sending` by a process
//! that died is claimable again once its lease (`claimed_ms`) is older than the caller's cut-off.

use serde_json::Value;

use super::{StoreError, StoreFuture};

/// A Web API write to make.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxItem {
    /// `chat.postMessage`, `chat.update`, `response_url`, ...
    pub method: String,
    /// The channel the call writes to (its rate-limit lane), if any.
    pub channel: Option<String>,
    /// The conversation a card call is about.
    pub conversation_id: Option<String>,
    /// The arguments (JSON).
    pub body: Value,
}

/// A stored row, as the worker sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub method: String,
    pub channel: Option<String>,
    pub conversation_id: Option<String>,
    pub body: Value,
    /// Attempts made before this one.
    pub attempts: i32,
    /// An earlier attempt may have reached Slack: it failed in a way that may have applied, or
    /// the process died while it was in flight.
    pub uncertain: bool,
    pub created_ms: i64,
    pub last_error: Option<String>,
    /// A card row (`chat.postMessage` / `chat.update` of a conversation): the version of the
    /// card content `body` is (claimed rows carry the newest content, not what was queued).
    pub version: Option<i64>,
    /// A card row: the newest content version Slack acknowledged on the card (0: none yet).
    pub shown_version: Option<i64>,
}

/// What a conversation's card should show, and how far Slack is known to show it.
#[derive(Debug, Clone, PartialEq)]
pub struct CardContent {
    pub body: Value,
    /// Bumped by every new content.
    pub version: i64,
    /// The newest version a card call sent and Slack acknowledged (0: none yet).
    pub shown_version: i64,
}

/// Where a conversation's card is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRef {
    pub conversation_id: String,
    pub channel: String,
    pub ts: String,
}

/// Rows per state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: i64,
    pub sending: i64,
    pub done: i64,
    pub failed: i64,
}

impl OutboxCounts {
    /// Rows still to send.
    pub fn depth(&self) -> i64 {
        self.pending + self.sending
    }
}

/// The outbox's rows and the cards' locations.
pub trait SlackOutbox: Send + Sync {
    /// Stores a write to make; returns its id. A card post (`chat.postMessage` with a
    /// conversation) also sets the card's content (a new version).
    fn enqueue(&self, item: NewOutboxItem, now_ms: i64) -> StoreFuture<'_, i64>;
    /// A card's new content (a new version): a card post or update still waiting sends it
    /// (so a burst of changes costs one call), else a `chat.update` is enqueued. Returns the id
    /// of the row that will carry it.
    fn enqueue_card_update(&self, conversation_id: &str, body: Value, now_ms: i64) -> StoreFuture<'_, i64>;
    /// Rows to send now, oldest first: pending and due, or `sending` with a lease older than
    /// `stale_before_ms` (their process died).
    fn due(&self, now_ms: i64, stale_before_ms: i64, limit: i64) -> StoreFuture<'_, Vec<OutboxItem>>;
    /// Takes row `id` for sending and returns it as it is now; a card row carries the card's
    /// newest content and its version. `None` when another worker has it, it is not due, or
    /// (a card row) another row of the same card is in flight with a live lease: a card's calls
    /// never overlap, so they reach Slack in the order their versions were read.
    fn claim(&self, id: i64, now_ms: i64, stale_before_ms: i64) -> StoreFuture<'_, Option<OutboxItem>>;
    /// Sent (or dropped): `result` is Slack's answer; `card`, when a card post, is remembered
    /// atomically; `shown_version`, when a card call Slack acknowledged, is the content version
    /// the card now shows.
    fn complete(
        &self,
        id: i64,
        result: Value,
        card: Option<CardRef>,
        shown_version: Option<i64>,
        now_ms: i64,
    ) -> StoreFuture<'_, ()>;
    /// A card post found already in Slack (an earlier attempt landed): completed with `card`
    /// remembered, and, unless a card row is waiting, a `chat.update` queued, all at once: the
    /// found card may show an older version than the newest.
    fn recover_card(&self, id: i64, result: Value, card: CardRef, now_ms: i64) -> StoreFuture<'_, ()>;
    /// A transient failure: sent again at `next_attempt_ms`.
    fn retry(&self, id: i64, next_attempt_ms: i64, error: &str, maybe_sent: bool) -> StoreFuture<'_, ()>;
    /// Not sent and not an attempt (waiting for something else, e.g. the card's post).
    fn postpone(&self, id: i64, next_attempt_ms: i64) -> StoreFuture<'_, ()>;
    /// Given up: a permanent error or too many attempts.
    fn fail(&self, id: i64, error: &str, now_ms: i64) -> StoreFuture<'_, ()>;
    fn counts(&self) -> StoreFuture<'_, OutboxCounts>;
    /// Whether a later `chat.update` of the same conversation, or a later post of its card (it
    /// moved), exists (sent or to send): this older one would only put stale content back.
    fn superseded(&self, id: i64, conversation_id: &str) -> StoreFuture<'_, bool>;
    /// Whether a `method` row for the conversation is still to be sent.
    fn has_unsent(&self, conversation_id: &str, method: &str) -> StoreFuture<'_, bool>;
    fn card(&self, conversation_id: &str) -> StoreFuture<'_, Option<CardRef>>;
    /// The content last queued for the conversation's card (posted, updated or waiting); only
    /// the body (version 0) for a card queued before contents were versioned.
    fn card_content(&self, conversation_id: &str) -> StoreFuture<'_, Option<CardContent>>;
    /// The conversation whose card is the message (channel, ts): replies in its thread are notes.
    fn card_at(&self, channel: &str, ts: &str) -> StoreFuture<'_, Option<String>>;
    /// Every row of the conversation, oldest first (tests, diagnostics): (method, state, attempts).
    fn history_of(&self, conversation_id: &str) -> StoreFuture<'_, Vec<(String, String, i32)>>;
    /// Moves the conversation's card, atomically: the current card becomes a moved card (replies
    /// in its thread still reach the conversation), its unsent updates are dropped, and `retire`
    /// (the old card's last `chat.update`) and `post` (the card in its new channel) are queued.
    fn move_card(
        &self,
        conversation_id: &str,
        retire: NewOutboxItem,
        post: NewOutboxItem,
        now_ms: i64,
    ) -> StoreFuture<'_, ()>;
    /// Deletes rows sent (`done`) before `before_ms`, except each conversation's latest card row
    /// (what its card shows, which [`SlackOutbox::card_content`] falls back to for a card without a
    /// versioned content row); returns how many. Failed and unsent rows are kept.
    fn prune_sent(&self, before_ms: i64) -> StoreFuture<'_, u64>;
}

pub(super) type ItemRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    String,
    i32,
    bool,
    String,
    i64,
    Option<String>,
);

pub(super) fn item_from_row(r: ItemRow) -> Result<OutboxItem, StoreError> {
    let (id, method, channel, conversation_id, body, attempts, maybe_sent, state, created_ms, last_error) = r;
    let body = serde_json::from_str(&body)
        .map_err(|e| StoreError::Unexpected(anyhow::anyhow!("outbox row {id}: body is not JSON: {e}")))?;
    Ok(OutboxItem {
        id,
        method,
        channel,
        conversation_id,
        body,
        attempts,
        uncertain: maybe_sent || state == "sending",
        created_ms,
        last_error,
        version: None,
        shown_version: None,
    })
}

/// The methods of card rows.
pub(super) fn is_card_method(method: &str) -> bool {
    method == "chat.postMessage" || method == "chat.update"
}

macro_rules! outbox_ops {
    ($backend:ty) => {
        impl $backend {
            async fn enqueue_inner(&self, item: NewOutboxItem, now_ms: i64) -> Result<i64, StoreError> {
                let mut tx = self.write_tx().await?;
                if let (Some(conversation), true) = (&item.conversation_id, item.method == "chat.postMessage") {
                    set_card_content(&mut tx, conversation, &item.body.to_string()).await?;
                }
                let id = insert_outbox(&mut tx, &item, now_ms).await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn enqueue_card_update_inner(
                &self,
                conversation_id: &str,
                body: serde_json::Value,
                now_ms: i64,
            ) -> Result<i64, StoreError> {
                let mut tx = self.write_tx().await?;
                let text = body.to_string();
                set_card_content(&mut tx, conversation_id, &text).await?;
                // The body is kept on the row too (diagnostics); the claim reads the content.
                let replaced: Option<i64> = sqlx::query_scalar(
                    "UPDATE slack_outbox SET body = $1 WHERE id = (SELECT id FROM slack_outbox \
                     WHERE conversation_id = $2 AND state = 'pending' \
                     AND method IN ('chat.postMessage', 'chat.update') ORDER BY id DESC LIMIT 1) \
                     RETURNING id",
                )
                .bind(&text)
                .bind(conversation_id)
                .fetch_optional(&mut *tx)
                .await?;
                let id = match replaced {
                    Some(id) => id,
                    None => {
                        let channel: Option<String> =
                            sqlx::query_scalar("SELECT channel FROM slack_cards WHERE conversation_id = $1")
                                .bind(conversation_id)
                                .fetch_optional(&mut *tx)
                                .await?;
                        let item = NewOutboxItem {
                            method: "chat.update".into(),
                            channel: channel.or_else(|| body["channel"].as_str().map(String::from)),
                            conversation_id: Some(conversation_id.into()),
                            body,
                        };
                        insert_outbox(&mut tx, &item, now_ms).await?
                    }
                };
                tx.commit().await?;
                Ok(id)
            }

            async fn due_inner(&self, now_ms: i64, stale_before_ms: i64, limit: i64) -> Result<Vec<OutboxItem>, StoreError> {
                let rows: Vec<super::outbox::ItemRow> = sqlx::query_as(
                    "SELECT id, method, channel, conversation_id, body, attempts, maybe_sent, state, created_ms, \
                     last_error FROM slack_outbox WHERE (state = 'pending' AND next_attempt_ms <= $1) \
                     OR (state = 'sending' AND claimed_ms < $2) ORDER BY id LIMIT $3",
                )
                .bind(now_ms)
                .bind(stale_before_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(super::outbox::item_from_row).collect()
            }

            async fn claim_inner(&self, id: i64, now_ms: i64, stale_before_ms: i64) -> Result<Option<OutboxItem>, StoreError> {
                let mut tx = self.write_tx().await?;
                // A card's claims one at a time: this locks the card's content row (PostgreSQL;
                // SQLite has one writer anyway) so the in-flight check below sees the others.
                sqlx::query(
                    "UPDATE slack_card_content SET version = version WHERE conversation_id = \
                     (SELECT conversation_id FROM slack_outbox WHERE id = $1 \
                     AND method IN ('chat.postMessage', 'chat.update'))",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let row: Option<super::outbox::ItemRow> = sqlx::query_as(
                    "UPDATE slack_outbox SET state = 'sending', claimed_ms = $2, attempts = attempts + 1, \
                     maybe_sent = (maybe_sent OR state = 'sending') WHERE id = $1 \
                     AND (state = 'pending' OR (state = 'sending' AND claimed_ms < $3)) \
                     AND NOT (method IN ('chat.postMessage', 'chat.update') AND EXISTS (SELECT 1 FROM slack_outbox o \
                     WHERE o.conversation_id = slack_outbox.conversation_id AND o.id <> slack_outbox.id \
                     AND o.state = 'sending' AND o.claimed_ms >= $3 \
                     AND o.method IN ('chat.postMessage', 'chat.update'))) \
                     RETURNING id, method, channel, conversation_id, body, attempts - 1, maybe_sent, \
                     CAST('pending' AS TEXT), created_ms, last_error",
                )
                .bind(id)
                .bind(now_ms)
                .bind(stale_before_ms)
                .fetch_optional(&mut *tx)
                .await?;
                let mut item = row.map(super::outbox::item_from_row).transpose()?;
                if let Some(item) = item.as_mut().filter(|i| super::outbox::is_card_method(&i.method)) {
                    if let Some(conversation) = &item.conversation_id {
                        let content: Option<(String, i64, i64)> = sqlx::query_as(
                            "SELECT body, version, shown_version FROM slack_card_content WHERE conversation_id = $1",
                        )
                        .bind(conversation)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some((body, version, shown)) = content {
                            item.body = serde_json::from_str(&body).map_err(|e| {
                                StoreError::Unexpected(anyhow::anyhow!("card content of {conversation}: {e}"))
                            })?;
                            item.version = Some(version);
                            item.shown_version = Some(shown);
                        }
                    }
                }
                tx.commit().await?;
                Ok(item)
            }

            async fn complete_inner(
                &self,
                id: i64,
                result: serde_json::Value,
                card: Option<CardRef>,
                shown_version: Option<i64>,
                now_ms: i64,
            ) -> Result<(), StoreError> {
                let mut tx = self.write_tx().await?;
                let conversation = finish_outbox(&mut tx, id, &result, now_ms).await?;
                if let Some(card) = &card {
                    remember_card(&mut tx, card).await?;
                }
                if let (Some(conversation), Some(version)) = (conversation, shown_version) {
                    sqlx::query(
                        "UPDATE slack_card_content SET shown_version = $2 \
                         WHERE conversation_id = $1 AND shown_version < $2",
                    )
                    .bind(conversation)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            }

            async fn recover_card_inner(
                &self,
                id: i64,
                result: serde_json::Value,
                card: CardRef,
                now_ms: i64,
            ) -> Result<(), StoreError> {
                let mut tx = self.write_tx().await?;
                finish_outbox(&mut tx, id, &result, now_ms).await?;
                remember_card(&mut tx, &card).await?;
                let waiting: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM slack_outbox WHERE conversation_id = $1 AND state = 'pending' \
                     AND method IN ('chat.postMessage', 'chat.update') LIMIT 1",
                )
                .bind(&card.conversation_id)
                .fetch_optional(&mut *tx)
                .await?;
                if waiting.is_none() {
                    // The newest content (the claim sends it anyway); the post's own body for a
                    // card queued before contents were versioned.
                    let body: String = sqlx::query_scalar(
                        "SELECT COALESCE((SELECT body FROM slack_card_content WHERE conversation_id = $1), \
                         (SELECT body FROM slack_outbox WHERE id = $2))",
                    )
                    .bind(&card.conversation_id)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let body = serde_json::from_str(&body).map_err(|e| {
                        StoreError::Unexpected(anyhow::anyhow!("outbox row {id}: body is not JSON: {e}"))
                    })?;
                    let item = NewOutboxItem {
                        method: "chat.update".into(),
                        channel: Some(card.channel.clone()),
                        conversation_id: Some(card.conversation_id.clone()),
                        body,
                    };
                    insert_outbox(&mut tx, &item, now_ms).await?;
                }
                tx.commit().await
            }

            async fn retry_inner(&self, id: i64, next_ms: i64, error: String, maybe_sent: bool) -> Result<(), StoreError> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "UPDATE slack_outbox SET state = 'pending', next_attempt_ms = $2, last_error = $3, \
                     maybe_sent = (maybe_sent OR $4) WHERE id = $1",
                )
                .bind(id)
                .bind(next_ms)
                .bind(error)
                .bind(maybe_sent)
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }

            async fn postpone_inner(&self, id: i64, next_ms: i64) -> Result<(), StoreError> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "UPDATE slack_outbox SET state = 'pending', next_attempt_ms = $2, attempts = attempts - 1 \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(next_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }

            async fn fail_inner(&self, id: i64, error: String, now_ms: i64) -> Result<(), StoreError> {
                let mut tx = self.write_tx().await?;
                sqlx::query("UPDATE slack_outbox SET state = 'failed', done_ms = $2, last_error = $3 WHERE id = $1")
                    .bind(id)
                    .bind(now_ms)
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }

            async fn counts_inner(&self) -> Result<OutboxCounts, StoreError> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT state, COUNT(*) FROM slack_outbox GROUP BY state")
                        .fetch_all(&self.pool)
                        .await?;
                let mut c = OutboxCounts::default();
                for (state, n) in rows {
                    match state.as_str() {
                        "pending" => c.pending = n,
                        "sending" => c.sending = n,
                        "done" => c.done = n,
                        _ => c.failed = n,
                    }
                }
                Ok(c)
            }
        }

        async fn insert_outbox(conn: &mut Conn, item: &NewOutboxItem, now_ms: i64) -> Result<i64, StoreError> {
            Ok(sqlx::query_scalar(
                "INSERT INTO slack_outbox (method, channel, conversation_id, body, next_attempt_ms, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
            )
            .bind(&item.method)
            .bind(&item.channel)
            .bind(&item.conversation_id)
            .bind(item.body.to_string())
            .bind(now_ms)
            .fetch_one(conn)
            .await?)
        }

        /// Marks row `id` done; returns its conversation.
        async fn finish_outbox(
            conn: &mut Conn,
            id: i64,
            result: &serde_json::Value,
            now_ms: i64,
        ) -> Result<Option<String>, StoreError> {
            let conversation: Option<Option<String>> = sqlx::query_scalar(
                "UPDATE slack_outbox SET state = 'done', result = $2, done_ms = $3, last_error = NULL \
                 WHERE id = $1 RETURNING conversation_id",
            )
            .bind(id)
            .bind(result.to_string())
            .bind(now_ms)
            .fetch_optional(&mut *conn)
            .await?;
            Ok(conversation.flatten())
        }

        async fn remember_card(conn: &mut Conn, card: &CardRef) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO slack_cards (conversation_id, channel, ts) VALUES ($1, $2, $3) \
                 ON CONFLICT (conversation_id) DO UPDATE SET channel = excluded.channel, ts = excluded.ts",
            )
            .bind(&card.conversation_id)
            .bind(&card.channel)
            .bind(&card.ts)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// The card's new content, one version on; returns the version.
        async fn set_card_content(conn: &mut Conn, conversation_id: &str, body: &str) -> Result<i64, StoreError> {
            Ok(sqlx::query_scalar(
                "INSERT INTO slack_card_content (conversation_id, body, version) VALUES ($1, $2, 1) \
                 ON CONFLICT (conversation_id) DO UPDATE SET body = excluded.body, \
                 version = slack_card_content.version + 1 RETURNING version",
            )
            .bind(conversation_id)
            .bind(body)
            .fetch_one(&mut *conn)
            .await?)
        }

        impl SlackOutbox for $backend {
            fn enqueue(&self, item: NewOutboxItem, now_ms: i64) -> StoreFuture<'_, i64> {
                Box::pin(self.enqueue_inner(item, now_ms))
            }

            fn enqueue_card_update(&self, conversation_id: &str, body: serde_json::Value, now_ms: i64) -> StoreFuture<'_, i64> {
                let conversation_id = conversation_id.to_string();
                Box::pin(async move { self.enqueue_card_update_inner(&conversation_id, body, now_ms).await })
            }

            fn due(&self, now_ms: i64, stale_before_ms: i64, limit: i64) -> StoreFuture<'_, Vec<OutboxItem>> {
                Box::pin(self.due_inner(now_ms, stale_before_ms, limit))
            }

            fn claim(&self, id: i64, now_ms: i64, stale_before_ms: i64) -> StoreFuture<'_, Option<OutboxItem>> {
                Box::pin(self.claim_inner(id, now_ms, stale_before_ms))
            }

            fn complete(
                &self,
                id: i64,
                result: serde_json::Value,
                card: Option<CardRef>,
                shown_version: Option<i64>,
                now_ms: i64,
            ) -> StoreFuture<'_, ()> {
                Box::pin(self.complete_inner(id, result, card, shown_version, now_ms))
            }

            fn recover_card(&self, id: i64, result: serde_json::Value, card: CardRef, now_ms: i64) -> StoreFuture<'_, ()> {
                Box::pin(self.recover_card_inner(id, result, card, now_ms))
            }

            fn retry(&self, id: i64, next_attempt_ms: i64, error: &str, maybe_sent: bool) -> StoreFuture<'_, ()> {
                Box::pin(self.retry_inner(id, next_attempt_ms, error.to_string(), maybe_sent))
            }

            fn postpone(&self, id: i64, next_attempt_ms: i64) -> StoreFuture<'_, ()> {
                Box::pin(self.postpone_inner(id, next_attempt_ms))
            }

            fn fail(&self, id: i64, error: &str, now_ms: i64) -> StoreFuture<'_, ()> {
                Box::pin(self.fail_inner(id, error.to_string(), now_ms))
            }

            fn counts(&self) -> StoreFuture<'_, OutboxCounts> {
                Box::pin(self.counts_inner())
            }

            fn has_unsent(&self, conversation_id: &str, method: &str) -> StoreFuture<'_, bool> {
                let (conversation_id, method) = (conversation_id.to_string(), method.to_string());
                Box::pin(async move {
                    let found: Option<i64> = sqlx::query_scalar(
                        "SELECT id FROM slack_outbox WHERE conversation_id = $1 AND method = $2 \
                         AND state IN ('pending', 'sending') LIMIT 1",
                    )
                    .bind(&conversation_id)
                    .bind(&method)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(found.is_some())
                })
            }

            fn superseded(&self, id: i64, conversation_id: &str) -> StoreFuture<'_, bool> {
                let conversation_id = conversation_id.to_string();
                Box::pin(async move {
                    let found: Option<i64> = sqlx::query_scalar(
                        "SELECT id FROM slack_outbox WHERE conversation_id = $1 \
                         AND method IN ('chat.update', 'chat.postMessage') AND id > $2 AND state <> 'failed' LIMIT 1",
                    )
                    .bind(&conversation_id)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(found.is_some())
                })
            }

            fn card_content(&self, conversation_id: &str) -> StoreFuture<'_, Option<CardContent>> {
                let conversation_id = conversation_id.to_string();
                Box::pin(async move {
                    let row: Option<(String, i64, i64)> = sqlx::query_as(
                        "SELECT body, version, shown_version FROM slack_card_content WHERE conversation_id = $1",
                    )
                    .bind(&conversation_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    let row = match row {
                        Some(r) => Some(r),
                        // A card queued before contents were versioned: its last row's body.
                        None => sqlx::query_scalar::<_, String>(
                            "SELECT body FROM slack_outbox WHERE conversation_id = $1 AND state <> 'failed' \
                             AND method IN ('chat.postMessage', 'chat.update') ORDER BY id DESC LIMIT 1",
                        )
                        .bind(&conversation_id)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(|b| (b, 0, 0)),
                    };
                    Ok(row.and_then(|(body, version, shown_version)| {
                        Some(CardContent {
                            body: serde_json::from_str(&body).ok()?,
                            version,
                            shown_version,
                        })
                    }))
                })
            }

            fn card(&self, conversation_id: &str) -> StoreFuture<'_, Option<CardRef>> {
                let conversation_id = conversation_id.to_string();
                Box::pin(async move {
                    let row: Option<(String, String)> =
                        sqlx::query_as("SELECT channel, ts FROM slack_cards WHERE conversation_id = $1")
                            .bind(&conversation_id)
                            .fetch_optional(&self.pool)
                            .await?;
                    Ok(row.map(|(channel, ts)| CardRef {
                        conversation_id,
                        channel,
                        ts,
                    }))
                })
            }

            fn card_at(&self, channel: &str, ts: &str) -> StoreFuture<'_, Option<String>> {
                let (channel, ts) = (channel.to_string(), ts.to_string());
                Box::pin(async move {
                    Ok(sqlx::query_scalar(
                        "SELECT conversation_id FROM slack_cards WHERE channel = $1 AND ts = $2 \
                         UNION ALL SELECT conversation_id FROM slack_moved_cards WHERE channel = $1 AND ts = $2 \
                         LIMIT 1",
                    )
                    .bind(&channel)
                    .bind(&ts)
                    .fetch_optional(&self.pool)
                    .await?)
                })
            }

            fn move_card(
                &self,
                conversation_id: &str,
                retire: NewOutboxItem,
                post: NewOutboxItem,
                now_ms: i64,
            ) -> StoreFuture<'_, ()> {
                let conversation_id = conversation_id.to_string();
                Box::pin(async move {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(
                        "INSERT INTO slack_moved_cards (channel, ts, conversation_id) \
                         SELECT channel, ts, conversation_id FROM slack_cards WHERE conversation_id = $1 \
                         ON CONFLICT (channel, ts) DO NOTHING",
                    )
                    .bind(&conversation_id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM slack_cards WHERE conversation_id = $1")
                        .bind(&conversation_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "UPDATE slack_outbox SET state = 'done', done_ms = $2, \
                         result = '{\"dropped\":\"card moved\"}' \
                         WHERE conversation_id = $1 AND method = 'chat.update' AND state = 'pending'",
                    )
                    .bind(&conversation_id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                    insert_outbox(&mut tx, &retire, now_ms).await?;
                    // The card's content is now the one rendered for its new channel: the post
                    // sends the newest content when it is claimed.
                    set_card_content(&mut tx, &conversation_id, &post.body.to_string()).await?;
                    insert_outbox(&mut tx, &post, now_ms).await?;
                    tx.commit().await
                })
            }

            fn prune_sent(&self, before_ms: i64) -> StoreFuture<'_, u64> {
                Box::pin(async move {
                    let mut tx = self.write_tx().await?;
                    let done = sqlx::query(
                        "DELETE FROM slack_outbox WHERE state = 'done' AND done_ms < $1 AND id NOT IN \
                         (SELECT MAX(id) FROM slack_outbox WHERE conversation_id IS NOT NULL AND state <> 'failed' \
                         AND method IN ('chat.postMessage', 'chat.update') GROUP BY conversation_id)",
                    )
                    .bind(before_ms)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected())
                })
            }

            fn history_of(&self, conversation_id: &str) -> StoreFuture<'_, Vec<(String, String, i32)>> {
                let conversation_id = conversation_id.to_string();
                Box::pin(async move {
                    Ok(sqlx::query_as(
                        "SELECT method, state, attempts FROM slack_outbox WHERE conversation_id = $1 ORDER BY id",
                    )
                    .bind(&conversation_id)
                    .fetch_all(&self.pool)
                    .await?)
                })
            }
        }
    };
}
