//! `POST /v1/import` (multipart: a Slack export zip in the field `file`; optional text fields
//! `channels`, `team_users` (comma-separated), `since`, `until` (RFC 3339 or YYYY-MM-DD) and
//! `dry_run`) runs the same import as `triage import slack-export` as a background job of this
//! server; `GET /v1/import/{id}` reads its progress and, once done, its summary from the
//! database (so any replica answers).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{ApiError, AppState};
use crate::import::{self, Export, ImportOptions, Progress};
use crate::store::ImportJob;

/// The largest export zip `POST /v1/import` accepts.
pub const MAX_IMPORT_BYTES: usize = 1 << 30;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/import",
            post(start).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
        .route("/v1/import/{id}", get(status))
}

/// The upload in a temp file, removed when dropped.
struct Upload(PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn instant(field: &str, value: &str, until: bool) -> Result<DateTime<Utc>, ApiError> {
    import::parse_bound(value, until).map_err(|e| ApiError::invalid(field, format!("{field}: {e}")))
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn start(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let mut multipart = multipart
        .map_err(|e| ApiError::BadRequest(format!("expected multipart/form-data: {}", e.body_text())))?;
    let id = crate::domain::new_id();
    let mut opts = ImportOptions {
        configured_team: state.config.team_users.clone(),
        ..Default::default()
    };
    let mut upload = None;
    let bad = |e: axum::extract::multipart::MultipartError| ApiError::BadRequest(e.body_text());
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        if name == "file" {
            let path = std::env::temp_dir().join(format!("triage-import-{id}.zip"));
            let file = Upload(path.clone());
            let mut out = tokio::fs::File::create(&path)
                .await
                .map_err(|e| ApiError::internal(format!("creating {}: {e}", path.display())))?;
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                out.write_all(&chunk)
                    .await
                    .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
            }
            out.flush()
                .await
                .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
            upload = Some(file);
            continue;
        }
        let value = field.text().await.map_err(bad)?;
        match name.as_str() {
            "channels" => opts.channels = Some(list(&value)),
            "team_users" => opts.team_users = list(&value).into_iter().collect(),
            "since" => opts.since = Some(instant("since", value.trim(), false)?),
            "until" => opts.until = Some(instant("until", value.trim(), true)?),
            "dry_run" => {
                opts.dry_run = match value.trim() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    other => {
                        return Err(ApiError::invalid(
                            "dry_run",
                            format!("dry_run must be true or false, not `{other}`"),
                        ))
                    }
                }
            }
            other => return Err(ApiError::invalid(other, format!("unknown field `{other}`"))),
        }
    }
    let upload = upload.ok_or_else(|| {
        ApiError::invalid("file", "a multipart field `file` with the export zip is required")
    })?;
    let path = upload.0.clone();
    let export = tokio::task::spawn_blocking(move || Export::open(&path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::invalid("file", e.to_string()))?;
    if let Some(wanted) = &opts.channels {
        for w in wanted {
            if !export.channels.iter().any(|c| &c.name == w || &c.id == w) {
                return Err(ApiError::invalid(
                    "channels",
                    format!("no channel `{w}` in the export"),
                ));
            }
        }
    }
    if !opts.dry_run && state.config.ready_needs_models && !state.models.are_ready() {
        return Err(ApiError::unavailable("the models are still loading"));
    }
    let now = Utc::now();
    let mut job = ImportJob {
        id: id.clone(),
        state: "running".into(),
        total: 0,
        done: 0,
        summary: None,
        error: None,
        created_at: now,
        updated_at: now,
    };
    state.store.put_import_job(&job).await?;
    tokio::spawn(async move {
        let progress = Arc::new(Progress::default());
        // The ticker is stopped between writes, never in the middle of one: an aborted write could
        // still run in the database's worker after the final state and put "running" back.
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let ticker = {
            let (store, progress, mut job) = (state.store.clone(), progress.clone(), job.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stopped.changed() => break,
                    }
                    job.total = progress.total.load(Ordering::Relaxed) as i64;
                    job.done = progress.done.load(Ordering::Relaxed) as i64;
                    job.updated_at = Utc::now();
                    if let Err(e) = store.put_import_job(&job).await {
                        tracing::warn!(error = %e, job = %job.id, "import progress not saved");
                    }
                }
            })
        };
        let result = import::import(&state.pipeline, Arc::new(export), &opts, progress.clone()).await;
        let _ = stop.send(true);
        let _ = ticker.await;
        drop(upload);
        job.total = progress.total.load(Ordering::Relaxed) as i64;
        job.done = progress.done.load(Ordering::Relaxed) as i64;
        job.updated_at = Utc::now();
        match result {
            Ok(summary) => {
                tracing::info!(job = %job.id, ?summary, "import done");
                job.state = "done".into();
                job.summary = serde_json::to_value(&summary).ok();
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "import failed");
                job.state = "failed".into();
                job.error = Some(e.to_string());
            }
        }
        // The final state must land: retried while the database is briefly away.
        for attempt in 0..10 {
            match state.store.put_import_job(&job).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, job = %job.id, "import result not saved yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "state": "running", "url": format!("/v1/import/{id}")})),
    ))
}

async fn status(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ImportJob>, ApiError> {
    Ok(Json(state.store.get_import_job(&id).await?))
}
