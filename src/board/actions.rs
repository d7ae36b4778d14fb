//! The board's writes. Each takes the same JSON as its `/v1` twin and calls the same pipeline
//! ticket operation, with the signed-in person as actor (`human:<user>`): a status dragged on the
//! board is recorded, exported and learned from exactly like one set through the API.
//! Every one needs a session and a same-origin request ([`Editor`]).

use super::session::Editor;
use crate::domain::{AccountPatch, ConversationPatch, NewNote};
use crate::http::extract::Json;
use crate::http::{ApiError, AppState};
use crate::store::Actor;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

/// `PATCH /v1/conversations/{id}`'s body: status, owner, priority, title, linked issue.
pub async fn update(
    State(state): State<AppState>,
    Editor(actor): Editor,
    Path(id): Path<String>,
    Json(patch): Json<ConversationPatch>,
) -> Result<impl IntoResponse, ApiError> {
    if patch.title.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid("title", "a title cannot be empty"));
    }
    Ok(axum::Json(
        state.pipeline.update_conversation(&id, patch, actor).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    into: String,
}

pub async fn merge(
    State(state): State<AppState>,
    Editor(actor): Editor,
    Path(id): Path<String>,
    Json(body): Json<MergeBody>,
) -> Result<impl IntoResponse, ApiError> {
    let conversation = state.pipeline.merge_conversations(&id, &body.into, actor).await?;
    Ok(axum::Json(json!({ "conversation": conversation })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    /// `null` splits the message into a new conversation.
    conversation_id: Option<String>,
}

pub async fn move_message(
    State(state): State<AppState>,
    Editor(actor): Editor,
    Path(id): Path<String>,
    Json(body): Json<MoveBody>,
) -> Result<impl IntoResponse, ApiError> {
    let to = body.conversation_id.as_deref().filter(|c| !c.is_empty());
    let (message, conversation) = state.pipeline.move_message(&id, to, actor).await?;
    Ok(axum::Json(
        json!({ "message": message, "conversation": conversation }),
    ))
}

/// An account's owner (what `PATCH /v1/accounts/{id}` does; accounts carry no actor or events).
pub async fn update_account(
    State(state): State<AppState>,
    Editor(_): Editor,
    Path(id): Path<String>,
    Json(patch): Json<AccountPatch>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(state.store.update_account(&id, patch).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    text: String,
}

/// An internal note by the signed-in person (what `POST /v1/conversations/{id}/notes` does).
pub async fn add_note(
    State(state): State<AppState>,
    Editor(actor): Editor,
    Path(id): Path<String>,
    Json(body): Json<NoteBody>,
) -> Result<impl IntoResponse, ApiError> {
    let author = match actor {
        Actor::Human(user) => user,
        other => other.to_string(),
    };
    let (note, _) = state
        .pipeline
        .add_note(
            &id,
            NewNote {
                author,
                text: body.text,
                slack: None,
            },
        )
        .await?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(note)))
}
