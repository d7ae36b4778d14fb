//! `triage train status`, `triage classify` and `triage eval status`: the command-line adapters of
//! [`crate::classify`]. Results go to stdout (the last line is one JSON object), progress and logs
//! to stderr.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

use super::{command_line, load_embedder, print_result, ConfigArgs};
use crate::classify::finetune::{FineTuneConfig, Objective};
use crate::classify::metrics::Metrics;
use crate::classify::train::{self, TrainOptions};
use crate::classify::{data, keywords, ngrams, report, Label, StatusModel};
use crate::config::{Overrides, Settings};
use crate::model_files;

#[derive(Debug, clap::Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The trained status model (default: TRIAGE_STATUS_MODEL_DIR or models/status).
    #[arg(long, value_name = "DIR")]
    pub status_model_dir: Option<PathBuf>,
}

impl ClassifyArgs {
    fn settings(&self) -> anyhow::Result<Settings> {
        self.config.settings(Overrides {
            status_model_dir: self.status_model_dir.clone(),
            ..Overrides::default()
        })
    }
}

/// `triage train status`: the reply-status model (in_progress / closed).
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Labelled training files (JSON Lines: text, label).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// The dev file: early stopping, choice of variant, temperature.
    #[arg(long)]
    pub dev: PathBuf,
    /// Extra labelled files tried as additions to --data (e.g. ../shared/data/status/*.jsonl);
    /// each is kept only if it improves dev macro-F1.
    #[arg(long, num_args = 1..)]
    pub mix: Vec<PathBuf>,
    /// At most this many rows (seeded sample) from each --mix file.
    #[arg(long, default_value_t = 3000)]
    pub mix_max: usize,
    /// Fine-tune this many top encoder layers with the classifier first (0: heads over the
    /// frozen embedding only).
    #[arg(long, default_value_t = 0)]
    pub finetune_layers: usize,
    /// Fine-tuning epochs (the best on dev is kept; with --cv-folds exactly this many, the layers
    /// tuned once per fold without that fold and once on every row).
    #[arg(long, default_value_t = 6)]
    pub finetune_epochs: usize,
    /// Fine-tuning: learning rate of the tuned layers, dropout, weight decay, label smoothing.
    #[arg(long, default_value_t = 3e-5)]
    pub finetune_lr: f64,
    #[arg(long, default_value_t = 0.1)]
    pub finetune_dropout: f32,
    #[arg(long, default_value_t = 0.01)]
    pub finetune_weight_decay: f64,
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// What the tuned layers are trained for: `cross-entropy` (with a linear head) or `setfit`
    /// (SetFit's cosine-similarity loss on pairs of replies, then the heads on the tuned
    /// embedding). With --finetune-layers.
    #[arg(long, default_value = "cross-entropy", value_parser = Objective::parse)]
    pub finetune_objective: Objective,
    /// `--finetune-objective setfit`: pairs sampled per reply and epoch (half same-label, half
    /// different-label; drawn in proportion to the rows' loss weights).
    #[arg(long, default_value_t = 4, value_name = "R")]
    pub setfit_pairs: usize,
    /// Give every source (a row's `source`, else its file) the same total loss weight.
    #[arg(long)]
    pub balance_sources: bool,
    /// Further labelled files to score with the final model (recorded, never used to choose).
    #[arg(long, num_args = 1..)]
    pub eval: Vec<PathBuf>,
    /// Choose the head, its epoch count and the temperature by K-fold cross-validation over the
    /// training rows that have a `url`, grouped by repository; the dev file is then only scored.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub cv_folds: usize,
    /// Multiply the loss weight of a source's rows (a row's `source`, else its file name), after
    /// --balance-sources: e.g. `--source-weight github=2`.
    #[arg(long, value_name = "SOURCE=FACTOR", value_parser = parse_source_weight)]
    pub source_weight: Vec<(String, f32)>,
    /// Train only these candidate heads (names as in the report: `logistic`, `mlp-64+cues`, ...);
    /// default: all six. `ngrams` trains the lexical head instead (word and character n-grams,
    /// no embedding; alone).
    #[arg(long, value_delimiter = ',', value_name = "HEAD,...")]
    pub heads: Vec<String>,
    /// With --heads ngrams: the logistic regression's inverse regularisation strength.
    #[arg(long, default_value_t = 1.0)]
    pub ngram_c: f64,
    /// With --heads ngrams: also read the lexical cues (0/1 each) times this factor; 0: not.
    #[arg(long, default_value_t = 0.0)]
    pub ngram_cues: f32,
    /// With --heads ngrams: longest run of adjacent words read (1: words only, 2: and pairs, ...).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub ngram_words: u32,
    /// With --heads ngrams: longest character n-gram read (from 2).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=10))]
    pub ngram_chars: u32,
    /// With --heads ngrams: NB-SVM-style log-count-ratio scaling of the n-grams, smoothed by this count (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub ngram_nb: f32,
    /// With --cv-folds: the final head is the mean of the chosen head's K fold heads (merged
    /// into one head with the same logits) instead of one head retrained on every row.
    #[arg(long)]
    pub cv_ensemble: bool,
    /// With --cv-folds: raise the Closed threshold until the out-of-fold Closed precision reaches
    /// this (e.g. 0.85).
    #[arg(long, value_name = "P")]
    pub closed_min_precision: Option<f64>,
    /// Learning rate and weight decay of every candidate head, in place of each head's default
    /// (logistic 1e-2 / 1e-4, MLP-64 2e-3 / 1e-2, MLP-256 1e-3 / 1e-2).
    #[arg(long)]
    pub head_lr: Option<f64>,
    #[arg(long)]
    pub head_weight_decay: Option<f64>,
    /// Start fine-tuning from these tuned layers (an earlier model's `encoder.safetensors`)
    /// instead of the pre-trained ones; with `--finetune-epochs 0` they are kept as they are.
    #[arg(long)]
    pub init_encoder: Option<PathBuf>,
    /// Experiment: what the heads read beside the cues: `last` (the shared embedding; the only
    /// layout inference loads), `last+layerK` (with layer K's mean pool), `last+max` (with the
    /// last layer's max pool), `last+layerK+max`. Not with --finetune-layers.
    #[arg(long, default_value = "last", value_parser = train::Features::parse)]
    pub features: train::Features,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `triage eval status`: metrics of the status model (or the keyword baseline) on a labelled file;
/// the keyword baseline is always scored beside it.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// Print each misclassified row on stderr.
    #[arg(long)]
    pub errors: bool,
    /// Score the status model (with the keyword baseline beside it) or only the baseline.
    #[arg(long, value_enum, default_value = "model")]
    pub predict: Evaluate,
    /// Write one JSON line per row (`index`, `gold`, `predicted`, `p_closed`) to this file, for
    /// error analysis or for combining models.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    #[command(flatten)]
    pub classify: ClassifyArgs,
}

/// `triage classify`.
pub fn run_classify(args: ClassifyArgs) -> anyhow::Result<()> {
    classify_stdin(&args.settings()?)
}

/// `triage train status`.
pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    if args.cv_ensemble && args.cv_folds < 2 {
        anyhow::bail!("--cv-ensemble needs --cv-folds K (K >= 2)");
    }
    if args.closed_min_precision.is_some() && args.cv_folds < 2 {
        anyhow::bail!("--closed-min-precision needs --cv-folds K (K >= 2)");
    }
    if let Some(p) = args.closed_min_precision {
        if !(p > 0.0 && p <= 1.0) {
            anyhow::bail!("--closed-min-precision {p} is not in (0, 1]");
        }
    }
    if args.finetune_objective == Objective::SetFit && args.finetune_layers == 0 {
        anyhow::bail!("--finetune-objective setfit needs --finetune-layers N");
    }
    if args.finetune_objective == Objective::SetFit && args.setfit_pairs == 0 {
        anyhow::bail!("--setfit-pairs must be at least 1");
    }
    let ngrams = args.heads.iter().any(|h| h == ngrams::HEAD_NAME);
    if ngrams {
        if args.heads.len() > 1 {
            anyhow::bail!("--heads ngrams is trained alone (it does not read the embedding)");
        }
        if args.finetune_layers > 0 || !args.features.is_last() || !args.mix.is_empty() {
            anyhow::bail!("--heads ngrams cannot be combined with --finetune-layers, --features or --mix");
        }
        if args.cv_ensemble || args.closed_min_precision.is_some() {
            anyhow::bail!("--cv-ensemble and --closed-min-precision apply to heads over the embedding");
        }
    } else if args.ngram_c != 1.0
        || args.ngram_cues != 0.0
        || args.ngram_words != 2
        || args.ngram_chars != 5
        || args.ngram_nb != 0.0
    {
        anyhow::bail!("--ngram-c, --ngram-cues, --ngram-words, --ngram-chars and --ngram-nb apply to --heads ngrams only");
    }
    if !(args.ngram_nb >= 0.0 && args.ngram_nb.is_finite()) {
        anyhow::bail!("--ngram-nb {} must be 0 (off) or a positive count", args.ngram_nb);
    }
    if !(args.ngram_cues >= 0.0 && args.ngram_cues.is_finite()) {
        anyhow::bail!("--ngram-cues {} must be 0 or a positive number", args.ngram_cues);
    }
    if !(args.ngram_c > 0.0 && args.ngram_c.is_finite()) {
        anyhow::bail!("--ngram-c {} must be a positive number", args.ngram_c);
    }
    let s = args.config.settings(Overrides::default())?;
    let finetune = match args.finetune_layers {
        0 => None,
        layers => Some((
            FineTuneConfig {
                layers,
                epochs: args.finetune_epochs,
                lr_encoder: args.finetune_lr,
                dropout: args.finetune_dropout,
                weight_decay: args.finetune_weight_decay,
                label_smoothing: args.label_smoothing,
                objective: args.finetune_objective,
                pairs_per_reply: match args.finetune_objective {
                    Objective::SetFit => args.setfit_pairs,
                    Objective::CrossEntropy => 0,
                },
                ..Default::default()
            },
            match args.init_encoder {
                Some(p) => p,
                None => model_files::resolve(s.model_dir.as_deref())?.weights(),
            },
        )),
    };
    let opts = TrainOptions {
        data: args.data,
        dev: args.dev,
        mix: args.mix,
        mix_max: args.mix_max,
        seed: args.seed,
        finetune,
        balance_sources: args.balance_sources,
        eval: args.eval,
        cv_folds: args.cv_folds,
        source_weights: args.source_weight,
        cv_ensemble: args.cv_ensemble,
        closed_min_precision: args.closed_min_precision,
        features: args.features,
        ngrams: ngrams.then_some(ngrams::NgramConfig {
            c: args.ngram_c,
            cue_scale: args.ngram_cues,
            word_max_n: args.ngram_words as usize,
            char_max_n: args.ngram_chars as usize,
            nb_alpha: args.ngram_nb,
            ..Default::default()
        }),
        variants: if ngrams {
            Vec::new()
        } else {
            let all = train::default_variants();
            let unknown: Vec<&String> = args
                .heads
                .iter()
                .filter(|h| !all.iter().any(|v| &v.name() == *h))
                .collect();
            if !unknown.is_empty() {
                anyhow::bail!(
                    "unknown --heads {unknown:?}; known: {}",
                    all.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
                );
            }
            all.into_iter()
                .filter(|v| args.heads.is_empty() || args.heads.contains(&v.name()))
                .map(|v| train::HeadConfig {
                    lr: args.head_lr.unwrap_or(v.lr),
                    weight_decay: args.head_weight_decay.unwrap_or(v.weight_decay),
                    ..v
                })
                .collect()
        },
        command: command_line(),
    };
    train(&s, &opts, &args.out).map(|_| ())
}

fn parse_source_weight(s: &str) -> Result<(String, f32), String> {
    let (name, factor) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not SOURCE=FACTOR"))?;
    let f: f32 = factor
        .parse()
        .map_err(|_| format!("{factor:?} is not a number"))?;
    if name.is_empty() || !(f.is_finite() && f > 0.0) {
        return Err(format!("{s:?}: need a source name and a positive factor"));
    }
    Ok((name.to_string(), f))
}

/// `triage eval status`.
pub fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    let s = args.classify.settings()?;
    let (result, rows) = eval(&s, &args.data, args.predict, args.errors)?;
    if let Some(path) = &args.predictions {
        let mut out = BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for row in &rows {
            serde_json::to_writer(&mut out, row)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    print_result(&result);
    Ok(())
}

fn metrics_json(m: &Metrics) -> Value {
    serde_json::to_value(m).expect("metrics serialise")
}

/// `triage train status`: trains, writes the model folder and its report, prints the dev numbers.
pub fn train(settings: &Settings, opts: &TrainOptions, out: &Path) -> anyhow::Result<Value> {
    let embedder = load_embedder(settings)?;
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
    print_result(&result);
    Ok(result)
}

/// The status model, and the embedder when the model reads embeddings (with a fine-tuned model's
/// layers installed); the lexical head needs none, so none is loaded for it.
fn load_status(settings: &Settings) -> anyhow::Result<(StatusModel, Option<crate::embed::Embedder>)> {
    let mut model = StatusModel::load(&settings.status_model_dir)?;
    if !model.needs_embeddings() {
        return Ok((model, None));
    }
    let embedder = load_embedder(settings)?;
    model.install_tail(&embedder)?;
    Ok((model, Some(embedder)))
}

/// `triage classify`: one JSON result per stdin line, in order. An empty line gets
/// `{"error": ..., "line": N}` so output line N still answers input line N.
pub fn classify_stdin(settings: &Settings) -> anyhow::Result<()> {
    let (model, embedder) = load_status(settings)?;
    let id = model.id();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut chunk: Vec<(usize, String)> = Vec::new();
    let flush = |chunk: &mut Vec<(usize, String)>, out: &mut BufWriter<_>| -> anyhow::Result<()> {
        let texts: Vec<&str> = chunk
            .iter()
            .filter(|(_, t)| !t.trim().is_empty())
            .map(|(_, t)| t.as_str())
            .collect();
        let embeddings = match &embedder {
            Some(e) => model.embed(e, &texts)?,
            None => Vec::new(),
        };
        let mut preds = model.predict(&texts, &embeddings)?.into_iter();
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
/// Returns the result object and one `{index, gold, predicted, p_closed}` object per row.
pub fn eval(
    settings: &Settings,
    data_path: &PathBuf,
    what: Evaluate,
    errors: bool,
) -> anyhow::Result<(Value, Vec<Value>)> {
    let rows = data::load_jsonl(data_path)?;
    let gold: Vec<Label> = rows.iter().map(|r| r.label).collect();
    let base_pred: Vec<Label> = rows.iter().map(|r| keywords::predict(&r.text)).collect();
    let base = Metrics::compute(&gold, &base_pred);
    let (name, pred, p_closed): (String, Vec<Label>, Vec<Option<f32>>) = match what {
        Evaluate::Keywords => ("keywords".into(), base_pred.clone(), vec![None; rows.len()]),
        Evaluate::Model => {
            let (model, embedder) = load_status(settings)?;
            let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
            let embeddings = match &embedder {
                None => Vec::new(),
                Some(e) if model.needs_tail() => model.embed(e, &texts)?,
                Some(e) => train::embed_all(e, &texts, "eval")?,
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
    let per_row = (0..rows.len())
        .map(|i| json!({"index": i, "gold": gold[i].as_str(), "predicted": pred[i].as_str(), "p_closed": p_closed[i]}))
        .collect();
    Ok((result, per_row))
}

#[cfg(test)]
mod tests {
    use super::parse_source_weight;

    #[test]
    fn source_weights_parse_and_reject_bad_factors() {
        assert_eq!(parse_source_weight("github=2.5"), Ok(("github".into(), 2.5)));
        for bad in ["github", "=2", "github=0", "github=-1", "github=x", "github=inf"] {
            assert!(parse_source_weight(bad).is_err(), "{bad}");
        }
    }
}
