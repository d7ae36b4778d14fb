//! [`HttpCore`]: the [`Core`] of a Slack edge, another `triage serve` reached over its `/v1` API
//! (`TRIAGE_CORE_URL`, bearer `TRIAGE_CORE_TOKEN`, one of the core's `TRIAGE_API_TOKENS`).
//!
//! | operation | core route |
//! |---|---|
//! | ingest | `POST /v1/messages` (201 new, 200 stored before) |
//! | edit / delete at the source | `PATCH` / `DELETE /v1/channels/{channel}/messages/{ts}` (404: never stored) |
//! | internal note | `POST /v1/conversations/{id}/notes` with `slack: {channel, ts}` (201 new, 200 again) |
//! | a card's button | `PATCH /v1/conversations/{id}` with `X-Triage-User: <slack user>` |
//! | card content | `GET /v1/conversations[/{id}]`, `.../messages?limit=1`, `/v1/accounts/{id}`, `/v1/team` |
//! | a channel's account (created, named) | `GET /v1/accounts`, `POST /v1/accounts`, `PATCH /v1/accounts/{id}` |
//! | changes | `GET /v1/events` (server-sent events, resumed with `Last-Event-ID`) |
//!
//! Errors ([`classify`]): no answer (refused, reset, timed out), 408, 429, 502, 503, 504 are
//! [`CoreError::Unavailable`] (the inbound worker retries them in order for as long as they last);
//! 401 and 403 too, because a token being fixed is not the delivery's fault; 404 is
//! [`CoreError::NotFound`] (unless the core has no such route: an older core, `Failed`); other
//! 4xx are [`CoreError::Refused`] with the core's message; 500 and unreadable answers `Failed`.
//! `Refused` and `Failed` count as failed attempts (given up after
//! [`super::inbound::MAX_ATTEMPTS`]).
//!
//! The client is blocking (ureq, as the Slack Web API client) on tokio's blocking pool.

use std::io::BufRead;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::core::{ConversationPage, Core, CoreError, Edit, Feed};
use crate::config::Secret;
use crate::domain::{Account, Change, Conversation, ConversationPatch, Message, NewNote, TeamMember};
use crate::pipeline::{BoxFuture, IncomingMessage};

/// How long one API call may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// An event stream still open this long is cut and reopened (the core ends each one after
/// [`crate::http::events::STREAM_SECONDS`]; a connection that died silently ends here).
const STREAM_LIMIT: Duration = Duration::from_secs(crate::http::events::STREAM_SECONDS + 30);
/// Between two failed attempts to open the event stream, at most.
const MAX_STREAM_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct HttpCore {
    base: String,
    token: Secret,
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
}

impl std::fmt::Debug for HttpCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCore").field("base", &self.base).finish()
    }
}

/// One answer: status and body.
type Reply = (u16, String);

enum Method {
    Get,
    Post(Value),
    Patch(Value),
    Delete,
}

impl HttpCore {
    pub fn new(base_url: &str, token: Secret) -> Self {
        let agent = |global: Option<Duration>| -> ureq::Agent {
            ureq::Agent::config_builder()
                // The core's 4xx and 5xx bodies are answers, not transport failures.
                .http_status_as_error(false)
                .timeout_global(global)
                .timeout_connect(Some(Duration::from_secs(5)))
                .user_agent(concat!("triage-edge/", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        };
        HttpCore {
            base: base_url.trim_end_matches('/').to_string(),
            token,
            agent: agent(Some(CALL_TIMEOUT)),
            stream_agent: agent(Some(STREAM_LIMIT)),
        }
    }

    async fn call(&self, method: Method, path: &str, user: Option<&str>) -> Result<Reply, CoreError> {
        let url = format!("{}{path}", self.base);
        let agent = self.agent.clone();
        let auth = format!("Bearer {}", self.token.expose());
        let user = user.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let with = |b: ureq::RequestBuilder<ureq::typestate::WithBody>| {
                let b = b.header("authorization", &auth);
                match &user {
                    Some(u) => b.header(crate::http::auth::USER_HEADER, u),
                    None => b,
                }
            };
            let without = |b: ureq::RequestBuilder<ureq::typestate::WithoutBody>| {
                let b = b.header("authorization", &auth);
                match &user {
                    Some(u) => b.header(crate::http::auth::USER_HEADER, u),
                    None => b,
                }
            };
            let sent = match method {
                Method::Get => without(agent.get(&url)).call(),
                Method::Delete => without(agent.delete(&url)).call(),
                Method::Post(body) => with(agent.post(&url)).send_json(&body),
                Method::Patch(body) => with(agent.patch(&url)).send_json(&body),
            };
            let mut resp = sent.map_err(unreachable)?;
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().map_err(unreachable)?;
            Ok((status, text))
        })
        .await
        .map_err(|e| CoreError::Failed(format!("the HTTP call panicked: {e}")))?
    }

    /// A 2xx answer's body as `T`; anything else as [`classify`] says.
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
    ) -> Result<(u16, T), CoreError> {
        let (status, body) = self.call(method, path, user).await?;
        if !(200..300).contains(&status) {
            return Err(classify(status, &body));
        }
        let v = serde_json::from_str(&body)
            .map_err(|e| CoreError::Failed(format!("{path}: unreadable answer: {e}")))?;
        Ok((status, v))
    }

    /// The account `channel` belongs to (`GET /v1/accounts`).
    async fn account_of(&self, channel: &str) -> Result<Option<Account>, CoreError> {
        let (_, all): (u16, Items<Account>) = self.json(Method::Get, "/v1/accounts", None).await?;
        Ok(all
            .items
            .into_iter()
            .find(|a| a.channels.iter().any(|c| c == channel)))
    }

    /// Opens `GET /v1/events` once and forwards what it says until it ends; returns whether the
    /// feed's receiver is still there. `last` is the id of the last event seen.
    fn stream(&self, last: &mut Option<String>, tx: &mpsc::Sender<Feed>) -> Result<bool, CoreError> {
        let mut req = self
            .stream_agent
            .get(format!("{}/v1/events", self.base))
            .header("authorization", format!("Bearer {}", self.token.expose()))
            .header("accept", "text/event-stream");
        if let Some(id) = last.as_deref() {
            req = req.header("last-event-id", id);
        }
        let resp = req.call().map_err(unreachable)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let mut resp = resp;
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            return Err(classify(status, &body));
        }
        if last.is_none() && tx.blocking_send(Feed::Gap).is_err() {
            return Ok(false);
        }
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        let mut sse = SseParser::default();
        for line in reader.lines() {
            let line = line.map_err(|e| CoreError::Unavailable(format!("the event stream: {e}")))?;
            // Nobody follows any more (shutdown): stop at the next line (keep-alives come every 15 s).
            if tx.is_closed() {
                return Ok(false);
            }
            let Some(event) = sse.line(&line) else {
                continue;
            };
            if let Some(id) = event.id {
                *last = Some(id);
            }
            let feed = match event.kind.as_str() {
                "change" => match serde_json::from_str::<Change>(&event.data) {
                    Ok(c) => Feed::Change(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable change from the core; reconciling");
                        Feed::Gap
                    }
                },
                "lagged" => Feed::Gap,
                _ => continue,
            };
            if tx.blocking_send(feed).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A transport failure: the core did not answer.
fn unreachable(e: ureq::Error) -> CoreError {
    CoreError::Unavailable(e.to_string())
}

/// The core's answer `status` (not 2xx) with its JSON error body, as a [`CoreError`].
pub fn classify(status: u16, body: &str) -> CoreError {
    let error = serde_json::from_str::<Value>(body).ok();
    let error = error.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.chars().take(200).collect());
    let field = error.and_then(|e| e.get("field")).and_then(Value::as_str);
    match status {
        401 | 403 => CoreError::Unavailable(format!(
            "the core refused our token (TRIAGE_CORE_TOKEN must be one of its TRIAGE_API_TOKENS): HTTP {status}: {message}"
        )),
        404 if field == Some("path") => CoreError::Failed(format!(
            "the core has no such route (an older version?): {message}"
        )),
        404 => CoreError::NotFound(message),
        408 | 429 | 502 | 503 | 504 => CoreError::Unavailable(format!("HTTP {status}: {message}")),
        400..=499 => CoreError::Refused(message),
        _ => CoreError::Failed(format!("HTTP {status}: {message}")),
    }
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct Items<T> {
    items: Vec<T>,
    #[serde(default)]
    next_cursor: Option<String>,
}

impl Core for HttpCore {
    fn ingest(&self, msg: IncomingMessage) -> BoxFuture<'_, Result<bool, CoreError>> {
        Box::pin(async move {
            let body = json!({
                "channel": msg.channel, "ts": msg.ts, "thread_ts": msg.thread_ts, "user": msg.user,
                "text": msg.text, "role": msg.role, "files": msg.files,
            });
            let (status, _): (u16, Value) = self.json(Method::Post(body), "/v1/messages", None).await?;
            Ok(status == 201)
        })
    }

    fn edit_message<'a>(
        &'a self,
        channel: &'a str,
        ts: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Edit, CoreError>> {
        Box::pin(async move {
            let path = format!("/v1/channels/{}/messages/{}", seg(channel), seg(ts));
            changed(
                self.json(Method::Patch(json!({ "text": text })), &path, None)
                    .await,
            )
        })
    }

    fn delete_message<'a>(&'a self, channel: &'a str, ts: &'a str) -> BoxFuture<'a, Result<Edit, CoreError>> {
        Box::pin(async move {
            let path = format!("/v1/channels/{}/messages/{}", seg(channel), seg(ts));
            changed(self.json(Method::Delete, &path, None).await)
        })
    }

    fn add_note<'a>(
        &'a self,
        conversation_id: &'a str,
        note: NewNote,
    ) -> BoxFuture<'a, Result<bool, CoreError>> {
        Box::pin(async move {
            let slack = note.slack.map(|s| json!({"channel": s.channel, "ts": s.ts}));
            let body = json!({ "text": note.text, "slack": slack });
            let path = format!("/v1/conversations/{}/notes", seg(conversation_id));
            let (status, _): (u16, Value) = self.json(Method::Post(body), &path, Some(&note.author)).await?;
            Ok(status == 201)
        })
    }

    fn update_conversation<'a>(
        &'a self,
        id: &'a str,
        patch: ConversationPatch,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, CoreError>> {
        Box::pin(async move {
            let body = serde_json::to_value(&patch).expect("a patch serialises");
            let path = format!("/v1/conversations/{}", seg(id));
            Ok(self.json(Method::Patch(body), &path, Some(user)).await?.1)
        })
    }

    fn conversation<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Conversation, CoreError>> {
        Box::pin(async move {
            let path = format!("/v1/conversations/{}", seg(id));
            Ok(self.json(Method::Get, &path, None).await?.1)
        })
    }

    fn conversations(
        &self,
        cursor: Option<String>,
        limit: u32,
    ) -> BoxFuture<'_, Result<ConversationPage, CoreError>> {
        Box::pin(async move {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(c) = cursor {
                query.push(("cursor", c));
            }
            let query = serde_urlencoded::to_string(&query).expect("a query encodes");
            let (_, page): (u16, Items<Conversation>) = self
                .json(Method::Get, &format!("/v1/conversations?{query}"), None)
                .await?;
            Ok((page.items, page.next_cursor))
        })
    }

    fn first_message<'a>(
        &'a self,
        conversation_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Message>, CoreError>> {
        Box::pin(async move {
            let path = format!("/v1/conversations/{}/messages?limit=1", seg(conversation_id));
            let (_, page): (u16, Items<Message>) = self.json(Method::Get, &path, None).await?;
            Ok(page.items.into_iter().next())
        })
    }

    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Account, CoreError>> {
        Box::pin(async move {
            let path = format!("/v1/accounts/{}", seg(id));
            Ok(self.json(Method::Get, &path, None).await?.1)
        })
    }

    fn team(&self) -> BoxFuture<'_, Result<Vec<TeamMember>, CoreError>> {
        Box::pin(async move {
            let (_, page): (u16, Items<TeamMember>) = self.json(Method::Get, "/v1/team", None).await?;
            Ok(page.items)
        })
    }

    /// Through `/v1/accounts`: found by its channel, else created (a create refused because the
    /// channel was taken meanwhile finds the account that took it).
    fn ensure_account<'a>(
        &'a self,
        channel: &'a str,
        name: Option<&'a str>,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(Account, bool), CoreError>> {
        Box::pin(async move {
            if let Some(a) = self.account_of(channel).await? {
                return Ok((a, false));
            }
            let name = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or(channel);
            let owner = owner.filter(|o| !o.trim().is_empty());
            let body = json!({"name": name, "owner": owner, "channels": [channel]});
            match self
                .json::<Account>(Method::Post(body), "/v1/accounts", None)
                .await
            {
                Ok((_, a)) => Ok((a, true)),
                Err(CoreError::Refused(why)) => match self.account_of(channel).await? {
                    Some(a) => Ok((a, false)),
                    None => Err(CoreError::Refused(why)),
                },
                Err(e) => Err(e),
            }
        })
    }

    fn has_account<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<bool, CoreError>> {
        Box::pin(async move { Ok(self.account_of(channel).await?.is_some()) })
    }

    fn name_account<'a>(&'a self, channel: &'a str, name: &'a str) -> BoxFuture<'a, Result<bool, CoreError>> {
        Box::pin(async move {
            let name = name.trim();
            if name.is_empty() || name == channel {
                return Ok(false);
            }
            let Some(a) = self.account_of(channel).await?.filter(|a| a.name == channel) else {
                return Ok(false);
            };
            let path = format!("/v1/accounts/{}", seg(&a.id));
            self.json::<Value>(Method::Patch(json!({ "name": name })), &path, None)
                .await?;
            Ok(true)
        })
    }

    /// Follows `GET /v1/events` on a blocking thread, reconnecting (with `Last-Event-ID`) after
    /// each stream ends, and with backoff while the core is unreachable.
    fn changes(&self) -> mpsc::Receiver<Feed> {
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut last = None;
            let mut backoff = Duration::from_millis(100);
            loop {
                match this.stream(&mut last, &tx) {
                    Ok(false) => return,
                    Ok(true) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(error = %e, core = %this.base, "the core's event stream failed; reconnecting");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_STREAM_BACKOFF);
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }
}

/// What an edit or deletion did: `changed`, or `None` for a message the core never stored.
fn changed(answer: Result<(u16, Value), CoreError>) -> Result<Edit, CoreError> {
    match answer {
        Ok((_, v)) => Ok(Some(v.get("changed").and_then(Value::as_bool).unwrap_or(true))),
        Err(CoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    kind: String,
    id: Option<String>,
    data: String,
}

/// Lines in, events out (the parts of the format the core sends: `event`, `id`, `data`,
/// comments, a blank line ending an event).
#[derive(Default)]
struct SseParser {
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let mut event = std::mem::take(&mut self.current);
            let had = std::mem::take(&mut self.has_data);
            if event.kind.is_empty() {
                event.kind = "message".into();
            }
            return (had || event.id.is_some()).then_some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.current.kind = value.to_owned(),
            "id" => self.current.id = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn error(code: &str, field: Option<&str>) -> String {
        json!({"error": {"code": code, "message": format!("because {code}"), "field": field}}).to_string()
    }

    #[test]
    fn answers_map_to_transient_or_permanent_failures() {
        for s in [408, 429, 502, 503, 504, 401, 403] {
            assert!(
                classify(s, &error("x", None)).is_transient(),
                "{s} should be retried"
            );
        }
        assert_eq!(
            classify(422, &error("invalid_request", Some("status"))),
            CoreError::Refused("because invalid_request".into())
        );
        assert_eq!(
            classify(409, &error("conflict", None)),
            CoreError::Refused("because conflict".into())
        );
        assert_eq!(
            classify(404, &error("not_found", None)),
            CoreError::NotFound("because not_found".into())
        );
        assert!(matches!(
            classify(404, &error("not_found", Some("path"))),
            CoreError::Failed(_)
        ));
        assert!(matches!(classify(500, "<html>oops</html>"), CoreError::Failed(m) if m.contains("oops")));
        for s in [400, 404, 409, 413, 422, 500] {
            assert!(!classify(s, "{}").is_transient(), "{s} is not retried");
        }
    }

    #[test]
    fn server_sent_events_parse_as_the_core_sends_them() {
        let mut p = SseParser::default();
        let lines = [
            ": keep-alive",
            "",
            "event: hello",
            "id: e:0",
            "retry: 500",
            "data: {}",
            "",
            "event: change",
            "id: e:1",
            "data: {\"type\":\"conversation_deleted\",",
            "data: \"id\":\"c1\"}",
            "",
        ];
        let events: Vec<SseEvent> = lines.iter().filter_map(|l| p.line(l)).collect();
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].kind.as_str(), events[0].id.as_deref()),
            ("hello", Some("e:0"))
        );
        assert_eq!(
            events[1].data,
            "{\"type\":\"conversation_deleted\",\n\"id\":\"c1\"}"
        );
        let change: Change = serde_json::from_str(&events[1].data.replace('\n', "")).unwrap();
        assert_eq!(change, Change::ConversationDeleted { id: "c1".into() });
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("C1/../x y"), "C1%2F..%2Fx%20y");
        assert_eq!(seg("1700000000.000100"), "1700000000.000100");
    }

    /// A core that answers `status` with an error body to every call, counting them.
    async fn core_answering(status: StatusCode) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let app = Router::new().route(
            "/v1/messages",
            post(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = json!({"error": {"code": "x", "message": "no", "field": "text"}});
                    (status, axum::Json(body))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, calls)
    }

    fn message() -> IncomingMessage {
        IncomingMessage {
            channel: "C1".into(),
            ts: "1700000000.000100".into(),
            thread_ts: None,
            user: "U1".into(),
            role: crate::domain::Role::Customer,
            text: "hello".into(),
            files: Vec::new(),
            embedding: None,
        }
    }

    #[tokio::test]
    async fn a_core_that_is_down_is_transient_and_a_4xx_is_permanent() {
        // Nobody listens on a port just released.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let down = HttpCore::new(&format!("http://127.0.0.1:{port}"), Secret::new("t"));
        let e = down.ingest(message()).await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");

        let (url, calls) = core_answering(StatusCode::UNPROCESSABLE_ENTITY).await;
        let e = HttpCore::new(&url, Secret::new("t"))
            .ingest(message())
            .await
            .unwrap_err();
        assert_eq!(e, CoreError::Refused("no".into()));
        assert!(!e.is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let (url, _) = core_answering(StatusCode::SERVICE_UNAVAILABLE).await;
        let e = HttpCore::new(&url, Secret::new("t"))
            .ingest(message())
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e:?}");
    }
}
