//! The one integration-test binary: real model, real HTTP on port 0.
mod board;
mod embed_api;
mod group;
mod hardening;
mod helpers;
mod import;
mod model_files;
pub(crate) mod pipeline;
mod slack;
mod status;
mod support_scenarios;
mod tickets;
