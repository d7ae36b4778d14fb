//! The tickets HTTP API over the store (conversations, messages, accounts, team, webhooks,
//! exports): `router(state)` builds it, `run(listener, state, shutdown)` serves it.

pub mod auth;
pub mod error;
mod export;
mod extract;
pub mod routes;
mod webhooks;

use crate::pipeline::{Grouping, Inference, Pipeline};
use crate::store::Store;
use auth::{ApiTokens, Secret};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Where every message goes in (`POST /v1/messages`).
    pub pipeline: Pipeline,
    pub config: Arc<ApiConfig>,
    /// Requests allowed in flight; beyond it the server answers 429 instead of queueing.
    pub in_flight: Arc<Semaphore>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        grouping: Arc<dyn Grouping>,
        inference: Arc<dyn Inference>,
        config: ApiConfig,
    ) -> Self {
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
        AppState {
            pipeline: Pipeline::new(store.clone(), inference, grouping),
            store,
            config: Arc::new(config),
            in_flight,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `TRIAGE_API_TOKENS`.
    pub api_tokens: ApiTokens,
    /// `TRIAGE_TEAM_USERS`: Slack user ids whose messages are team (agent) replies.
    pub team_users: HashSet<String>,
    /// `TRIAGE_GITHUB_WEBHOOK_SECRET`: checks `X-Hub-Signature-256`; unset refuses GitHub webhooks.
    pub github_webhook_secret: Option<Secret>,
    /// `TRIAGE_LINEAR_WEBHOOK_SECRET`: checks `Linear-Signature`; unset refuses Linear webhooks.
    pub linear_webhook_secret: Option<Secret>,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_tokens: ApiTokens::default(),
            team_users: HashSet::new(),
            github_webhook_secret: None,
            linear_webhook_secret: None,
            max_in_flight: 512,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The tickets routes (`/v1/...` and the issue webhook) with their state, bearer auth and load
/// shedding applied: `triage serve` merges them into its router.
pub fn api_routes(state: AppState) -> Router {
    let v1 = routes::routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_bearer,
    ));
    Router::new()
        .merge(v1)
        // Authenticates itself: a provider's signature or a bearer token.
        .route("/v1/webhooks/issues", post(webhooks::issues))
        .layer(middleware::from_fn_with_state(state.clone(), shed_load))
        .with_state(state)
}

/// The tickets API on its own (health checks, 404s, body limit and timeout included).
pub fn router(state: AppState) -> Router {
    let timeout = state.config.request_timeout;
    let ready = state.clone();
    api_routes(state)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || readyz(ready.clone())))
        .fallback(|| async { ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A stuck request must not hold graceful shutdown forever.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
}

/// Serves until `shutdown` resolves, then lets requests in flight finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn shed_load(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let _permit = state.in_flight.try_acquire().map_err(|_| ApiError::Overloaded)?;
    Ok(next.run(req).await)
}

async fn readyz(state: AppState) -> Result<&'static str, ApiError> {
    state.store.ping().await.map_err(ApiError::Unavailable)?;
    Ok("ready")
}
