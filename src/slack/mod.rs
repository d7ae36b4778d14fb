//! The Slack adapter: Slack's wire format in and out, turned into pipeline operations. An adapter
//! like the HTTP API: it calls [`crate::pipeline`], never the store directly.
//!
//! - [`signing`]: `X-Slack-Signature` over `v0:{timestamp}:{raw body}`, the clock injected.
//! - [`message`]: a Slack message object (Events API `message` events and export files) and the
//!   one function that decides what it means for triage ([`message::interpret`]).
//! - [`api`]: the Web API client (`chat.postMessage`, `chat.update`, `chat.getPermalink`,
//!   `conversations.history`, `conversations.info`, `users.info`, `response_url`), Slack's
//!   `{"ok": false, "error"}` and HTTP 429 `Retry-After` as typed errors.

pub mod api;
pub mod message;
pub mod signing;
