//! `triage import slack-export PATH`: a Slack export (folder or zip, or slackdump's output)
//! through the whole pipeline with the real models; progress on stderr, the summary as the last
//! stdout line.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::ConfigArgs;
use crate::classify::StatusModel;
use crate::config::{Overrides, Settings};
use crate::http::Models;
use crate::import::{self, Export, ImportOptions, ImportSummary, Progress};
use crate::pipeline::ml::{ModelGrouping, ModelInference};
use crate::pipeline::Pipeline;
use crate::queue::EmbedHandle;
use crate::telemetry::EmbedMetrics;

#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// A Slack export folder or .zip (or slackdump's output) through the whole pipeline.
    SlackExport(SlackExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct SlackExportArgs {
    /// The export: a folder or a .zip.
    pub path: PathBuf,
    /// Only these channels (names or ids, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Only messages on or after this day (YYYY-MM-DD) or instant (RFC 3339).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Only messages up to this day, inclusive (YYYY-MM-DD), or before this instant (RFC 3339).
    #[arg(long, value_parser = parse_until)]
    pub until: Option<DateTime<Utc>>,
    /// Slack user ids of the support team (default: TRIAGE_TEAM_USERS, else the export's own
    /// workspace members when it also has external users).
    #[arg(long, value_delimiter = ',')]
    pub team_users: Option<Vec<String>>,
    /// Count only: no model is loaded and nothing is written.
    #[arg(long)]
    pub dry_run: bool,
    /// The database (overrides TRIAGE_DATABASE_URL).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Messages per inference batch.
    #[arg(long, default_value_t = import::DEFAULT_BATCH)]
    pub batch: usize,
    #[command(flatten)]
    pub config: ConfigArgs,
}

fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    import::parse_bound(s, false)
}

fn parse_until(s: &str) -> Result<DateTime<Utc>, String> {
    import::parse_bound(s, true)
}

/// `triage import ...`.
pub fn run(command: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::SlackExport(args) = command;
    let mut s = args.config.settings(Overrides::default())?;
    if let Some(url) = &args.database_url {
        s.database_url = url.clone();
    }
    let opts = ImportOptions {
        channels: args.channels.clone(),
        since: args.since,
        until: args.until,
        team_users: team_set(&args.team_users.clone().unwrap_or_default()),
        configured_team: s.team_users.iter().cloned().collect(),
        dry_run: args.dry_run,
        batch: args.batch,
    };
    let summary = tokio::runtime::Runtime::new()?.block_on(run_import(&s, &args.path, &opts))?;
    super::print_result(&serde_json::to_value(&summary)?);
    Ok(())
}

/// Opens the database and the export, loads the models (unless a dry run) and imports, with a
/// progress bar on stderr.
pub async fn run_import(
    s: &Settings,
    path: &std::path::Path,
    opts: &ImportOptions,
) -> anyhow::Result<ImportSummary> {
    let store = crate::store::connect(&s.database_url)
        .await
        .context("opening the database")?;
    let export = {
        let path = path.to_owned();
        Arc::new(tokio::task::spawn_blocking(move || Export::open(&path)).await??)
    };
    let models = if opts.dry_run {
        Models::default()
    } else {
        let s = s.clone();
        tokio::task::spawn_blocking(move || load_models(&s)).await??
    };
    let pipeline = Pipeline::new(
        store,
        Arc::new(ModelInference::new(models.embed.clone(), models.status.clone())),
        Arc::new(ModelGrouping::new(models.grouper.clone())),
    );
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(progress.clone());
    let result = import::import(&pipeline, export, opts, progress).await;
    bar.finish();
    if let Some(h) = models.embed.get() {
        let h = h.clone();
        tokio::task::spawn_blocking(move || h.shutdown()).await?;
    }
    Ok(result?)
}

/// The embedder (behind its queue), the status model and the grouper, as `serve` loads them.
pub fn load_models(s: &Settings) -> anyhow::Result<Models> {
    let models = Models::default();
    let embedder = super::load_embedder(s)?;
    let mut status = StatusModel::load(&s.status_model_dir)
        .with_context(|| format!("loading the status model from {}", s.status_model_dir.display()))?;
    status.install_tail(&embedder)?;
    models.status.fill(status);
    let grouping = s.group_model_dir.join("model.json");
    models.grouper.fill(
        crate::group::GroupModel::load(&grouping)
            .with_context(|| format!("loading the grouping model {}", grouping.display()))?,
    );
    models.embed.fill(EmbedHandle::start(
        embedder,
        s.queue_config(),
        EmbedMetrics::default(),
    ));
    Ok(models)
}

/// A bar on stderr fed from the import's counters until `finish`.
pub struct Bar {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn progress_bar(progress: Arc<Progress>) -> Bar {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} messages, {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            loop {
                let done = stop.load(Ordering::Relaxed);
                bar.set_length(progress.total.load(Ordering::Relaxed));
                bar.set_position(progress.done.load(Ordering::Relaxed));
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            bar.finish();
        })
    };
    Bar {
        stop,
        thread: Some(thread),
    }
}

/// The team as the flag gives it (ids, comma-separated, blanks dropped).
pub fn team_set(ids: &[String]) -> HashSet<String> {
    ids.iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}
