//! `GET /board/events`: the pipeline's committed changes as server-sent events, for open board
//! pages to follow without a reload. Each event names the conversations it touches; pages re-read
//! what they show when one of theirs changed. A subscriber that fell behind the bus gets `reload`.
//! A stream ends after [`STREAM_SECONDS`] (the browser reconnects at once and re-reads, since it
//! may have missed changes meanwhile), so open pages never hold up a graceful shutdown for long.

use super::session::Viewer;
use crate::domain::Change;
use crate::http::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

pub const STREAM_SECONDS: u64 = 25;

/// What a page needs to know of a change: its kind and the conversations it touches.
pub fn summary(change: &Change) -> serde_json::Value {
    let (kind, ids, extra) = match change {
        Change::ConversationCreated { conversation } => ("created", vec![conversation.id.clone()], json!({})),
        Change::MessageAdded {
            message,
            conversation,
        } => (
            "message",
            vec![conversation.id.clone()],
            json!({ "message_id": message.id }),
        ),
        Change::MessageEdited {
            message,
            conversation,
        } => (
            "edited",
            vec![conversation.id.clone()],
            json!({ "message_id": message.id }),
        ),
        Change::MessageDeleted {
            message,
            conversation,
        } => (
            "deleted_message",
            vec![conversation.id.clone()],
            json!({ "message_id": message.id }),
        ),
        Change::NoteAdded { note } => ("note", vec![note.conversation_id.clone()], json!({})),
        Change::TitleChanged { conversation_id, .. } => ("title", vec![conversation_id.clone()], json!({})),
        Change::StatusChanged {
            conversation_id,
            to,
            actor,
            ..
        } => (
            "status",
            vec![conversation_id.clone()],
            json!({ "to": to, "actor": actor }),
        ),
        Change::OwnerChanged { conversation_id, .. } => ("owner", vec![conversation_id.clone()], json!({})),
        Change::PriorityChanged { conversation_id, .. } => {
            ("priority", vec![conversation_id.clone()], json!({}))
        }
        Change::Merged { from, into, .. } => (
            "merged",
            vec![into.id.clone(), from.clone()],
            json!({ "from": from, "into": into.id }),
        ),
        Change::Moved { from, to, .. } => ("moved", vec![from.id.clone(), to.id.clone()], json!({})),
        Change::ConversationDeleted { id } => ("deleted", vec![id.clone()], json!({})),
    };
    let mut v = json!({ "type": kind, "conversations": ids });
    if let (Some(o), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(extra.clone());
    }
    v
}

pub async fn events(
    State(state): State<AppState>,
    Viewer(_): Viewer,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.pipeline.events().subscribe();
    let until = Instant::now() + Duration::from_secs(STREAM_SECONDS);
    let hello = Event::default()
        .event("hello")
        .retry(Duration::from_millis(500))
        .data("{}");
    let changes = stream::unfold((rx, false), move |(mut rx, done)| async move {
        if done {
            return None;
        }
        let event = match tokio::time::timeout_at(until, rx.recv()).await {
            Err(_) | Ok(Err(RecvError::Closed)) => return None,
            Ok(Ok(change)) => Event::default()
                .event("change")
                .data(summary(&change).to_string()),
            Ok(Err(RecvError::Lagged(_))) => Event::default().event("reload").data("{}"),
        };
        Some((Ok(event), (rx, false)))
    });
    Sse::new(stream::once(async move { Ok(hello) }).chain(changes)).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_name_both_conversations() {
        let v = summary(&Change::ConversationDeleted { id: "c1".into() });
        assert_eq!(v, json!({"type": "deleted", "conversations": ["c1"]}));
    }
}
