//! triage: a self-hosted, Slack-first customer-support ticketing service with local machine learning.
//!
//! The ML core ([`model`], [`embed`], [`queue`], [`classify`], [`group`]) and the ticket status
//! machine ([`status`]) know nothing of HTTP, Slack or SQL; the adapters sit around them: the
//! inference API ([`api`], [`serve`]), the store ([`store`], SQLite and PostgreSQL), the message
//! pipeline's seams ([`pipeline`]) and the tickets API ([`tickets`]).

pub mod api;
pub mod bench;
pub mod classify;
pub mod cli;
pub mod config;
pub mod embed;
pub mod group;
pub mod group_cli;
pub mod model;
pub mod pipeline;
pub mod queue;
pub mod serve;
pub mod status;
pub mod status_cli;
pub mod store;
pub mod telemetry;
pub mod tickets;
