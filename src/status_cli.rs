//! `triage train status`, `triage classify` and `triage eval status`: the command-line adapters of
//! [`crate::classify`]. Results go to stdout (the last line is one JSON object), progress and logs
//! to stderr.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::classify::metrics::Metrics;
use crate::classify::train::{self, TrainOptions};
use crate::classify::{data, keywords, report, Label, StatusModel};
use crate::config::Settings;

fn metrics_json(m: &Metrics) -> Value {
    serde_json::to_value(m).expect("metrics serialise")
}

/// `triage train status`: trains, writes the model folder and its report, prints the dev numbers.
pub fn train(settings: &Settings, opts: &TrainOptions, out: &Path) -> anyhow::Result<Value> {
    let embedder = crate::cli::load_embedder(settings)?;
    let mut outcome = train::train_status(&embedder, opts)?;
    outcome.model.save(out)?;
    report::write(out, &outcome)?;
    let md = &outcome.model.metadata;
    let closed = md.dev_metrics.label(Label::Closed);
    let result = json!({
        "model": outcome.model.id(),
        "out": out,
        "chosen": md.chosen,
        "temperature": md.temperature,
        "dev": {
            "n": md.dev_metrics.n,
            "accuracy": md.dev_metrics.accuracy,
            "macro_f1": md.dev_metrics.macro_f1,
            "closed_precision": closed.precision,
            "closed_recall": closed.recall,
            "per_label": md.dev_metrics.per_label,
        },
        "keyword_baseline": {"macro_f1": md.keyword_baseline_dev_metrics.macro_f1},
        "margin": md.dev_metrics.macro_f1 - md.keyword_baseline_dev_metrics.macro_f1,
        "variants": md.variants,
        "evaluations": md.evaluations.iter().map(|e| json!({
            "path": e.file.path,
            "n": e.metrics.n,
            "macro_f1": e.metrics.macro_f1,
            "closed_precision": e.metrics.label(Label::Closed).precision,
            "closed_recall": e.metrics.label(Label::Closed).recall,
        })).collect::<Vec<_>>(),
    });
    println!("{result}");
    Ok(result)
}

/// `triage classify`: one JSON result per stdin line, in order. An empty line gets
/// `{"error": ..., "line": N}` so output line N still answers input line N.
pub fn classify_stdin(settings: &Settings) -> anyhow::Result<()> {
    let embedder = crate::cli::load_embedder(settings)?;
    let mut model = StatusModel::load(&settings.status_model_dir)?;
    model.install_tail(&embedder)?;
    let id = model.id();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut chunk: Vec<(usize, String)> = Vec::new();
    let flush = |chunk: &mut Vec<(usize, String)>, out: &mut BufWriter<_>| -> anyhow::Result<()> {
        let texts: Vec<&str> = chunk
            .iter()
            .filter(|(_, t)| !t.trim().is_empty())
            .map(|(_, t)| t.as_str())
            .collect();
        let mut preds = model
            .predict(&texts, &model.embed(&embedder, &texts)?)?
            .into_iter();
        for (n, t) in chunk.iter() {
            let v = if t.trim().is_empty() {
                json!({"error": "empty text", "line": n})
            } else {
                let p = preds.next().expect("one prediction per non-empty line");
                json!({
                    "label": p.label.as_str(),
                    "scores": {"in_progress": p.score(Label::InProgress), "closed": p.score(Label::Closed)},
                    "model": id,
                })
            };
            serde_json::to_writer(&mut *out, &v)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        chunk.clear();
        Ok(())
    };
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        chunk.push((i + 1, line?));
        if chunk.len() == 256 {
            flush(&mut chunk, &mut out)?;
        }
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut out)?;
    }
    Ok(())
}

/// Which predictions `triage eval status` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Evaluate {
    /// The status model in `status_model_dir`, with the keyword baseline beside it.
    Model,
    /// Only the keyword baseline (no model needed).
    Keywords,
}

/// `triage eval status`: the spec's metrics for the model, the keyword baseline's macro-F1, the
/// margin and the errors per reply kind and per source (`by_kind`, `by_source`); with `errors`,
/// each misclassified row on stderr.
pub fn eval(settings: &Settings, data_path: &PathBuf, what: Evaluate, errors: bool) -> anyhow::Result<Value> {
    let rows = data::load_jsonl(data_path)?;
    let gold: Vec<Label> = rows.iter().map(|r| r.label).collect();
    let base_pred: Vec<Label> = rows.iter().map(|r| keywords::predict(&r.text)).collect();
    let base = Metrics::compute(&gold, &base_pred);
    let (name, pred, p_closed): (String, Vec<Label>, Vec<Option<f32>>) = match what {
        Evaluate::Keywords => ("keywords".into(), base_pred.clone(), vec![None; rows.len()]),
        Evaluate::Model => {
            let embedder = crate::cli::load_embedder(settings)?;
            let mut model = StatusModel::load(&settings.status_model_dir)?;
            model.install_tail(&embedder)?;
            let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
            let embeddings = if model.needs_tail() {
                model.embed(&embedder, &texts)?
            } else {
                train::embed_all(&embedder, &texts, "eval")?
            };
            let preds = model.predict(&texts, &embeddings)?;
            (
                model.id(),
                preds.iter().map(|p| p.label).collect(),
                preds.iter().map(|p| Some(p.score(Label::Closed))).collect(),
            )
        }
    };
    if errors {
        for (i, r) in rows.iter().enumerate() {
            if pred[i] != r.label {
                eprintln!(
                    "{}",
                    json!({"index": i, "gold": r.label.as_str(), "predicted": pred[i].as_str(),
                           "p_closed": p_closed[i], "kind": r.kind, "source": r.source, "text": r.text})
                );
            }
        }
    }
    let m = Metrics::compute(&gold, &pred);
    let mut result = metrics_json(&m);
    // Where the errors are: per reply kind and per source (rows without one: "(none)").
    let kinds: Vec<Option<&str>> = rows.iter().map(|r| r.kind.as_deref()).collect();
    let sources: Vec<Option<&str>> = rows.iter().map(|r| r.source.as_deref()).collect();
    result["by_kind"] = json!(crate::classify::metrics::breakdown(&kinds, &gold, &pred));
    result["by_source"] = json!(crate::classify::metrics::breakdown(&sources, &gold, &pred));
    result["model"] = json!(name);
    result["data"] = json!(data_path);
    result["baseline"] = json!({"name": "keywords", "macro_f1": base.macro_f1, "accuracy": base.accuracy,
                                "per_label": base.per_label});
    result["margin"] = json!(m.macro_f1 - base.macro_f1);
    println!("{result}");
    Ok(result)
}
