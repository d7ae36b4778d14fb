//! The Slack adapter: Slack's wire format in (request signatures, Events API messages), turned
//! into pipeline operations. An adapter like the HTTP API: it calls [`crate::pipeline`], never the
//! store directly.
//!
//! - [`signing`]: `X-Slack-Signature` over `v0:{timestamp}:{raw body}`, the clock injected.
//! - [`message`]: a Slack message object (Events API `message` events and export files) and the
//!   one function that decides what it means for triage ([`message::interpret`]).
//! - [`events`]: `POST /slack/events`: verified, stored in the inbox, acknowledged at once.
//! - [`inbound`]: the worker that processes the inbox through the pipeline (replayed at start).

pub mod events;
pub mod inbound;
pub mod message;
pub mod signing;
