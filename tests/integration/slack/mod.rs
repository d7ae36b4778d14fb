//! The Slack adapter against a strict local fake of Slack's Web API.
pub mod fake;
pub mod harness;
mod interactivity;
mod outbox;
mod web_api;
