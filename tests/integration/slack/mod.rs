//! The Slack adapter against a strict local fake of Slack's Web API.
mod acceptance;
mod accounts;
mod card_moves;
pub mod fake;
pub mod harness;
mod interactivity;
mod load;
mod outbox;
mod web_api;
