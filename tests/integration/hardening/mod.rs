//! Hardening (issue 16): connection limits and shutdown with a raw TCP client, one validation layer
//! on both backends, cursors tied to their query, ingestion ahead of bulk embedding, and property
//! tests (differential SQLite/PostgreSQL, fuzzed JSON bodies, fuzzed Slack events and card actions).

mod connections;
mod priority;
mod properties;
mod shutdown;
mod slack_fuzz;
mod validation;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use triage::http::{self, AppState, HttpConfig, Models};

use crate::tickets::helpers::{config, Backend, KeywordClassifier, TestDb, TestGrouper};

/// Held by the tests that load the machine or time it (the bulk-load test, the SIGTERM test), so
/// that they do not disturb each other.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server with the stand-in models over a fresh SQLite database, with `tune` applied to the
/// test configuration; returns its address, a stop switch and the task running it.
pub struct Server {
    pub addr: String,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    _db: TestDb,
}

pub async fn serve(tune: impl FnOnce(&mut HttpConfig)) -> Server {
    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let store = triage::store::connect(&db.url).await.expect("store");
    let mut c = config();
    tune(&mut c);
    let state = AppState::new(
        Models::default(),
        store,
        Arc::new(TestGrouper),
        Arc::new(KeywordClassifier),
        c,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(http::run(listener, state, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
        _db: db,
    }
}

/// Writes `bytes` on a new connection and keeps it open.
pub async fn open(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    if !bytes.is_empty() {
        s.write_all(bytes).await.unwrap();
    }
    s
}

/// Reads until the server closes the connection (or `limit` passes: `None`); returns what arrived
/// and when the connection closed.
pub async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<(String, Duration)> {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(t.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((String::from_utf8_lossy(&out).into_owned(), t.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The JSON body of a raw HTTP/1.1 response (`Content-Length` framed, as axum's JSON responses are).
pub fn json_body(response: &str) -> serde_json::Value {
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON body ({e}): {response:?}"))
}
