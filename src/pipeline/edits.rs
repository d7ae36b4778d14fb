//! A stored message edited or deleted at its source: [`Pipeline::edit_message`] classifies an
//! edited team reply again (the status follows when the model had set it from that reply; see
//! [`crate::domain::apply_edit`]); [`Pipeline::delete_message`] keeps a tombstone. Both publish
//! what changed; both answer `None` for a message triage never stored (an ignored subtype, or one
//! from before triage joined the channel).

use super::{Pipeline, PipelineError};
use crate::domain::{Change, Edited, MessageEdit};
use crate::store::StoreError;

impl Pipeline {
    pub async fn edit_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
    ) -> Result<Option<Edited>, PipelineError> {
        let Some(stored) = self.store.find_message(channel, ts).await? else {
            return Ok(None);
        };
        if stored.text == text {
            let conversation = self.store.get_conversation(&stored.conversation_id).await?;
            return Ok(Some(Edited {
                message: stored,
                conversation,
                changed: false,
            }));
        }
        let analysis = self.inference.analyse(text, stored.role).await?;
        let edit = MessageEdit {
            text: text.to_owned(),
            embedding: analysis.embedding,
            prediction: analysis.prediction,
        };
        let written = match self.store.edit_message(channel, ts, edit).await {
            Err(StoreError::NotFound(_)) => return Ok(None),
            other => other?,
        };
        if written.value.changed {
            self.events.publish(
                [Change::MessageEdited {
                    message: written.value.message.clone(),
                    conversation: written.value.conversation.clone(),
                }]
                .into_iter()
                .chain(Change::from_events(&written.events)),
            );
        }
        Ok(Some(written.value))
    }

    pub async fn delete_message(&self, channel: &str, ts: &str) -> Result<Option<Edited>, StoreError> {
        let written = match self.store.delete_message(channel, ts).await {
            Err(StoreError::NotFound(_)) => return Ok(None),
            other => other?,
        };
        if written.value.changed {
            self.events.publish([Change::MessageDeleted {
                message: written.value.message.clone(),
                conversation: written.value.conversation.clone(),
            }]);
        }
        Ok(Some(written.value))
    }
}
