//! The Slack history import: an adapter that reads an export ([`export`]) and hands its messages
//! to the [`Pipeline`], never to the store.
//!
//! Per channel, in `ts` order: messages already stored are skipped (so a rerun, an overlapping
//! export or history already ingested live adds nothing twice), the rest are analysed in batches
//! through the pipeline's batch inference path and then ingested one by one with the same
//! grouping, classification and status machine as live messages. Analysis of the next batch runs
//! while the current one is written, so an import runs near the embedder's batch rate.
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
use serde_json::Value;

pub use export::{Export, ExportChannel, ExportUser};
pub use people::{People, TeamSource};

use crate::domain::{normalize_ts, ts_to_time, IncomingMessage, Role};
use crate::pipeline::{Analysis, Pipeline, PipelineError};

/// Messages analysed per batch (one call into the embedder's queue).
pub const DEFAULT_BATCH: usize = 256;

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

/// What a message of the export is for the pipeline.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Message { deleted: bool },
    Ignored(String),
}

/// The subtypes a support history keeps; everything else (joins, topic and purpose changes, bot
/// messages, pins, ...) is ignored and counted.
fn kind(m: &Value) -> Kind {
    let subtype = m.get("subtype").and_then(Value::as_str);
    let has_user = m.get("user").and_then(Value::as_str).is_some_and(|u| !u.is_empty());
    match subtype {
        Some("tombstone") => Kind::Message { deleted: true },
        None | Some("file_share") | Some("thread_broadcast") | Some("me_message") if has_user => {
            if m.get("bot_id").is_some() && m.get("bot_profile").is_some() {
                Kind::Ignored("bot_message".into())
            } else {
                Kind::Message { deleted: false }
            }
        }
        None => Kind::Ignored("bot_message".into()),
        Some(s) => Kind::Ignored(s.to_owned()),
    }
}

/// The text the pipeline reads: the message text, or its files' names when it has none.
fn text_of(m: &Value) -> String {
    let text = m.get("text").and_then(Value::as_str).unwrap_or("").to_owned();
    if !text.trim().is_empty() {
        return text;
    }
    let files = m
        .get("files")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .chain(m.get("file").cloned())
        .filter_map(|f| {
            f.get("title")
                .or_else(|| f.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect::<Vec<_>>();
    files.join("\n")
}

/// One message to import, in channel order.
struct Item {
    msg: IncomingMessage,
    deleted: bool,
}

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
    let mut summary = ImportSummary {
        team_users: people.team_size() as u64,
        team_source: people.source(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let batch = if opts.batch == 0 { DEFAULT_BATCH } else { opts.batch };
    // Analysis runs ahead of the writes by up to two batches.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<Item>, Vec<Analysis>)>(2);
    let producer = {
        let export = export.clone();
        let pipeline = pipeline.clone();
        let opts = opts.clone();
        let progress = progress.clone();
        let mut counts = ImportSummary::default();
        tokio::spawn(async move {
            let mut placeholders = HashSet::new();
            for i in channels {
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
                let mut pending = Vec::new();
                let mut in_window = false;
                for (ts, m) in loaded.messages {
                    let at = ts_to_time(&ts);
                    if opts.since.is_some_and(|s| at.is_some_and(|t| t < s))
                        || opts.until.is_some_and(|u| at.is_some_and(|t| t >= u))
                    {
                        progress.total.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                    in_window = true;
                    let deleted = match kind(&m) {
                        Kind::Ignored(subtype) => {
                            counts.ignored += 1;
                            *counts.ignored_subtypes.entry(subtype).or_default() += 1;
                            progress.done.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Kind::Message { deleted } => deleted,
                    };
                    if pipeline.is_stored(&channel.id, &ts).await? {
                        counts.duplicates_skipped += 1;
                        progress.done.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let user = m.get("user").and_then(Value::as_str).unwrap_or("USLACKBOT").to_owned();
                    if !people.is_known(&user) && placeholders.insert(user.clone()) {
                        tracing::debug!(user, placeholder = %people.name(&user), "author not in users.json");
                    }
                    let thread_ts = m
                        .get("thread_ts")
                        .and_then(|t| normalize_ts(t).ok());
                    let msg = IncomingMessage {
                        channel: channel.id.clone(),
                        role: if people.is_team(&user) { Role::Agent } else { Role::Customer },
                        user,
                        text: if deleted { String::new() } else { text_of(&m) },
                        ts,
                        thread_ts,
                        embedding: None,
                    };
                    if msg.in_thread() {
                        counts.thread_replies += 1;
                    }
                    if deleted {
                        counts.deleted += 1;
                    }
                    counts.messages_imported += 1;
                    pending.push(Item { msg, deleted });
                    if pending.len() == batch {
                        send(&pipeline, &opts, std::mem::take(&mut pending), &tx, &progress).await?;
                    }
                }
                if in_window {
                    counts.channels += 1;
                }
                send(&pipeline, &opts, pending, &tx, &progress).await?;
            }
            counts.placeholder_users = placeholders.len() as u64;
            Ok::<_, ImportError>(counts)
        })
    };
    let mut conversations = HashSet::new();
    let mut imported = 0u64;
    let mut raced = 0u64;
    while let Some((items, analyses)) = rx.recv().await {
        for (item, analysis) in items.into_iter().zip(analyses) {
            let msg = IncomingMessage {
                embedding: analysis.embedding,
                ..item.msg
            };
            let outcome = pipeline
                .ingest_analysed(&msg, analysis.prediction)
                .await
                .map_err(PipelineError::from)?;
            if outcome.created {
                imported += 1;
                conversations.insert(outcome.conversation.id);
            } else {
                raced += 1;
            }
            let _ = item.deleted;
            progress.done.fetch_add(1, Ordering::Relaxed);
        }
    }
    let counts = producer
        .await
        .map_err(|e| ImportError::Invalid(format!("import task failed: {e}")))??;
    summary.messages_imported = if opts.dry_run { counts.messages_imported } else { imported };
    summary.duplicates_skipped = counts.duplicates_skipped + raced;
    summary.ignored = counts.ignored;
    summary.ignored_subtypes = counts.ignored_subtypes;
    summary.repeats_merged = counts.repeats_merged;
    summary.thread_replies = counts.thread_replies;
    summary.deleted = counts.deleted;
    summary.channels = counts.channels;
    summary.placeholder_users = counts.placeholder_users;
    summary.conversations = conversations.len() as u64;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Analyses a batch (unless a dry run) and hands it to the writer.
async fn send(
    pipeline: &Pipeline,
    opts: &ImportOptions,
    items: Vec<Item>,
    tx: &tokio::sync::mpsc::Sender<(Vec<Item>, Vec<Analysis>)>,
    progress: &Progress,
) -> Result<(), ImportError> {
    if items.is_empty() {
        return Ok(());
    }
    if opts.dry_run {
        progress.done.fetch_add(items.len() as u64, Ordering::Relaxed);
        return Ok(());
    }
    let inputs: Vec<(String, Role)> = items.iter().map(|i| (i.msg.text.clone(), i.msg.role)).collect();
    let analyses = pipeline.analyse_batch(inputs).await?;
    // The writer has gone only when it failed; its error is the one reported.
    let _ = tx.send((items, analyses)).await;
    Ok(())
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
    use serde_json::json;

    #[test]
    fn subtypes() {
        let table = [
            (json!({"user": "U1", "text": "hi"}), Kind::Message { deleted: false }),
            (json!({"user": "U1", "subtype": "file_share"}), Kind::Message { deleted: false }),
            (json!({"user": "U1", "subtype": "thread_broadcast"}), Kind::Message { deleted: false }),
            (json!({"subtype": "tombstone", "user": "USLACKBOT"}), Kind::Message { deleted: true }),
            (json!({"user": "U1", "subtype": "channel_join"}), Kind::Ignored("channel_join".into())),
            (json!({"subtype": "bot_message", "bot_id": "B1"}), Kind::Ignored("bot_message".into())),
            (json!({"text": "no author"}), Kind::Ignored("bot_message".into())),
        ];
        for (m, want) in table {
            assert_eq!(kind(&m), want, "{m}");
        }
        assert_eq!(text_of(&json!({"text": "", "files": [{"name": "log.txt"}]})), "log.txt");
        let day = |s: &str, until| parse_bound(s, until).map(|t| t.to_rfc3339());
        assert_eq!(day("2016-01-02", false).unwrap(), "2016-01-02T00:00:00+00:00");
        assert_eq!(day("2016-01-02", true).unwrap(), "2016-01-03T00:00:00+00:00");
        assert_eq!(day("2016-01-02T10:00:00Z", true).unwrap(), "2016-01-02T10:00:00+00:00");
        assert!(day("yesterday", false).is_err());
    }
}
