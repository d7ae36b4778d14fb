//! The HTTP adapter (axum). Handlers translate between JSON and the core; they hold no ML or
//! storage logic of their own.

mod classify;
mod embed;
pub mod error;
mod group;
pub mod openapi;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

pub use crate::classify::StatusSlot;
pub use crate::group::GroupSlot;
pub use error::ApiError;

use crate::config::Secret;
use crate::queue::EmbedSlot;
use crate::telemetry::{Metrics, RequestLabels};

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    /// Filled once the model is loaded; until then inference answers 503.
    pub embed: EmbedSlot,
    /// The status head; filled with the embedder (readiness waits for both).
    pub status: StatusSlot,
    /// The conversation grouper (in-memory channel state).
    pub grouper: GroupSlot,
    pub metrics: Metrics,
    pub api_tokens: Arc<Vec<Secret>>,
    /// The tickets API (store, pipeline); `None` serves inference only.
    pub tickets: Option<crate::tickets::AppState>,
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/embed", post(embed::embed))
        .route("/v1/classify", post(classify::classify))
        .route("/v1/group", post(group::group))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // Stateless once built; `with_state(())` lets it merge into this router.
    let tickets: Router<AppState> = state
        .tickets
        .clone()
        .map(|t| crate::tickets::api_routes(t).with_state(()))
        .unwrap_or_default();
    Router::new()
        .merge(v1)
        .merge(tickets)
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { axum::Json(openapi::document()) }))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), record_request))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A stuck request cannot hold graceful shutdown forever.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(60),
        ))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(state): State<AppState>) -> Response {
    if let Some(t) = &state.tickets {
        if let Err(e) = t.store.ping().await {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::unavailable("the database is unavailable").into_response();
        }
    }
    if state.embed.get().is_some_and(|h| h.is_ready()) {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::unavailable("the embedding model is still warming up").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn record_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let t = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            path,
            status: resp.status().as_u16(),
        })
        .observe(t.elapsed().as_secs_f64());
    resp
}

/// `Authorization: Bearer <token>` against the configured tokens. With none configured the API is
/// open; `serve` refuses that unless it binds to a loopback address.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.api_tokens.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t)
            if state
                .api_tokens
                .iter()
                .any(|k| constant_time_eq(k.expose().as_bytes(), t.as_bytes())) =>
        {
            next.run(req).await
        }
        Some(_) => ApiError::unauthorized("invalid bearer token").into_response(),
        None => ApiError::unauthorized("missing Authorization: Bearer <token>").into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON body extractor with the spec's errors: 400 for malformed JSON, 422 for JSON of the
/// wrong shape, 413 over the limit. Unlike `axum::Json` it does not insist on a Content-Type.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body is over the {MAX_BODY_BYTES}-byte limit"),
                )
            } else {
                ApiError::bad_request(e.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid("body", e.to_string()),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })
}
