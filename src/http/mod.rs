//! The one HTTP stack (axum): inference (`/v1/embed`, `/v1/classify`, `/v1/group`), tickets
//! (`/v1/conversations`, `/v1/messages`, accounts, team, exports, analytics), the issue webhook,
//! health, metrics and the OpenAPI document, behind one state, one error type ([`ApiError`]), one
//! JSON extractor, one body limit, one timeout and one auth layer. [`router`] builds it; [`run`]
//! serves it (both `triage serve` and the tests use them). Handlers translate between JSON and the
//! core; they hold no ML or storage logic of their own.

pub mod auth;
mod classify;
pub mod cursor;
mod embed;
pub mod error;
pub mod events;
mod export;
pub mod extract;
mod group;
pub mod import;
pub mod message;
pub mod openapi;
pub mod server;
mod tickets;
mod webhooks;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use crate::classify::StatusSlot;
pub use crate::group::GroupSlot;
pub use auth::{ApiTokens, Secret};
pub use error::ApiError;

use crate::pipeline::ml::{ModelGrouping, ModelInference};
use crate::pipeline::{Grouping, Inference, Pipeline};
use crate::queue::EmbedSlot;
use crate::store::Store;
use crate::telemetry::{Metrics, RequestLabels};

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The loaded models, each filled once it is ready (until then the routes using it answer 503).
#[derive(Clone, Default)]
pub struct Models {
    pub embed: EmbedSlot,
    /// The status head; filled before the embedder (readiness waits for both).
    pub status: StatusSlot,
    /// The conversation grouper of `/v1/group` (in-memory channel state).
    pub grouper: GroupSlot,
}

impl Models {
    /// The embedder answered its warm-up (the other models are filled before it).
    pub fn are_ready(&self) -> bool {
        self.embed.get().is_some_and(|h| h.is_ready())
    }
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `TRIAGE_API_TOKENS`.
    pub api_tokens: ApiTokens,
    /// `TRIAGE_TEAM_USERS`: Slack user ids whose messages are team (agent) replies.
    pub team_users: HashSet<String>,
    /// `TRIAGE_GITHUB_WEBHOOK_SECRET`: checks `X-Hub-Signature-256`; unset refuses GitHub webhooks.
    pub github_webhook_secret: Option<Secret>,
    /// `TRIAGE_LINEAR_WEBHOOK_SECRET`: checks `Linear-Signature`; unset refuses Linear webhooks.
    pub linear_webhook_secret: Option<Secret>,
    /// `TRIAGE_SLACK_SIGNING_SECRET`: checks Slack's signature on `/slack/*`; unset refuses Slack.
    pub slack_verifier: Option<crate::slack::signing::Verifier>,
    /// `/v1` requests allowed in flight; beyond it the server answers 429 instead of queueing.
    pub max_in_flight: usize,
    /// A request taking longer answers 503 (so a stuck request cannot hold shutdown forever).
    pub request_timeout: Duration,
    /// A connection sending no byte of a request for this long is closed (fresh or keep-alive).
    pub idle_timeout: Duration,
    /// A request head must be complete this long after its first byte, or the connection closes.
    pub header_read_timeout: Duration,
    /// A request body still unread this long after its head answers 408.
    pub body_read_timeout: Duration,
    /// On shutdown, connections still open this long after the listener closed are closed.
    pub drain_timeout: Duration,
    /// `/readyz` waits for [`Models::are_ready`]; `false` only when the pipeline runs on stand-in
    /// models (the fast test harness), where the database alone decides.
    pub ready_needs_models: bool,
    /// A Slack edge (`TRIAGE_CORE_URL`): only `/slack/*`, health and metrics are served; the
    /// API and the board are the core's.
    pub edge: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            api_tokens: ApiTokens::default(),
            team_users: HashSet::new(),
            github_webhook_secret: None,
            linear_webhook_secret: None,
            slack_verifier: None,
            max_in_flight: 512,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            ready_needs_models: true,
            edge: false,
        }
    }
}

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub models: Models,
    pub store: Arc<dyn Store>,
    /// Where every message goes in (`POST /v1/messages`).
    pub pipeline: Pipeline,
    pub config: Arc<HttpConfig>,
    pub metrics: Metrics,
    /// Notified when a Slack delivery was stored, to wake the inbound worker.
    pub slack_inbox: Arc<tokio::sync::Notify>,
    /// The Slack outbox and cards, when a bot token is configured.
    pub slack: Option<crate::slack::Slack>,
    in_flight: Arc<Semaphore>,
}

impl AppState {
    /// `grouping` and `inference` are the pipeline's seams: the real models in `serve`, stand-ins
    /// in the fast tests.
    pub fn new(
        models: Models,
        store: Arc<dyn Store>,
        grouping: Arc<dyn Grouping>,
        inference: Arc<dyn Inference>,
        config: HttpConfig,
    ) -> Self {
        AppState {
            models,
            pipeline: Pipeline::new(store.clone(), inference, grouping),
            store,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config: Arc::new(config),
            metrics: Metrics::default(),
            slack_inbox: Arc::new(tokio::sync::Notify::new()),
            slack: None,
        }
    }
}

impl AppState {
    /// The state `triage serve` runs: the pipeline on the real models of `models` (used once
    /// their slots are filled).
    pub fn serving(models: Models, store: Arc<dyn Store>, config: HttpConfig) -> Self {
        let grouping = Arc::new(ModelGrouping::new(models.grouper.clone()));
        let inference = Arc::new(ModelInference::new(models.embed.clone(), models.status.clone()));
        AppState::new(models, store, grouping, inference, config)
    }
}

/// Every route, with the layers in one place. A Slack edge ([`HttpConfig::edge`]) serves only
/// Slack's routes, health and metrics: its core has the API and the board.
pub fn router(state: AppState) -> Router {
    let core = Router::new()
        .route("/v1/embed", post(embed::embed))
        .route("/v1/classify", post(classify::classify))
        .route("/v1/group", post(group::group))
        .route("/v1/events", get(events::events))
        .merge(tickets::routes())
        .merge(import::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        ))
        // Authenticates itself: a provider's signature or a bearer token.
        .route("/v1/webhooks/issues", post(webhooks::issues));
    let edge = state.config.edge;
    let v1 = Router::new()
        // Authenticated by Slack's request signature.
        .route(
            "/slack/interactivity",
            post(crate::slack::interactivity::interactivity),
        )
        .merge(if edge { Router::new() } else { core })
        .route_layer(middleware::from_fn_with_state(state.clone(), shed_load));
    Router::new()
        .merge(v1)
        // The web board: its own session and CSRF checks (src/board/session.rs).
        .merge(if edge {
            Router::new()
        } else {
            crate::board::routes()
        })
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { axum::Json(openapi::document()) }))
        // Authenticated by Slack's request signature.
        .route("/slack/events", post(crate::slack::events::events))
        .fallback(|req: Request| async move { ApiError::NoRoute(req.uri().path().to_owned()) })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::MethodNotAllowed(format!("{} {}", req.method(), req.uri().path()))
        })
        .layer(middleware::from_fn(extract::refuse_nul))
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(middleware::from_fn_with_state(state.clone(), record_request))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting, closes idle and half-sent connections,
/// lets requests in progress finish, and closes what is left at the drain deadline (see
/// [`server`] for every connection limit).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let c = &state.config;
    let limits = server::ConnLimits {
        idle: c.idle_timeout,
        header_read: c.header_read_timeout,
        body_read: c.body_read_timeout,
        drain: c.drain_timeout,
    };
    server::serve(listener, router(state), limits, shutdown).await
}

async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "database unavailable");
        ApiError::unavailable("the database is unavailable")
    })?;
    if state.config.ready_needs_models && !state.models.are_ready() {
        return Err(ApiError::unavailable("the models are still loading"));
    }
    Ok(axum::Json(serde_json::json!({"status": "ready"})).into_response())
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

async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let limit = state.config.request_timeout;
    tokio::time::timeout(limit, next.run(req))
        .await
        .map_err(|_| ApiError::unavailable(format!("the request took over {} s", limit.as_secs())))
}

async fn shed_load(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let _permit = state
        .in_flight
        .try_acquire()
        .map_err(|_| ApiError::Overloaded("too many requests in flight, retry shortly".into()))?;
    Ok(next.run(req).await)
}
