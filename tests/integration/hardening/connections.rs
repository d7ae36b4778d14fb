//! Connection limits and the drain on shutdown, with a raw TCP client against the real router and
//! accept loop (`http::run`). On main before issue 16 each of these hung: nothing timed out a
//! connection, and graceful shutdown waited for every client to leave.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::{json_body, open, read_until_closed, serve};

const HALF_HEAD: &[u8] = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n";

fn head_with_length(len: usize) -> String {
    format!(
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        crate::tickets::helpers::TOKEN
    )
}

#[tokio::test]
async fn idle_and_half_sent_heads_are_closed() {
    let server = serve(|c| {
        c.idle_timeout = Duration::from_millis(800);
        c.header_read_timeout = Duration::from_millis(800);
    })
    .await;
    let t = Instant::now();
    let mut idle = open(&server.addr, b"").await;
    let mut half = open(&server.addr, HALF_HEAD).await;
    // A keep-alive connection that was served once, then left idle.
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut kept = open(&server.addr, get.as_bytes()).await;
    for (name, conn) in [
        ("idle", &mut idle),
        ("half-sent head", &mut half),
        ("keep-alive", &mut kept),
    ] {
        let closed = read_until_closed(conn, Duration::from_secs(5)).await;
        let (response, _) = closed.unwrap_or_else(|| panic!("{name} connection still open after 5 s"));
        let after = t.elapsed();
        assert!(
            after >= Duration::from_millis(700),
            "{name} closed too early: {after:?}"
        );
        assert_eq!(
            response.starts_with("HTTP/1.1 200"),
            name == "keep-alive",
            "{name}: {response}"
        );
    }
    let (response, _) = read_until_closed(
        &mut open(&server.addr, get.as_bytes()).await,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn a_slow_body_gets_a_json_408_and_a_slow_request_a_json_503() {
    let server = serve(|c| c.body_read_timeout = Duration::from_millis(500)).await;
    let mut slow = open(&server.addr, head_with_length(100).as_bytes()).await;
    slow.write_all(b"{\"channel\": ").await.unwrap();
    let (response, after) = read_until_closed(&mut slow, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(after < Duration::from_secs(3), "{after:?}");
    let body = json_body(&response);
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert_eq!(body["error"]["field"], "body", "{body}");

    // A request whose whole handling (here: waiting for its body) outlives the request timeout.
    let server = serve(|c| {
        c.request_timeout = Duration::from_millis(500);
        c.body_read_timeout = Duration::from_secs(20);
    })
    .await;
    let mut slow = open(&server.addr, head_with_length(100).as_bytes()).await;
    slow.write_all(b"{").await.unwrap();
    let (response, _) = read_until_closed(&mut slow, Duration::from_secs(5))
        .await
        .expect("answered");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert_eq!(json_body(&response)["error"]["code"], "unavailable");
}

#[tokio::test]
async fn shutdown_closes_idle_and_half_sent_connections_and_finishes_busy_ones() {
    let mut server = serve(|c| {
        c.drain_timeout = Duration::from_secs(2);
        c.body_read_timeout = Duration::from_millis(700);
        // Longer than the test: only the shutdown may close these.
        c.idle_timeout = Duration::from_secs(60);
        c.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut idle = open(&server.addr, b"").await;
    let mut half = open(&server.addr, HALF_HEAD).await;
    // Busy: the request is in progress (its body still arriving) when the shutdown begins.
    let mut busy = open(&server.addr, head_with_length(100).as_bytes()).await;
    busy.write_all(b"{\"channel\": ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let t = Instant::now();
    let _ = server.stop.take().unwrap().send(());
    for (name, conn) in [("idle", &mut idle), ("half-sent head", &mut half)] {
        let (response, after) = read_until_closed(conn, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{name} connection still open 5 s after shutdown"));
        assert!(response.is_empty(), "{name}: {response}");
        assert!(after < Duration::from_secs(1), "{name} closed after {after:?}");
    }
    // The busy request is answered (its body never completed: 408), not dropped.
    let (response, _) = read_until_closed(&mut busy, Duration::from_secs(5))
        .await
        .expect("answered");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    assert!(
        ended.is_ok(),
        "the server still runs 5 s after shutdown (drain deadline 2 s)"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn the_drain_deadline_closes_what_is_still_open() {
    let mut server = serve(|c| {
        c.drain_timeout = Duration::from_millis(600);
        // The busy request would wait this long for its body: the deadline comes first.
        c.body_read_timeout = Duration::from_secs(30);
        c.request_timeout = Duration::from_secs(30);
    })
    .await;
    let mut busy = open(&server.addr, head_with_length(100).as_bytes()).await;
    busy.write_all(b"{").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let _ = server.stop.take().unwrap().send(());
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    assert!(ended.is_ok(), "the server still runs 5 s after shutdown");
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
    let closed = read_until_closed(&mut busy, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "the connection stayed open after the deadline");
}
