//! `POST /v1/group`: stateful per channel, idempotent on (channel, ts). The text is embedded through
//! the embedder's queue; the decision is the grouping core's ([`crate::group::Grouper`]), with the
//! top candidates and each signal's contribution as `reasons`. The body is `/v1/messages`' body.

use axum::extract::State;
use serde_json::{json, Value};

use super::extract::Json;
use super::message::MessageBody;
use super::{ApiError, AppState};
use crate::domain;
use crate::group::{IncomingMessage, Role};

pub async fn group(
    State(state): State<AppState>,
    Json(body): Json<MessageBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let req = body.validate()?;
    let role = req.role.map(|r| match r {
        domain::Role::Customer => Role::Customer,
        domain::Role::Agent => Role::Agent,
    });
    let (Some(embed), Some(grouper)) = (state.models.embed.get(), state.models.grouper.get()) else {
        return Err(ApiError::unavailable("the models are still loading"));
    };
    // An empty text (a file share, say) still groups by thread, author and time.
    let embedding = if req.text.trim().is_empty() {
        None
    } else {
        Some(embed.embed(vec![req.text.clone()]).await?.0.remove(0))
    };
    let msg = IncomingMessage {
        channel: &req.channel,
        ts: &req.ts,
        user: &req.user,
        text: &req.text,
        system: false,
        action: false,
        thread_ts: req.thread_ts.as_deref(),
        role,
        embedding: embedding.as_deref(),
    };
    let decision = grouper
        .lock()
        .map_err(|_| ApiError::internal("grouper state poisoned by an earlier panic"))?
        .process(&msg, req.dry_run)
        .map_err(|e| ApiError::Invalid {
            field: None,
            message: e.to_string(),
        })?;
    Ok(axum::Json(json!({
        "conversation_id": decision.conversation_id,
        "new": decision.new,
        "confidence": decision.confidence,
        "reasons": decision.reasons,
        "candidates": decision.candidates,
    })))
}
