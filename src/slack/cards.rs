//! Triage cards kept current from the pipeline's event bus: each new conversation gets a card
//! (`chat.postMessage` to its owner's triage channel, else `TRIAGE_SLACK_TRIAGE_CHANNEL`), and
//! every change of status, owner, priority, title or message count re-renders it as a
//! `chat.update`. Both go through the [`Outbox`]: the card service only decides what a card
//! shows; the outbox coalesces a burst of changes into one call and sends it exactly once.
//!
//! A card lives in its owner's triage channel: when the owner changes and the new owner's
//! channel (else the default one) is another, the old card loses its controls and says where the
//! conversation went ("Moved to #x"), and a new card is posted there (replies in the old card's
//! thread still become notes). A merged or deleted conversation's card loses its controls and
//! says what happened.
//!
//! Names on the card (the customer's, the account's) come from [`Names`] (cached `users.info`)
//! and the account (named after its channel).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast::{error::RecvError, Receiver};

use super::api::SlackApi;
use super::card::{render, CardContext};
use super::names::Names;
use super::outbox::{Outbox, POST_MESSAGE, UPDATE};
use crate::domain::{Change, Conversation};
use crate::pipeline::Pipeline;
use crate::store::{CardRef, ConversationFilter, NameKind, NewOutboxItem, PageRequest, StoreError};

/// Conversations reconciled, at least, when the card service fell behind the event bus.
const LAG_RECONCILE: usize = 2000;

pub struct Cards {
    pipeline: Pipeline,
    outbox: Outbox,
    /// `TRIAGE_SLACK_TRIAGE_CHANNEL`: cards of conversations whose owner has no triage channel.
    default_channel: Option<String>,
    /// Slack names (`users.info`), cached in the database.
    names: Names,
    /// Conversation id -> permalink of its first message (`chat.getPermalink`).
    permalinks: Mutex<HashMap<String, String>>,
    /// Subscribed at construction, so no change published after it is missed.
    rx: Mutex<Option<Receiver<Change>>>,
}

impl Cards {
    pub fn new(pipeline: Pipeline, outbox: Outbox, names: Names, default_channel: Option<String>) -> Self {
        Cards {
            rx: Mutex::new(Some(pipeline.events().subscribe())),
            pipeline,
            outbox,
            default_channel,
            names,
            permalinks: Mutex::default(),
        }
    }

    fn api(&self) -> &SlackApi {
        self.outbox.api()
    }

    /// Follows the event bus, from when this was made, until `shutdown`.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Some(mut rx) = self.rx.lock().unwrap().take() else {
            return;
        };
        tokio::pin!(shutdown);
        loop {
            let change = tokio::select! {
                r = rx.recv() => r,
                _ = &mut shutdown => return,
            };
            match change {
                Ok(change) => {
                    if let Err(e) = self.handle(&change).await {
                        tracing::warn!(error = %e, conversation = change.conversation_id(), "triage card not updated");
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    // The missed changes are unknown: bring the recent cards in line instead.
                    tracing::warn!(
                        missed = n,
                        "triage cards fell behind the event bus; reconciling recent cards"
                    );
                    let limit = (n as usize).max(LAG_RECONCILE);
                    if let Err(e) = self.reconcile(limit).await {
                        tracing::warn!(error = %e, "triage cards not reconciled after falling behind");
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Brings the cards of the `limit` most recently created conversations in line with them:
    /// posts the missing ones and updates those whose content changed. Run at start-up, it
    /// recovers the card work of changes a crashed process committed but had not queued yet.
    /// Returns the conversations looked at.
    pub async fn reconcile(&self, limit: usize) -> Result<usize, StoreError> {
        let store = self.pipeline.store();
        let mut page = PageRequest {
            cursor: None,
            limit: 200,
        };
        let mut seen = 0;
        while seen < limit {
            let batch = store
                .list_conversations(&ConversationFilter::default(), page.clone())
                .await?;
            for c in &batch.items {
                self.upsert(c).await?;
            }
            seen += batch.items.len();
            match batch.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        Ok(seen)
    }

    /// The card work one change causes. The card shows the conversation as it is now, read
    /// from the store, not as the change carried it: changes of one conversation published by
    /// concurrent requests may arrive in another order than they committed, and the last one
    /// handled must not leave an older state.
    pub async fn handle(&self, change: &Change) -> Result<(), StoreError> {
        match change {
            // The first message comes with its conversation's creation, which cards it.
            Change::MessageAdded { conversation, .. } if conversation.message_count <= 1 => Ok(()),
            Change::Merged { from, into, .. } => {
                self.upsert_current(&into.id).await?;
                self.retire(from, &format!("Merged into “{}”.", into.title)).await
            }
            Change::Moved { from, to, .. } => {
                self.upsert_current(&from.id).await?;
                self.upsert_current(&to.id).await
            }
            Change::ConversationDeleted { id } => self.retire(id, "This conversation was deleted.").await,
            // Creation, messages, status, owner, priority, title (and whatever else changes a
            // conversation): the card shows its current state.
            other => self.upsert_current(other.conversation_id()).await,
        }
    }

    /// [`Self::upsert`] of the conversation as stored now; nothing when it is gone (its own
    /// change retires the card).
    async fn upsert_current(&self, id: &str) -> Result<(), StoreError> {
        match self.pipeline.store().get_conversation(id).await {
            Ok(c) => self.upsert(&c).await,
            Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Posts the conversation's card, or updates it when it exists or is about to.
    async fn upsert(&self, conv: &Conversation) -> Result<(), StoreError> {
        let outbox = self.pipeline.outbox();
        // In this order: a post completes and records its card atomically, so a post that is
        // no longer unsent has its card by the time the card is read.
        let unsent = outbox.has_unsent(&conv.id, POST_MESSAGE).await?;
        let existing = outbox.card(&conv.id).await?;
        if let (Some(card), false) = (&existing, unsent) {
            match self.channel_for(conv).await? {
                Some(to) if to != card.channel => return self.move_card(conv, card, &to).await,
                _ => {}
            }
        }
        let update_unsent = existing.is_some() && outbox.has_unsent(&conv.id, UPDATE).await?;
        let channel = match &existing {
            Some(card) => card.channel.clone(),
            None => match self.channel_for(conv).await? {
                Some(c) => c,
                None => {
                    tracing::debug!(
                        conversation = conv.id,
                        "no triage channel for this conversation's card"
                    );
                    return Ok(());
                }
            },
        };
        let ctx = self.context(conv).await?;
        let body = serde_json::to_value(render(conv, &ctx, &channel)).expect("a card serialises");
        let queued = existing.is_some() || unsent;
        if queued {
            if let Some(content) = outbox.card_content(&conv.id).await? {
                // The card shows (or a waiting row will send) exactly this already.
                let sent_or_sending = content.shown_version >= content.version || unsent || update_unsent;
                if content.body == body && content.version > 0 && sent_or_sending {
                    return Ok(());
                }
            }
        }
        if queued {
            self.outbox.enqueue_card_update(&conv.id, body).await?;
        } else {
            self.outbox
                .enqueue(NewOutboxItem {
                    method: POST_MESSAGE.into(),
                    channel: Some(channel),
                    conversation_id: Some(conv.id.clone()),
                    body,
                })
                .await?;
        }
        Ok(())
    }

    /// The card of `conv` moves from `card` (its current place) to channel `to`: the old card,
    /// without controls, says where it went; a new card is posted in `to`.
    async fn move_card(&self, conv: &Conversation, card: &CardRef, to: &str) -> Result<(), StoreError> {
        let ctx = self.context(conv).await?;
        let mut retired = serde_json::to_value(render(
            conv,
            &CardContext {
                moved_to: Some(to.to_string()),
                ..ctx.clone()
            },
            &card.channel,
        ))
        .expect("a card serialises");
        retired["ts"] = serde_json::json!(card.ts);
        let post = serde_json::to_value(render(conv, &ctx, to)).expect("a card serialises");
        tracing::info!(
            conversation = conv.id,
            from = card.channel,
            to,
            "triage card moves to the owner's channel"
        );
        self.outbox
            .move_card(
                &conv.id,
                NewOutboxItem {
                    // Not the conversation's card any more: a plain update of that message.
                    method: UPDATE.into(),
                    channel: Some(card.channel.clone()),
                    conversation_id: None,
                    body: retired,
                },
                NewOutboxItem {
                    method: POST_MESSAGE.into(),
                    channel: Some(to.to_string()),
                    conversation_id: Some(conv.id.clone()),
                    body: post,
                },
            )
            .await
    }

    /// A merged or deleted conversation's card, without controls, saying why.
    async fn retire(&self, id: &str, note: &str) -> Result<(), StoreError> {
        let outbox = self.pipeline.outbox();
        let Some(card) = outbox.card(id).await? else {
            if !outbox.has_unsent(id, POST_MESSAGE).await? {
                return Ok(());
            }
            // Posted soon: the update waits for it.
            return self.retire_as(id, note, None).await;
        };
        self.retire_as(id, note, Some(card.channel)).await
    }

    async fn retire_as(&self, id: &str, note: &str, channel: Option<String>) -> Result<(), StoreError> {
        let mut conv = Conversation::open("", "(gone)".into(), None, chrono::Utc::now());
        conv.id = id.to_string();
        let ctx = CardContext {
            closed_note: Some(note.to_string()),
            ..CardContext::default()
        };
        let channel = channel.unwrap_or_default();
        let mut body = serde_json::to_value(render(&conv, &ctx, &channel)).expect("a card serialises");
        // Keep what the card showed; only the blocks change.
        body["text"] = serde_json::json!(note);
        self.outbox.enqueue_card_update(id, body).await?;
        Ok(())
    }

    /// The owner's triage channel, else the default one.
    async fn channel_for(&self, conv: &Conversation) -> Result<Option<String>, StoreError> {
        if let Some(owner) = &conv.owner {
            let team = self.pipeline.store().list_team().await?;
            if let Some(c) = team
                .into_iter()
                .find(|m| &m.slack_user_id == owner)
                .and_then(|m| m.triage_channel)
                .filter(|c| !c.is_empty())
            {
                return Ok(Some(c));
            }
        }
        Ok(self.default_channel.clone())
    }

    /// What the card shows besides the conversation: customer, account, first message, link.
    async fn context(&self, conv: &Conversation) -> Result<CardContext, StoreError> {
        let store = self.pipeline.store();
        let first = store
            .list_messages(
                &conv.id,
                PageRequest {
                    cursor: None,
                    limit: 1,
                },
            )
            .await?
            .items
            .into_iter()
            .next();
        let account = match &conv.account_id {
            Some(id) => match store.get_account(id).await {
                Ok(a) => Some(a.name),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let (customer, permalink) = match &first {
            Some(m) => (
                Some(
                    self.names
                        .resolve(NameKind::User, &m.user)
                        .await
                        .unwrap_or_else(|| m.user.clone()),
                ),
                self.permalink(&conv.id, &m.channel, &m.ts).await,
            ),
            None => (None, None),
        };
        Ok(CardContext {
            customer,
            account,
            first_message: first.map(|m| m.text),
            permalink,
            ..CardContext::default()
        })
    }

    async fn permalink(&self, conversation: &str, channel: &str, ts: &str) -> Option<String> {
        if let Some(p) = self.permalinks.lock().unwrap().get(conversation) {
            return Some(p.clone());
        }
        match self.api().get_permalink(channel, ts).await {
            Ok(link) => {
                self.permalinks
                    .lock()
                    .unwrap()
                    .insert(conversation.into(), link.clone());
                Some(link)
            }
            Err(e) => {
                tracing::debug!(channel, ts, error = %e, "chat.getPermalink failed; the card has no link");
                None
            }
        }
    }
}
