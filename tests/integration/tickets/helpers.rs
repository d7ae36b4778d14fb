//! `spawn_app`: the production router ([`triage::http::router`], served by [`triage::http::run`])
//! on 127.0.0.1:0 over a fresh database (SQLite file in a temp dir, or a new PostgreSQL database
//! dropped afterwards), with deterministic stand-ins for the pipeline's models (fast; the
//! inference routes answer 503 since no real model is loaded).

use reqwest::{Client, RequestBuilder, Response};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use triage::domain::{ReplyLabel, Role};
use triage::http::{self, ApiTokens, AppState, HttpConfig, Models, Secret};
use triage::pipeline::{
    Analysis, BoxFuture, ChannelContext, GroupDecision, Grouping, IncomingMessage, Inference, InferenceError,
    Prediction, Signal, Target,
};
use triage::store;

pub const TOKEN: &str = "test-token";
pub const AGENT: &str = "UAGENT1";
pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";
pub const LINEAR_SECRET: &str = "linear-test-secret";
const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named scenario `async fn name(backend: Backend)` once per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::tickets::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::tickets::helpers::Backend::Postgres).await
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// Thread replies join their thread's conversation; an unthreaded message joins the conversation
/// of the same author's previous message when that was at most a minute earlier.
pub struct TestGrouper;

impl Grouping for TestGrouper {
    fn group(&self, msg: &IncomingMessage, ctx: &ChannelContext) -> GroupDecision {
        if let Some(m) = ctx.thread.last() {
            return GroupDecision::by_rule(
                Target::Existing(m.conversation_id.clone()),
                Signal::Thread,
                "same thread",
            );
        }
        let secs = |ts: &str| {
            ts.split('.')
                .next()
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0)
        };
        match ctx.recent.iter().rev().find(|m| m.user == msg.user) {
            Some(prev) if msg.thread_ts.is_none() && secs(&msg.ts) - secs(&prev.ts) <= 60 => {
                GroupDecision::by_rule(
                    Target::Existing(prev.conversation_id.clone()),
                    Signal::Author,
                    "same author within a minute",
                )
            }
            _ => GroupDecision::by_rule(Target::New, Signal::Time, "nothing related"),
        }
    }
}

/// `closed` when the reply says it is fixed, resolved or closing; `in_progress` otherwise.
pub struct KeywordClassifier;

impl Inference for KeywordClassifier {
    fn analyse<'a>(&'a self, text: &'a str, role: Role) -> BoxFuture<'a, Result<Analysis, InferenceError>> {
        let text = text.to_lowercase();
        let closed = ["fixed", "resolved", "closing"].iter().any(|k| text.contains(k));
        let label = if closed {
            ReplyLabel::Closed
        } else {
            ReplyLabel::InProgress
        };
        let prediction = (role == Role::Agent).then_some(Prediction { label, score: 0.9 });
        Box::pin(async move {
            Ok(Analysis {
                embedding: None,
                prediction,
            })
        })
    }
}

pub struct TestDb {
    pub url: String,
    guard: DbGuard,
}

enum DbGuard {
    // Held for its Drop, which deletes the directory.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(String),
}

impl TestDb {
    /// A fresh database, or `None` (with the reason printed) when PostgreSQL is absent outside CI.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("triage.db").display());
                Some(TestDb {
                    url,
                    guard: DbGuard::Sqlite(dir),
                })
            }
            Backend::Postgres => {
                let mut admin = match admin_connection().await {
                    Ok(conn) => conn,
                    Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                        eprintln!("skipping PostgreSQL test: no server at {PG_ADMIN_URL} ({e})");
                        return None;
                    }
                    Err(e) => panic!("PostgreSQL is required in CI: {e}"),
                };
                let name = format!("triage_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create database");
                let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
                Some(TestDb {
                    url,
                    guard: DbGuard::Postgres(name),
                })
            }
        }
    }
}

async fn admin_connection() -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(PG_ADMIN_URL))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let DbGuard::Postgres(name) = &self.guard {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            // Drop cannot await; a short-lived runtime on its own thread does the cleanup.
            let cleanup = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(mut admin) = admin_connection().await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
                    }
                });
            });
            let _ = cleanup.join();
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: Client,
    // Declared last: the database outlives the server's use of it.
    pub db: Arc<TestDb>,
}

pub fn config() -> HttpConfig {
    HttpConfig {
        api_tokens: ApiTokens::new([TOKEN]),
        team_users: HashSet::from([AGENT.to_owned(), "UAGENT2".to_owned()]),
        github_webhook_secret: Some(Secret::new(GITHUB_SECRET)),
        linear_webhook_secret: Some(Secret::new(LINEAR_SECRET)),
        // The stand-in models are always ready: the database decides readiness.
        ready_needs_models: false,
        ..HttpConfig::default()
    }
}

/// A server over a fresh database, or `None` when the backend is unavailable here.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    let db = Arc::new(TestDb::create(backend).await?);
    Some(spawn_replica(&db).await)
}

/// Another server process-alike (own pool, own listener) over the same database.
pub async fn spawn_replica(db: &Arc<TestDb>) -> TestApp {
    let store = store::connect(&db.url).await.expect("connect and migrate");
    let state = AppState::new(
        Models::default(),
        store,
        Arc::new(TestGrouper),
        Arc::new(KeywordClassifier),
        config(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(http::run(listener, state, std::future::pending()));
    TestApp {
        address,
        client: Client::new(),
        db: db.clone(),
    }
}

impl TestApp {
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(TOKEN)
    }

    pub fn post(&self, path: &str, body: &Value) -> RequestBuilder {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(TOKEN)
            .json(body)
    }

    pub fn patch(&self, path: &str, body: &Value) -> RequestBuilder {
        self.client
            .patch(format!("{}{path}", self.address))
            .bearer_auth(TOKEN)
            .json(body)
    }

    /// Ingests one message; returns (status code, body).
    pub async fn message(&self, body: Value) -> (u16, Value) {
        send(self.post("/v1/messages", &body)).await
    }
}

pub async fn send(request: RequestBuilder) -> (u16, Value) {
    let response: Response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Asserts the JSON error shape and returns the error object.
pub fn assert_error(status: u16, body: &Value, want_status: u16) -> Value {
    assert_eq!(status, want_status, "{body}");
    let err = body
        .get("error")
        .unwrap_or_else(|| panic!("not a JSON error: {body}"));
    assert!(err["code"].is_string() && err["message"].is_string(), "{body}");
    err.clone()
}
