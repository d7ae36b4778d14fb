use std::path::PathBuf;
use std::time::{Duration, Instant};

use triage::config::{Secret, Settings};
use triage::http::{ApiTokens, AppState, HttpConfig, Models};

pub const TOKEN: &str = "test-token";

/// The verified model folder: TRIAGE_MODEL_DIR, else models/all-MiniLM-L6-v2 (filled by
/// `bash scripts/fetch-model.sh`, which the test command runs first).
pub fn model_dir() -> PathBuf {
    let dir = std::env::var("TRIAGE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").exists(),
        "model files missing in {}: run `bash scripts/fetch-model.sh` (the README's test command does)",
        dir.display()
    );
    dir
}

pub struct TestApp {
    pub addr: String,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Holds the test's SQLite database (when the settings left the default URL).
    _db_dir: Option<tempfile::TempDir>,
}

pub fn settings() -> Settings {
    let mut s = Settings::default();
    s.bind = "127.0.0.1:0".into();
    s.api_tokens = vec![Secret::new(TOKEN)];
    s.model_dir = Some(model_dir());
    s.status_model_dir = status_model_dir();
    s.group_model_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/grouping");
    s
}

/// The committed status model.
pub fn status_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/status")
}

/// Starts the real application on port 0 and waits until it is ready.
pub async fn spawn_app_with(mut s: Settings) -> TestApp {
    // Never the working directory's triage.db: a fresh database per test.
    let db_dir = (s.database_url == Settings::default().database_url).then(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        s.database_url = format!("sqlite://{}", dir.path().join("triage.db").display());
        dir
    });
    let app = triage::cli::serve::Application::build(s)
        .await
        .expect("build app");
    let addr = format!("http://{}", app.local_addr());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let t = TestApp {
        addr,
        client: reqwest::Client::new(),
        stop: Some(stop),
        server: Some(server),
        _db_dir: db_dir,
    };
    t.wait_ready().await;
    t
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(settings()).await
}

impl TestApp {
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self.client.get(format!("{}/readyz", self.addr)).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready within 120 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.addr))
            .bearer_auth(TOKEN)
    }

    /// The Prometheus text exposition of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Graceful stop; returns what the server returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.expect("server task")
    }
}

/// The production router with empty model slots (filled by the test for readiness tests), over a
/// fresh SQLite database (returned: it must outlive the server).
pub async fn spawn_unloaded() -> (
    String,
    AppState,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    let db = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", db.path().join("triage.db").display());
    let store = triage::store::connect(&url).await.expect("database");
    let state = AppState::serving(
        Models::default(),
        store,
        HttpConfig {
            api_tokens: ApiTokens::new([TOKEN]),
            ..HttpConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(triage::http::run(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    (addr, state, stop, db)
}
