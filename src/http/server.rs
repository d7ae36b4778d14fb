//! The accept loop behind [`super::run`]: HTTP/1.1 on hyper, with the connection limits axum's own
//! `serve` lacks, so no client can hold the server (or its shutdown) forever:
//!
//! - **idle timeout**: a connection that sends no byte of a request for this long is closed (a
//!   fresh connection, or a keep-alive one between requests);
//! - **header-read timeout**: once a request's first byte arrived, its head must be complete within
//!   this time, or the connection is closed;
//! - **body-read timeout**: a request body still unread this long after its head is answered 408
//!   (JSON, like every error) by whichever extractor reads it;
//! - **drain deadline**: on shutdown the listener closes, connections with no request in progress
//!   (idle or half-sent) are closed at once, requests in progress finish and their connections
//!   close after the response; whatever is still open at the deadline is closed.
//!
//! A request is thus either answered or refused (its connection closed before the application saw
//! it), never accepted and dropped silently: ingestion commits before it answers, and a write the
//! deadline cuts short is rolled back with its transaction.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// The connection limits (see the module docs); [`super::HttpConfig`] holds them.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub idle: Duration,
    pub header_read: Duration,
    pub body_read: Duration,
    pub drain: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains (see the module docs).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(connection(stream, router.clone(), limits, stop_rx.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(
        connections = conns.len(),
        deadline_s = limits.drain.as_secs_f64(),
        "draining connections"
    );
    let drained =
        tokio::time::timeout(limits.drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "drain deadline passed; closing the remaining connections"
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// One connection: hyper's HTTP/1 state machine, watched for idleness, slow heads and shutdown.
async fn connection(stream: TcpStream, router: Router, limits: ConnLimits, mut stop: watch::Receiver<bool>) {
    let watch = Arc::new(ConnWatch::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        watch: watch.clone(),
    });
    let service = {
        let watch = watch.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let busy = Busy::start(&watch);
            let router = router.clone();
            let body_read = limits.body_read;
            async move {
                let req = req.map(|b| Body::new(TimedBody::new(b, body_read)));
                let response = router.oneshot(req).await;
                drop(busy);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog below times heads and idleness; hyper's own head timer would also count the
    // idle time before a request, so it is off.
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let tick =
        (limits.idle.min(limits.header_read) / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = *stop.borrow();
    loop {
        if stopping && watch.in_flight() == 0 {
            // Nothing accepted on this connection is unanswered: close it (a half-sent request
            // is refused, not answered).
            return;
        }
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = changed.is_err() || *stop.borrow();
                if stopping {
                    // Finish the request in progress, then close instead of keeping alive.
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = ticks.tick() => {
                if let Some(why) = watch.expired(limits) {
                    tracing::debug!(reason = why, "closing connection");
                    return;
                }
            }
        }
    }
}

/// What the watchdog knows about a connection: requests in progress, when bytes last moved, and
/// when the head of the next request began arriving.
struct ConnWatch {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `born` of the last read or write (or the last response).
    last_activity: AtomicU64,
    /// Milliseconds since `born`, plus one, of the first byte of a request not yet handed to the
    /// application; 0 when none is arriving.
    head_started: AtomicU64,
}

impl ConnWatch {
    fn new() -> Self {
        ConnWatch {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_activity: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Release);
        if self.in_flight() == 0 {
            let _ = self
                .head_started
                .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn wrote(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Release);
    }

    /// Why the connection should close now, if it should.
    fn expired(&self, limits: ConnLimits) -> Option<&'static str> {
        if self.in_flight() > 0 {
            return None;
        }
        let now = self.now_ms();
        match self.head_started.load(Ordering::Acquire) {
            0 => {
                let idle = now.saturating_sub(self.last_activity.load(Ordering::Acquire));
                (idle > limits.idle.as_millis() as u64).then_some("idle timeout")
            }
            started => {
                let waited = now.saturating_sub(started - 1);
                (waited > limits.header_read.as_millis() as u64).then_some("header-read timeout")
            }
        }
    }
}

/// A request in progress on a connection (from its complete head to its response).
struct Busy(Arc<ConnWatch>);

impl Busy {
    fn start(watch: &Arc<ConnWatch>) -> Self {
        watch.in_flight.fetch_add(1, Ordering::AcqRel);
        watch.head_started.store(0, Ordering::Release);
        Busy(watch.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, reporting every read and write to its [`ConnWatch`].
struct WatchedIo {
    inner: TcpStream,
    watch: Arc<ConnWatch>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            self.watch.read(buf.filled().len() - before);
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            if n > 0 {
                self.watch.wrote();
            }
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            if n > 0 {
                self.watch.wrote();
            }
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The error a request body gives once its read deadline passed; the JSON extractors answer it
/// with 408 ([`body_timeout`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs_f64())]
pub struct BodyTimeout(pub Duration);

/// The [`BodyTimeout`] behind `error` (itself or one of its sources), if any.
pub fn body_timeout<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a BodyTimeout> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(t) = e.downcast_ref::<BodyTimeout>() {
            return Some(t);
        }
        current = e.source();
    }
    None
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
struct TimedBody {
    inner: Pin<Box<Incoming>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        TimedBody {
            inner: Box::pin(inner),
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = self.inner.as_mut().poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
