//! `POST /v1/group`: stateful per channel, idempotent on (channel, ts). The text is embedded through
//! the embedder's queue; the decision is the grouping core's ([`crate::group::Grouper`]), with the
//! top candidates and each signal's contribution as `reasons`.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiJson, AppState};
use crate::group::{IncomingMessage, Role};

/// A Slack ts: `"1700000000.000100"` or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum Ts {
    Text(String),
    Number(f64),
}

impl Ts {
    fn normalise(self, field: &str) -> Result<String, ApiError> {
        let s = match self {
            Ts::Text(s) => s.trim().to_string(),
            Ts::Number(n) => format!("{n:.6}"),
        };
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(s),
            _ => Err(ApiError::invalid(
                field,
                format!("{field} must be a Slack ts like \"1700000000.000100\""),
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    channel: String,
    ts: Ts,
    user: String,
    text: String,
    #[serde(default)]
    thread_ts: Option<Ts>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

pub async fn group(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<GroupRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    for (field, v) in [("channel", &req.channel), ("user", &req.user)] {
        if v.trim().is_empty() {
            return Err(ApiError::invalid(field, format!("{field} must not be empty")));
        }
    }
    let ts = req.ts.normalise("ts")?;
    let thread_ts = req.thread_ts.map(|t| t.normalise("thread_ts")).transpose()?;
    let role = match req.role.as_deref() {
        None => None,
        Some(r) => Some(
            Role::parse(r)
                .ok_or_else(|| ApiError::invalid("role", "role must be \"customer\" or \"agent\""))?,
        ),
    };
    let (Some(embed), Some(grouper)) = (state.embed.get(), state.grouper.get()) else {
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
        ts: &ts,
        user: &req.user,
        text: &req.text,
        system: false,
        action: false,
        thread_ts: thread_ts.as_deref(),
        role,
        embedding: embedding.as_deref(),
    };
    let decision = grouper
        .lock()
        .map_err(|_| ApiError::internal("grouper state poisoned by an earlier panic"))?
        .process(&msg, req.dry_run)
        .map_err(|e| ApiError::invalid("body", e.to_string()))?;
    Ok(axum::Json(json!({
        "conversation_id": decision.conversation_id,
        "new": decision.new,
        "confidence": decision.confidence,
        "reasons": decision.reasons,
        "candidates": decision.candidates,
    })))
}
