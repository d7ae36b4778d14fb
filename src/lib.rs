//! triage: a self-hosted, Slack-first customer-support ticketing service with local machine learning.
//!
//! The ML core ([`model`], [`embed`], [`queue`], [`classify`], [`group`]) and the domain
//! ([`domain`]: conversations, messages, events and their rules, the status machine) know nothing
//! of HTTP, Slack or SQL. A message flows one way: an adapter (the inference API [`api`] and
//! [`serve`], the tickets API [`tickets`]) hands it to the [`pipeline`], which runs inference,
//! asks the domain and writes through the [`store`] (SQLite or PostgreSQL).

pub mod api;
pub mod bench;
pub mod classify;
pub mod cli;
pub mod config;
pub mod domain;
pub mod embed;
pub mod group;
pub mod group_cli;
pub mod model;
pub mod pipeline;
pub mod queue;
pub mod serve;
pub mod status_cli;
pub mod store;
pub mod telemetry;
pub mod tickets;
