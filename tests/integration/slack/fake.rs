//! A strict fake of Slack's Web API for tests (Slack's servers are not reachable from here).
//!
//! An axum server on port 0 that speaks Slack's wire format: `POST /api/{method}` with the token
//! in `Authorization: Bearer` (or a form `token`), arguments as `application/x-www-form-urlencoded`
//! or, for the write methods that accept it, `application/json`; HTTP 200 with `{"ok": true, ...}`
//! or `{"ok": false, "error": code}`; HTTP 429 with `Retry-After`. Strict where Slack is:
//!
//! - no token: `not_authed`; a wrong token: `invalid_auth`; a JSON body without the header token:
//!   `not_authed` (Slack reads JSON bodies only with an Authorization header);
//! - a POST body without `Content-Type`: `missing_post_type`; another type: `invalid_post_type`;
//!   JSON that does not parse: `invalid_json`; a JSON body to a read method is not read, so its
//!   arguments are missing;
//! - `auth.test` answers who the bot token is (`user_id` [`BOT_USER`], `bot_id` [`BOT_ID`]);
//! - a missing or unknown `channel`: `channel_not_found`; `users.info` without a known `user`:
//!   `user_not_found`; `chat.update` / `chat.getPermalink` without a known `ts` / `message_ts`:
//!   `message_not_found`; neither `text` nor `blocks`: `no_text`; `blocks` that are not an array:
//!   `invalid_blocks_format`; `metadata` without a string `event_type` and an object
//!   `event_payload`: `invalid_metadata_format`; `chat.update` of a message the bot did not post:
//!   `cant_update_message`.
//!
//! It records every call, keeps posted messages per channel (so `conversations.history` returns
//! them, newest first, with `metadata` only under `include_all_metadata`), and answers 429 or an
//! error code for the calls a test chooses ([`Fault`]), once or one in every n calls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};

pub const BOT_TOKEN: &str = "xoxb-test-bot-token";
pub const BOT_ID: &str = "B0TRIAGE";
pub const BOT_USER: &str = "U0TRIAGEBOT";

/// What the fake answers instead of doing the call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// HTTP 429, `Retry-After: secs`, `{"ok": false, "error": "ratelimited"}`.
    RateLimited { retry_after: u64 },
    /// `{"ok": false, "error": code}` without doing anything.
    Error(&'static str),
    /// Does the call, then answers `{"ok": false, "error": code}` (Slack: "it's possible some
    /// aspect of the operation succeeded before the error was raised").
    ErrorAfterApplying(&'static str),
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// The arguments as Slack read them (form fields as strings, or the JSON object).
    pub args: Value,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    /// HTTP status and `error` code of the answer (`None` when ok).
    pub status: u16,
    pub error: Option<String>,
    /// When the fake received it.
    pub at: std::time::Instant,
}

#[derive(Debug, Clone)]
struct Rule {
    method: Option<String>,
    fault: Fault,
    /// `None`: once; `Some(n)`: every n-th matching call.
    every: Option<u64>,
    seen: u64,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Call>,
    /// Channel id -> name.
    channels: HashMap<String, String>,
    /// Channel id -> messages, oldest first.
    messages: HashMap<String, Vec<Value>>,
    users: HashMap<String, Value>,
    rules: VecDeque<Rule>,
    last_ts: (i64, u32),
    /// `response_url` id -> posted bodies.
    responses: HashMap<String, Vec<Value>>,
}

impl FakeState {
    fn next_ts(&mut self) -> String {
        let now = chrono::Utc::now().timestamp();
        self.last_ts = if now > self.last_ts.0 {
            (now, 1)
        } else {
            (self.last_ts.0, self.last_ts.1 + 1)
        };
        format!("{}.{:06}", self.last_ts.0, self.last_ts.1)
    }

    /// The fault for this call, if a rule matches.
    fn fault(&mut self, method: &str) -> Option<Fault> {
        let mut fired = None;
        let mut spent = None;
        for (i, rule) in self.rules.iter_mut().enumerate() {
            if rule.method.as_deref().is_some_and(|m| m != method) {
                continue;
            }
            rule.seen += 1;
            match rule.every {
                None => {
                    fired = Some(rule.fault.clone());
                    spent = Some(i);
                    break;
                }
                Some(n) if rule.seen % n == 0 => {
                    fired = Some(rule.fault.clone());
                    break;
                }
                Some(_) => {}
            }
        }
        if let Some(i) = spent {
            self.rules.remove(i);
        }
        fired
    }
}

/// A running fake; dropped, it stops.
pub struct FakeSlack {
    /// The Web API base (`TRIAGE_SLACK_API_URL`), e.g. `http://127.0.0.1:PORT/api`.
    pub api_url: String,
    /// Base of the `response_url`s this fake hands out.
    pub origin: String,
    state: Arc<Mutex<FakeState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = Router::new()
            .route("/api/{method}", post(api))
            .route("/respond/{id}", post(respond))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeSlack {
            api_url: format!("{origin}/api"),
            origin,
            state,
            server,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// A channel the bot is in.
    pub fn add_channel(&self, id: &str, name: &str) {
        self.with(|s| {
            s.channels.insert(id.into(), name.into());
            s.messages.entry(id.into()).or_default();
        });
    }

    pub fn add_user(&self, id: &str, name: &str, team_id: &str) {
        self.with(|s| {
            s.users.insert(
                id.into(),
                json!({"id": id, "team_id": team_id, "name": name.to_lowercase(), "real_name": name,
                       "is_bot": false, "profile": {"display_name": name, "real_name": name}}),
            )
        });
    }

    /// A message someone else posted (e.g. the customer's, for permalinks).
    pub fn add_message(&self, channel: &str, ts: &str, user: &str, text: &str) {
        self.with(|s| {
            s.messages
                .entry(channel.into())
                .or_default()
                .push(json!({"type": "message", "ts": ts, "user": user, "text": text}))
        });
    }

    /// Answers the next call of `method` (any method when `None`) with `fault`.
    pub fn fail_next(&self, method: Option<&str>, fault: Fault) {
        self.with(|s| {
            s.rules.push_back(Rule {
                method: method.map(String::from),
                fault,
                every: None,
                seen: 0,
            })
        });
    }

    /// Answers every `n`-th call of `method` (any when `None`) with `fault`.
    pub fn fail_every(&self, method: Option<&str>, n: u64, fault: Fault) {
        self.with(|s| {
            s.rules.push_back(Rule {
                method: method.map(String::from),
                fault,
                every: Some(n),
                seen: 0,
            })
        });
    }

    /// Forgets every fault rule (Slack is well again).
    pub fn clear_faults(&self) {
        self.with(|s| s.rules.clear());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.with(|s| s.calls.iter().filter(|c| c.method == method).cloned().collect())
    }

    /// The calls made, for a test's figures: per method of the card work, and the faults.
    pub fn summary(&self) -> String {
        let calls = self.calls();
        let by = |m: &str| calls.iter().filter(|c| c.method == m).count();
        format!(
            "Slack calls {} (chat.postMessage {}, chat.update {}, conversations.history {}, users.info {}, \
             chat.getPermalink {}); 429s {}, internal_error {}",
            calls.len(),
            by("chat.postMessage"),
            by("chat.update"),
            by("conversations.history"),
            by("users.info"),
            by("chat.getPermalink"),
            calls.iter().filter(|c| c.status == 429).count(),
            calls
                .iter()
                .filter(|c| c.error.as_deref() == Some("internal_error"))
                .count(),
        )
    }

    /// A channel's messages, oldest first, as stored (with metadata and edits).
    pub fn messages(&self, channel: &str) -> Vec<Value> {
        self.with(|s| s.messages.get(channel).cloned().unwrap_or_default())
    }

    /// A `response_url` for an interaction payload, and later what was posted to it.
    pub fn response_url(&self, id: &str) -> String {
        self.with(|s| {
            s.responses.entry(id.into()).or_default();
        });
        format!("{}/respond/{id}", self.origin)
    }

    pub fn responses(&self, id: &str) -> Vec<Value> {
        self.with(|s| s.responses.get(id).cloned().unwrap_or_default())
    }
}

/// Methods that read a JSON body (Slack's write methods); the others only read form fields.
const JSON_METHODS: &[&str] = &["chat.postMessage", "chat.update"];

type Shared = State<Arc<Mutex<FakeState>>>;

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn api(
    State(state): Shared,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(String::from);
    let content_type = header("content-type");
    let authorization = header("authorization");
    let mut s = state.lock().unwrap();
    let parsed = read_args(&method, query.as_deref(), content_type.as_deref(), &body);
    let record = |args: Value, status: u16, error: Option<String>| Call {
        method: method.clone(),
        args,
        content_type: content_type.clone(),
        authorization: authorization.clone(),
        status,
        error,
        at: std::time::Instant::now(),
    };
    let (args, is_json) = match parsed {
        Ok(a) => a,
        Err(code) => {
            let call = record(Value::Null, 200, Some(code.into()));
            s.calls.push(call);
            return answer(StatusCode::OK, json!({"ok": false, "error": code}));
        }
    };
    // The token: the Authorization header, or (form bodies only) a `token` argument.
    let token = match authorization.as_deref() {
        Some(h) => h
            .strip_prefix("Bearer ")
            .map(String::from)
            .or(Some(String::new())),
        None if !is_json => args.get("token").and_then(Value::as_str).map(String::from),
        None => None,
    };
    let auth_error = match token.as_deref() {
        None => Some("not_authed"),
        Some(t) if t != BOT_TOKEN => Some("invalid_auth"),
        Some(_) => None,
    };
    if let Some(code) = auth_error {
        s.calls.push(record(Value::Object(args), 200, Some(code.into())));
        return answer(StatusCode::OK, json!({"ok": false, "error": code}));
    }
    let (status, reply) = match s.fault(&method) {
        Some(Fault::RateLimited { retry_after }) => {
            s.calls
                .push(record(Value::Object(args), 429, Some("ratelimited".into())));
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after.to_string())],
                axum::Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
        }
        Some(Fault::Error(code)) => (200, json!({"ok": false, "error": code})),
        Some(Fault::ErrorAfterApplying(code)) => {
            let _ = dispatch(&mut s, &method, &args);
            (200, json!({"ok": false, "error": code}))
        }
        None => (200, dispatch(&mut s, &method, &args)),
    };
    let error = (reply["ok"] == false).then(|| reply["error"].as_str().unwrap_or("").to_string());
    s.calls.push(record(Value::Object(args), status, error));
    answer(StatusCode::OK, reply)
}

/// The arguments Slack would read, and whether they came as JSON; or the envelope error code.
fn read_args(
    method: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(Map<String, Value>, bool), &'static str> {
    let mut args = Map::new();
    let form = |args: &mut Map<String, Value>, raw: &[u8]| -> Result<(), &'static str> {
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_bytes(raw).map_err(|_| "invalid_form_data")?;
        for (k, v) in fields {
            args.insert(k, Value::String(v));
        }
        Ok(())
    };
    if let Some(q) = query {
        form(&mut args, q.as_bytes())?;
    }
    if body.is_empty() {
        return Ok((args, false));
    }
    let Some(ct) = content_type else {
        return Err("missing_post_type");
    };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => {
            form(&mut args, body)?;
            Ok((args, false))
        }
        "application/json" if JSON_METHODS.contains(&method) => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => {
                args.extend(o);
                Ok((args, true))
            }
            Ok(_) => Err("json_not_object"),
            Err(_) => Err("invalid_json"),
        },
        // A read method does not read JSON: its arguments are simply absent.
        "application/json" => Ok((args, true)),
        _ => Err("invalid_post_type"),
    }
}

fn arg<'a>(args: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    args.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A JSON-valued argument: a JSON value in a JSON body, a JSON string in a form body.
fn json_arg(args: &Map<String, Value>, name: &str) -> Result<Option<Value>, ()> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => serde_json::from_str(s).map(Some).map_err(|_| ()),
        Some(v) => Ok(Some(v.clone())),
    }
}

fn err(code: &str) -> Value {
    json!({"ok": false, "error": code})
}

fn dispatch(s: &mut FakeState, method: &str, args: &Map<String, Value>) -> Value {
    match method {
        "chat.postMessage" => post_message(s, args),
        "chat.update" => update(s, args),
        "chat.getPermalink" => permalink(s, args),
        "conversations.history" => history(s, args),
        "conversations.info" => match arg(args, "channel").and_then(|c| s.channels.get(c).map(|n| (c, n))) {
            Some((id, name)) => json!({"ok": true, "channel": {
                "id": id, "name": name, "is_channel": true, "is_private": false,
                "is_ext_shared": false, "context_team_id": "T0TEAM"}}),
            None => err("channel_not_found"),
        },
        "auth.test" => json!({"ok": true, "url": "https://fake.slack.test/", "team": "Fake Team",
            "user": "triage", "team_id": "T0TEAM", "user_id": BOT_USER, "bot_id": BOT_ID,
            "is_enterprise_install": false}),
        "users.info" => match arg(args, "user").and_then(|u| s.users.get(u)) {
            Some(u) => json!({"ok": true, "user": u}),
            None => err("user_not_found"),
        },
        _ => err("unknown_method"),
    }
}

/// `text` / `blocks` / `metadata` checks shared by post and update: the message fields to store.
fn content(args: &Map<String, Value>) -> Result<Map<String, Value>, &'static str> {
    let blocks = json_arg(args, "blocks").map_err(|_| "invalid_blocks_format")?;
    if blocks.as_ref().is_some_and(|b| !b.is_array()) {
        return Err("invalid_blocks_format");
    }
    let text = arg(args, "text");
    if text.is_none() && blocks.as_ref().is_none_or(|b| b.as_array().unwrap().is_empty()) {
        return Err("no_text");
    }
    let metadata = json_arg(args, "metadata").map_err(|_| "invalid_metadata_format")?;
    if let Some(m) = &metadata {
        if !m["event_type"].is_string() || !m["event_payload"].is_object() {
            return Err("invalid_metadata_format");
        }
    }
    let mut out = Map::new();
    out.insert("text".into(), json!(text.unwrap_or("")));
    if let Some(b) = blocks {
        out.insert("blocks".into(), b);
    }
    if let Some(m) = metadata {
        out.insert("metadata".into(), m);
    }
    Ok(out)
}

fn post_message(s: &mut FakeState, args: &Map<String, Value>) -> Value {
    let Some(channel) = arg(args, "channel").filter(|c| s.channels.contains_key(*c)) else {
        return err("channel_not_found");
    };
    let fields = match content(args) {
        Ok(f) => f,
        Err(code) => return err(code),
    };
    let ts = s.next_ts();
    let mut message = json!({"type": "message", "ts": ts, "user": BOT_USER, "bot_id": BOT_ID});
    message.as_object_mut().unwrap().extend(fields);
    if let Some(t) = arg(args, "thread_ts") {
        message["thread_ts"] = json!(t);
    }
    let channel = channel.to_string();
    s.messages
        .entry(channel.clone())
        .or_default()
        .push(message.clone());
    json!({"ok": true, "channel": channel, "ts": ts, "message": message})
}

fn update(s: &mut FakeState, args: &Map<String, Value>) -> Value {
    let Some(channel) = arg(args, "channel").filter(|c| s.channels.contains_key(*c)) else {
        return err("channel_not_found");
    };
    let Some(ts) = arg(args, "ts") else {
        return err("message_not_found");
    };
    let fields = match content(args) {
        Ok(f) => f,
        Err(code) => return err(code),
    };
    let messages = s.messages.entry(channel.to_string()).or_default();
    let Some(m) = messages.iter_mut().find(|m| m["ts"] == ts) else {
        return err("message_not_found");
    };
    if m["bot_id"] != BOT_ID {
        return err("cant_update_message");
    }
    let obj = m.as_object_mut().unwrap();
    obj.remove("blocks");
    obj.extend(fields);
    obj.insert("edited".into(), json!({"user": BOT_USER}));
    json!({"ok": true, "channel": channel, "ts": ts, "text": m["text"], "message": m})
}

fn permalink(s: &mut FakeState, args: &Map<String, Value>) -> Value {
    let Some(channel) = arg(args, "channel").filter(|c| s.channels.contains_key(*c)) else {
        return err("channel_not_found");
    };
    let Some(ts) = arg(args, "message_ts") else {
        return err("message_not_found");
    };
    let known = s.messages[channel].iter().any(|m| m["ts"] == ts);
    if !known {
        return err("message_not_found");
    }
    json!({"ok": true, "channel": channel,
           "permalink": format!("https://fake.slack.test/archives/{channel}/p{}", ts.replace('.', ""))})
}

fn history(s: &mut FakeState, args: &Map<String, Value>) -> Value {
    let Some(channel) = arg(args, "channel").filter(|c| s.channels.contains_key(*c)) else {
        return err("channel_not_found");
    };
    let truthy = |n: &str| matches!(arg(args, n), Some("true" | "1")) || args.get(n) == Some(&json!(true));
    let ts_of = |m: &Value| m["ts"].as_str().unwrap_or("0").parse::<f64>().unwrap_or(0.0);
    let bound = |n: &str| arg(args, n).map(|v| v.parse::<f64>());
    let (oldest, latest) = match (bound("oldest"), bound("latest")) {
        (Some(Err(_)), _) => return err("invalid_ts_oldest"),
        (_, Some(Err(_))) => return err("invalid_ts_latest"),
        (o, l) => (o.map(Result::unwrap), l.map(Result::unwrap)),
    };
    let inclusive = truthy("inclusive");
    let metadata = truthy("include_all_metadata");
    let limit = arg(args, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 999);
    let start = match arg(args, "cursor") {
        None => 0,
        Some(c) => match c.strip_prefix("next:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return err("invalid_cursor"),
        },
    };
    // Top-level messages only (thread replies live in conversations.replies), newest first.
    let mut all: Vec<&Value> = s.messages[channel]
        .iter()
        .filter(|m| m.get("thread_ts").is_none_or(|t| *t == m["ts"]))
        .filter(|m| {
            let t = ts_of(m);
            oldest.is_none_or(|o| if inclusive { t >= o } else { t > o })
                && latest.is_none_or(|l| if inclusive { t <= l } else { t < l })
        })
        .collect();
    all.sort_by(|a, b| ts_of(b).total_cmp(&ts_of(a)));
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|m| {
            let mut m = (*m).clone();
            if !metadata {
                m.as_object_mut().unwrap().remove("metadata");
            }
            m
        })
        .collect();
    let has_more = all.len() > start + limit;
    let next = if has_more {
        format!("next:{}", start + limit)
    } else {
        String::new()
    };
    json!({"ok": true, "messages": page, "has_more": has_more, "pin_count": 0,
           "response_metadata": {"next_cursor": next}})
}

/// A `response_url`: JSON messages, no token; an unknown URL answers 404 `expired_url`.
async fn respond(State(state): Shared, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = state.lock().unwrap();
    let Some(list) = s.responses.get_mut(&id) else {
        return (StatusCode::NOT_FOUND, "expired_url").into_response();
    };
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if json_type && (v.get("text").is_some() || v.get("blocks").is_some()) => {
            list.push(v);
            (StatusCode::OK, "ok").into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "invalid_payload").into_response(),
    }
}
