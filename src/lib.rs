//! triage: a self-hosted, Slack-first customer-support ticketing service with local machine learning.
//!
//! The ML core ([`model_files`], [`embed`], [`queue`], [`classify`], [`group`]) and the domain
//! ([`domain`]: conversations, messages, events and their rules, the status machine) know nothing
//! of HTTP, Slack or SQL. A message flows one way: an adapter (the HTTP API [`http`], the command
//! line [`cli`], the Slack history [`import`], the web board [`board`]) hands it to the [`pipeline`], which runs inference, asks the domain and writes
//! through the [`store`] (SQLite or PostgreSQL).

pub mod board;
pub mod classify;
pub mod cli;
pub mod config;
pub mod domain;
pub mod embed;
pub mod group;
pub mod http;
pub mod import;
pub mod model_files;
pub mod pipeline;
pub mod queue;
pub mod slack;
pub mod store;
pub mod telemetry;
