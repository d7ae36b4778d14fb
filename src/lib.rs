//! triage: a self-hosted, Slack-first customer-support ticketing service with local machine learning.
//!
//! The ML core ([`model_files`], [`embed`], [`queue`], [`classify`], [`group`]) and the ticket
//! status machine ([`status`]) know nothing of HTTP, Slack or SQL; the adapters sit around them: the
//! inference API ([`api`]), the store ([`store`], SQLite and PostgreSQL), the message pipeline's
//! seams ([`pipeline`]), the tickets API ([`tickets`]) and the command line ([`cli`]).

pub mod api;
pub mod classify;
pub mod cli;
pub mod config;
pub mod embed;
pub mod group;
pub mod model_files;
pub mod pipeline;
pub mod queue;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tickets;

/// The old name of [`model_files`], kept until the ML-core modules owned by other branches
/// (`classify/`, `embed/`, `benches/`) are switched over; nothing new should use it.
#[doc(hidden)]
pub use model_files as model;
