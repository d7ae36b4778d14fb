//! The Slack history import: an adapter that reads an export ([`export`]) and hands its messages
//! to the [`Pipeline`], never to the store.
//!
//! Per channel, in `ts` order: messages already stored are skipped (so a rerun, an overlapping
//! export or history already ingested live adds nothing twice), the rest are analysed in batches
//! through the pipeline's batch inference path and then ingested in order with the same
//! grouping, classification and status machine as live messages, [`WRITE_UNIT`] messages per
//! store unit of work ([`Pipeline::ingest_analysed_batch`]: one lock and one transaction instead
//! of one per message). Analysis of the next batches runs while the current one is written, so an
//! import runs near the embedder's batch rate; [`PhaseClock`] shows where the time goes.
//!
//! Every file of the selected channels is parsed before anything is imported: a malformed file
//! stops the import with an error naming it, with nothing of it imported, and a rerun after the
//! fix completes without duplicates.

pub mod export;
mod people;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use export::{Export, ExportChannel, ExportUser};
pub use people::{People, TeamSource};

use crate::domain::{normalize_ts, ts_to_time, IncomingMessage, Role};
use crate::pipeline::{Analysis, IngestOutcome, Pipeline, PipelineError, Prediction, UnitTimings};
use crate::slack::message::{interpret, Item, SlackMessage, Team};

/// Messages analysed per batch (one call into the embedder's queue).
pub const DEFAULT_BATCH: usize = 256;

/// New messages per store unit of work (one transaction, holding the channel's lock): long
/// enough that a commit is rare, short enough that a live message of the channel waits little.
pub const WRITE_UNIT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file} line {line} column {column}: malformed JSON ({message}); nothing was imported from it")]
    Malformed {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    #[error("not a Slack export: {0}")]
    NotAnExport(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<crate::store::StoreError> for ImportError {
    fn from(e: crate::store::StoreError) -> Self {
        ImportError::Pipeline(e.into())
    }
}

impl From<crate::pipeline::InferenceError> for ImportError {
    fn from(e: crate::pipeline::InferenceError) -> Self {
        ImportError::Pipeline(e.into())
    }
}

/// What to import and how.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Channel names or ids; `None` imports every channel.
    pub channels: Option<Vec<String>>,
    /// Only messages at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only messages before this instant.
    pub until: Option<DateTime<Utc>>,
    /// The support team; empty: the configured team, else the export's own workspace members when
    /// it has external users too.
    pub team_users: HashSet<String>,
    /// The configured team (`TRIAGE_TEAM_USERS`), used when `team_users` is empty.
    pub configured_team: HashSet<String>,
    /// Count only: nothing is analysed or written.
    pub dry_run: bool,
    /// Messages per inference batch (0: [`DEFAULT_BATCH`]).
    pub batch: usize,
}

/// Shared counters a progress display reads while the import runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Messages to go through (known after the files are checked; shrinks as repeats are merged).
    pub total: AtomicU64,
    /// Messages gone through (imported, skipped as duplicates or ignored).
    pub done: AtomicU64,
    /// Where the time goes, per stage.
    pub phases: PhaseClock,
}

/// Time spent per stage of an import (nanoseconds, summed over the stage's calls). The reader
/// (parse, stored checks, analysis) and the writer run concurrently, so the stages overlap and
/// their sum can exceed the wall time.
#[derive(Debug, Default)]
pub struct PhaseClock {
    /// Reading channel files and interpreting messages (reader).
    pub parse: AtomicU64,
    /// Whether each message is already stored (reader).
    pub stored_check: AtomicU64,
    /// Batched inference: embeddings and the status model (reader).
    pub analyse: AtomicU64,
    /// The writer waiting for the next analysed batch.
    pub writer_idle: AtomicU64,
    /// Store units of work: lock, context loads, grouping, writes, commit (writer).
    pub ingest: AtomicU64,
    /// Inside `ingest`: waiting for the channel's lock, loading contexts, the grouper, reading
    /// targets and writing, committing.
    pub lock: AtomicU64,
    pub context: AtomicU64,
    pub group: AtomicU64,
    pub write: AtomicU64,
    pub commit: AtomicU64,
}

impl PhaseClock {
    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn unit(&self, t: &UnitTimings) {
        for (counter, d) in [
            (&self.lock, t.lock),
            (&self.context, t.context),
            (&self.group, t.group),
            (&self.write, t.write),
            (&self.commit, t.commit),
        ] {
            counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Seconds per stage.
    pub fn seconds(&self) -> BTreeMap<String, f64> {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        [
            ("parse", s(&self.parse)),
            ("stored_check", s(&self.stored_check)),
            ("analyse", s(&self.analyse)),
            ("writer_idle", s(&self.writer_idle)),
            ("ingest", s(&self.ingest)),
            ("ingest.lock", s(&self.lock)),
            ("ingest.context", s(&self.context)),
            ("ingest.group", s(&self.group)),
            ("ingest.write", s(&self.write)),
            ("ingest.commit", s(&self.commit)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// The result of an import (the command's last stdout line).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ImportSummary {
    pub messages_imported: u64,
    /// Messages already stored (an earlier import, an overlapping export, or ingested live).
    pub duplicates_skipped: u64,
    /// Bot messages, joins and other non-conversation subtypes.
    pub ignored: u64,
    /// Conversations the imported messages are in.
    pub conversations: u64,
    /// Channels with at least one message in the selected window.
    pub channels: u64,
    pub seconds: f64,
    /// `ignored` by subtype.
    pub ignored_subtypes: BTreeMap<String, u64>,
    /// Copies of a message merged inside the export (overlapping snapshots, thread replies
    /// repeated under their parent).
    pub repeats_merged: u64,
    /// Thread replies among the imported messages.
    pub thread_replies: u64,
    /// Messages imported as deleted (tombstones).
    pub deleted: u64,
    /// Authors of imported messages missing from users.json (given a placeholder name).
    pub placeholder_users: u64,
    pub team_users: u64,
    pub team_source: TeamSource,
    pub dry_run: bool,
    /// Seconds per stage ([`PhaseClock`]); the stages overlap.
    pub phase_seconds: BTreeMap<String, f64>,
}

/// A `--since` / `--until` bound: a day (`YYYY-MM-DD`, UTC; an `until` day is included, so it
/// ends at the next midnight) or an RFC 3339 instant.
pub fn parse_bound(value: &str, until: bool) -> Result<DateTime<Utc>, String> {
    let value = value.trim();
    if let Some(t) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        let t = t.and_utc();
        return Ok(if until { t + chrono::Duration::days(1) } else { t });
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("`{value}` is not a day (YYYY-MM-DD) or an RFC 3339 instant"))
}

/// What the writer does with one message of the export, in channel order.
enum Action {
    /// Ingest it (analysed in its batch).
    New(IncomingMessage),
    /// A deleted message (an export's tombstone): stored, then marked deleted.
    Tombstone(IncomingMessage),
    /// A stored message now reads `text` (a `message_changed` in the export).
    Edit { ts: String, text: String },
    /// A stored message was deleted (`message_deleted`, or a tombstone already stored).
    Delete { ts: String },
}

impl Action {
    /// What inference reads: the text, or the shared files' names when it has none.
    fn analysis_input(&self) -> Option<(String, Role)> {
        let Action::New(m) = self else { return None };
        let text = if m.text.trim().is_empty() {
            m.files
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            m.text.clone()
        };
        Some((text, m.role))
    }
}

/// A batch for the writer: a channel's actions and the analysis of the `New` ones (in order), still
/// running: the reader starts the next batch's analysis while the embedder works on this one, so
/// the embedder's queue never runs dry while the reader parses and checks what is stored.
type Batch = (String, Vec<Action>, Analysing);
type Analysing = tokio::task::JoinHandle<Result<Vec<Analysis>, ImportError>>;

/// Imports `export` through `pipeline`.
pub async fn import(
    pipeline: &Pipeline,
    export: Arc<Export>,
    opts: &ImportOptions,
    progress: Arc<Progress>,
) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let channels = select(&export, opts.channels.as_deref())?;
    let check = {
        let export = export.clone();
        let channels = channels.clone();
        tokio::task::spawn_blocking(move || {
            let chosen: Vec<&ExportChannel> = channels.iter().map(|&i| &export.channels[i]).collect();
            export.validate(&chosen)
        })
    };
    let entries = check.await.map_err(|e| ImportError::Invalid(e.to_string()))??;
    progress.total.store(entries as u64, Ordering::Relaxed);
    let people = People::new(&export.users, &opts.team_users, &opts.configured_team);
    let batch = if opts.batch == 0 {
        DEFAULT_BATCH
    } else {
        opts.batch
    };
    // Analysis runs ahead of the writes by up to three batches (two queued, one being received).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
    let producer = {
        let (export, pipeline, opts, progress) =
            (export.clone(), pipeline.clone(), opts.clone(), progress.clone());
        tokio::spawn(async move {
            read_channels(
                &pipeline, &export, &channels, &opts, &people, batch, &tx, &progress,
            )
            .await
        })
    };
    let mut written = Written::default();
    let mut deleted = 0u64;
    let clock = &progress.phases;
    loop {
        let idle = Instant::now();
        let Some((channel, actions, analysing)) = rx.recv().await else {
            break;
        };
        let analyses = analysing
            .await
            .map_err(|e| ImportError::Invalid(format!("analysis task failed: {e}")))??;
        PhaseClock::add(&clock.writer_idle, idle);
        let busy = Instant::now();
        let mut analyses = analyses.into_iter();
        // New messages in a row are written in units of work of up to WRITE_UNIT; an edit, a
        // deletion or a tombstone first writes the run before it, so the order is kept.
        let mut run: Vec<(IncomingMessage, Option<Prediction>)> = Vec::new();
        for action in actions {
            if let Action::New(msg) = action {
                let analysis = analyses.next().unwrap_or_default();
                let msg = IncomingMessage {
                    embedding: analysis.embedding,
                    ..msg
                };
                run.push((msg, analysis.prediction));
                if run.len() == WRITE_UNIT {
                    written.add(write_run(pipeline, &channel, &mut run, &progress).await?);
                }
                continue;
            }
            written.add(write_run(pipeline, &channel, &mut run, &progress).await?);
            match action {
                Action::New(_) => unreachable!("handled above"),
                Action::Tombstone(msg) => {
                    let outcome = pipeline
                        .ingest_analysed(&msg, None)
                        .await
                        .map_err(PipelineError::from)?;
                    if outcome.created {
                        written.imported += 1;
                        written.conversations.insert(outcome.conversation.id);
                    }
                    if pipeline
                        .delete_message(&channel, &msg.ts)
                        .await?
                        .is_some_and(|e| e.changed)
                    {
                        deleted += 1;
                    }
                }
                Action::Edit { ts, text } => {
                    pipeline.edit_message(&channel, &ts, &text).await?;
                }
                Action::Delete { ts } => {
                    if pipeline
                        .delete_message(&channel, &ts)
                        .await?
                        .is_some_and(|e| e.changed)
                    {
                        deleted += 1;
                    }
                }
            }
            progress.done.fetch_add(1, Ordering::Relaxed);
        }
        written.add(write_run(pipeline, &channel, &mut run, &progress).await?);
        PhaseClock::add(&clock.ingest, busy);
    }
    let counts = producer
        .await
        .map_err(|e| ImportError::Invalid(format!("import task failed: {e}")))??;
    Ok(ImportSummary {
        messages_imported: if opts.dry_run {
            counts.messages_imported
        } else {
            written.imported
        },
        duplicates_skipped: counts.duplicates_skipped + written.raced,
        conversations: written.conversations.len() as u64,
        deleted: if opts.dry_run { counts.deleted } else { deleted },
        seconds: started.elapsed().as_secs_f64(),
        phase_seconds: progress.phases.seconds(),
        ..counts
    })
}

/// What the writer stored.
#[derive(Default)]
struct Written {
    imported: u64,
    /// Stored meanwhile by someone else (ingested live during the import).
    raced: u64,
    conversations: HashSet<String>,
}

impl Written {
    fn add(&mut self, outcomes: Vec<IngestOutcome>) {
        for outcome in outcomes {
            if outcome.created {
                self.imported += 1;
                self.conversations.insert(outcome.conversation.id);
            } else {
                self.raced += 1;
            }
        }
    }
}

/// Ingests `run` (analysed new messages of `channel`, in order) in one unit of work and empties it.
async fn write_run(
    pipeline: &Pipeline,
    channel: &str,
    run: &mut Vec<(IncomingMessage, Option<Prediction>)>,
    progress: &Progress,
) -> Result<Vec<IngestOutcome>, ImportError> {
    if run.is_empty() {
        return Ok(Vec::new());
    }
    let (outcomes, timings) = pipeline
        .ingest_analysed_batch(channel, run)
        .await
        .map_err(PipelineError::from)?;
    progress.phases.unit(&timings);
    progress.done.fetch_add(run.len() as u64, Ordering::Relaxed);
    run.clear();
    Ok(outcomes)
}

/// Reads the channels one by one, turns each message into an [`Action`] with
/// [`slack::message::interpret`] (the live adapter's reading of subtypes), skips what is stored,
/// and sends analysed batches to the writer. Returns the counts it knows.
#[allow(clippy::too_many_arguments)]
async fn read_channels(
    pipeline: &Pipeline,
    export: &Arc<Export>,
    channels: &[usize],
    opts: &ImportOptions,
    people: &People,
    batch: usize,
    tx: &tokio::sync::mpsc::Sender<Batch>,
    progress: &Arc<Progress>,
) -> Result<ImportSummary, ImportError> {
    let mut counts = ImportSummary {
        team_users: people.team_size() as u64,
        team_source: people.source(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let team = Team {
        users: people.team().clone(),
        bot_user_id: None,
        bot_id: None,
    };
    let home = people.home_team();
    let mut placeholders = HashSet::new();
    let skip = |progress: &Progress| progress.done.fetch_add(1, Ordering::Relaxed);
    let clock = &progress.phases;
    for &i in channels {
        let parsing = Instant::now();
        let loaded = {
            let export = export.clone();
            tokio::task::spawn_blocking(move || export.channel_messages(&export.channels[i]))
                .await
                .map_err(|e| ImportError::Invalid(e.to_string()))??
        };
        let channel = &export.channels[i];
        counts.repeats_merged += loaded.repeats as u64;
        progress
            .total
            .fetch_sub((loaded.repeats + loaded.invalid) as u64, Ordering::Relaxed);
        PhaseClock::add(&clock.parse, parsing);
        // What the database already has of this channel, in a few queries instead of one per
        // message (a message stored meanwhile, live, is still caught by the writer).
        let checking = Instant::now();
        let keys: Vec<String> = loaded.messages.iter().map(|(ts, _)| ts.clone()).collect();
        let stored = pipeline.stored_ts(&channel.id, &keys).await?;
        PhaseClock::add(&clock.stored_check, checking);
        let mut pending = Vec::new();
        let mut in_window = false;
        for (ts, m) in loaded.messages {
            let parsing = Instant::now();
            let at = ts_to_time(&ts);
            if opts.since.is_some_and(|s| at.is_some_and(|t| t < s))
                || opts.until.is_some_and(|u| at.is_some_and(|t| t >= u))
            {
                progress.total.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            in_window = true;
            let parsed: Option<SlackMessage> = serde_json::from_value(m).ok();
            let item = match &parsed {
                Some(sm) => interpret(sm, &channel.id, home, &team),
                None => Item::Ignored {
                    reason: "malformed".into(),
                },
            };
            PhaseClock::add(&clock.parse, parsing);
            let action = match item {
                Item::Ignored { reason } => {
                    counts.ignored += 1;
                    *counts.ignored_subtypes.entry(reason).or_default() += 1;
                    skip(progress);
                    continue;
                }
                Item::New(msg) => {
                    if stored.contains(&msg.ts) {
                        counts.duplicates_skipped += 1;
                        skip(progress);
                        continue;
                    }
                    if !people.is_known(&msg.user) && placeholders.insert(msg.user.clone()) {
                        tracing::info!(user = %msg.user, name = %people.name(&msg.user), "author not in users.json: placeholder");
                    }
                    counts.messages_imported += 1;
                    if msg.in_thread() {
                        counts.thread_replies += 1;
                    }
                    Action::New(msg)
                }
                Item::Edit { ts, text, .. } => Action::Edit { ts, text },
                // An export's tombstone: a deleted thread root (its own ts).
                Item::Delete { ts: deleted, .. } if deleted == ts => {
                    counts.deleted += 1;
                    if stored.contains(&ts) {
                        counts.duplicates_skipped += 1;
                        Action::Delete { ts }
                    } else {
                        let sm = parsed.unwrap_or_default();
                        counts.messages_imported += 1;
                        Action::Tombstone(IncomingMessage {
                            channel: channel.id.clone(),
                            thread_ts: sm.thread_ts.as_ref().and_then(|t| normalize_ts(t).ok()),
                            user: sm.user.unwrap_or_else(|| "USLACKBOT".into()),
                            role: Role::Customer,
                            text: String::new(),
                            files: Vec::new(),
                            embedding: None,
                            ts,
                        })
                    }
                }
                Item::Delete { ts, .. } => Action::Delete { ts },
            };
            pending.push(action);
            if pending.len() == batch {
                send(
                    pipeline,
                    opts,
                    &channel.id,
                    std::mem::take(&mut pending),
                    tx,
                    progress,
                )
                .await?;
            }
        }
        if in_window {
            counts.channels += 1;
        }
        send(pipeline, opts, &channel.id, pending, tx, progress).await?;
    }
    counts.placeholder_users = placeholders.len() as u64;
    Ok(counts)
}

/// Analyses a batch (unless a dry run) and hands it to the writer.
async fn send(
    pipeline: &Pipeline,
    opts: &ImportOptions,
    channel: &str,
    actions: Vec<Action>,
    tx: &tokio::sync::mpsc::Sender<Batch>,
    progress: &Arc<Progress>,
) -> Result<(), ImportError> {
    if actions.is_empty() {
        return Ok(());
    }
    if opts.dry_run {
        progress.done.fetch_add(actions.len() as u64, Ordering::Relaxed);
        return Ok(());
    }
    let inputs: Vec<(String, Role)> = actions.iter().filter_map(Action::analysis_input).collect();
    let analysing = {
        let (pipeline, progress) = (pipeline.clone(), progress.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let analyses = pipeline.analyse_batch(inputs).await?;
            PhaseClock::add(&progress.phases.analyse, started);
            Ok(analyses)
        })
    };
    // The writer has gone only when it failed; its error is the one reported, and reading on
    // would only analyse what nobody writes.
    tx.send((channel.to_owned(), actions, analysing))
        .await
        .map_err(|_| ImportError::Invalid("the import's writer stopped".into()))
}

/// The indexes of the channels to import, by name or id; an unknown one is an error.
fn select(export: &Export, wanted: Option<&[String]>) -> Result<Vec<usize>, ImportError> {
    let Some(wanted) = wanted else {
        return Ok((0..export.channels.len()).collect());
    };
    wanted
        .iter()
        .map(|w| {
            let w = w.trim().trim_start_matches('#');
            export
                .channels
                .iter()
                .position(|c| c.name == w || c.id == w)
                .ok_or_else(|| {
                    let known: Vec<&str> = export.channels.iter().map(|c| c.name.as_str()).collect();
                    ImportError::Invalid(format!(
                        "no channel `{w}` in the export (it has: {})",
                        known.join(", ")
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let day = |s: &str, until| parse_bound(s, until).map(|t| t.to_rfc3339());
        assert_eq!(day("2016-01-02", false).unwrap(), "2016-01-02T00:00:00+00:00");
        assert_eq!(day("2016-01-02", true).unwrap(), "2016-01-03T00:00:00+00:00");
        assert_eq!(
            day("2016-01-02T10:00:00Z", true).unwrap(),
            "2016-01-02T10:00:00+00:00"
        );
        assert!(day("yesterday", false).is_err());
    }
}
