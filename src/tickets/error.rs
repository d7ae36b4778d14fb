//! The one mapping from failures to HTTP: `{"error": {"code", "message", "field"}}`.

use crate::pipeline::{InferenceError, PipelineError};
use crate::store::StoreError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: unparsable JSON, wrong content type.
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Well-formed but unacceptable; `field` names the offending input when known.
    #[error("{message}")]
    Invalid { field: Option<String>, message: String },
    #[error("too many requests in flight, retry shortly")]
    Overloaded,
    #[error("service unavailable")]
    Unavailable(#[source] StoreError),
    /// The models are loading (readiness is not reached yet).
    #[error("{0}")]
    ModelUnavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            ApiError::Unavailable(_) | ApiError::ModelUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            // Internals stay in the log, not in the response.
            ApiError::Unexpected(e) => {
                tracing::error!(error = ?e, "request failed");
                "internal error".to_owned()
            }
            ApiError::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                self.to_string()
            }
            other => other.to_string(),
        };
        let field = match &self {
            ApiError::Invalid { field, .. } => field.clone(),
            _ => None,
        };
        let body = axum::Json(json!({"error": {"code": code, "message": message, "field": field}}));
        match self {
            ApiError::Overloaded => (status, [(header::RETRY_AFTER, "1")], body).into_response(),
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
            e @ StoreError::Unavailable(_) => ApiError::Unavailable(e),
            StoreError::Unexpected(e) => ApiError::Unexpected(e),
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
            InferenceError::Overloaded(_) => ApiError::Overloaded,
            InferenceError::NotReady => ApiError::ModelUnavailable(e.to_string()),
            InferenceError::Failed(_) => ApiError::Unexpected(e.into()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            // Valid JSON of the wrong shape; axum's text names the path of the bad field.
            JsonRejection::JsonDataError(e) => ApiError::Invalid {
                field: None,
                message: e.body_text(),
            },
            r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge(super::MAX_BODY_BYTES)
            }
            r => ApiError::BadRequest(r.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::Invalid {
            field: None,
            message: rejection.body_text(),
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
            (status, json["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );

        let (status, json) = body(ApiError::Unexpected(anyhow::anyhow!("secret detail"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json["error"]["message"], "internal error");
    }

    #[test]
    fn overloaded_says_when_to_retry() {
        let response = ApiError::Overloaded.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
