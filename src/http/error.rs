//! The one mapping from failures to HTTP, for every route: JSON
//! `{"error": {"code", "message", "field"}}`, one code per status (see [`ApiError::status_and_code`]).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::pipeline::{InferenceError, PipelineError};
use crate::queue::QueueError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: unparsable JSON, an unreadable body.
    #[error("{0}")]
    BadRequest(String),
    /// A malformed parameter (a cursor from another list, say), naming it.
    #[error("{message}")]
    BadParameter { field: String, message: String },
    /// The request body did not arrive in time (408).
    #[error("{0}")]
    TimedOut(String),
    /// Missing or invalid credentials (bearer token or webhook signature).
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    /// A resource that does not exist (`"conversation"`: "conversation not found").
    #[error("{0} not found")]
    NotFound(&'static str),
    /// No route matches the path.
    #[error("no such route: {0}")]
    NoRoute(String),
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is over the {limit}-byte limit", limit = super::MAX_BODY_BYTES)]
    PayloadTooLarge,
    /// Well-formed but unacceptable; `field` names the offending input when known.
    #[error("{message}")]
    Invalid { field: Option<String>, message: String },
    #[error("{0}")]
    Overloaded(String),
    /// The models are loading, the database is unreachable, the server is stopping.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure: logged, answered as "internal error".
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// 422 naming the offending input.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::Internal(anyhow::anyhow!(message.into()))
    }

    /// The input this error is about, if any (`null` in the body when no one input is at fault:
    /// overload, unavailability, internal errors).
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { field, .. } => field.as_deref(),
            ApiError::BadParameter { field, .. } => Some(field),
            ApiError::BadRequest(_) | ApiError::PayloadTooLarge | ApiError::TimedOut(_) => Some("body"),
            ApiError::NoRoute(_) => Some("path"),
            ApiError::MethodNotAllowed(_) => Some("method"),
            ApiError::Unauthorized(_) => Some("authorization"),
            _ => None,
        }
    }

    /// 400 naming a malformed parameter.
    pub fn bad_parameter(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadParameter {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The one status and code of each failure.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) | ApiError::BadParameter { .. } => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ApiError::TimedOut(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) | ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            // Internals stay in the log, not in the response.
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let body = axum::Json(json!({"error": {"code": code, "message": message, "field": self.field()}}));
        match self {
            ApiError::Overloaded(_) => (status, [(header::RETRY_AFTER, "1")], body).into_response(),
            _ => (status, body).into_response(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Invalid { field, message } => ApiError::invalid(field, message),
            StoreError::Refused(refusal) => ApiError::invalid("status", refusal.to_string()),
            e @ StoreError::Unavailable(_) => {
                tracing::warn!(error = ?e, "database unavailable");
                ApiError::unavailable("the database is unavailable")
            }
            StoreError::Unexpected(e) => ApiError::Internal(e),
        }
    }
}

impl From<crate::domain::validate::Invalid> for ApiError {
    fn from(e: crate::domain::validate::Invalid) -> Self {
        ApiError::Invalid {
            field: Some(e.field),
            message: e.message,
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Inference(e) => e.into(),
            PipelineError::Store(e) => e.into(),
        }
    }
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> Self {
        match e {
            InferenceError::Overloaded(m) => ApiError::Overloaded(m),
            InferenceError::NotReady => ApiError::Unavailable(e.to_string()),
            InferenceError::Failed(_) => ApiError::Internal(e.into()),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Overloaded(_) => ApiError::Overloaded(e.to_string()),
            QueueError::TooManyInputs(..) => ApiError::invalid("inputs", e.to_string()),
            QueueError::ShuttingDown => ApiError::Unavailable(e.to_string()),
            QueueError::Embed(inner) => ApiError::Internal(inner.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, serde_json::Value) {
        let response = e.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn every_error_is_json_with_code_message_and_field() {
        let (status, json) = body(ApiError::invalid("text", "empty")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            json,
            json!({"error": {"code": "invalid_request", "message": "empty", "field": "text"}})
        );

        let (status, json) = body(StoreError::NotFound("conversation").into()).await;
        assert_eq!(
            (
                status,
                json["error"]["code"].as_str(),
                json["error"]["message"].as_str()
            ),
            (
                StatusCode::NOT_FOUND,
                Some("not_found"),
                Some("conversation not found")
            )
        );

        let (status, json) = body(ApiError::internal("secret detail")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json["error"]["message"], "internal error");
    }

    #[test]
    fn one_code_per_status() {
        let all = [
            ApiError::BadRequest(String::new()),
            ApiError::bad_parameter("cursor", ""),
            ApiError::TimedOut(String::new()),
            ApiError::Unauthorized(""),
            ApiError::Forbidden(""),
            ApiError::NotFound(""),
            ApiError::NoRoute(String::new()),
            ApiError::MethodNotAllowed(String::new()),
            ApiError::Conflict(String::new()),
            ApiError::PayloadTooLarge,
            ApiError::invalid("f", ""),
            ApiError::Overloaded(String::new()),
            ApiError::unavailable(""),
            ApiError::internal(""),
        ];
        let mut codes = std::collections::HashMap::new();
        for e in &all {
            let (status, code) = e.status_and_code();
            assert_eq!(*codes.entry(status).or_insert(code), code, "{status}");
        }
    }

    #[test]
    fn overloaded_says_when_to_retry() {
        let response = ApiError::Overloaded("busy".into()).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
