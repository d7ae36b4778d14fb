//! `POST /slack/events`: the Events API endpoint. The signature is checked on the raw body before
//! anything is parsed (401 with a JSON error naming the problem); `url_verification` echoes its
//! challenge; an `event_callback` is stored in the inbox and acknowledged at once, whatever its
//! `X-Slack-Retry-Num` (a retry of a stored event id is acknowledged without a second row), and
//! the worker ([`super::inbound`]) processes it afterwards.

use super::inbound::Envelope;
use crate::http::error::ApiError;
use crate::http::extract::{body_error, parse_json};
use crate::http::AppState;
use crate::store::InboxEntry;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

pub const RETRY_NUM_HEADER: &str = "x-slack-retry-num";

pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(body_error)?;
    let verifier = state.config.slack_verifier.as_ref().ok_or(ApiError::Forbidden(
        "Slack events are not configured: set TRIAGE_SLACK_SIGNING_SECRET",
    ))?;
    verifier
        .verify_request(&headers, &body)
        .map_err(|e| ApiError::Unauthorized(e.message()))?;
    let envelope: Envelope = parse_json(&body)?;
    match envelope.kind.as_str() {
        "url_verification" => {
            let challenge = envelope
                .challenge
                .ok_or_else(|| ApiError::invalid("challenge", "url_verification needs a challenge"))?;
            Ok(Json(json!({ "challenge": challenge })))
        }
        "event_callback" => {
            let event_id = envelope
                .event_id
                .filter(|id| !id.trim().is_empty())
                .ok_or_else(|| ApiError::invalid("event_id", "an event_callback needs an event_id"))?;
            if envelope.event.is_none() {
                return Err(ApiError::invalid("event", "an event_callback needs an event"));
            }
            let retry_num = headers
                .get(RETRY_NUM_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let payload = String::from_utf8(body.to_vec())
                .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
            let entry = InboxEntry {
                event_id,
                team_id: envelope.team_id,
                payload,
                retry_num,
                received_at: chrono::Utc::now(),
            };
            let stored = state.pipeline.inbox_accept(entry).await?;
            if stored {
                state.slack_inbox.notify_one();
            }
            Ok(Json(json!({ "ok": true })))
        }
        // app_rate_limited and anything newer: acknowledged, nothing to do.
        _ => Ok(Json(json!({ "ok": true }))),
    }
}
