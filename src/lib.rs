//! triage: a self-hosted, Slack-first customer-support ticketing service with local machine learning.
//!
//! The ML core ([`model`], [`embed`], [`queue`]) knows nothing of HTTP, Slack or SQL; the adapters
//! ([`api`], [`serve`]) sit around it.

pub mod api;
pub mod bench;
pub mod classify;
pub mod cli;
pub mod config;
pub mod embed;
pub mod model;
pub mod queue;
pub mod serve;
pub mod status_cli;
pub mod telemetry;
