//! The status classifier: training determinism and round trip on real embeddings, the committed
//! model on canonical replies, `triage eval status` / `triage classify`, and `POST /v1/classify`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use triage::classify::head::HeadKind;
use triage::classify::train::{default_variants, train_status, HeadConfig, TrainOptions};
use triage::classify::{Label, StatusModel};
use triage::embed::{BatchLimits, Embedder};

use crate::helpers::{self, spawn_app};

fn embedder() -> Embedder {
    let files = triage::model::resolve(Some(&helpers::model_dir())).unwrap();
    Embedder::load(&files, BatchLimits::default()).unwrap()
}

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The first `n` lines of a data file, in a temp dir.
fn head_of(src: &Path, n: usize, dir: &Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(src).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text.lines().take(n).collect::<Vec<_>>().join("\n")).unwrap();
    p
}

fn short_variants() -> Vec<HeadConfig> {
    default_variants()
        .into_iter()
        .map(|v| HeadConfig {
            max_epochs: 15,
            patience: 5,
            ..v
        })
        .filter(|v| v.kind != HeadKind::Mlp { hidden: 256 })
        .collect()
}

#[test]
fn training_is_deterministic_and_the_model_round_trips_through_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let train = head_of(
        &repo("training-data/status/train.jsonl"),
        120,
        tmp.path(),
        "train.jsonl",
    );
    let dev = head_of(
        &repo("training-data/status/dev.jsonl"),
        60,
        tmp.path(),
        "dev.jsonl",
    );
    let opts = TrainOptions {
        data: vec![train],
        dev,
        mix: Vec::new(),
        mix_max: 0,
        seed: 3,
        variants: short_variants(),
        command: "test".into(),
    };
    let emb = embedder();
    let a = train_status(&emb, &opts).unwrap();
    let b = train_status(&emb, &opts).unwrap();
    assert_eq!(a.model.metadata.chosen, b.model.metadata.chosen);
    assert_eq!(a.model.temperature, b.model.temperature);
    for ((wa, ba), (wb, bb)) in a.model.head.layers.iter().zip(&b.model.head.layers) {
        assert_eq!(wa.to_vec2::<f32>().unwrap(), wb.to_vec2::<f32>().unwrap());
        assert_eq!(ba.to_vec1::<f32>().unwrap(), bb.to_vec1::<f32>().unwrap());
    }

    // Round trip: same tensors, same predictions, version from the weights' hash.
    let mut model = a.model;
    model.save(tmp.path()).unwrap();
    let loaded = StatusModel::load(tmp.path()).unwrap();
    assert_eq!(loaded.head.kind, model.head.kind);
    assert_eq!(loaded.temperature, model.temperature);
    for ((wa, ba), (wb, bb)) in model.head.layers.iter().zip(&loaded.head.layers) {
        assert_eq!(wa.to_vec2::<f32>().unwrap(), wb.to_vec2::<f32>().unwrap());
        assert_eq!(ba.to_vec1::<f32>().unwrap(), bb.to_vec1::<f32>().unwrap());
    }
    let t = ["Taking a look", "Fixed in 2.3."];
    let x = emb.embed(&t).unwrap();
    assert_eq!(model.predict(&t, &x).unwrap(), loaded.predict(&t, &x).unwrap());
    assert_eq!(
        loaded.id(),
        format!("status@{}", &loaded.metadata.weights_sha256[..12])
    );

    // Weights that do not match the metadata are refused.
    std::fs::write(tmp.path().join("model.safetensors"), b"garbage").unwrap();
    let err = StatusModel::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("sha256"), "{err}");
}

const CANONICAL: [(&str, Label); 7] = [
    ("Taking a look", Label::InProgress),
    ("Let me check with the team", Label::InProgress),
    ("can you send the logs?", Label::InProgress),
    ("Thanks! We'll look into it", Label::InProgress),
    (
        "I just confirmed with the team, this is fixed in 1.4",
        Label::Closed,
    ),
    ("Dup of #123.", Label::Closed),
    ("Fixed in 2.3.", Label::Closed),
];

#[test]
fn the_committed_model_labels_canonical_replies() {
    let model = StatusModel::load(&helpers::status_model_dir()).unwrap();
    let emb = embedder();
    let texts: Vec<&str> = CANONICAL.iter().map(|c| c.0).collect();
    let preds = model.predict(&texts, &emb.embed(&texts).unwrap()).unwrap();
    for ((text, gold), p) in CANONICAL.iter().zip(&preds) {
        assert_eq!(p.label, *gold, "{text:?}: {p:?}");
        assert!((p.scores[0] + p.scores[1] - 1.0).abs() < 1e-5);
    }
    // The head costs far less than the 1 ms budget over the embedding.
    let x = emb.embed(&["Taking a look"]).unwrap();
    let mut times: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            model.predict(&["Taking a look"], &x).unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    eprintln!("status head p50 {:.1} µs per reply", times[100] * 1e6);
    assert!(times[100] < 1e-3, "head p50 {:.3} ms", times[100] * 1e3);
}

fn triage(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(args)
        .env("TRIAGE_MODEL_DIR", helpers::model_dir())
        .env("TRIAGE_STATUS_MODEL_DIR", helpers::status_model_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn eval_reports_the_spec_shape_and_names_bad_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.jsonl");
    std::fs::write(
        &good,
        "{\"text\": \"Taking a look\", \"label\": \"in_progress\"}\n\
         {\"text\": \"Fixed in 2.3.\", \"label\": \"closed\"}\n\
         {\"text\": \"Dup of #123.\", \"label\": \"closed\"}\n",
    )
    .unwrap();
    let (ok, out, err) = triage(
        &["eval", "status", "--data", good.to_str().unwrap(), "--errors"],
        "",
    );
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["n"], 3);
    assert_eq!(v["accuracy"], 1.0);
    assert_eq!(v["confusion"]["closed"]["closed"], 2);
    assert_eq!(v["per_label"]["in_progress"]["support"], 1);
    assert!(
        v["baseline"]["macro_f1"].is_number() && v["margin"].is_number(),
        "{v}"
    );

    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"text\": \"ok\", \"label\": \"closed\"}\nthis is not json\n",
    )
    .unwrap();
    let (ok, _, err) = triage(&["eval", "status", "--data", bad.to_str().unwrap()], "");
    assert!(!ok);
    assert!(err.contains("bad.jsonl:2:"), "{err}");
    std::fs::write(&bad, "{\"text\": \"\", \"label\": \"closed\"}\n").unwrap();
    let (ok, _, err) = triage(
        &[
            "eval",
            "status",
            "--data",
            bad.to_str().unwrap(),
            "--predict",
            "keywords",
        ],
        "",
    );
    assert!(!ok);
    assert!(err.contains("bad.jsonl:1: \"text\" is empty"), "{err}");
}

#[test]
fn classify_cli_answers_each_line() {
    let (ok, out, err) = triage(&["classify"], "Taking a look\n\nFixed in 2.3.\n");
    assert!(ok, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["label"], "in_progress");
    assert!(lines[0]["model"].as_str().unwrap().starts_with("status@"));
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[2]["label"], "closed");
}

#[tokio::test]
async fn classify_endpoint_single_batch_and_errors() {
    let app = spawn_app().await;
    let one: Value = app
        .post("/v1/classify")
        .json(&json!({"text": "Taking a look", "role": "agent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["label"], "in_progress", "{one}");
    let (p, q) = (
        one["scores"]["in_progress"].as_f64().unwrap(),
        one["scores"]["closed"].as_f64().unwrap(),
    );
    assert!((p + q - 1.0).abs() < 1e-5 && p > q);
    assert!(one["model"].as_str().unwrap().starts_with("status@"));

    let resp = app
        .post("/v1/classify")
        .json(&json!({"inputs": ["Dup of #123.", "can you send the logs?"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let many: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many[0]["label"], "closed");
    assert_eq!(many[1]["label"], "in_progress");

    let resp = app
        .post("/v1/classify")
        .json(&json!({"text": "", "role": "agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["field"], "text", "{e}");
    let resp = app
        .post("/v1/classify")
        .json(&json!({"inputs": ["ok", "  "]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn classify_is_unavailable_until_the_models_load() {
    let (addr, _state, stop) = helpers::spawn_unloaded().await;
    let resp = reqwest::Client::new()
        .post(format!("{addr}/v1/classify"))
        .bearer_auth(helpers::TOKEN)
        .json(&json!({"text": "Taking a look"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let _ = stop.send(());
}
