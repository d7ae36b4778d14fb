//! `POST /v1/embed`, readiness, overload, errors and graceful shutdown against a real server.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use triage::embed::{BatchLimits, Embedder};
use triage::queue::{EmbedHandle, QueueConfig};
use triage::telemetry::EmbedMetrics;

use crate::helpers::{self, spawn_app, spawn_app_with, spawn_unloaded, TOKEN};

const TEXTS: [&str; 5] = [
    "Taking a look",
    "I just confirmed with the team, it's fixed in 1.4",
    "can you send the logs? 🙏",
    "Our SSO login loops forever after the upgrade",
    "Dup of #123.",
];

#[tokio::test]
async fn cli_and_http_give_the_same_vectors() {
    let app = spawn_app().await;
    let resp = app
        .post("/v1/embed")
        .json(&json!({"inputs": TEXTS}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for h in ["x-tokenization-time", "x-queue-time", "x-inference-time"] {
        assert!(resp.headers().contains_key(h), "missing {h}");
    }
    let http: Vec<Vec<f32>> = resp.json().await.unwrap();
    assert_eq!(http.len(), TEXTS.len());

    let mut child = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["embed", "--model-dir"])
        .arg(helpers::model_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(TEXTS.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Vec<Vec<f32>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cli, http, "CLI and HTTP vectors differ");

    // A single string is a list of one.
    let one: Vec<Vec<f32>> = app
        .post("/v1/embed")
        .json(&json!({"inputs": TEXTS[0]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert!(triage::embed::cosine(&one[0], &http[0]) > 0.99999);
    app.stop().await.unwrap();
}

async fn error_of(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.expect("JSON error body");
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{body}"
    );
    body
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let app = spawn_app().await;
    let e = error_of(
        app.post("/v1/embed")
            .json(&json!({"inputs": []}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(e["error"]["field"], "inputs");
    let e = error_of(
        app.post("/v1/embed")
            .json(&json!({"inputs": ["ok", 42]}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(e["error"]["field"], "inputs[1]");
    error_of(
        app.post("/v1/embed")
            .json(&json!({"input": "typo"}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    error_of(app.post("/v1/embed").body("{not json").send().await.unwrap(), 400).await;
    let big = "x".repeat(2 << 20);
    error_of(
        app.post("/v1/embed")
            .json(&json!({"inputs": [big]}))
            .send()
            .await
            .unwrap(),
        413,
    )
    .await;
    let resp = app
        .client
        .post(format!("{}/v1/embed", app.addr))
        .json(&json!({"inputs": ["a"]}))
        .send()
        .await
        .unwrap();
    error_of(resp, 401).await;
    let resp = app
        .client
        .post(format!("{}/v1/embed", app.addr))
        .bearer_auth("wrong")
        .json(&json!({"inputs": ["a"]}))
        .send()
        .await
        .unwrap();
    error_of(resp, 401).await;
    error_of(app.post("/v1/nope").send().await.unwrap(), 404).await;
    // The server is still fine after all that.
    assert_eq!(
        app.post("/v1/embed")
            .json(&json!({"inputs": ["a"]}))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_is_503_until_the_model_answered_its_warm_up() {
    let (addr, state, stop, _db) = spawn_unloaded().await;
    let client = reqwest::Client::new();
    error_of(client.get(format!("{addr}/readyz")).send().await.unwrap(), 503).await;
    assert_eq!(
        client
            .get(format!("{addr}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let resp = client
        .post(format!("{addr}/v1/embed"))
        .bearer_auth(TOKEN)
        .json(&json!({"inputs": ["hello"]}))
        .send()
        .await
        .unwrap();
    error_of(resp, 503).await;

    let files = triage::model_files::resolve(Some(&helpers::model_dir())).unwrap();
    let embedder = Embedder::load(&files, BatchLimits::default()).unwrap();
    state.models.embed.fill(EmbedHandle::start(
        embedder,
        QueueConfig::default(),
        EmbedMetrics::default(),
    ));
    let mut ready = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        if client
            .get(format!("{addr}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "never became ready");
    assert!(state.models.embed.get().unwrap().is_ready());
    let _ = stop.send(());
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let mut s = helpers::settings();
    s.embed.max_queued_bulk_inputs = 4;
    let app = spawn_app_with(s).await;
    // Long inputs keep the model busy while the other requests arrive.
    let long = "the export job failed again with a timeout while writing the parquet files ".repeat(20);
    let reqs = (0..12).map(|_| {
        app.post("/v1/embed")
            .json(&json!({"inputs": [long, long, long, long]}))
            .send()
    });
    let resps = futures_join_all(reqs).await;
    let mut ok = 0;
    let mut overloaded = 0;
    for r in resps {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert_eq!(r.headers()["retry-after"], "1");
                error_of(r, 429).await;
                overloaded += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(ok >= 1, "no request got through");
    assert!(overloaded >= 1, "the queue never refused: {ok} ok");
    // More inputs than the queue can ever hold is the request's fault: 422, not 429.
    let five = app
        .post("/v1/embed")
        .json(&json!({"inputs": ["a", "b", "c", "d", "e"]}))
        .send()
        .await
        .unwrap();
    error_of(five, 422).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_expose_every_phase_and_shutdown_finishes_in_flight_work() {
    let app = spawn_app().await;
    let long = "please check the billing export, the totals look off by one cent ".repeat(30);
    let inputs: Vec<String> = (0..64).map(|i| format!("{i} {long}")).collect();
    let in_flight = tokio::spawn(app.post("/v1/embed").json(&json!({ "inputs": inputs })).send());
    tokio::time::sleep(Duration::from_millis(30)).await;

    let metrics = app.metrics().await;
    for name in [
        "triage_embed_tokenization_duration_seconds",
        "triage_embed_queue_duration_seconds",
        "triage_embed_inference_duration_seconds",
        "triage_embed_batch_size",
        "triage_embed_queue_depth",
        "triage_http_request_duration_seconds",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    // Stop while the big request is (very likely) still running: it must complete.
    app.stop().await.unwrap();
    let resp = in_flight.await.unwrap().expect("in-flight request completed");
    assert_eq!(resp.status(), 200);
    let vecs: Vec<Vec<f32>> = resp.json().await.unwrap();
    assert_eq!(vecs.len(), 64);
}

async fn futures_join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
