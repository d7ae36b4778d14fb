//! The Slack adapter: Slack's wire format in and out, turned into pipeline operations. An adapter
//! like the HTTP API: it calls [`crate::pipeline`], never the store directly.
//!
//! - [`api`]: the Web API client (`chat.postMessage`, `chat.update`, `chat.getPermalink`,
//!   `conversations.history`, `conversations.info`, `users.info`, `response_url`), Slack's
//!   `{"ok": false, "error"}` and HTTP 429 `Retry-After` as typed errors.

pub mod api;
