//! The ticket operations people make (create, patch, delete, merge, move, split) and the issue
//! tracker's news, each one store write and then its changes published on the event bus.

use super::Pipeline;
use crate::domain::{Actor, Change, Conversation, ConversationPatch, IssueChange, Message, NewConversation};
use crate::store::{Moved, StoreError};
use std::iter;

impl Pipeline {
    pub async fn create_conversation(
        &self,
        new: NewConversation,
        actor: Actor,
    ) -> Result<Conversation, StoreError> {
        let written = self.store.create_conversation(new, actor).await?;
        let created = Change::ConversationCreated {
            conversation: written.value.clone(),
        };
        self.events
            .publish(iter::once(created).chain(Change::from_events(&written.events)));
        Ok(written.value)
    }

    pub async fn update_conversation(
        &self,
        id: &str,
        patch: ConversationPatch,
        actor: Actor,
    ) -> Result<Conversation, StoreError> {
        let title = patch.title.clone();
        let by = actor.to_string();
        let written = self.store.update_conversation(id, patch, actor).await?;
        let renamed = title.map(|title| Change::TitleChanged {
            conversation_id: written.value.id.clone(),
            title,
            actor: by,
        });
        self.events
            .publish(Change::from_events(&written.events).into_iter().chain(renamed));
        Ok(written.value)
    }

    pub async fn delete_conversation(&self, id: &str) -> Result<(), StoreError> {
        self.store.delete_conversation(id).await?;
        self.events
            .publish([Change::ConversationDeleted { id: id.to_owned() }]);
        Ok(())
    }

    /// Folds `from` into `into`; returns the surviving conversation.
    pub async fn merge_conversations(
        &self,
        from: &str,
        into: &str,
        actor: Actor,
    ) -> Result<Conversation, StoreError> {
        let merged = self
            .store
            .merge_conversations(from, into, actor.clone())
            .await?
            .value;
        self.events.publish([Change::Merged {
            from: from.to_owned(),
            into: merged.clone(),
            actor: actor.to_string(),
        }]);
        Ok(merged)
    }

    /// Moves a message to `to`, or splits it into a new conversation when `to` is `None`; returns
    /// the message and its new conversation.
    pub async fn move_message(
        &self,
        message_id: &str,
        to: Option<&str>,
        actor: Actor,
    ) -> Result<(Message, Conversation), StoreError> {
        let Moved { message, from, to } = self
            .store
            .move_message(message_id, to, actor.clone())
            .await?
            .value;
        self.events.publish([Change::Moved {
            message: message.clone(),
            from,
            to: to.clone(),
            actor: actor.to_string(),
        }]);
        Ok((message, to))
    }

    /// Records an issue's new state; a closed issue releases its `on_hold` conversations.
    pub async fn issue_changed(&self, change: &IssueChange) -> Result<Vec<Conversation>, StoreError> {
        let written = self.store.issue_changed(change).await?;
        self.events.publish(Change::from_events(&written.events));
        Ok(written.value)
    }
}
