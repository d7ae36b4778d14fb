//! The `triage` commands. Each module holds its commands' flags (clap `Args`) and what they run;
//! `src/main.rs` only assembles the command tree and dispatches. The modules follow the core they
//! drive: [`serve`] (the server), [`embed`] (`embed`, `model verify|pull`), [`classify`]
//! (`classify`, `train status`, `eval status`), [`group`] (`train group`, `eval group`), [`bench`]
//! (`bench embed`), [`import`] (`import slack-export`); `export` will sit beside them.
//!
//! Configuration has one order everywhere: defaults < `--config FILE` < `TRIAGE_*` environment <
//! flags, applied by [`ConfigArgs::settings`] through [`Overrides`]. Every command that reports a
//! result prints it as its last stdout line, one JSON object ([`print_result`]); logs and progress
//! go to stderr.

pub mod bench;
mod bench_import;
pub mod classify;
pub mod embed;
pub mod group;
pub mod import;
pub mod serve;

use std::path::PathBuf;

use crate::config::{Overrides, Settings};
use crate::embed::Embedder;
use crate::model_files;

/// The configuration flags every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file (TRIAGE_* variables override it; flags override both).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The embedding model folder (overrides TRIAGE_MODEL_DIR).
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// The settings with `overrides` (a command's own flags) applied last, and the compute pool
    /// sized from them (call before any other thread starts).
    pub fn settings(&self, overrides: Overrides) -> anyhow::Result<Settings> {
        let overrides = Overrides {
            model_dir: self.model_dir.clone().or(overrides.model_dir),
            ..overrides
        };
        let s = Settings::load(self.config.as_deref(), overrides)?;
        crate::config::init_compute_threads(s.embed.threads);
        Ok(s)
    }
}

/// Resolves, verifies and loads the embedding model the settings point at (every command that
/// embeds starts here).
pub fn load_embedder(settings: &Settings) -> anyhow::Result<Embedder> {
    let files = model_files::resolve(settings.model_dir.as_deref())?;
    Ok(Embedder::load(&files, settings.batch_limits())?)
}

/// The embedder, unless a command was asked to run without embeddings.
pub fn optional_embedder(settings: &Settings, no_embeddings: bool) -> anyhow::Result<Option<Embedder>> {
    (!no_embeddings).then(|| load_embedder(settings)).transpose()
}

/// A command's result: one JSON object as the last stdout line.
pub fn print_result(result: &serde_json::Value) {
    println!("{result}");
}

/// The command line as typed, for training metadata.
pub fn command_line() -> String {
    std::iter::once("triage".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}
