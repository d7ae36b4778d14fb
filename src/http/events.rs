//! `GET /v1/events`: the pipeline's committed changes ([`crate::domain::Change`], whole, as JSON)
//! as server-sent events, for a Slack edge (`TRIAGE_CORE_URL`) to keep its triage cards current,
//! or any client that wants to follow the core.
//!
//! Each `change` event carries `id: <epoch>:<seq>`. A client that reconnects with
//! `Last-Event-ID` gets every change after that one first (the bus keeps the last
//! [`crate::pipeline::DEFAULT_CAPACITY`]), then the live ones: nothing lost, nothing repeated.
//! When that is impossible (another epoch: the core restarted; changes no longer kept; a
//! subscriber that fell behind) the stream sends `lagged` and the client should re-read what it
//! shows. The first event is `hello` (with the current position as its id). A stream ends after
//! [`STREAM_SECONDS`] so it never holds up a graceful shutdown for long; clients reconnect.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::AppState;

pub const STREAM_SECONDS: u64 = 30;

/// `<epoch>:<seq>` of a `Last-Event-ID`, when it is one.
fn last_seen(headers: &HeaderMap) -> Option<(String, u64)> {
    let v = headers.get("last-event-id")?.to_str().ok()?;
    let (epoch, seq) = v.trim().rsplit_once(':')?;
    Some((epoch.to_owned(), seq.parse().ok()?))
}

pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let bus = state.pipeline.events().clone();
    let epoch = bus.epoch().to_owned();
    let after = match last_seen(&headers) {
        Some((e, seq)) if e == epoch => Some(Some(seq)),
        // Another process's position (the core restarted): from now on, and say so.
        Some(_) => None,
        None => Some(None),
    };
    let resumed = bus.resume(after.flatten());
    let missed = after.is_none() || resumed.kept.is_none();
    let kept = resumed.kept.unwrap_or_default();
    // Where the client stands before the replay (so a stream cut during it resumes in it).
    let position = kept.first().map_or(resumed.position, |(seq, _)| seq - 1);
    let rx = resumed.rx;
    let id = |seq: u64| format!("{epoch}:{seq}");
    let mut first = vec![Event::default()
        .event("hello")
        .id(id(position))
        .retry(Duration::from_millis(500))
        .data("{}")];
    if missed {
        first.push(Event::default().event("lagged").data("{}"));
    }
    let change = {
        let epoch = epoch.clone();
        move |(seq, c): (u64, crate::domain::Change)| {
            Event::default()
                .event("change")
                .id(format!("{epoch}:{seq}"))
                .data(serde_json::to_string(&c).expect("a change serialises"))
        }
    };
    let replay: Vec<Event> = kept.into_iter().map(change.clone()).collect();
    let until = Instant::now() + Duration::from_secs(STREAM_SECONDS);
    let live = stream::unfold(rx, move |mut rx| {
        let change = change.clone();
        async move {
            let event = match tokio::time::timeout_at(until, rx.recv()).await {
                Err(_) | Ok(Err(RecvError::Closed)) => return None,
                Ok(Ok(sequenced)) => change(sequenced),
                Ok(Err(RecvError::Lagged(_))) => Event::default().event("lagged").data("{}"),
            };
            Some((event, rx))
        }
    });
    let all = stream::iter(first.into_iter().chain(replay)).chain(live).map(Ok);
    Sse::new(all).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_is_epoch_and_sequence() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("last-event-id", v.parse().unwrap());
            last_seen(&h)
        };
        assert_eq!(with("abc:12"), Some(("abc".into(), 12)));
        assert_eq!(with("abc"), None);
        assert_eq!(with("abc:x"), None);
        assert_eq!(last_seen(&HeaderMap::new()), None);
    }
}
