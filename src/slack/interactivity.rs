//! `POST /slack/interactivity`: people pressing the controls of a triage card.
//!
//! Slack posts `application/x-www-form-urlencoded` with one field, `payload` (JSON), signed like
//! every Slack request; the signature is checked over the raw body before anything is parsed.
//! A `block_actions` payload's actions become ticket operations through the pipeline, by the
//! Slack user who pressed (`human:<user id>`):
//!
//! | `action_id` | change |
//! |---|---|
//! | `acknowledge`, `close` | status `closed` |
//! | `in_progress` | status `in_progress` |
//! | `set_status` | status `selected_option.value` |
//! | `set_owner` | owner `selected_user` |
//! | `set_priority` | priority `selected_option.value` |
//!
//! The conversation is the button's `value`, else the one the action's `block_id` names
//! (`triage:<id>:...`), else the card's metadata. The card follows through the event bus; a change
//! the status machine refuses (On Hold without a linked issue) is answered with an ephemeral
//! message to the payload's `response_url` (through the outbox) saying why. Slack wants its 200
//! within 3 s: the answer is empty and sent as soon as the changes are written.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::card::{conversation_of_block, priority_label, status_label};
use super::outbox::RESPONSE_URL;
use crate::domain::{validate, Actor, ConversationPatch, Priority, Status};
use crate::http::{ApiError, AppState};
use crate::store::{NewOutboxItem, StoreError};

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    message: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct User {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    block_id: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    selected_option: Option<SelectedOption>,
    #[serde(default)]
    selected_user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SelectedOption {
    value: String,
}

pub async fn interactivity(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let slack = state.slack.as_ref().ok_or(ApiError::Forbidden(
        "Slack is not configured (TRIAGE_SLACK_BOT_TOKEN)",
    ))?;
    let verifier = slack.verifier.as_ref().ok_or(ApiError::Unauthorized(
        "Slack requests are not configured (TRIAGE_SLACK_SIGNING_SECRET is unset)",
    ))?;
    verifier
        .verify_request(&headers, &body)
        .map_err(|e| ApiError::Unauthorized(e.message()))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not form-encoded: {e}")))?;
    let raw = fields
        .into_iter()
        .find_map(|(k, v)| (k == "payload").then_some(v))
        .ok_or_else(|| ApiError::BadRequest("no `payload` field".into()))?;
    let payload: Payload = serde_json::from_str(&raw)
        .map_err(|e| ApiError::BadRequest(format!("`payload` is not an interaction payload: {e}")))?;
    if payload.kind != "block_actions" {
        // Other interactions (shortcuts, view submissions) are not ours: acknowledged, ignored.
        return Ok(StatusCode::OK.into_response());
    }
    let user = payload
        .user
        .as_ref()
        .map(|u| u.id.clone())
        .ok_or_else(|| ApiError::BadRequest("`payload.user.id` is missing".into()))?;
    validate::id("payload.user.id", &user)?;
    let card_conversation = payload
        .message
        .as_ref()
        .and_then(|m| m.pointer("/metadata/event_payload/conversation_id"))
        .and_then(Value::as_str);
    for action in &payload.actions {
        let Some(conversation) = action
            .value
            .as_deref()
            .filter(|v| !v.is_empty())
            .or_else(|| action.block_id.as_deref().and_then(conversation_of_block))
            .or(card_conversation)
        else {
            continue;
        };
        if let Err(e) = validate::id("conversation", conversation) {
            respond(
                &state,
                payload.response_url.as_deref(),
                &format!("Nothing changed: {e}."),
            )
            .await;
            continue;
        }
        let patch = match patch_for(action).and_then(|p| match p {
            Some(p) => p
                .validate()
                .map(|_| Some(p))
                .map_err(|e| format!("Nothing changed: {e}.")),
            None => Ok(None),
        }) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(why) => {
                respond(&state, payload.response_url.as_deref(), &why).await;
                continue;
            }
        };
        let what = describe(&patch);
        match state
            .pipeline
            .update_conversation(conversation, patch, Actor::Human(user.clone()))
            .await
        {
            Ok(_) => tracing::info!(
                conversation,
                user,
                action = action.action_id,
                "card action applied"
            ),
            Err(e @ (StoreError::Refused(_) | StoreError::Invalid { .. } | StoreError::NotFound(_))) => {
                let why = match e {
                    StoreError::NotFound(_) => "this conversation no longer exists".to_string(),
                    other => other.to_string(),
                };
                respond(
                    &state,
                    payload.response_url.as_deref(),
                    &format!("Could not {what}: {why}."),
                )
                .await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(StatusCode::OK.into_response())
}

/// The change an action asks for; `None` for actions that are not ours.
fn patch_for(action: &Action) -> Result<Option<ConversationPatch>, String> {
    let selected = || action.selected_option.as_ref().map(|o| o.value.as_str());
    let status = |s: Status| {
        Ok(Some(ConversationPatch {
            status: Some(s),
            ..ConversationPatch::default()
        }))
    };
    match action.action_id.as_str() {
        "acknowledge" | "close" => status(Status::Closed),
        "in_progress" => status(Status::InProgress),
        "set_status" => {
            let v = selected().ok_or("the status select sent no option")?;
            let s = Status::ALL
                .into_iter()
                .find(|s| s.as_str() == v)
                .ok_or_else(|| format!("`{v}` is not a status"))?;
            status(s)
        }
        "set_priority" => {
            let v = selected().ok_or("the priority select sent no option")?;
            let p: Priority = v.parse().map_err(|_| format!("`{v}` is not a priority"))?;
            Ok(Some(ConversationPatch {
                priority: Some(p),
                ..ConversationPatch::default()
            }))
        }
        "set_owner" => {
            let u = action
                .selected_user
                .clone()
                .ok_or("the owner picker sent no user")?;
            Ok(Some(ConversationPatch {
                owner: Some(Some(u)),
                ..ConversationPatch::default()
            }))
        }
        _ => Ok(None),
    }
}

fn describe(p: &ConversationPatch) -> String {
    if let Some(s) = p.status {
        format!("set the status to {}", status_label(s))
    } else if let Some(pr) = p.priority {
        format!("set the priority to {}", priority_label(pr))
    } else {
        "change the owner".into()
    }
}

/// An ephemeral answer to the person who pressed, through the outbox.
async fn respond(state: &AppState, response_url: Option<&str>, text: &str) {
    let (Some(slack), Some(url)) = (&state.slack, response_url) else {
        return;
    };
    let item = NewOutboxItem {
        method: RESPONSE_URL.into(),
        channel: None,
        conversation_id: None,
        body: json!({"url": url, "message": {"response_type": "ephemeral", "replace_original": false, "text": text}}),
    };
    if let Err(e) = slack.outbox.enqueue(item).await {
        tracing::warn!(error = %e, "could not queue the ephemeral answer");
    }
}
