//! The Slack adapter against a strict local fake of Slack's Web API.
pub mod fake;
mod web_api;
