//! One integration binary: every scenario runs against SQLite and PostgreSQL over real HTTP.

pub(crate) mod helpers;

mod bench;
mod concurrency;
mod context;
mod edge_routes;
mod edits;
mod errors;
mod events;
mod exports;
mod grouping;
mod lifecycle;
mod listing;
mod notes;
mod slack_events;
mod webhooks;
