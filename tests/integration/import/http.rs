//! `POST /v1/import` and `GET /v1/import/{id}` on the production router over both backends, with
//! the fast stand-in models (the import path itself is the one the CLI tests run on real models).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{fixtures, houstondatavis, IGNORED, MESSAGES};
use crate::tickets::helpers::{assert_error, on_both_backends, send, spawn_app, Backend, TestApp};

fn form(zip: &std::path::Path, fields: &[(&str, &str)]) -> reqwest::multipart::Form {
    let bytes = std::fs::read(zip).unwrap();
    let mut form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name("export.zip"),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    form
}

async fn post_import(app: &TestApp, form: reqwest::multipart::Form) -> (u16, Value) {
    send(
        app.client
            .post(format!("{}/v1/import", app.address))
            .bearer_auth(crate::tickets::helpers::TOKEN)
            .multipart(form),
    )
    .await
}

/// Polls the job until it is no longer running.
async fn finished(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, job) = send(app.get(&format!("/v1/import/{id}"))).await;
        assert_eq!(status, 200, "{job}");
        assert!(
            job["done"].as_i64().unwrap()
                <= job["total"].as_i64().unwrap().max(job["done"].as_i64().unwrap())
        );
        if job["state"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "import still running: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn http_import_runs_in_the_background(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let zip = fixtures::zip_dir(&houstondatavis(), &tmp.path().join("houstondatavis.zip"));

    let (status, body) = post_import(&app, form(&zip, &[])).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let job = finished(&app, &id).await;
    assert_eq!(job["state"], "done", "{job}");
    let s = &job["summary"];
    assert_eq!(
        (
            s["messages_imported"].as_u64(),
            s["duplicates_skipped"].as_u64(),
            s["ignored"].as_u64()
        ),
        (Some(MESSAGES), Some(0), Some(IGNORED)),
        "{job}"
    );
    assert_eq!(job["done"], job["total"], "{job}");

    // The same export again, one channel only: nothing new.
    let (status, body) = post_import(&app, form(&zip, &[("channels", "general")])).await;
    assert_eq!(status, 202, "{body}");
    let job = finished(&app, body["id"].as_str().unwrap()).await;
    assert_eq!(
        (
            job["summary"]["messages_imported"].as_u64(),
            job["summary"]["channels"].as_u64()
        ),
        (Some(0), Some(1)),
        "{job}"
    );

    // Bad input: a clear 4xx naming the problem.
    let (status, body) = post_import(&app, reqwest::multipart::Form::new().text("dry_run", "true")).await;
    assert_eq!(assert_error(status, &body, 422)["field"], "file", "{body}");
    let not_zip = tmp.path().join("not.zip");
    std::fs::write(&not_zip, b"hello").unwrap();
    let (status, body) = post_import(&app, form(&not_zip, &[])).await;
    assert!(
        assert_error(status, &body, 422)["message"]
            .as_str()
            .unwrap()
            .contains("zip"),
        "{body}"
    );
    let (status, body) = post_import(&app, form(&zip, &[("channels", "nope")])).await;
    assert_eq!(assert_error(status, &body, 422)["field"], "channels", "{body}");
    let (status, body) = post_import(&app, form(&zip, &[("since", "yesterday")])).await;
    assert_eq!(assert_error(status, &body, 422)["field"], "since", "{body}");
    let (status, body) = send(app.get("/v1/import/nope")).await;
    assert_error(status, &body, 404);

    // A malformed file inside the zip: the job fails naming it.
    let dir = tmp.path().join("broken");
    fixtures::copy_dir(&houstondatavis(), &dir);
    std::fs::write(dir.join("general/2016-07-24.json"), "[\n{\"ts\": }\n]").unwrap();
    let broken = fixtures::zip_dir(&dir, &tmp.path().join("broken.zip"));
    let (status, body) = post_import(&app, form(&broken, &[])).await;
    assert_eq!(status, 202, "{body}");
    let job = finished(&app, body["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("general/2016-07-24.json line 2"), "{error}");
}

on_both_backends!(http_import_runs_in_the_background, a_finished_job_stays_finished);

/// A progress update that lands after the final state (the ticker's write was in flight when the
/// import finished) must not put a finished job back to `running`.
async fn a_finished_job_stays_finished(backend: Backend) {
    let Some(db) = crate::tickets::helpers::TestDb::create(backend).await else {
        return;
    };
    let store = triage::store::connect(&db.url).await.unwrap();
    let now = chrono::Utc::now();
    let mut job = triage::store::ImportJob {
        id: "job-1".into(),
        state: "running".into(),
        total: 10,
        done: 3,
        summary: None,
        error: None,
        created_at: now,
        updated_at: now,
    };
    store.put_import_job(&job).await.unwrap();
    let progress = job.clone();
    job.state = "done".into();
    job.done = 10;
    job.summary = Some(serde_json::json!({"messages_imported": 10}));
    store.put_import_job(&job).await.unwrap();
    store.put_import_job(&progress).await.unwrap();
    let got = store.get_import_job("job-1").await.unwrap();
    assert_eq!((got.state.as_str(), got.done), ("done", 10));
    assert_eq!(got.summary, job.summary);
}
