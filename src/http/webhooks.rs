//! `POST /v1/webhooks/issues`: issue-tracker events that may release `on_hold` conversations.
//!
//! Authenticated by the provider's signature over the raw body (GitHub `X-Hub-Signature-256`,
//! Linear `Linear-Signature`), or by an API bearer token for the generic `{"url", "state"}` form.

use super::auth::{bearer, verify_hmac_sha256, Secret};
use super::error::ApiError;
use super::extract::{body_error, parse_json as parse};
use super::AppState;
use crate::store::IssueChange;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};

pub async fn issues(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let body = body.map_err(body_error)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let config = &state.config;
    let change = if let Some(signature) = header("x-hub-signature-256") {
        let secret = config
            .github_webhook_secret
            .as_ref()
            .ok_or(ApiError::Forbidden("GitHub webhooks are not configured"))?;
        verify(
            secret,
            &body,
            signature.strip_prefix("sha256=").unwrap_or_default(),
        )?;
        // GitHub also sends `ping` and other events to the same hook: only `issues` matter.
        match header("x-github-event") {
            Some("issues") => parse::<GithubEvent>(&body)?.change(),
            _ => None,
        }
    } else if let Some(signature) = header("linear-signature") {
        let secret = config
            .linear_webhook_secret
            .as_ref()
            .ok_or(ApiError::Forbidden("Linear webhooks are not configured"))?;
        verify(secret, &body, signature)?;
        let event = parse::<LinearEvent>(&body)?;
        check_fresh(event.webhook_timestamp, chrono::Utc::now().timestamp_millis())?;
        event.change()
    } else if bearer(&headers).is_some_and(|t| config.api_tokens.accepts(t)) {
        Some(parse::<GenericEvent>(&body)?.change()?)
    } else {
        return Err(ApiError::Unauthorized(
            "needs a provider signature (X-Hub-Signature-256, Linear-Signature) or a bearer token",
        ));
    };
    let conversations = match change {
        Some(change) => state.pipeline.issue_changed(&change).await?,
        None => Vec::new(),
    };
    Ok(axum::Json(json!({ "conversations": conversations })))
}

fn verify(secret: &Secret, body: &[u8], signature: &str) -> Result<(), ApiError> {
    verify_hmac_sha256(secret, body, signature)
        .then_some(())
        .ok_or(ApiError::Unauthorized("the signature does not match the body"))
}

#[derive(Deserialize)]
struct GithubEvent {
    action: String,
    issue: GithubIssue,
    repository: Option<GithubRepository>,
}

#[derive(Deserialize)]
struct GithubIssue {
    html_url: String,
    number: u64,
}

#[derive(Deserialize)]
struct GithubRepository {
    full_name: String,
}

impl GithubEvent {
    fn change(self) -> Option<IssueChange> {
        let closed = match self.action.as_str() {
            "closed" => true,
            "reopened" => false,
            _ => return None,
        };
        Some(IssueChange {
            key: self
                .repository
                .map(|r| format!("{}#{}", r.full_name, self.issue.number)),
            url: Some(self.issue.html_url),
            provider: Some("github".into()),
            closed,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinearEvent {
    #[serde(rename = "type")]
    kind: String,
    data: LinearIssue,
    /// Milliseconds since the epoch when Linear sent it; signed with the body.
    webhook_timestamp: Option<i64>,
}

/// How far a signed Linear delivery's `webhookTimestamp` may be from now (Linear's guidance: a
/// minute), so that a captured delivery cannot be replayed later.
const LINEAR_MAX_SKEW_MS: i64 = 60_000;

fn check_fresh(sent_ms: Option<i64>, now_ms: i64) -> Result<(), ApiError> {
    match sent_ms {
        Some(t) if (now_ms - t).abs() <= LINEAR_MAX_SKEW_MS => Ok(()),
        Some(_) => Err(ApiError::invalid(
            "webhookTimestamp",
            "the delivery is more than a minute old (or from the future): refused as a possible replay",
        )),
        None => Err(ApiError::invalid(
            "webhookTimestamp",
            "missing: Linear signs it into every delivery",
        )),
    }
}

#[derive(Deserialize)]
struct LinearIssue {
    identifier: Option<String>,
    url: Option<String>,
    state: Option<LinearState>,
}

#[derive(Deserialize)]
struct LinearState {
    #[serde(rename = "type")]
    kind: String,
}

impl LinearEvent {
    fn change(self) -> Option<IssueChange> {
        if self.kind != "Issue" {
            return None;
        }
        let state = self.data.state?;
        Some(IssueChange {
            url: self.data.url,
            key: self.data.identifier,
            provider: Some("linear".into()),
            closed: matches!(state.kind.as_str(), "completed" | "canceled"),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericEvent {
    url: String,
    state: String,
}

impl GenericEvent {
    fn change(self) -> Result<IssueChange, ApiError> {
        let closed = match self.state.as_str() {
            "closed" => true,
            "open" => false,
            _ => return Err(ApiError::invalid("state", "state must be open or closed")),
        };
        crate::domain::validate::issue_url("url", &self.url)?;
        Ok(IssueChange {
            url: Some(self.url),
            key: None,
            provider: None,
            closed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_deliveries_must_be_fresh() {
        let now = 1_700_000_000_000;
        assert!(check_fresh(Some(now - 59_000), now).is_ok());
        assert!(check_fresh(Some(now + 5_000), now).is_ok());
        assert!(check_fresh(Some(now - 61_000), now).is_err());
        assert!(check_fresh(Some(now + 120_000), now).is_err());
        assert!(check_fresh(None, now).is_err());
    }
}
