//! A client of Slack's Web API: the methods triage calls, in Slack's wire format.
//!
//! - Every call is an HTTP POST to `{base}/{method}` with `Authorization: Bearer <bot token>`.
//!   Write methods (`chat.postMessage`, `chat.update`) send a JSON body
//!   (`application/json; charset=utf-8`, `blocks` and `metadata` as JSON values); read methods
//!   (`chat.getPermalink`, `conversations.history`, `conversations.info`, `users.info`,
//!   `auth.test`) send
//!   `application/x-www-form-urlencoded` arguments, the only body those methods read.
//! - Slack answers HTTP 200 with `{"ok": true, ...}` or `{"ok": false, "error": "<code>"}`; the
//!   latter becomes [`SlackError::Api`], which says whether Slack calls the failure transient
//!   ([`is_transient_code`]). HTTP 429 becomes [`SlackError::RateLimited`] with its `Retry-After`.
//! - A `response_url` (from an interaction payload) takes a JSON message without a token.
//!
//! The HTTP client is blocking (ureq, already linked for the model hub) and runs on tokio's
//! blocking pool, one call at a time per caller.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Secret;

/// Slack's public Web API base (`TRIAGE_SLACK_API_URL` overrides it, e.g. with a local fake).
pub const DEFAULT_API_URL: &str = "https://slack.com/api";

/// The `metadata.event_type` of every triage card, so a card can be found again in a channel's
/// history by the conversation id in its payload.
pub const CARD_EVENT_TYPE: &str = "triage_card";

/// How long one call may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// `Retry-After` when a 429 carries none (or one that is not a number of seconds).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SlackError {
    /// No bot token configured: nothing is sent.
    #[error("no Slack bot token configured (TRIAGE_SLACK_BOT_TOKEN)")]
    NoToken,
    /// Slack answered `{"ok": false, "error": code}`.
    #[error("{method}: Slack answered error `{code}`")]
    Api { method: String, code: String },
    /// HTTP 429: call this method again (for this channel) after `retry_after`.
    #[error("{method}: rate limited, retry after {} s", retry_after.as_secs_f64())]
    RateLimited { method: String, retry_after: Duration },
    /// Any other HTTP status than 200 (a 5xx is transient).
    #[error("{method}: HTTP {status}: {body}")]
    Http {
        method: String,
        status: u16,
        body: String,
    },
    /// The request did not complete (connection refused, reset, timed out): transient.
    #[error("{method}: {message}")]
    Transport { method: String, message: String },
    /// HTTP 200 whose body is not Slack's JSON envelope or lacks a field the method promises.
    #[error("{method}: unexpected response: {message}")]
    Decode { method: String, message: String },
}

impl SlackError {
    /// Whether the same call may succeed later: rate limits, Slack's transient error codes, 5xx
    /// and transport failures. Everything else (a bad argument, a missing scope, an archived
    /// channel) fails the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            SlackError::RateLimited { .. } | SlackError::Transport { .. } => true,
            SlackError::Api { code, .. } => is_transient_code(code),
            SlackError::Http { status, .. } => *status >= 500,
            SlackError::NoToken | SlackError::Decode { .. } => false,
        }
    }

    /// The wait Slack asked for (HTTP 429).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SlackError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Slack's error code (`ratelimited` for a 429, `http_<status>`, `transport`, ...), for logs
    /// and metrics.
    pub fn code(&self) -> String {
        match self {
            SlackError::NoToken => "no_token".into(),
            SlackError::Api { code, .. } => code.clone(),
            SlackError::RateLimited { .. } => "ratelimited".into(),
            SlackError::Http { status, .. } => format!("http_{status}"),
            SlackError::Transport { .. } => "transport".into(),
            SlackError::Decode { .. } => "decode".into(),
        }
    }

    /// Whether the request may have reached Slack and taken effect even though it failed:
    /// Slack says so of `internal_error` and `fatal_error` ("some aspect of the operation
    /// succeeded"), and a transport failure or a 5xx cannot tell. A rate-limited call did not.
    pub fn may_have_applied(&self) -> bool {
        match self {
            SlackError::Api { code, .. } => matches!(code.as_str(), "internal_error" | "fatal_error"),
            SlackError::Transport { .. } => true,
            SlackError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Slack's error codes that mean "try again later" (from the methods' documented errors):
/// `internal_error` ("likely due to a transient issue on our end"), `fatal_error`,
/// `service_unavailable`, `request_timeout` (POST data truncated), `team_added_to_org`
/// (migration, "intermittently unavailable"), and the rate-limit codes.
pub fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
            | "team_added_to_org"
            | "ratelimited"
            | "rate_limited"
    )
}

/// A method's arguments in the body type Slack reads for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    /// `application/json; charset=utf-8` (write methods).
    Json(Value),
    /// `application/x-www-form-urlencoded` (every method; the only one read methods take).
    Form(Vec<(String, String)>),
}

/// Message metadata (`metadata` of `chat.postMessage` / `chat.update`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub event_type: String,
    #[serde(default)]
    pub event_payload: Value,
}

impl Metadata {
    /// The metadata of the triage card of `conversation_id`.
    pub fn card(conversation_id: &str) -> Self {
        Metadata {
            event_type: CARD_EVENT_TYPE.into(),
            event_payload: json!({ "conversation_id": conversation_id }),
        }
    }

    /// The conversation id, when this is a triage card's metadata.
    pub fn card_conversation(&self) -> Option<&str> {
        (self.event_type == CARD_EVENT_TYPE)
            .then(|| self.event_payload.get("conversation_id")?.as_str())
            .flatten()
    }
}

/// `chat.postMessage` arguments.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PostMessage {
    pub channel: String,
    /// Fallback text (notifications, screen readers) when `blocks` are given.
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// `chat.update` arguments.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateMessage {
    pub channel: String,
    pub ts: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// Where a posted or updated message is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

/// `conversations.history` arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryQuery {
    pub channel: String,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
    /// Only messages after this ts (inclusive when `inclusive`).
    pub oldest: Option<String>,
    pub latest: Option<String>,
    pub inclusive: bool,
    /// Slack returns messages' metadata only when asked.
    pub include_all_metadata: bool,
}

impl HistoryQuery {
    fn form(&self) -> Vec<(String, String)> {
        let mut f = vec![("channel".to_string(), self.channel.clone())];
        let mut opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                f.push((k.into(), v.clone()));
            }
        };
        opt("cursor", &self.cursor);
        opt("oldest", &self.oldest);
        opt("latest", &self.latest);
        if let Some(limit) = self.limit {
            f.push(("limit".into(), limit.to_string()));
        }
        if self.inclusive {
            f.push(("inclusive".into(), "true".into()));
        }
        if self.include_all_metadata {
            f.push(("include_all_metadata".into(), "true".into()));
        }
        f
    }
}

/// One message of `conversations.history` (the fields triage reads).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct HistoryMessage {
    pub ts: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub thread_ts: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub blocks: Option<Value>,
}

/// A page of `conversations.history`, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryPage {
    pub messages: Vec<HistoryMessage>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// `conversations.info`'s `channel` (the fields triage reads).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ChannelInfo {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub is_private: bool,
    /// Shared with another organisation (Slack Connect).
    #[serde(default)]
    pub is_ext_shared: bool,
    #[serde(default)]
    pub context_team_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct UserProfile {
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub real_name: String,
}

/// `users.info`'s `user` (the fields triage reads).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct UserInfo {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub real_name: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub profile: UserProfile,
}

impl UserInfo {
    /// The name Slack shows: display name, else real name, else the handle.
    pub fn display_name(&self) -> &str {
        [
            self.profile.display_name.as_str(),
            self.profile.real_name.as_str(),
            self.real_name.as_deref().unwrap_or(""),
            self.name.as_str(),
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or(&self.id)
    }
}

/// The Web API client. Cheap to clone.
#[derive(Clone)]
pub struct SlackApi {
    base: String,
    token: Option<Secret>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApi")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish()
    }
}

impl SlackApi {
    /// A client of the Web API at `base_url` (e.g. [`DEFAULT_API_URL`]) with the bot token
    /// (`None` or empty: every Web API call fails with [`SlackError::NoToken`]).
    pub fn new(base_url: &str, token: Option<Secret>, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            // Slack's 429 and error bodies are answers, not transport failures.
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .user_agent(concat!("triage/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        SlackApi {
            base: base_url.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            agent,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Calls `method` with `args` and returns Slack's `{"ok": true, ...}` answer.
    pub async fn call(&self, method: &str, args: Args) -> Result<Value, SlackError> {
        let token = self.token.clone().ok_or(SlackError::NoToken)?;
        let url = format!("{}/{method}", self.base);
        let agent = self.agent.clone();
        let m = method.to_string();
        let reply = tokio::task::spawn_blocking(move || {
            let req = agent
                .post(&url)
                .header("Authorization", &format!("Bearer {}", token.expose()));
            match &args {
                Args::Json(body) => req.send_json(body),
                Args::Form(fields) => req.send_form(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            }
            .map_err(|e| transport(&m, e))
            .and_then(|resp| read_reply(&m, resp))
        })
        .await
        .map_err(|e| SlackError::Transport {
            method: method.to_string(),
            message: format!("the HTTP call panicked: {e}"),
        })??;
        envelope(method, reply)
    }

    /// `chat.postMessage` (JSON body).
    pub async fn post_message(&self, msg: &PostMessage) -> Result<Posted, SlackError> {
        let v = self.call("chat.postMessage", Args::Json(to_json(msg))).await?;
        decode("chat.postMessage", v)
    }

    /// `chat.update` (JSON body).
    pub async fn update_message(&self, msg: &UpdateMessage) -> Result<Posted, SlackError> {
        let v = self.call("chat.update", Args::Json(to_json(msg))).await?;
        decode("chat.update", v)
    }

    /// `chat.getPermalink`: a link to one message.
    pub async fn get_permalink(&self, channel: &str, message_ts: &str) -> Result<String, SlackError> {
        let v = self
            .call(
                "chat.getPermalink",
                form(&[("channel", channel), ("message_ts", message_ts)]),
            )
            .await?;
        field::<String>("chat.getPermalink", &v, "permalink")
    }

    /// `conversations.history`: one page, newest first.
    pub async fn history(&self, q: &HistoryQuery) -> Result<HistoryPage, SlackError> {
        const M: &str = "conversations.history";
        let v = self.call(M, Args::Form(q.form())).await?;
        let messages = field::<Vec<HistoryMessage>>(M, &v, "messages")?;
        let next_cursor = v
            .pointer("/response_metadata/next_cursor")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(String::from);
        Ok(HistoryPage {
            messages,
            has_more: v.get("has_more").and_then(Value::as_bool).unwrap_or(false),
            next_cursor,
        })
    }

    /// The ts of the triage card of `conversation_id` in `channel` posted at or after `oldest`,
    /// found by its metadata (`event_type` [`CARD_EVENT_TYPE`]) in the channel's history.
    pub async fn find_card(
        &self,
        channel: &str,
        conversation_id: &str,
        oldest: Option<&str>,
    ) -> Result<Option<String>, SlackError> {
        let mut q = HistoryQuery {
            channel: channel.into(),
            limit: Some(200),
            oldest: oldest.map(String::from),
            inclusive: true,
            include_all_metadata: true,
            ..HistoryQuery::default()
        };
        loop {
            let page = self.history(&q).await?;
            let found = page.messages.iter().find(|m| {
                m.metadata
                    .as_ref()
                    .and_then(Metadata::card_conversation)
                    .is_some_and(|c| c == conversation_id)
            });
            if let Some(m) = found {
                return Ok(Some(m.ts.clone()));
            }
            match page.next_cursor {
                Some(c) if page.has_more => q.cursor = Some(c),
                _ => return Ok(None),
            }
        }
    }

    /// `conversations.info`.
    pub async fn conversation_info(&self, channel: &str) -> Result<ChannelInfo, SlackError> {
        let v = self
            .call("conversations.info", form(&[("channel", channel)]))
            .await?;
        field("conversations.info", &v, "channel")
    }

    /// `auth.test`: who the token is; for a bot token, the bot's user id (`user_id`).
    pub async fn auth_test(&self) -> Result<String, SlackError> {
        let v = self.call("auth.test", Args::Form(Vec::new())).await?;
        field("auth.test", &v, "user_id")
    }

    /// `users.info`.
    pub async fn user_info(&self, user: &str) -> Result<UserInfo, SlackError> {
        let v = self.call("users.info", form(&[("user", user)])).await?;
        field("users.info", &v, "user")
    }

    /// Posts `message` (e.g. `{"response_type": "ephemeral", "text": ...}`) to an interaction's
    /// `response_url`, which needs no token. Slack answers 200 (`ok` or `{"ok": true}`); an
    /// expired or used URL answers 404 with its reason.
    pub async fn respond(&self, response_url: &str, message: &Value) -> Result<(), SlackError> {
        const M: &str = "response_url";
        let agent = self.agent.clone();
        let url = response_url.to_string();
        let body = message.clone();
        let (status, _retry, text) = tokio::task::spawn_blocking(move || {
            agent
                .post(&url)
                .send_json(&body)
                .map_err(|e| transport(M, e))
                .and_then(|resp| read_reply(M, resp))
        })
        .await
        .map_err(|e| SlackError::Transport {
            method: M.into(),
            message: format!("the HTTP call panicked: {e}"),
        })??;
        match status {
            200 => match serde_json::from_str::<Value>(&text) {
                Ok(v) if v.get("ok") == Some(&Value::Bool(false)) => Err(api_error(M, &v)),
                _ => Ok(()),
            },
            429 => Err(SlackError::RateLimited {
                method: M.into(),
                retry_after: _retry.unwrap_or(DEFAULT_RETRY_AFTER),
            }),
            status => Err(SlackError::Http {
                method: M.into(),
                status,
                body: text.chars().take(200).collect(),
            }),
        }
    }
}

/// Status, `Retry-After` and body of one HTTP answer.
type Reply = (u16, Option<Duration>, String);

fn read_reply(method: &str, mut resp: ureq::http::Response<ureq::Body>) -> Result<Reply, SlackError> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| transport(method, e))?;
    Ok((status, retry_after, body))
}

fn transport(method: &str, e: ureq::Error) -> SlackError {
    SlackError::Transport {
        method: method.into(),
        message: e.to_string(),
    }
}

/// Slack's envelope: 200 with `ok: true` is the answer; `ok: false` an [`SlackError::Api`].
fn envelope(method: &str, (status, retry_after, body): Reply) -> Result<Value, SlackError> {
    if status == 429 {
        return Err(SlackError::RateLimited {
            method: method.into(),
            retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        });
    }
    if status != 200 {
        return Err(SlackError::Http {
            method: method.into(),
            status,
            body: body.chars().take(200).collect(),
        });
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| SlackError::Decode {
        method: method.into(),
        message: format!("not JSON ({e})"),
    })?;
    match v.get("ok").and_then(Value::as_bool) {
        Some(true) => {
            if let Some(w) = v.get("warning").and_then(Value::as_str) {
                tracing::debug!(method, warning = w, "Slack warning");
            }
            Ok(v)
        }
        Some(false) => Err(api_error(method, &v)),
        None => Err(SlackError::Decode {
            method: method.into(),
            message: "no `ok` field".into(),
        }),
    }
}

fn api_error(method: &str, v: &Value) -> SlackError {
    SlackError::Api {
        method: method.into(),
        code: v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown_error")
            .to_string(),
    }
}

fn form(fields: &[(&str, &str)]) -> Args {
    Args::Form(
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("argument structs serialise")
}

fn decode<T: serde::de::DeserializeOwned>(method: &str, v: Value) -> Result<T, SlackError> {
    serde_json::from_value(v).map_err(|e| SlackError::Decode {
        method: method.into(),
        message: e.to_string(),
    })
}

fn field<T: serde::de::DeserializeOwned>(method: &str, v: &Value, name: &str) -> Result<T, SlackError> {
    let f = v.get(name).cloned().ok_or_else(|| SlackError::Decode {
        method: method.into(),
        message: format!("no `{name}` field"),
    })?;
    decode(method, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_the_ones_slack_calls_transient() {
        let api = |code: &str| SlackError::Api {
            method: "chat.postMessage".into(),
            code: code.into(),
        };
        assert!(api("internal_error").is_transient());
        assert!(api("service_unavailable").is_transient());
        assert!(!api("channel_not_found").is_transient());
        assert!(!api("invalid_auth").is_transient());
        assert!(!api("not_in_channel").is_transient());
        let limited = SlackError::RateLimited {
            method: "chat.update".into(),
            retry_after: Duration::from_secs(3),
        };
        assert!(limited.is_transient());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        assert!(!limited.may_have_applied());
        assert!(api("internal_error").may_have_applied());
        let http = |status| SlackError::Http {
            method: "x".into(),
            status,
            body: String::new(),
        };
        assert!(http(503).is_transient());
        assert!(!http(404).is_transient());
        assert!(!SlackError::NoToken.is_transient());
    }

    #[test]
    fn envelopes_map_to_answers_and_typed_errors() {
        let ok = envelope("m", (200, None, r#"{"ok":true,"ts":"1.2"}"#.into())).unwrap();
        assert_eq!(ok["ts"], "1.2");
        let err = envelope("m", (200, None, r#"{"ok":false,"error":"no_text"}"#.into())).unwrap_err();
        assert_eq!(err.code(), "no_text");
        let limited = envelope("m", (429, Some(Duration::from_secs(7)), String::new())).unwrap_err();
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        let bare = envelope("m", (429, None, String::new())).unwrap_err();
        assert_eq!(bare.retry_after(), Some(DEFAULT_RETRY_AFTER));
        assert!(matches!(
            envelope("m", (200, None, "<html>".into())),
            Err(SlackError::Decode { .. })
        ));
        assert!(matches!(
            envelope("m", (502, None, "bad gateway".into())),
            Err(SlackError::Http { status: 502, .. })
        ));
    }

    #[test]
    fn card_metadata_round_trips_and_the_body_is_slacks_shape() {
        let msg = PostMessage {
            channel: "C1".into(),
            text: "fallback".into(),
            blocks: Some(json!([{"type": "divider"}])),
            metadata: Some(Metadata::card("conv-1")),
            ..PostMessage::default()
        };
        let body = to_json(&msg);
        assert_eq!(
            body,
            json!({"channel": "C1", "text": "fallback", "blocks": [{"type": "divider"}],
                   "metadata": {"event_type": "triage_card", "event_payload": {"conversation_id": "conv-1"}}})
        );
        let back: Metadata = serde_json::from_value(body["metadata"].clone()).unwrap();
        assert_eq!(back.card_conversation(), Some("conv-1"));
        let other = Metadata {
            event_type: "task_created".into(),
            event_payload: json!({"conversation_id": "conv-1"}),
        };
        assert_eq!(other.card_conversation(), None);
    }

    #[test]
    fn display_names_fall_back_in_slacks_order() {
        let mut u = UserInfo {
            id: "U1".into(),
            name: "spengler".into(),
            ..UserInfo::default()
        };
        assert_eq!(u.display_name(), "spengler");
        u.real_name = Some("Egon Spengler".into());
        assert_eq!(u.display_name(), "Egon Spengler");
        u.profile.display_name = "egon".into();
        assert_eq!(u.display_name(), "egon");
    }
}
