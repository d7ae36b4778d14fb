//! Ingestion ahead of bulk embedding (bounded loopback test, real model): while eight concurrent
//! 256-input `/v1/embed` requests keep the model busy, `/v1/messages` keeps answering 2xx with
//! p99 under 1 s (on a busier machine, such as CI running every other test beside it: under what a
//! message took alone plus three bulk batches, both measured in the same run). On main before
//! issue 16 both shared one queue budget and one FIFO, and every message answered 429 for about
//! 16 s.
//!
//! Prints the figures quoted in BENCHMARKS.md: ingestion latency alone (baseline, same run) and
//! under the bulk load.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::spawn_app;

/// One sample of a Prometheus text exposition: the value of the line that starts with `series `.
fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("/metrics lacks {series}"))
}

/// The model thread's forward batches so far: (batches of more than two sequences, i.e. bulk
/// batches, since a message is embedded alone; seconds of forward time in all batches).
async fn forward_batches(app: &crate::helpers::TestApp) -> (f64, f64) {
    let text = app.metrics().await;
    let big = sample(&text, "triage_embed_batch_size_count")
        - sample(&text, "triage_embed_batch_size_bucket{le=\"2.0\"}");
    (big, sample(&text, "triage_embed_inference_duration_seconds_sum"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingestion_keeps_flowing_under_bulk_embedding() {
    let _heavy = super::HEAVY.lock().await;
    let app = spawn_app().await;
    let message = |i: usize| {
        json!({"channel": "CLOAD", "ts": format!("{}.000100", 1_700_000_000 + i * 600),
               "user": format!("U{}", i % 7),
               "text": format!("the invoice export fails with a timeout on our side, case {i}")})
    };
    let ingest = |i: usize| {
        let req = app.post("/v1/messages").json(&message(i));
        async move {
            let t = Instant::now();
            let status = req.send().await.unwrap().status().as_u16();
            (status, t.elapsed())
        }
    };
    // Baseline: ingestion alone.
    let mut alone = Vec::new();
    for i in 0..10 {
        let (status, took) = ingest(i).await;
        assert!((200..300).contains(&status), "baseline message answered {status}");
        alone.push(took);
    }
    alone.sort();

    let inputs: Vec<String> = (0..256)
        .map(|i| format!("bulk text {i}: customers report that the dashboard loads slowly after the upgrade"))
        .collect();
    let before = forward_batches(&app).await;
    let bulk: Vec<_> = (0..8)
        .map(|_| {
            let req = app.post("/v1/embed").json(&json!({"inputs": inputs}));
            tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut loaded = Vec::new();
    let mut i = 10;
    // Messages one after another while the bulk work runs (bounded: at most 60 s, 200 messages).
    while !bulk.iter().all(|b| b.is_finished()) && started.elapsed() < Duration::from_secs(60) && i < 210 {
        let (status, took) = ingest(i).await;
        assert!(
            (200..300).contains(&status),
            "message {i} answered {status} under bulk load"
        );
        loaded.push(took);
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bulk_secs = started.elapsed().as_secs_f64();
    let mut bulk_ok = 0;
    for b in bulk {
        match b.await.unwrap() {
            Ok(200) => bulk_ok += 1,
            Ok(429) => {}
            Ok(503) => eprintln!("a bulk request outlived the request timeout"),
            other => panic!("bulk request: {other:?}"),
        }
    }
    let after = forward_batches(&app).await;
    let bulk_batches = after.0 - before.0;
    // Forward time per bulk batch in this run (the messages' own one-text batches are counted
    // in the time too, which errs on the generous side by a few milliseconds each).
    let batch_secs = (after.1 - before.1) / bulk_batches.max(1.0);
    loaded.sort();
    assert!(
        loaded.len() >= 5,
        "the bulk work finished before ingestion was measured"
    );
    let p99 = percentile(&loaded, 0.99);
    eprintln!(
        "ingestion alone: p50 {:?}, p99 {:?} (n={}); under 8x256-input /v1/embed: p50 {:?}, p99 {:?} (n={}), \
         p50 ratio {:.2}x; bulk: {bulk_ok}/8 answered 200 in {bulk_secs:.1} s, \
         {bulk_batches} batches of {batch_secs:.3} s",
        percentile(&alone, 0.5),
        percentile(&alone, 0.99),
        alone.len(),
        percentile(&loaded, 0.5),
        p99,
        loaded.len(),
        percentile(&loaded, 0.5).as_secs_f64() / percentile(&alone, 0.5).as_secs_f64(),
    );
    assert!(bulk_ok >= 1, "no bulk request got through");
    // Under 1 s (the bound) on an ordinary machine. On a slower or busier one (CI runs
    // the other tests beside this one on two cores) every forward takes longer, so the bound there
    // is relative to the same run: a message waits for at most the one bulk batch already running,
    // then runs its own work (as long as alone, measured above). Allowed: what it took alone plus
    // three bulk batches. Waiting behind the bulk backlog (the failure this test guards against)
    // costs the whole backlog, here about {bulk_batches} batches.
    let relative = percentile(&alone, 0.99) + Duration::from_secs_f64(3.0 * batch_secs);
    let bound = Duration::from_secs(1).max(relative);
    assert!(
        bulk_batches >= 12.0,
        "the bulk work ran in {bulk_batches} batches; the bound needs the backlog to be many batches"
    );
    assert!(
        p99 < bound,
        "ingestion p99 {p99:?} under bulk load (bound {bound:?}: alone p99 {:?} + 3 bulk batches of \
         {batch_secs:.3} s; the backlog was {bulk_batches} batches in {bulk_secs:.1} s)",
        percentile(&alone, 0.99)
    );
    app.stop().await.unwrap();
}
