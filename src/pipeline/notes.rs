//! Internal notes: [`Pipeline::add_note`] (a reply in a triage card's thread, or the API). A note is
//! stored beside the conversation's messages, never among them, so it never reaches the grouper,
//! the status model or a customer's channel; it is published as [`Change::NoteAdded`].

use super::Pipeline;
use crate::domain::{build_note, ts_to_time, Change, NewNote, Note};
use crate::store::StoreError;
use chrono::SubsecRound;

impl Pipeline {
    /// Adds a note to `conversation_id`; returns it and whether it is new (`false` when its Slack
    /// message was added before). Dated by its Slack ts when it has one.
    pub async fn add_note(&self, conversation_id: &str, new: NewNote) -> Result<(Note, bool), StoreError> {
        let at = new
            .slack
            .as_ref()
            .and_then(|s| ts_to_time(&s.ts))
            .unwrap_or_else(chrono::Utc::now)
            // What both databases keep (PostgreSQL stores microseconds): the note reads back equal.
            .trunc_subsecs(6);
        let note = build_note(conversation_id, new, at)?;
        let (note, created) = self.store.add_note(note).await?;
        if created {
            self.events.publish([Change::NoteAdded { note: note.clone() }]);
        }
        Ok((note, created))
    }
}
