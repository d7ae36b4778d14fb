//! The Slack adapter: Slack's wire format in (request signatures, Events API messages), turned
//! into pipeline operations. An adapter like the HTTP API: it calls [`crate::pipeline`], never the
//! store directly.
//!
//! - [`signing`]: `X-Slack-Signature` over `v0:{timestamp}:{raw body}`, the clock injected.

pub mod signing;
