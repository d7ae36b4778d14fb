//! Training: optionally fine-tune the encoder's top layers first ([`super::finetune`]); embed every
//! reply once (through the tuned layers when there are some), then train each candidate head with
//! candle-nn's AdamW on class-weighted cross-entropy, early-stopped on the dev loss; keep the
//! candidate with the best dev macro-F1 and fit its temperature on dev.
//!
//! Deterministic for a seed: weights are initialised and batches shuffled from a seeded `StdRng`,
//! dropout masks come from the same generator, and nothing else is random.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;

use super::data::{load_jsonl, Example};
use super::head::{features, prediction};
use super::metrics::{average_precision, pr_curve, Metrics};
use super::{
    keywords, DataFile, DataInfo, EmbedderInfo, Label, Metadata, StatusError, StatusModel, VariantResult,
    MODEL_NAME,
};
use crate::embed::Embedder;

pub use super::fit::{
    balanced_weights, class_weights, default_variants, fit_temperature, train_head, train_head_weighted,
    weighted_class_weights, HeadConfig, Trained,
};

/// Embeds texts in chunks with a progress bar.
pub fn embed_all(embedder: &Embedder, texts: &[&str], what: &str) -> Result<Vec<Vec<f32>>, StatusError> {
    embed_features(embedder, texts, what, Features::default())
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:28} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

#[derive(Clone)]
struct DataSet<'a> {
    /// Indices of the extra files mixed in.
    mixed: Vec<usize>,
    texts: Vec<&'a str>,
    x: Vec<Vec<f32>>,
    y: Vec<Label>,
    /// Loss weight per row.
    w: Vec<f32>,
}

type Candidate = (VariantResult, Trained, HeadConfig, Vec<usize>);

/// Best dev macro-F1; ties: higher Closed precision (a wrong Closed hides a problem), then the
/// earlier (simpler, fewer extra data) candidate.
fn best_of(results: &[Candidate]) -> usize {
    let mut best = 0;
    for (i, (r, ..)) in results.iter().enumerate() {
        let b = &results[best].0;
        if (r.dev_macro_f1, r.dev_closed_precision) > (b.dev_macro_f1, b.dev_closed_precision) {
            best = i;
        }
    }
    best
}

/// What the heads read beside the cues (experiment, `triage train status --features`): the
/// shared embedding alone (`last`, the only layout inference loads), or with an intermediate
/// layer's mean pool (`last+layerK`) and/or the last layer's max pool (`+max`), all from one
/// forward pass ([`Embedder::embed_pooled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    pub layer: Option<usize>,
    pub max: bool,
}

impl Features {
    /// `last`, `last+layer4`, `last+max`, `last+layer4+max`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split('+');
        if parts.next() != Some("last") {
            return Err(format!("{s:?}: features start with `last`"));
        }
        let mut f = Features::default();
        for p in parts {
            if p == "max" && !f.max {
                f.max = true;
            } else if let Some(k) = p.strip_prefix("layer").filter(|_| f.layer.is_none() && !f.max) {
                let k: usize = k.parse().map_err(|_| format!("{s:?}: {p:?} is not layerK"))?;
                if k == 0 {
                    return Err(format!("{s:?}: layers count from 1"));
                }
                f.layer = Some(k);
            } else {
                return Err(format!("{s:?}: unknown or repeated part {p:?}"));
            }
        }
        Ok(f)
    }

    pub fn name(&self) -> String {
        let mut s = "last".to_string();
        if let Some(k) = self.layer {
            s.push_str(&format!("+layer{k}"));
        }
        if self.max {
            s.push_str("+max");
        }
        s
    }

    pub fn is_last(&self) -> bool {
        *self == Features::default()
    }
}

/// Every text's head features (`f`; [`embed_all`] is `last`, the shared embedding), in chunks
/// with a progress bar.
pub fn embed_features(
    embedder: &Embedder,
    texts: &[&str],
    what: &str,
    f: Features,
) -> Result<Vec<Vec<f32>>, StatusError> {
    let msg = match f.is_last() {
        true => format!("embedding {what}"),
        false => format!("embedding {what} ({})", f.name()),
    };
    let pb = bar(texts.len() as u64, &msg);
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(256) {
        match f.is_last() {
            true => out.extend(embedder.embed(chunk)?),
            false => out.extend(embedder.embed_pooled(chunk, f.layer, f.max)?),
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

pub struct TrainOptions {
    pub data: Vec<PathBuf>,
    pub dev: PathBuf,
    /// Extra labelled files tried as additions to `data`; kept only if they win on dev.
    pub mix: Vec<PathBuf>,
    /// Rows sampled (seeded) from each mixed-in file, at most.
    pub mix_max: usize,
    pub seed: u64,
    pub variants: Vec<HeadConfig>,
    /// Fine-tune the encoder's top layers first (with the embedder's `model.safetensors` as the
    /// starting point); the heads are then trained on the embeddings through the tuned layers.
    pub finetune: Option<(super::finetune::FineTuneConfig, PathBuf)>,
    /// How this training was started (recorded in the metadata).
    pub command: String,
    /// Weight training rows so that every source (a row's `source`, else its file's name) carries
    /// the same total weight in the fine-tuning and head losses.
    pub balance_sources: bool,
    /// Further labelled files scored with the final model (metadata `evaluations`, report).
    pub eval: Vec<PathBuf>,
    /// Choose the head, its epoch count and the temperature by this many folds of
    /// cross-validation over the training rows with a `url`, grouped by repository
    /// ([`super::cv`]), instead of on the dev file, which is then only scored. 0: choose on dev.
    pub cv_folds: usize,
    /// Multiply the loss weight of every row of a source (a row's `source`, else its file) by a
    /// factor, after `balance_sources`.
    pub source_weights: Vec<(String, f32)>,
    /// With `cv_folds`: the final head is the mean of the chosen head's fold heads (one head with
    /// the same logits, [`super::head::average`]) instead of one head retrained on every row for
    /// the folds' median epoch count.
    pub cv_ensemble: bool,
    /// With `cv_folds`: raise the Closed decision threshold until the out-of-fold Closed
    /// precision reaches this (the smallest such shift of the logit margin, folded into the head's
    /// output bias).
    pub closed_min_precision: Option<f64>,
    /// Experiment: what the heads read beside the cues. Anything but `last` writes a model that
    /// inference cannot load (its head is wider than the shared embedding).
    pub features: Features,
    /// Train the lexical n-gram head ([`super::ngrams`]) instead of heads over the embedding
    /// (`variants` and `finetune` are then unused).
    pub ngrams: Option<super::ngrams::NgramConfig>,
}

/// What `train_status` produced: the model and everything the report shows.
pub struct TrainOutcome {
    pub model: StatusModel,
    pub dev: Vec<Example>,
    pub dev_predictions: Vec<super::Prediction>,
    pub baseline_predictions: Vec<Label>,
}

fn file_info(path: &Path, rows: usize, used: usize) -> Result<DataFile, StatusError> {
    Ok(DataFile {
        path: path.display().to_string(),
        sha256: crate::model_files::sha256_file(path).map_err(|e| StatusError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?,
        rows,
        used,
    })
}

/// The built-in embedder's identity, recorded in every status model's metadata.
fn embedder_info() -> EmbedderInfo {
    let manifest = crate::model_files::Manifest::builtin();
    EmbedderInfo {
        name: manifest.name.clone(),
        revision: manifest.revision.clone(),
        weights_sha256: manifest.weights_sha256().to_string(),
    }
}

/// `--source-weight` factors as metadata (`hyper_parameters.source_weight_factors`).
fn source_weight_factors(opts: &TrainOptions) -> serde_json::Value {
    json!(opts
        .source_weights
        .iter()
        .map(|(s, f)| (s.clone(), json!(f)))
        .collect::<serde_json::Map<_, _>>())
}

/// The final model's scores on one `--eval` file, given its predictions for the file's rows.
fn evaluation(
    p: &Path,
    rows: &[Example],
    preds: &[super::Prediction],
) -> Result<super::Evaluation, StatusError> {
    let gold: Vec<Label> = rows.iter().map(|r| r.label).collect();
    let pred: Vec<Label> = preds.iter().map(|p| p.label).collect();
    let kinds: Vec<Option<&str>> = rows.iter().map(|r| r.kind.as_deref()).collect();
    let base: Vec<Label> = rows.iter().map(|r| keywords::predict(&r.text)).collect();
    let p_closed: Vec<f32> = preds.iter().map(|p| p.score(Label::Closed)).collect();
    let m = Metrics::compute(&gold, &pred);
    tracing::info!(
        file = %p.display(),
        macro_f1 = format!("{:.4}", m.macro_f1),
        closed_p = format!("{:.4}", m.label(Label::Closed).precision),
        closed_r = format!("{:.4}", m.label(Label::Closed).recall),
        "evaluated"
    );
    Ok(super::Evaluation {
        file: file_info(p, rows.len(), rows.len())?,
        metrics: m,
        closed_average_precision: average_precision(&pr_curve(&gold, &p_closed)),
        keyword_baseline_macro_f1: Metrics::compute(&gold, &base).macro_f1,
        by_kind: super::metrics::breakdown(&kinds, &gold, &pred),
    })
}

/// Out-of-fold macro-F1 and Closed precision / recall per training file (`file_of[i]`: the file
/// of row `i`), so that runs with different training files can be compared on the same held-out
/// rows (a repository's fold does not depend on which other files are trained on).
fn out_of_fold_by_file(
    data: &[PathBuf],
    file_of: &[usize],
    y: &[Label],
    rows: &[usize],
    logits: &[[f32; 2]],
) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (fi, p) in data.iter().enumerate() {
        let (gold, pred): (Vec<Label>, Vec<Label>) = rows
            .iter()
            .zip(logits)
            .filter(|(&i, _)| file_of[i] == fi)
            .map(|(&i, l)| (y[i], prediction(l, 1.0).label))
            .unzip();
        if gold.is_empty() {
            continue;
        }
        let m = Metrics::compute(&gold, &pred);
        out.insert(
            short_name(p),
            json!({
                "n": m.n,
                "macro_f1": m.macro_f1,
                "closed_precision": m.label(Label::Closed).precision,
                "closed_recall": m.label(Label::Closed).recall,
            }),
        );
    }
    serde_json::Value::Object(out)
}

fn short_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub fn train_status(embedder: &Embedder, opts: &TrainOptions) -> Result<TrainOutcome, StatusError> {
    let mut train = Vec::new();
    let mut train_files = Vec::new();
    let mut groups = Vec::new();
    // The training file of every row (an index into `opts.data`), for the per-file out-of-fold
    // scores of cross-validation.
    let mut file_of = Vec::new();
    for (fi, p) in opts.data.iter().enumerate() {
        let rows = load_jsonl(p)?;
        train_files.push(file_info(p, rows.len(), rows.len())?);
        file_of.extend(std::iter::repeat_n(fi, rows.len()));
        let file = short_name(p);
        groups.extend(
            rows.iter()
                .map(|r| r.source.clone().unwrap_or_else(|| file.clone())),
        );
        train.extend(rows);
    }
    let mut row_weights = if opts.balance_sources {
        balanced_weights(&groups)
    } else {
        vec![1.0; train.len()]
    };
    for (g, w) in groups.iter().zip(row_weights.iter_mut()) {
        if let Some((_, m)) = opts.source_weights.iter().find(|(s, _)| s == g) {
            *w *= m;
        }
    }
    let cv_folds = (opts.cv_folds > 1).then_some(opts.cv_folds);
    if cv_folds.is_some() && !opts.mix.is_empty() {
        return Err(StatusError::Other(
            "--mix chooses on the dev file; it cannot be combined with cross-validation".into(),
        ));
    }
    let folds: Vec<Option<usize>> = train
        .iter()
        .map(|e| {
            let k = cv_folds?;
            let repo = super::cv::repository(e.url.as_deref()?)?;
            Some(super::cv::fold_of(&repo, k))
        })
        .collect();
    if !opts.features.is_last() && opts.finetune.is_some() {
        return Err(StatusError::Other(
            "--features other than `last` cannot be combined with fine-tuning".into(),
        ));
    }
    let dev = load_jsonl(&opts.dev)?;
    let dev_file = file_info(&opts.dev, dev.len(), dev.len())?;
    let mut mixes = Vec::new();
    for (i, p) in opts.mix.iter().enumerate() {
        let mut rows = load_jsonl(p)?;
        let total = rows.len();
        if rows.len() > opts.mix_max {
            rows.shuffle(&mut StdRng::seed_from_u64(opts.seed.wrapping_add(1 + i as u64)));
            rows.truncate(opts.mix_max);
        }
        mixes.push((file_info(p, total, rows.len())?, short_name(p), rows));
    }
    tracing::info!(
        train = train.len(),
        dev = dev.len(),
        mixed = mixes.iter().map(|m| m.2.len()).sum::<usize>(),
        "data loaded"
    );

    fn texts(rows: &[Example]) -> Vec<&str> {
        rows.iter().map(|e| e.text.as_str()).collect()
    }
    let train_y: Vec<Label> = train.iter().map(|e| e.label).collect();
    let dev_y: Vec<Label> = dev.iter().map(|e| e.label).collect();
    if let Some(cfg) = &opts.ngrams {
        return train_ngrams(
            opts,
            cfg,
            NgramData {
                train: &train,
                train_files,
                file_of: &file_of,
                row_weights: &row_weights,
                folds: &folds,
                dev,
                dev_file,
            },
        );
    }
    // Fine-tuning (optional) comes first: every head then reads the tuned embedding. With
    // cross-validation the layers are tuned once per fold on that fold's kept rows (the held rows'
    // features for the out-of-fold scores come from layers that never saw them) and once on every
    // row (the final model), each for exactly `epochs` epochs: no file chooses the epoch. The
    // hidden states entering the tuned layers are computed once for every row.
    let mut fold_x: Option<Vec<Vec<Vec<f32>>>> = None;
    let tuned = match &opts.finetune {
        None => None,
        Some((cfg, weights)) => {
            let pb = bar(0, "fine-tuning");
            let t = match cv_folds {
                None => super::finetune::finetune(
                    embedder,
                    weights,
                    (&texts(&train), &train_y, &row_weights),
                    (&texts(&dev), &dev_y),
                    cfg,
                    opts.seed,
                    &pb,
                )?,
                Some(k) => {
                    use super::finetune::{embed_states, finetune_states, first_tuned_layer, hidden_states};
                    let bert = embedder.model().config().clone();
                    let from = first_tuned_layer(&bert, cfg)?;
                    pb.set_length(train.len() as u64);
                    pb.set_message("hidden states");
                    let states = hidden_states(embedder, &texts(&train), from, &pb)?;
                    let per_fold = super::cv::tune_per_fold(&folds, k, |f, kept| {
                        tracing::info!(fold = f, rows = kept.len(), "fine-tuning without the fold");
                        let refs: Vec<&candle_core::Tensor> = kept.iter().map(|&i| &states[i]).collect();
                        let y: Vec<Label> = kept.iter().map(|&i| train_y[i]).collect();
                        let w: Vec<f32> = kept.iter().map(|&i| row_weights[i]).collect();
                        let t = finetune_states(&bert, weights, (&refs, &y, &w), None, cfg, opts.seed, &pb)?;
                        embed_states(&bert, &t, &states)
                    })?;
                    fold_x = Some(per_fold);
                    tracing::info!(rows = train.len(), "fine-tuning on every row (the final model)");
                    let refs: Vec<&candle_core::Tensor> = states.iter().collect();
                    finetune_states(
                        &bert,
                        weights,
                        (&refs, &train_y, &row_weights),
                        None,
                        cfg,
                        opts.seed,
                        &pb,
                    )?
                }
            };
            pb.finish_and_clear();
            let tail = embedder.model().tail_from_tensors(&t.tensors, t.from_layer)?;
            Some((*cfg, t, tail))
        }
    };
    // With cross-validated fine-tuning, the frozen embedding too: the same heads are
    // cross-validated on it, and the mean of the frozen and tuned out-of-fold logits scores the
    // frozen+tuned ensemble on the same rows.
    let frozen_train_x = match fold_x {
        Some(_) => Some(embed_all(embedder, &texts(&train), "train (frozen)")?),
        None => None,
    };
    let embed_set = |rows: &[&str], what: &str| -> Result<Vec<Vec<f32>>, StatusError> {
        let Some((_, _, tail)) = &tuned else {
            return embed_features(embedder, rows, what, opts.features);
        };
        Ok(embedder.embed_tuned(rows, tail)?)
    };
    let train_x = embed_set(&texts(&train), "train")?;
    let dev_x = embed_set(&texts(&dev), "dev")?;
    let mut mix_x = Vec::new();
    for (_, name, rows) in &mixes {
        mix_x.push(embed_set(&texts(rows), name)?);
    }

    let baseline_predictions: Vec<Label> = dev.iter().map(|e| keywords::predict(&e.text)).collect();
    let baseline = Metrics::compute(&dev_y, &baseline_predictions);

    // Data sets: the written files alone, then each extra file added to them.
    let mut sets: Vec<DataSet> = vec![DataSet {
        mixed: Vec::new(),
        texts: texts(&train),
        x: train_x.clone(),
        y: train_y.clone(),
        w: row_weights.clone(),
    }];
    for (i, (_, _, rows)) in mixes.iter().enumerate() {
        let mut set = DataSet {
            mixed: vec![i],
            ..sets[0].clone()
        };
        set.texts.extend(texts(rows));
        set.x.extend(mix_x[i].iter().cloned());
        set.y.extend(rows.iter().map(|e| e.label));
        set.w.extend(std::iter::repeat_n(1.0, rows.len()));
        sets.push(set);
    }
    let dev_texts = texts(&dev);
    let dev_feats = [
        features(&dev_texts, &dev_x, false),
        features(&dev_texts, &dev_x, true),
    ];
    let mix_names: Vec<(String, String)> = mixes.iter().map(|m| (m.1.clone(), m.0.path.clone())).collect();
    let run = |set: &DataSet, cfg: &HeadConfig| -> Result<Candidate, StatusError> {
        let mut name = cfg.name();
        for &m in &set.mixed {
            name.push('+');
            name.push_str(&mix_names[m].0);
        }
        let pb = bar(cfg.max_epochs as u64, &format!("training {name}"));
        let x = features(&set.texts, &set.x, cfg.cues);
        let dx = &dev_feats[usize::from(cfg.cues)];
        let t = train_head_weighted(&x, &set.y, &set.w, dx, &dev_y, cfg, opts.seed, &pb)?;
        pb.finish_and_clear();
        let pred: Vec<Label> = t.dev_logits.iter().map(|l| prediction(l, 1.0).label).collect();
        let m = Metrics::compute(&dev_y, &pred);
        let r = VariantResult {
            name: name.clone(),
            head: cfg.name(),
            mixed_in: set.mixed.iter().map(|&i| mix_names[i].1.clone()).collect(),
            best_epoch: t.best_epoch,
            dev_loss: t.dev_loss,
            dev_macro_f1: m.macro_f1,
            dev_accuracy: m.accuracy,
            dev_closed_precision: m.label(Label::Closed).precision,
            dev_closed_recall: m.label(Label::Closed).recall,
        };
        tracing::info!(
            variant = %name,
            best_epoch = t.best_epoch,
            epochs = t.epochs_run,
            dev_loss = format!("{:.4}", t.dev_loss),
            dev_macro_f1 = format!("{:.4}", m.macro_f1),
            closed_p = format!("{:.4}", r.dev_closed_precision),
            closed_r = format!("{:.4}", r.dev_closed_recall),
            "variant trained"
        );
        Ok((r, t, *cfg, set.mixed.clone()))
    };

    let (variants, (chosen, trained, cfg, mixed), temperature, selection) = match cv_folds {
        None => {
            // Every head on the written data; then each extra file added for the best of those
            // heads (greedy, to keep training time in check).
            let mut results: Vec<Candidate> = Vec::new();
            for cfg in &opts.variants {
                results.push(run(&sets[0], cfg)?);
            }
            let best_head = results[best_of(&results)].2;
            for set in &sets[1..] {
                results.push(run(set, &best_head)?);
            }
            let best = best_of(&results);
            let variants: Vec<VariantResult> = results.iter().map(|r| r.0.clone()).collect();
            let winner = results.swap_remove(best);
            let temperature = fit_temperature(&winner.1.dev_logits, &dev_y);
            (variants, winner, temperature, json!({"method": "dev file"}))
        }
        Some(k) => {
            // Every head cross-validated; the winner trained once on every row for its median
            // best epoch, its temperature fitted on its out-of-fold logits.
            let set = &sets[0];
            let mut cvs = Vec::new();
            let mut frozen_cvs = Vec::new();
            for cfg in &opts.variants {
                let pb = bar((cfg.max_epochs * k) as u64, &format!("cv {}", cfg.name()));
                // Features per fold (layers tuned without the fold), or one set shared by all.
                let cv = |feats: &[Vec<Vec<f32>>]| {
                    super::cv::cross_validate(
                        |f| feats[f.min(feats.len() - 1)].as_slice(),
                        &set.y,
                        &set.w,
                        &folds,
                        k,
                        cfg,
                        opts.seed,
                        &pb,
                    )
                };
                let r = match &fold_x {
                    None => cv(&[features(&set.texts, &set.x, cfg.cues)])?,
                    Some(fx) => cv(&fx
                        .iter()
                        .map(|x| {
                            if x.is_empty() {
                                Vec::new()
                            } else {
                                features(&set.texts, x, cfg.cues)
                            }
                        })
                        .collect::<Vec<_>>())?,
                };
                if let Some(fx) = &frozen_train_x {
                    let rf = cv(&[features(&set.texts, fx, cfg.cues)])?;
                    if rf.rows != r.rows {
                        return Err(StatusError::Other(
                            "frozen and tuned cross-validation held out different rows".into(),
                        ));
                    }
                    frozen_cvs.push(rf);
                }
                pb.finish_and_clear();
                tracing::info!(
                    variant = %cfg.name(),
                    epochs = ?r.best_epochs,
                    cv_loss = format!("{:.4}", r.loss),
                    cv_macro_f1 = format!("{:.4}", r.metrics.macro_f1),
                    closed_p = format!("{:.4}", r.metrics.label(Label::Closed).precision),
                    closed_r = format!("{:.4}", r.metrics.label(Label::Closed).recall),
                    "variant cross-validated"
                );
                cvs.push(r);
            }
            // Out-of-fold scores per training file (`out_of_fold_by_file`).
            let by_file_of = |rows: &[usize], logits: &[[f32; 2]]| {
                out_of_fold_by_file(&opts.data, &file_of, &set.y, rows, logits)
            };
            let by_file = |r: &super::cv::CvResult| by_file_of(&r.rows, &r.logits);
            // Frozen heads and the frozen+tuned ensemble (mean logits), on the same held-out rows.
            let frozen_comparison: serde_json::Value = if frozen_cvs.is_empty() {
                serde_json::Value::Null
            } else {
                let mut out = serde_json::Map::new();
                for ((cfg, r), rf) in opts.variants.iter().zip(&cvs).zip(&frozen_cvs) {
                    let mean: Vec<[f32; 2]> = r
                        .logits
                        .iter()
                        .zip(&rf.logits)
                        .map(|(a, b)| [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0])
                        .collect();
                    let gold: Vec<Label> = r.rows.iter().map(|&i| set.y[i]).collect();
                    let pred: Vec<Label> = mean.iter().map(|l| prediction(l, 1.0).label).collect();
                    let m = Metrics::compute(&gold, &pred);
                    let v = json!({
                        "frozen": {"out_of_fold": rf.metrics, "out_of_fold_by_file": by_file(rf)},
                        "mean_of_frozen_and_tuned_logits": {
                            "out_of_fold": m,
                            "out_of_fold_by_file": by_file_of(&r.rows, &mean),
                        },
                    });
                    tracing::info!(variant = %cfg.name(), comparison = %v, "frozen and frozen+tuned, out of fold");
                    out.insert(cfg.name(), v);
                }
                serde_json::Value::Object(out)
            };
            let cv_by_file: serde_json::Map<String, serde_json::Value> = opts
                .variants
                .iter()
                .zip(&cvs)
                .map(|(cfg, r)| {
                    let v = by_file(r);
                    tracing::info!(variant = %cfg.name(), out_of_fold_by_file = %v, "cross-validation per file");
                    (cfg.name(), v)
                })
                .collect();
            let variants: Vec<VariantResult> = opts
                .variants
                .iter()
                .zip(&cvs)
                .map(|(cfg, r)| VariantResult {
                    name: cfg.name(),
                    head: cfg.name(),
                    mixed_in: Vec::new(),
                    best_epoch: r.epochs(),
                    dev_loss: r.loss,
                    dev_macro_f1: r.metrics.macro_f1,
                    dev_accuracy: r.metrics.accuracy,
                    dev_closed_precision: r.metrics.label(Label::Closed).precision,
                    dev_closed_recall: r.metrics.label(Label::Closed).recall,
                })
                .collect();
            let mut best = 0;
            for (i, v) in variants.iter().enumerate() {
                let b = &variants[best];
                if (v.dev_macro_f1, v.dev_closed_precision) > (b.dev_macro_f1, b.dev_closed_precision) {
                    best = i;
                }
            }
            let r = &cvs[best];
            let final_cfg = HeadConfig {
                max_epochs: r.epochs(),
                early_stopping: false,
                ..opts.variants[best]
            };
            let winner = if opts.cv_ensemble {
                let heads = if fold_x.is_some() {
                    // The fold heads read layers tuned without their fold; the final model has
                    // one set of tuned layers (tuned on every row), so each fold head is trained
                    // again over those: the same kept rows, the fold's best epoch count.
                    let x = features(&set.texts, &set.x, final_cfg.cues);
                    let used: Vec<usize> = (0..k).filter(|f| folds.contains(&Some(*f))).collect();
                    let mut heads = Vec::with_capacity(used.len());
                    for (&f, &epochs) in used.iter().zip(&r.best_epochs) {
                        let (held, kept) = super::cv::split(&folds, f);
                        let c = HeadConfig {
                            max_epochs: epochs.max(1),
                            ..final_cfg
                        };
                        let pb = bar(c.max_epochs as u64, &format!("fold head {f}"));
                        let t = super::cv::fold_head(&x, &set.y, &set.w, (&held, &kept), &c, opts.seed, &pb)?;
                        pb.finish_and_clear();
                        heads.push(t.head);
                    }
                    heads
                } else {
                    r.heads.clone()
                };
                let head = super::head::average(&heads)?;
                let dx = super::head::to_tensor(&dev_feats[usize::from(final_cfg.cues)])?;
                let dev_logits: Vec<[f32; 2]> = head
                    .logits(&dx, None)?
                    .to_vec2::<f32>()?
                    .into_iter()
                    .map(|l| [l[0], l[1]])
                    .collect();
                let pred: Vec<Label> = dev_logits.iter().map(|l| prediction(l, 1.0).label).collect();
                let m = Metrics::compute(&dev_y, &pred);
                let name = format!("{} (mean of {} fold heads)", final_cfg.name(), heads.len());
                let v = VariantResult {
                    name: name.clone(),
                    head: final_cfg.name(),
                    mixed_in: Vec::new(),
                    best_epoch: r.epochs(),
                    dev_loss: dev_logits
                        .iter()
                        .zip(&dev_y)
                        .map(|(l, g)| -f64::from(prediction(l, 1.0).score(*g)).max(1e-12).ln())
                        .sum::<f64>()
                        / dev_y.len().max(1) as f64,
                    dev_macro_f1: m.macro_f1,
                    dev_accuracy: m.accuracy,
                    dev_closed_precision: m.label(Label::Closed).precision,
                    dev_closed_recall: m.label(Label::Closed).recall,
                };
                let t = super::fit::Trained {
                    head,
                    best_epoch: r.epochs(),
                    epochs_run: 0,
                    dev_loss: v.dev_loss,
                    dev_logits,
                };
                (v, t, final_cfg, Vec::new())
            } else {
                run(set, &final_cfg)?
            };
            let gold: Vec<Label> = r.rows.iter().map(|&i| set.y[i]).collect();
            let temperature = fit_temperature(&r.logits, &gold);
            let (winner, threshold) = match opts.closed_min_precision {
                None => (winner, serde_json::Value::Null),
                Some(target) => {
                    let margins: Vec<f32> = r.logits.iter().map(|l| l[1] - l[0]).collect();
                    let shift = super::fit::closed_margin_shift(&margins, &gold, target);
                    let (v, mut t, c, mixed) = winner;
                    t.head = super::fit::shift_closed(&t.head, shift)?;
                    for l in &mut t.dev_logits {
                        l[1] -= shift;
                    }
                    let pred: Vec<Label> = margins
                        .iter()
                        .map(|&m| {
                            if m > shift {
                                Label::Closed
                            } else {
                                Label::InProgress
                            }
                        })
                        .collect();
                    let after = Metrics::compute(&gold, &pred);
                    tracing::info!(
                        shift,
                        cv_macro_f1 = format!("{:.4}", after.macro_f1),
                        closed_p = format!("{:.4}", after.label(Label::Closed).precision),
                        closed_r = format!("{:.4}", after.label(Label::Closed).recall),
                        "closed threshold from the out-of-fold logits"
                    );
                    (
                        (v, t, c, mixed),
                        json!({
                            "target_closed_precision": target,
                            "margin_shift": shift,
                            "out_of_fold_after": after,
                        }),
                    )
                }
            };
            let selection = json!({
                "method": format!("{k}-fold cross-validation by repository over the training rows with a url"),
                "folds": k,
                "rows_in_folds": r.rows.len(),
                "best_epochs": r.best_epochs,
                "final_epochs": r.epochs(),
                "out_of_fold": r.metrics,
                "out_of_fold_by_file": cv_by_file,
                "finetune_in_folds": fold_x.is_some(),
                "frozen_comparison": frozen_comparison,
                "temperature_from": "out-of-fold logits",
                "closed_threshold": threshold,
                "final_head": if opts.cv_ensemble {
                    "mean of the fold heads (each trained without its fold, early-stopped on it)"
                } else {
                    "retrained on every row for final_epochs"
                },
            });
            (variants, winner, temperature, selection)
        }
    };
    let dev_predictions: Vec<_> = trained
        .dev_logits
        .iter()
        .map(|l| prediction(l, temperature))
        .collect();
    let dev_metrics = Metrics::compute(
        &dev_y,
        &dev_predictions.iter().map(|p| p.label).collect::<Vec<_>>(),
    );
    let curve = pr_curve(
        &dev_y,
        &dev_predictions
            .iter()
            .map(|p| p.score(Label::Closed))
            .collect::<Vec<_>>(),
    );

    // Every --eval file, scored with the final model (tuned layers, head, temperature).
    let mut evaluations = Vec::new();
    for p in &opts.eval {
        let rows = load_jsonl(p)?;
        let t = texts(&rows);
        let x = embed_set(&t, &short_name(p))?;
        let preds = trained.head.predict(&t, &x, temperature)?;
        evaluations.push(evaluation(p, &rows, &preds)?);
    }
    let (mixed_in, tried_not_used): (Vec<_>, Vec<_>) = mixes
        .iter()
        .enumerate()
        .map(|(i, m)| (mixed.contains(&i), m.0.clone()))
        .partition(|(used, _)| *used);
    let mut hp = cfg.to_json();
    let kept = &sets[mixed.first().map_or(0, |i| i + 1)];
    hp["class_weights"] = json!(weighted_class_weights(&kept.y, &kept.w));
    hp["balance_sources"] = json!(opts.balance_sources);
    if opts.balance_sources {
        let mut per_source: std::collections::BTreeMap<&str, (usize, f32)> = Default::default();
        for (g, w) in groups.iter().zip(&row_weights) {
            let n = per_source.get(g.as_str()).map_or(0, |e| e.0);
            per_source.insert(g.as_str(), (n + 1, *w));
        }
        hp["source_weights"] = json!(per_source
            .iter()
            .map(|(g, (n, w))| (g.to_string(), json!({"rows": n, "weight": w})))
            .collect::<serde_json::Map<_, _>>());
    }
    hp["mix_max"] = json!(opts.mix_max);
    hp["selection"] = selection;
    if !opts.source_weights.is_empty() {
        hp["source_weight_factors"] = source_weight_factors(opts);
    }
    hp["temperature"] = json!(temperature);
    let metadata = Metadata {
        name: MODEL_NAME.into(),
        version: String::new(),
        labels: Label::ALL.to_vec(),
        weights_sha256: String::new(),
        embedder: embedder_info(),
        head: cfg.name(),
        temperature,
        seed: opts.seed,
        hyper_parameters: hp,
        data: DataInfo {
            train: train_files,
            mixed_in: mixed_in.into_iter().map(|x| x.1).collect(),
            tried_not_used: tried_not_used.into_iter().map(|x| x.1).collect(),
            dev: dev_file,
        },
        dev_metrics,
        dev_closed_average_precision: average_precision(&curve),
        keyword_baseline_dev_metrics: baseline,
        variants,
        chosen: chosen.name,
        trained_at: chrono::Utc::now().to_rfc3339(),
        command: opts.command.clone(),
        notes: {
            let mut notes = vec![if cv_folds.is_some() {
                "Cross-validation over the real training rows (by repository) chose the variant, its \
                 epoch count and the temperature; the dev file was only scored, so its numbers are \
                 an estimate on unseen repositories. `variants` holds the cross-validation numbers."
                    .to_string()
            } else {
                "The dev file chose the early-stopping epoch, the variant and the temperature, so dev \
                 numbers are somewhat optimistic; it is not a test set."
                    .to_string()
            }];
            if tuned.is_some() && cv_folds.is_some() {
                notes.push(
                    "The top encoder layers were fine-tuned for a fixed number of epochs, once per \
                     fold without that fold (for the out-of-fold scores) and once on every row \
                     (these layers); every head reads the embedding through them, so inference runs \
                     them a second time from the shared forward's hidden states (encoder.safetensors)."
                        .into(),
                );
            } else if tuned.is_some() {
                notes.push(
                    "The top encoder layers were fine-tuned first (the dev file also chose their \
                     epoch); every head reads the embedding through them, so inference runs them \
                     a second time from the shared forward's hidden states (encoder.safetensors)."
                        .into(),
                );
            }
            if let Some((cfg, t, _)) = tuned.as_ref().filter(|(c, ..)| !c.objective.is_cross_entropy()) {
                notes.push(format!(
                    "SetFit-style: the tuned layers were trained alone on {} pairs of replies per \
                     reply and epoch (cosine of the two tuned embeddings pushed to 1 for the same \
                     label and to 0 otherwise; pair loss per epoch {:?}), then the heads were fitted \
                     on the tuned embedding; the last epoch is kept, no file chose it.",
                    cfg.pairs_per_reply,
                    t.train_loss.iter().map(|l| format!("{l:.4}")).collect::<Vec<_>>()
                ));
            }
            if !opts.features.is_last() {
                notes.push(format!(
                    "Experiment: every head reads features `{}` (the shared embedding, then an \
                     intermediate layer's mean pool and/or the last layer's max pool) and the cues; \
                     inference loads only `last`, so this model is for comparison, not for use.",
                    opts.features.name()
                ));
            }
            notes
        },
        evaluations,
        finetuned: tuned.as_ref().map(|(cfg, t, _)| super::FineTuneInfo {
            from_layer: t.from_layer,
            encoder_sha256: String::new(),
            config: *cfg,
            best_epoch: t.best_epoch,
            dev_macro_f1_per_epoch: t.dev_macro_f1.clone(),
        }),
    };
    Ok(TrainOutcome {
        model: StatusModel {
            head: super::Scorer::Head(trained.head),
            temperature,
            metadata,
            encoder: tuned.map(|(_, t, _)| t.tensors),
        },
        dev,
        dev_predictions,
        baseline_predictions,
    })
}

/// What [`train_ngrams`] trains and scores on (loaded by [`train_status`]).
struct NgramData<'a> {
    train: &'a [Example],
    train_files: Vec<DataFile>,
    file_of: &'a [usize],
    row_weights: &'a [f32],
    folds: &'a [Option<usize>],
    dev: Vec<Example>,
    dev_file: DataFile,
}

/// `triage train status --heads ngrams`: the lexical head ([`super::ngrams`]). With
/// `--cv-folds K` it is fitted K times without one fold of repositories (out-of-fold scores, per
/// file too, and the temperature from the out-of-fold logits), then once on every row; the dev
/// and `--eval` files are only scored. Nothing is chosen on dev.
fn train_ngrams(
    opts: &TrainOptions,
    cfg: &super::ngrams::NgramConfig,
    d: NgramData,
) -> Result<TrainOutcome, StatusError> {
    use super::ngrams::{NgramModel, HEAD_NAME};
    let texts: Vec<&str> = d.train.iter().map(|e| e.text.as_str()).collect();
    let y: Vec<Label> = d.train.iter().map(|e| e.label).collect();
    // Row loss weights: the source balance times the class balance of the rows fitted on, as
    // for the heads over the embedding.
    let fit_on = |idx: &[usize]| -> NgramModel {
        let yy: Vec<Label> = idx.iter().map(|&i| y[i]).collect();
        let ww: Vec<f32> = idx.iter().map(|&i| d.row_weights[i]).collect();
        let cw = weighted_class_weights(&yy, &ww);
        let s: Vec<f32> = idx.iter().map(|&i| d.row_weights[i] * cw[y[i].index()]).collect();
        let t: Vec<&str> = idx.iter().map(|&i| texts[i]).collect();
        let c: Vec<bool> = yy.iter().map(|l| *l == Label::Closed).collect();
        NgramModel::fit(&t, &c, &s, cfg)
    };
    let nll = |logits: &[[f32; 2]], gold: &[Label]| -> f64 {
        logits
            .iter()
            .zip(gold)
            .map(|(l, g)| -f64::from(prediction(l, 1.0).score(*g).max(1e-7)).ln())
            .sum::<f64>()
            / logits.len().max(1) as f64
    };
    let (temperature, selection, variant) = match (opts.cv_folds > 1).then_some(opts.cv_folds) {
        Some(k) => {
            let pb = bar(k as u64, "cross-validating ngrams");
            let (mut rows, mut logits) = (Vec::new(), Vec::new());
            for f in 0..k {
                let held: Vec<usize> = (0..texts.len()).filter(|&i| d.folds[i] == Some(f)).collect();
                if !held.is_empty() {
                    let kept: Vec<usize> = (0..texts.len()).filter(|&i| d.folds[i] != Some(f)).collect();
                    let m = fit_on(&kept);
                    for &i in &held {
                        rows.push(i);
                        logits.push(m.logits(texts[i]));
                    }
                }
                pb.inc(1);
            }
            pb.finish_and_clear();
            if rows.is_empty() {
                return Err(StatusError::Other(
                    "--cv-folds needs training rows with a GitHub `url`; none has one".into(),
                ));
            }
            let gold: Vec<Label> = rows.iter().map(|&i| y[i]).collect();
            let pred: Vec<Label> = logits.iter().map(|l| prediction(l, 1.0).label).collect();
            let metrics = Metrics::compute(&gold, &pred);
            let by_file = out_of_fold_by_file(&opts.data, d.file_of, &y, &rows, &logits);
            tracing::info!(
                macro_f1 = format!("{:.4}", metrics.macro_f1),
                closed_p = format!("{:.4}", metrics.label(Label::Closed).precision),
                closed_r = format!("{:.4}", metrics.label(Label::Closed).recall),
                "ngrams cross-validated"
            );
            let temperature = fit_temperature(&logits, &gold);
            let variant = VariantResult {
                name: HEAD_NAME.into(),
                head: HEAD_NAME.into(),
                mixed_in: Vec::new(),
                best_epoch: 0,
                dev_loss: nll(&logits, &gold),
                dev_macro_f1: metrics.macro_f1,
                dev_accuracy: metrics.accuracy,
                dev_closed_precision: metrics.label(Label::Closed).precision,
                dev_closed_recall: metrics.label(Label::Closed).recall,
            };
            let selection = json!({
                "method": format!("{k}-fold cross-validation by repository over the training rows with a url"),
                "folds": k,
                "rows_in_folds": rows.len(),
                "out_of_fold": metrics,
                "out_of_fold_by_file": {HEAD_NAME: by_file},
                "temperature_from": "out-of-fold logits",
                "final_head": "one model fitted on every row",
            });
            (temperature, selection, Some(variant))
        }
        None => (
            1.0,
            json!({"method": "none: one model fitted on every row; the dev file is only scored"}),
            None,
        ),
    };
    let all: Vec<usize> = (0..texts.len()).collect();
    let mut model = fit_on(&all);
    model.temperature = temperature;
    let (words, chars) = model.vocabulary();
    tracing::info!(words, chars, "ngrams fitted on every row");
    let dev_texts: Vec<&str> = d.dev.iter().map(|e| e.text.as_str()).collect();
    let dev_y: Vec<Label> = d.dev.iter().map(|e| e.label).collect();
    let dev_predictions = model.predict(&dev_texts);
    let dev_pred: Vec<Label> = dev_predictions.iter().map(|p| p.label).collect();
    let dev_metrics = Metrics::compute(&dev_y, &dev_pred);
    let dev_p: Vec<f32> = dev_predictions.iter().map(|p| p.score(Label::Closed)).collect();
    let baseline_predictions: Vec<Label> = d.dev.iter().map(|e| keywords::predict(&e.text)).collect();
    let baseline = Metrics::compute(&dev_y, &baseline_predictions);
    let variant = variant.unwrap_or_else(|| VariantResult {
        name: HEAD_NAME.into(),
        head: HEAD_NAME.into(),
        mixed_in: Vec::new(),
        best_epoch: 0,
        dev_loss: nll(
            &dev_texts.iter().map(|t| model.logits(t)).collect::<Vec<_>>(),
            &dev_y,
        ),
        dev_macro_f1: dev_metrics.macro_f1,
        dev_accuracy: dev_metrics.accuracy,
        dev_closed_precision: dev_metrics.label(Label::Closed).precision,
        dev_closed_recall: dev_metrics.label(Label::Closed).recall,
    });
    let mut evaluations = Vec::new();
    for p in &opts.eval {
        let rows = load_jsonl(p)?;
        let t: Vec<&str> = rows.iter().map(|e| e.text.as_str()).collect();
        let preds = model.predict(&t);
        evaluations.push(evaluation(p, &rows, &preds)?);
    }
    let mut hp = json!({
        "head": HEAD_NAME,
        "ngrams": cfg,
        "features": "TF-IDF (sublinear tf, smoothed idf) over hashed word 1-2-grams and character 2-5-grams within padded tokens, each block unit length",
        "buckets_per_block": super::ngrams::BUCKETS,
        "vocabulary": {"word_buckets": words, "char_buckets": chars},
        "loss": "L2-regularised logistic regression, source- and class-weighted, L-BFGS from zero",
        "balance_sources": opts.balance_sources,
        "selection": selection,
        "temperature": temperature,
    });
    if !opts.source_weights.is_empty() {
        hp["source_weight_factors"] = source_weight_factors(opts);
    }
    let metadata = Metadata {
        name: MODEL_NAME.into(),
        version: String::new(),
        labels: Label::ALL.to_vec(),
        weights_sha256: String::new(),
        embedder: embedder_info(),
        head: HEAD_NAME.into(),
        temperature,
        seed: opts.seed,
        hyper_parameters: hp,
        data: DataInfo {
            train: d.train_files,
            mixed_in: Vec::new(),
            tried_not_used: Vec::new(),
            dev: d.dev_file,
        },
        dev_metrics,
        dev_closed_average_precision: average_precision(&pr_curve(&dev_y, &dev_p)),
        keyword_baseline_dev_metrics: baseline,
        chosen: variant.name.clone(),
        variants: vec![variant],
        trained_at: chrono::Utc::now().to_rfc3339(),
        command: opts.command.clone(),
        notes: vec![
            "Lexical head: reads the reply's words and character n-grams, not the sentence \
             embedding, so classifying needs no encoder forward. Training is deterministic (L-BFGS \
             from zero; no seed is used)."
                .into(),
            if opts.cv_folds > 1 {
                "Cross-validation over the real training rows (by repository) gave the out-of-fold \
                 scores and the temperature; the dev file was only scored."
                    .into()
            } else {
                "No cross-validation: the temperature is 1 and the dev file was only scored.".into()
            },
        ],
        evaluations,
        finetuned: None,
    };
    Ok(TrainOutcome {
        model: StatusModel {
            head: super::Scorer::Ngrams(model),
            temperature,
            metadata,
            encoder: None,
        },
        dev: d.dev,
        dev_predictions,
        baseline_predictions,
    })
}

#[cfg(test)]
mod tests {
    use super::super::head::HeadKind;
    use super::*;
    use rand::Rng;

    #[test]
    fn features_parse_and_name_round_trip() {
        for s in ["last", "last+layer4", "last+max", "last+layer3+max"] {
            assert_eq!(Features::parse(s).unwrap().name(), s);
        }
        assert!(Features::parse("last").unwrap().is_last());
        assert_eq!(
            Features::parse("last+layer4+max").unwrap(),
            Features {
                layer: Some(4),
                max: true
            }
        );
        for bad in [
            "",
            "layer4",
            "last+layer0",
            "last+layerx",
            "last+max+max",
            "last+max+layer4",
            "last+min",
        ] {
            assert!(Features::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn class_weights_balance_the_classes() {
        let y = [
            Label::Closed,
            Label::InProgress,
            Label::InProgress,
            Label::InProgress,
        ];
        let w = class_weights(&y);
        assert_eq!(w, [4.0 / 6.0, 2.0]);
    }

    #[test]
    fn balanced_weights_give_every_group_the_same_total() {
        let g: Vec<String> = ["a", "a", "a", "b"].iter().map(|s| s.to_string()).collect();
        let w = balanced_weights(&g);
        assert_eq!(w, [4.0 / 6.0, 4.0 / 6.0, 4.0 / 6.0, 2.0]);
        let total: f32 = w.iter().sum();
        assert!((total - 4.0).abs() < 1e-6);
        // Weighted class weights: one closed row weighing 3, three in_progress rows weighing 1.
        let y = [
            Label::Closed,
            Label::InProgress,
            Label::InProgress,
            Label::InProgress,
        ];
        assert_eq!(weighted_class_weights(&y, &[3.0, 1.0, 1.0, 1.0]), [1.0, 1.0]);
        assert_eq!(weighted_class_weights(&y, &[1.0; 4]), class_weights(&y));
    }

    #[test]
    fn temperature_sharpens_underconfident_logits() {
        // Always right with small margins: the NLL-optimal temperature is below 1.
        let logits = vec![[0.2, -0.2], [-0.2, 0.2], [0.3, -0.1]];
        let y = [Label::InProgress, Label::Closed, Label::InProgress];
        assert!(fit_temperature(&logits, &y) < 1.0);
    }

    fn toy(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<Label>) {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let label = Label::ALL[i % 2];
                // Class signal in the first 32 dimensions, noise everywhere.
                let v: Vec<f32> = (0..crate::embed::DIM)
                    .map(|d| {
                        let signal = if d < 32 && i % 2 == 1 { 1.0 } else { 0.0 };
                        rng.random_range(-1.0..1.0f32) + signal
                    })
                    .collect();
                (v, label)
            })
            .unzip()
    }

    #[test]
    fn the_closed_shift_is_the_smallest_that_reaches_the_precision() {
        use super::super::fit::{closed_margin_shift, shift_closed};
        use super::super::head::{Head, HeadKind};
        use candle_core::{DType, Device, Tensor};
        use Label::{Closed as C, InProgress as I};
        let margins = [3.0, 2.0, 1.0, 0.5, -1.0];
        let gold = [C, C, I, C, I];
        // Above 0: 3 of 4 Closed are right (0.75); above 0.5: 2 of 3; above 1.0: 2 of 2.
        assert_eq!(closed_margin_shift(&margins, &gold, 0.7), 0.0);
        assert_eq!(closed_margin_shift(&margins, &gold, 0.8), 1.0);
        assert_eq!(closed_margin_shift(&margins, &gold, 1.0), 1.0);
        let head = Head {
            kind: HeadKind::Logistic,
            cues: false,
            layers: vec![(
                Tensor::zeros((crate::embed::DIM, 2), DType::F32, &Device::Cpu).unwrap(),
                Tensor::new(&[0.0f32, 0.5], &Device::Cpu).unwrap(),
            )],
        };
        let shifted = shift_closed(&head, 1.0).unwrap();
        assert_eq!(shifted.layers[0].1.to_vec1::<f32>().unwrap(), vec![0.0, -0.5]);
    }

    #[test]
    fn training_is_deterministic_and_learns_a_separable_toy_problem() {
        let (x, y) = toy(64, 1);
        let (dx, dy) = toy(32, 2);
        let cfg = HeadConfig {
            kind: HeadKind::Mlp { hidden: 16 },
            cues: false,
            max_epochs: 40,
            patience: 40,
            ..default_variants()[1]
        };
        let a = train_head(&x, &y, &dx, &dy, &cfg, 7, &ProgressBar::hidden()).unwrap();
        let b = train_head(&x, &y, &dx, &dy, &cfg, 7, &ProgressBar::hidden()).unwrap();
        for ((wa, ba), (wb, bb)) in a.head.layers.iter().zip(&b.head.layers) {
            assert_eq!(wa.to_vec2::<f32>().unwrap(), wb.to_vec2::<f32>().unwrap());
            assert_eq!(ba.to_vec1::<f32>().unwrap(), bb.to_vec1::<f32>().unwrap());
        }
        let c = train_head(&x, &y, &dx, &dy, &cfg, 8, &ProgressBar::hidden()).unwrap();
        assert_ne!(
            a.head.layers[0].0.to_vec2::<f32>().unwrap(),
            c.head.layers[0].0.to_vec2::<f32>().unwrap()
        );
        let pred: Vec<Label> = a.dev_logits.iter().map(|l| prediction(l, 1.0).label).collect();
        assert!(Metrics::compute(&dy, &pred).accuracy > 0.8);
    }
}
