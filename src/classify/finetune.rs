//! Fine-tuning the encoder's top layers together with a linear classifier (the status model's
//! "option b"): the replies' hidden states entering layer `from` are computed once with the
//! frozen lower layers, then a differentiable copy of layers `from..` (initialised from the
//! pre-trained weights) and a linear head over the mean-pooled, L2-normalised output are trained
//! with cross-entropy, each with its own AdamW (a small learning rate for the encoder, a larger one
//! for the head). The epoch with the best dev macro-F1 is kept, or, without a dev set
//! ([`finetune_states`], as cross-validation tunes each fold), the last one.
//!
//! The result is the tuned layers' tensors under their Hugging Face names, which the inference
//! encoder loads as a [`crate::embed::Tail`]: at serving time the shared forward branches at layer
//! `from`, so a team reply costs the replaced layers once more, not a second forward.
//!
//! The loss is cross-entropy with optional label smoothing and per-reply weights (so that a small
//! source, such as real replies among many hand-written ones, can count as much as a large one).
//!
//! With [`Objective::SetFit`] the tuned layers are trained without a head, SetFit-style: pairs of
//! training replies ([`sample_pairs`]) are embedded through the tuned layers and the cosine of
//! the two mean-pooled, unit-length outputs is pushed to 1 for a same-label pair and to 0 for a
//! different-label pair (squared error: SetFit's `CosineSimilarityLoss`). The classifier heads
//! are then fitted on the tuned embeddings as on the frozen ones (stage 2, in `train`).
//!
//! Deterministic for a seed: the head is initialised, batches are shuffled, pairs are sampled and
//! dropout masks are drawn from one seeded `StdRng`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use indicatif::ProgressBar;
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::metrics::Metrics;
use super::{Label, StatusError};
use crate::embed::{plan_batches, BatchLimits, BertConfig, Embedder};

/// How to fine-tune.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FineTuneConfig {
    /// Top encoder layers trained (the rest stay frozen).
    pub layers: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr_encoder: f64,
    pub lr_head: f64,
    pub weight_decay: f64,
    /// The unit-length embedding is multiplied by this before the head, so that logits can grow.
    pub scale: f64,
    /// Dropout on attention probabilities and on each sub-layer's output while training (BERT's
    /// own 0.1): without it the tuned layers memorise phrases of the training replies.
    pub dropout: f32,
    /// Label smoothing ε: the target puts `1 - ε` on the gold label and `ε` spread over both, so
    /// the tuned layers are not pushed towards certainty on the (partly weak) labels.
    #[serde(default)]
    pub label_smoothing: f64,
    /// What the tuned layers are trained for: cross-entropy with a linear head (the default), or
    /// SetFit-style contrastive pairs.
    #[serde(default, skip_serializing_if = "Objective::is_cross_entropy")]
    pub objective: Objective,
    /// [`Objective::SetFit`]: pairs sampled per training reply and epoch (half same-label, half
    /// different-label).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pairs_per_reply: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The fine-tuning loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Cross-entropy of a linear head trained together with the layers.
    #[default]
    CrossEntropy,
    /// SetFit's cosine-similarity loss on sampled pairs of replies; no head.
    #[serde(rename = "setfit")]
    SetFit,
}

impl Objective {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "cross-entropy" => Ok(Self::CrossEntropy),
            "setfit" => Ok(Self::SetFit),
            _ => Err(format!("unknown objective {s:?}; known: cross-entropy, setfit")),
        }
    }

    pub fn is_cross_entropy(&self) -> bool {
        *self == Self::CrossEntropy
    }
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        Self {
            layers: 2,
            epochs: 6,
            batch_size: 16,
            lr_encoder: 3e-5,
            lr_head: 1e-3,
            weight_decay: 0.01,
            scale: 20.0,
            dropout: 0.1,
            label_smoothing: 0.0,
            objective: Objective::CrossEntropy,
            pairs_per_reply: 0,
        }
    }
}

/// What fine-tuning produced.
pub struct FineTuned {
    /// The first tuned layer.
    pub from_layer: usize,
    /// The tuned layers' tensors, Hugging Face names (`encoder.layer.{i}.*`) and layout.
    pub tensors: HashMap<String, Tensor>,
    pub best_epoch: usize,
    /// Dev macro-F1 of the jointly trained linear head after each epoch (empty for SetFit).
    pub dev_macro_f1: Vec<f64>,
    /// The mean training loss of each epoch.
    pub train_loss: Vec<f64>,
}

/// The tensors of one encoder layer, as named in the checkpoint (after `encoder.layer.{i}.`).
const LAYER_TENSORS: [&str; 16] = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
];

/// Inverted dropout with a mask drawn from `rng` (so training stays deterministic); identity when
/// `rng` is `None` (evaluation) or `p` is 0.
fn dropout(x: &Tensor, p: f32, rng: &mut Option<&mut StdRng>) -> candle_core::Result<Tensor> {
    let Some(rng) = rng.as_deref_mut().filter(|_| p > 0.0) else {
        return Ok(x.clone());
    };
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    x * Tensor::from_vec(mask, x.shape(), x.device())?
}

/// A differentiable encoder layer (training layout: `[out, in]` weights, as in the checkpoint).
struct TrainLayer {
    vars: Vec<Var>,
}

impl TrainLayer {
    fn get(&self, name: &str) -> &Tensor {
        let i = LAYER_TENSORS
            .iter()
            .position(|n| *n == name)
            .expect("known tensor");
        self.vars[i].as_tensor()
    }

    fn linear(&self, x: &Tensor, name: &str) -> candle_core::Result<Tensor> {
        x.matmul(&self.get(&format!("{name}.weight")).t()?)?
            .broadcast_add(self.get(&format!("{name}.bias")))
    }

    fn norm(&self, x: &Tensor, name: &str, eps: f32) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm_slow(
            x,
            self.get(&format!("{name}.weight")),
            self.get(&format!("{name}.bias")),
            eps,
        )
    }

    /// `x`: `[n*l, h]` rows of `n` right-padded sequences; `mask`: `[n, 1, 1, l]`, 0 for real keys
    /// and a large negative number for padding.
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        (n, l): (usize, usize),
        cfg: &BertConfig,
        p: f32,
        rng: &mut Option<&mut StdRng>,
    ) -> candle_core::Result<Tensor> {
        let h = cfg.hidden_size;
        let heads = cfg.num_attention_heads;
        let hd = h / heads;
        let split = |t: Tensor| t.reshape((n, l, heads, hd))?.transpose(1, 2)?.contiguous();
        let q = split(self.linear(x, "attention.self.query")?)?;
        let k = split(self.linear(x, "attention.self.key")?)?;
        let v = split(self.linear(x, "attention.self.value")?)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(mask)?;
        let probs = dropout(&candle_nn::ops::softmax(&scores, D::Minus1)?, p, rng)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((n * l, h))?;
        let eps = cfg.layer_norm_eps as f32;
        let attn_out = dropout(&self.linear(&ctx, "attention.output.dense")?, p, rng)?;
        let attn = self.norm(&(attn_out + x)?, "attention.output.LayerNorm", eps)?;
        let inter = self.linear(&attn, "intermediate.dense")?.gelu_erf()?;
        let out = dropout(&self.linear(&inter, "output.dense")?, p, rng)?;
        self.norm(&(out + &attn)?, "output.LayerNorm", eps)
    }
}

/// Pre-trained tensors of layers `from..` from the model's safetensors file (with or without the
/// `bert.` prefix of Hugging Face BertModel checkpoints).
fn pretrained_layers(weights: &Path, from: usize, layers: usize) -> Result<Vec<Vec<Tensor>>, StatusError> {
    let all = candle_core::safetensors::load(weights, &Device::Cpu)?;
    // A whole BertModel checkpoint, or an earlier fine-tuning's `encoder.safetensors` (only the
    // tuned layers, same names): no prefix; a Hugging Face BertModel with heads: `bert.`.
    let own = format!("encoder.layer.{from}.attention.self.query.weight");
    let prefix = if all.contains_key("embeddings.word_embeddings.weight") || all.contains_key(&own) {
        ""
    } else {
        "bert."
    };
    (from..layers)
        .map(|i| {
            LAYER_TENSORS
                .iter()
                .map(|name| {
                    let key = format!("{prefix}encoder.layer.{i}.{name}");
                    all.get(&key)
                        .ok_or_else(|| StatusError::Other(format!("{}: no tensor {key}", weights.display())))?
                        .to_dtype(DType::F32)
                        .map_err(StatusError::from)
                })
                .collect()
        })
        .collect()
}

/// Right-pads `[len_i, h]` hidden states into `[n*l, h]` rows with their attention mask
/// `[n, 1, 1, l]` and pooling mask `[n, l, 1]`.
fn pad(states: &[&Tensor], h: usize) -> candle_core::Result<(Tensor, Tensor, Tensor, usize)> {
    let n = states.len();
    let l = states
        .iter()
        .map(|t| t.dim(0))
        .collect::<candle_core::Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(1);
    let mut rows = Vec::with_capacity(n);
    let mut keep = Vec::with_capacity(n * l);
    for t in states {
        let len = t.dim(0)?;
        rows.push(if len < l {
            Tensor::cat(&[*t, &Tensor::zeros((l - len, h), DType::F32, &Device::Cpu)?], 0)?
        } else {
            (*t).clone()
        });
        keep.extend(std::iter::repeat_n(1f32, len));
        keep.extend(std::iter::repeat_n(0f32, l - len));
    }
    let x = Tensor::cat(&rows, 0)?;
    let keep = Tensor::from_vec(keep, (n, l), &Device::Cpu)?;
    let attn_mask = ((keep.ones_like()? - &keep)? * -1e4)?.reshape((n, 1, 1, l))?;
    Ok((x, attn_mask, keep.reshape((n, l, 1))?, l))
}

struct Model<'a> {
    layers: Vec<TrainLayer>,
    head_w: Var,
    head_b: Var,
    cfg: &'a BertConfig,
    scale: f64,
    dropout: f32,
}

impl Model<'_> {
    /// The mean-pooled, L2-normalised output of the tuned layers (the tuned sentence embedding);
    /// with `rng`, in training mode (dropout).
    fn pooled(&self, states: &[&Tensor], mut rng: Option<&mut StdRng>) -> candle_core::Result<Tensor> {
        let h = self.cfg.hidden_size;
        let n = states.len();
        let (mut x, mask, keep, l) = pad(states, h)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask, (n, l), self.cfg, self.dropout, &mut rng)?;
        }
        let x = x.reshape((n, l, h))?;
        let mean = x.broadcast_mul(&keep)?.sum(1)?.broadcast_div(&keep.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        mean.broadcast_div(&norm)
    }

    /// Logits; with `rng`, in training mode (dropout).
    fn logits(&self, states: &[&Tensor], rng: Option<&mut StdRng>) -> candle_core::Result<Tensor> {
        let e = (self.pooled(states, rng)? * self.scale)?;
        e.matmul(&self.head_w.as_tensor().t()?)?
            .broadcast_add(self.head_b.as_tensor())
    }

    fn predict(&self, states: &[Tensor]) -> candle_core::Result<Vec<Label>> {
        let mut out = Vec::with_capacity(states.len());
        for chunk in states.chunks(64) {
            let refs: Vec<&Tensor> = chunk.iter().collect();
            let best = self.logits(&refs, None)?.argmax(1)?.to_vec1::<u32>()?;
            out.extend(best.into_iter().map(|i| Label::ALL[i as usize]));
        }
        Ok(out)
    }
}

/// Training batches of about `size` rows: the shuffled order cut into windows of `8 * size`
/// rows, each window sorted by length and cut into batches, the batches shuffled again. Similar
/// lengths share a batch, so little of a batch is padding (the cost of a step grows with its
/// longest reply), and the batches stay random. Every row is in exactly one batch.
pub fn length_bucketed_batches(lengths: &[usize], size: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let size = size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(rng);
    let mut batches = Vec::new();
    for window in order.chunks_mut(8 * size) {
        window.sort_by_key(|&i| lengths[i]);
        batches.extend(window.chunks(size).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

/// One contrastive pair: two training rows and whether they share a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    pub same: bool,
}

/// SetFit pairs for one epoch: `per_reply` pairs for each of `labels.len()` anchors. Anchors and
/// partners are drawn (with replacement) with probability proportional to the row's loss weight,
/// so with `--balance-sources` every source is drawn equally often, on both sides of a pair; the
/// pairs alternate same-label and different-label (half each, exactly, for an even count); a row
/// is never paired with itself. Deterministic for the state of `rng`.
pub fn sample_pairs(
    labels: &[Label],
    weights: &[f32],
    per_reply: usize,
    rng: &mut StdRng,
) -> Result<Vec<Pair>, StatusError> {
    let bad = |m: &str| StatusError::Other(format!("contrastive pairs: {m}"));
    if labels.len() != weights.len() {
        return Err(bad("labels and weights differ in length"));
    }
    let anchors = WeightedIndex::new(weights).map_err(|e| bad(&e.to_string()))?;
    // Per label: its rows and a weighted draw over them.
    let by_label = Label::ALL
        .iter()
        .map(|&l| {
            let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == l).collect();
            if rows.len() < 2 {
                return Err(bad(&format!("fewer than two {} rows", l.as_str())));
            }
            let draw = WeightedIndex::new(rows.iter().map(|&i| weights[i]))
                .map_err(|e| bad(&format!("{}: {e}", l.as_str())))?;
            Ok((rows, draw))
        })
        .collect::<Result<Vec<_>, StatusError>>()?;
    let mut pairs = Vec::with_capacity(labels.len() * per_reply);
    for k in 0..labels.len() * per_reply {
        let a = anchors.sample(rng);
        let same = k % 2 == 0;
        let want = if same {
            labels[a].index()
        } else {
            1 - labels[a].index()
        };
        let (rows, draw) = &by_label[want];
        let b = loop {
            let b = rows[draw.sample(rng)];
            if b != a {
                break b;
            }
        };
        pairs.push(Pair { a, b, same });
    }
    Ok(pairs)
}

/// SetFit's `CosineSimilarityLoss`: the mean over pairs of `(cos(e_a, e_b) - t)^2`, `t` 1 for a
/// same-label pair and 0 otherwise; `e` holds unit-length embeddings, `a`/`b` index its rows.
pub fn cosine_pair_loss(e: &Tensor, a: &[u32], b: &[u32], same: &[bool]) -> candle_core::Result<Tensor> {
    let n = a.len();
    let ea = e.index_select(&Tensor::from_vec(a.to_vec(), n, e.device())?, 0)?;
    let eb = e.index_select(&Tensor::from_vec(b.to_vec(), n, e.device())?, 0)?;
    let cos = (ea * eb)?.sum(1)?;
    let target = Tensor::from_vec(
        same.iter()
            .map(|&s| if s { 1f32 } else { 0.0 })
            .collect::<Vec<_>>(),
        n,
        e.device(),
    )?;
    (cos - target)?.sqr()?.mean_all()
}

/// Hidden states entering layer `from`, one `[len, h]` tensor per text.
pub fn hidden_states(
    embedder: &Embedder,
    texts: &[&str],
    from: usize,
    pb: &ProgressBar,
) -> Result<Vec<Tensor>, StatusError> {
    let ids = texts
        .iter()
        .map(|t| embedder.tokenize(t))
        .collect::<Result<Vec<_>, _>>()?;
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let mut out: Vec<Option<Tensor>> = vec![None; ids.len()];
    for batch in plan_batches(&lengths, BatchLimits::default()) {
        let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
        for (&i, t) in batch.iter().zip(embedder.model().hidden_states(&seqs, from)?) {
            out[i] = Some(t);
        }
        pb.inc(batch.len() as u64);
    }
    Ok(out.into_iter().map(|t| t.expect("every text planned")).collect())
}

/// Mean over the batch of `w_i * [(1 - ε) * -log p(y_i) + ε * mean_k -log p(k)]`, normalised by
/// the weights: cross-entropy with label smoothing ε and per-example weights.
pub fn smoothed_weighted_ce(
    logits: &Tensor,
    y: &Tensor,
    w: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&y.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let per = if eps > 0.0 {
        let uniform = logp.mean(1)?.neg()?;
        ((nll * (1.0 - eps))? + (uniform * eps)?)?
    } else {
        nll
    };
    (per * w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64
}

/// Fine-tunes the top `cfg.layers` layers of the embedder's encoder with a linear head on the
/// training replies (texts, labels and per-reply loss weights); keeps the epoch with the best dev
/// macro-F1. `weights` is the embedder's `model.safetensors` (the pre-trained starting point).
pub fn finetune(
    embedder: &Embedder,
    weights: &Path,
    train: (&[&str], &[Label], &[f32]),
    dev: (&[&str], &[Label]),
    cfg: &FineTuneConfig,
    seed: u64,
    pb: &ProgressBar,
) -> Result<FineTuned, StatusError> {
    let bert = embedder.model().config().clone();
    let from = first_tuned_layer(&bert, cfg)?;
    pb.set_length((train.0.len() + dev.0.len()) as u64);
    pb.set_message("hidden states");
    let train_x = hidden_states(embedder, train.0, from, pb)?;
    let dev_x = hidden_states(embedder, dev.0, from, pb)?;
    let refs: Vec<&Tensor> = train_x.iter().collect();
    finetune_states(
        &bert,
        weights,
        (&refs, train.1, train.2),
        Some((&dev_x, dev.1)),
        cfg,
        seed,
        pb,
    )
}

/// The first tuned layer for `cfg.layers` tuned layers of this encoder.
pub fn first_tuned_layer(bert: &BertConfig, cfg: &FineTuneConfig) -> Result<usize, StatusError> {
    let total = bert.num_hidden_layers;
    if cfg.layers == 0 || cfg.layers > total {
        return Err(StatusError::Other(format!(
            "--finetune-layers must be 1..={total}, not {}",
            cfg.layers
        )));
    }
    Ok(total - cfg.layers)
}

/// [`finetune`] over hidden states already computed ([`hidden_states`] entering
/// [`first_tuned_layer`]), so that cross-validation computes them once for every row and tunes
/// each fold on its kept rows only. With a dev set the epoch with the best dev macro-F1 is kept;
/// without one (cross-validation: no file may choose), the last epoch.
pub fn finetune_states(
    bert: &BertConfig,
    weights: &Path,
    train: (&[&Tensor], &[Label], &[f32]),
    dev: Option<(&[Tensor], &[Label])>,
    cfg: &FineTuneConfig,
    seed: u64,
    pb: &ProgressBar,
) -> Result<FineTuned, StatusError> {
    let total = bert.num_hidden_layers;
    if train.2.len() != train.0.len() || train.1.len() != train.0.len() {
        return Err(StatusError::Other(format!(
            "{} training states but {} labels and {} weights",
            train.0.len(),
            train.1.len(),
            train.2.len()
        )));
    }
    let from = first_tuned_layer(bert, cfg)?;
    let train_x = train.0;
    let layers = pretrained_layers(weights, from, total)?
        .into_iter()
        .map(|ts| {
            Ok(TrainLayer {
                vars: ts
                    .iter()
                    .map(Var::from_tensor)
                    .collect::<candle_core::Result<_>>()?,
            })
        })
        .collect::<candle_core::Result<_>>()?;
    let h = bert.hidden_size;
    let mut rng = StdRng::seed_from_u64(seed);
    // PyTorch's nn.Linear initialisation: uniform in ±1/sqrt(fan_in).
    let bound = 1.0 / (h as f32).sqrt();
    let w: Vec<f32> = (0..2 * h).map(|_| rng.random_range(-bound..bound)).collect();
    let b: Vec<f32> = (0..2).map(|_| rng.random_range(-bound..bound)).collect();
    let model = Model {
        layers,
        head_w: Var::from_tensor(&Tensor::from_vec(w, (2, h), &Device::Cpu)?)?,
        head_b: Var::from_tensor(&Tensor::from_vec(b, 2, &Device::Cpu)?)?,
        cfg: bert,
        scale: cfg.scale,
        dropout: cfg.dropout,
    };
    let adamw = |vars: Vec<Var>, lr: f64| {
        AdamW::new(
            vars,
            ParamsAdamW {
                lr,
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )
    };
    let encoder_vars: Vec<Var> = model.layers.iter().flat_map(|l| l.vars.iter().cloned()).collect();
    let mut opt_encoder = adamw(encoder_vars, cfg.lr_encoder)?;
    let mut opt_head = adamw(vec![model.head_w.clone(), model.head_b.clone()], cfg.lr_head)?;

    let train_y: Vec<u32> = train.1.iter().map(|l| l.index() as u32).collect();
    let lengths: Vec<usize> = train_x
        .iter()
        .map(|t| t.dim(0))
        .collect::<candle_core::Result<_>>()?;
    let mut best: Option<(f64, usize, Vec<Vec<Tensor>>)> = None;
    let mut per_epoch = Vec::with_capacity(cfg.epochs);
    let snapshot = |model: &Model| -> candle_core::Result<Vec<Vec<Tensor>>> {
        model
            .layers
            .iter()
            .map(|l| l.vars.iter().map(|v| v.as_tensor().copy()).collect())
            .collect()
    };
    let setfit = cfg.objective == Objective::SetFit;
    if setfit && cfg.pairs_per_reply == 0 {
        return Err(StatusError::Other(
            "SetFit tuning needs at least one pair per reply".into(),
        ));
    }
    let per_epoch_rows = if setfit {
        train_x.len() * cfg.pairs_per_reply
    } else {
        train_x.len()
    };
    let mut train_loss = Vec::with_capacity(cfg.epochs);
    pb.set_position(0);
    pb.set_length((cfg.epochs * per_epoch_rows) as u64);
    for epoch in 1..=cfg.epochs {
        pb.set_message(format!("fine-tuning, epoch {epoch}/{}", cfg.epochs));
        if setfit {
            // Stage 1 of SetFit: the layers alone, on pairs; no head, no dev choice (last kept).
            let pairs = sample_pairs(train.1, train.2, cfg.pairs_per_reply, &mut rng)?;
            let longest: Vec<usize> = pairs.iter().map(|p| lengths[p.a].max(lengths[p.b])).collect();
            let mut total = 0.0;
            for batch in length_bucketed_batches(&longest, cfg.batch_size, &mut rng) {
                // Each reply of the batch through the layers once, however many of its pairs.
                let mut rows: Vec<usize> = batch.iter().flat_map(|&p| [pairs[p].a, pairs[p].b]).collect();
                rows.sort_unstable();
                rows.dedup();
                let at = |i: usize| rows.binary_search(&i).expect("row of the batch") as u32;
                let states: Vec<&Tensor> = rows.iter().map(|&i| train_x[i]).collect();
                let e = model.pooled(&states, Some(&mut rng))?;
                let a: Vec<u32> = batch.iter().map(|&p| at(pairs[p].a)).collect();
                let b: Vec<u32> = batch.iter().map(|&p| at(pairs[p].b)).collect();
                let same: Vec<bool> = batch.iter().map(|&p| pairs[p].same).collect();
                let loss = cosine_pair_loss(&e, &a, &b, &same)?;
                total += f64::from(loss.to_scalar::<f32>()?) * batch.len() as f64;
                let grads = loss.backward()?;
                opt_encoder.step(&grads)?;
                pb.inc(batch.len() as u64);
            }
            let mean = total / pairs.len().max(1) as f64;
            tracing::info!(
                epoch,
                pairs = pairs.len(),
                loss = format!("{mean:.4}"),
                "SetFit epoch (last kept)"
            );
            train_loss.push(mean);
            if epoch == cfg.epochs {
                best = Some((0.0, epoch, snapshot(&model)?));
            }
            continue;
        }
        let mut total = 0.0;
        for batch in length_bucketed_batches(&lengths, cfg.batch_size, &mut rng) {
            let states: Vec<&Tensor> = batch.iter().map(|&i| train_x[i]).collect();
            let y = Tensor::from_vec(
                batch.iter().map(|&i| train_y[i]).collect::<Vec<_>>(),
                batch.len(),
                &Device::Cpu,
            )?;
            let w = Tensor::from_vec(
                batch.iter().map(|&i| train.2[i]).collect::<Vec<_>>(),
                batch.len(),
                &Device::Cpu,
            )?;
            let logits = model.logits(&states, Some(&mut rng))?;
            let loss = smoothed_weighted_ce(&logits, &y, &w, cfg.label_smoothing)?;
            total += f64::from(loss.to_scalar::<f32>()?) * batch.len() as f64;
            let grads = loss.backward()?;
            opt_encoder.step(&grads)?;
            opt_head.step(&grads)?;
            pb.inc(batch.len() as u64);
        }
        train_loss.push(total / train_x.len().max(1) as f64);
        match dev {
            Some((dev_x, dev_y)) => {
                let f1 = Metrics::compute(dev_y, &model.predict(dev_x)?).macro_f1;
                tracing::info!(epoch, dev_macro_f1 = format!("{f1:.4}"), "fine-tuning epoch");
                per_epoch.push(f1);
                if best.as_ref().is_none_or(|(b, ..)| f1 > *b) {
                    best = Some((f1, epoch, snapshot(&model)?));
                }
            }
            None => {
                tracing::info!(epoch, rows = train_x.len(), "fine-tuning epoch (last kept)");
                if epoch == cfg.epochs {
                    best = Some((0.0, epoch, snapshot(&model)?));
                }
            }
        }
    }
    if cfg.epochs == 0 {
        // Zero epochs: the starting layers as they are (e.g. an earlier model's tuned layers, with
        // only the heads retrained on new data).
        best = Some((0.0, 0, snapshot(&model)?));
    }
    let (_, best_epoch, snapshot) = best.ok_or_else(|| StatusError::Other("no fine-tuning epochs".into()))?;
    let mut tensors = HashMap::new();
    for (k, layer) in snapshot.into_iter().enumerate() {
        for (name, t) in LAYER_TENSORS.iter().zip(layer) {
            tensors.insert(format!("encoder.layer.{}.{name}", from + k), t);
        }
    }
    Ok(FineTuned {
        from_layer: from,
        tensors,
        best_epoch,
        dev_macro_f1: per_epoch,
        train_loss,
    })
}

/// The tuned sentence embeddings (mean-pooled, unit length) of hidden states entering
/// `tuned.from_layer`, through the tuned layers in evaluation mode: what the inference
/// [`crate::embed::Tail`] computes, without running the lower layers again.
pub fn embed_states(
    bert: &BertConfig,
    tuned: &FineTuned,
    states: &[Tensor],
) -> Result<Vec<Vec<f32>>, StatusError> {
    let total = bert.num_hidden_layers;
    let layers = (tuned.from_layer..total)
        .map(|i| {
            let vars = LAYER_TENSORS
                .iter()
                .map(|name| {
                    let key = format!("encoder.layer.{i}.{name}");
                    let t = tuned
                        .tensors
                        .get(&key)
                        .ok_or_else(|| StatusError::Other(format!("tuned layers: no tensor {key}")))?;
                    Ok(Var::from_tensor(t)?)
                })
                .collect::<Result<Vec<_>, StatusError>>()?;
            Ok(TrainLayer { vars })
        })
        .collect::<Result<Vec<_>, StatusError>>()?;
    let h = bert.hidden_size;
    let model = Model {
        layers,
        head_w: Var::from_tensor(&Tensor::zeros((2, h), DType::F32, &Device::Cpu)?)?,
        head_b: Var::from_tensor(&Tensor::zeros(2, DType::F32, &Device::Cpu)?)?,
        cfg: bert,
        scale: 1.0,
        dropout: 0.0,
    };
    // Length-sorted chunks, so that little of a chunk is padding; results in input order.
    let mut order: Vec<usize> = (0..states.len()).collect();
    let lengths: Vec<usize> = states
        .iter()
        .map(|t| t.dim(0))
        .collect::<candle_core::Result<_>>()?;
    order.sort_by_key(|&i| lengths[i]);
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); states.len()];
    for chunk in order.chunks(32) {
        let refs: Vec<&Tensor> = chunk.iter().map(|&i| &states[i]).collect();
        let e = model.pooled(&refs, None)?.to_vec2::<f32>()?;
        for (&i, v) in chunk.iter().zip(e) {
            out[i] = v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bucketed_batches_cover_every_row_once_and_group_lengths() {
        let lengths: Vec<usize> = (0..203).map(|i| (i * 37) % 251 + 1).collect();
        let mut rng = StdRng::seed_from_u64(3);
        let batches = length_bucketed_batches(&lengths, 16, &mut rng);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..203).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 16));
        // Less padding than batches of the plain shuffled order.
        let padded = |bs: &[Vec<usize>]| -> usize {
            bs.iter()
                .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap())
                .sum()
        };
        let mut plain: Vec<usize> = (0..203).collect();
        plain.shuffle(&mut StdRng::seed_from_u64(3));
        let plain: Vec<Vec<usize>> = plain.chunks(16).map(<[usize]>::to_vec).collect();
        assert!(
            padded(&batches) * 10 < padded(&plain) * 8,
            "{} vs {}",
            padded(&batches),
            padded(&plain)
        );
        // Seeded: the same batches again.
        assert_eq!(
            batches,
            length_bucketed_batches(&lengths, 16, &mut StdRng::seed_from_u64(3))
        );
    }

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn smoothed_weighted_ce_matches_hand_computation() {
        let logits = t(&[2.0, 0.0, 0.0, 1.0], (2, 2));
        let y = Tensor::from_vec(vec![0u32, 0], 2, &Device::Cpu).unwrap();
        let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
        let lp = [
            [2.0 - lse(2.0, 0.0), -lse(2.0, 0.0)],
            [-lse(0.0, 1.0), 1.0 - lse(0.0, 1.0)],
        ];
        let w = Tensor::from_vec(vec![1f32, 3.0], 2, &Device::Cpu).unwrap();
        // Without smoothing: the weighted mean of -log p(gold).
        let plain = smoothed_weighted_ce(&logits, &y, &w, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = (-lp[0][0] - 3.0 * lp[1][0]) / 4.0;
        assert!((f64::from(plain) - want).abs() < 1e-5, "{plain} vs {want}");
        // With ε = 0.2: 0.8 of that plus 0.2 of the mean over both labels.
        let eps = 0.2;
        let per = |r: usize| (1.0 - eps) * -lp[r][0] + eps * -(lp[r][0] + lp[r][1]) / 2.0;
        let want = (per(0) + 3.0 * per(1)) / 4.0;
        let got = smoothed_weighted_ce(&logits, &y, &w, eps)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
        // Equal weights equal the unweighted mean (candle's own cross-entropy).
        let ones = Tensor::ones(2, DType::F32, &Device::Cpu).unwrap();
        let a = smoothed_weighted_ce(&logits, &y, &ones, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let b = candle_nn::loss::cross_entropy(&logits, &y)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((a - b).abs() < 1e-5);
    }

    #[test]
    fn setfit_pairs_are_balanced_seeded_and_never_self() {
        // Source A: 30 rows (24 closed), source B: 10 rows (3 closed); sources balanced by weight.
        let labels: Vec<Label> = (0..40)
            .map(|i| match i {
                0..24 | 30..33 => Label::Closed,
                _ => Label::InProgress,
            })
            .collect();
        let groups: Vec<String> = (0..40)
            .map(|i| if i < 30 { "a" } else { "b" }.to_string())
            .collect();
        let w = super::super::fit::balanced_weights(&groups);
        let pairs = sample_pairs(&labels, &w, 50, &mut StdRng::seed_from_u64(7)).unwrap();
        assert_eq!(pairs.len(), 40 * 50);
        assert_eq!(pairs.iter().filter(|p| p.same).count(), 1000);
        for p in &pairs {
            assert_ne!(p.a, p.b);
            assert_eq!(p.same, labels[p.a] == labels[p.b], "{p:?}");
        }
        // Source B (a quarter of the rows) is drawn about half the time, as anchor and as partner.
        let share = |f: &dyn Fn(&Pair) -> usize| pairs.iter().filter(|p| f(p) >= 30).count() as f64 / 2000.0;
        for s in [share(&|p| p.a), share(&|p| p.b)] {
            assert!((0.44..0.56).contains(&s), "source b share {s}");
        }
        // Seeded: the same pairs again; another seed, other pairs.
        assert_eq!(
            pairs,
            sample_pairs(&labels, &w, 50, &mut StdRng::seed_from_u64(7)).unwrap()
        );
        assert_ne!(
            pairs,
            sample_pairs(&labels, &w, 50, &mut StdRng::seed_from_u64(8)).unwrap()
        );
        // A label with fewer than two rows cannot be paired.
        let one = [Label::Closed, Label::InProgress, Label::InProgress];
        assert!(sample_pairs(&one, &[1.0; 3], 2, &mut StdRng::seed_from_u64(1)).is_err());
    }

    #[test]
    fn cosine_pair_loss_matches_hand_computation() {
        let s = 0.5f32.sqrt();
        let e = t(&[1.0, 0.0, s, s, 0.0, 1.0], (3, 2));
        // (0,1) same: cos s -> (s - 1)^2; (0,2) different: cos 0 -> 0; (1,2) different: s^2.
        let got = cosine_pair_loss(&e, &[0, 0, 1], &[1, 2, 2], &[true, false, false])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = ((s - 1.0).powi(2) + 0.0 + s * s) / 3.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    /// A one-layer encoder with hidden size 8 and random weights, written as a checkpoint.
    fn tiny_encoder(dir: &Path) -> (BertConfig, std::path::PathBuf) {
        let cfg = BertConfig {
            vocab_size: 10,
            hidden_size: 8,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 16,
            max_position_embeddings: 16,
            type_vocab_size: 1,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        };
        let mut rng = StdRng::seed_from_u64(11);
        let mut tensors = HashMap::new();
        for name in LAYER_TENSORS {
            let shape: Vec<usize> = match name {
                n if n.starts_with("intermediate") && n.ends_with("weight") => vec![16, 8],
                n if n.starts_with("intermediate") => vec![16],
                "output.dense.weight" => vec![8, 16],
                n if n.ends_with("LayerNorm.weight") => vec![8],
                n if n.ends_with("weight") => vec![8, 8],
                _ => vec![8],
            };
            let len: usize = shape.iter().product();
            let v: Vec<f32> = if name.ends_with("LayerNorm.weight") {
                vec![1.0; len]
            } else if name.ends_with("LayerNorm.bias") {
                vec![0.0; len]
            } else {
                (0..len).map(|_| rng.random_range(-0.4..0.4)).collect()
            };
            let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
            tensors.insert(format!("encoder.layer.0.{name}"), t);
        }
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        (cfg, path)
    }

    /// Mean cosine of same-label pairs minus that of different-label pairs.
    fn cosine_gap(e: &[Vec<f32>], y: &[Label]) -> f64 {
        let (mut same, mut diff) = ((0.0, 0), (0.0, 0));
        for i in 0..e.len() {
            for j in i + 1..e.len() {
                let c: f32 = e[i].iter().zip(&e[j]).map(|(a, b)| a * b).sum();
                let acc = if y[i] == y[j] { &mut same } else { &mut diff };
                acc.0 += f64::from(c);
                acc.1 += 1;
            }
        }
        same.0 / f64::from(same.1) - diff.0 / f64::from(diff.1)
    }

    #[test]
    fn setfit_tuning_lowers_the_pair_loss_and_separates_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let (bert, weights) = tiny_encoder(dir.path());
        // 48 "replies" of 3-6 token states: noise plus a weak direction per label.
        let mut rng = StdRng::seed_from_u64(5);
        let y: Vec<Label> = (0..48).map(|i| Label::ALL[i % 2]).collect();
        let states: Vec<Tensor> = y
            .iter()
            .map(|l| {
                let len = rng.random_range(3..7);
                let v: Vec<f32> = (0..len * 8)
                    .map(|k| rng.random_range(-1.0f32..1.0) + if k % 8 == l.index() { 0.5 } else { 0.0 })
                    .collect();
                Tensor::from_vec(v, (len, 8), &Device::Cpu).unwrap()
            })
            .collect();
        let refs: Vec<&Tensor> = states.iter().collect();
        let cfg = |epochs| FineTuneConfig {
            layers: 1,
            epochs,
            batch_size: 8,
            lr_encoder: 3e-3,
            dropout: 0.0,
            objective: Objective::SetFit,
            pairs_per_reply: 4,
            ..Default::default()
        };
        let run = |epochs| {
            finetune_states(
                &bert,
                &weights,
                (&refs, &y, &[1.0; 48]),
                None,
                &cfg(epochs),
                3,
                &ProgressBar::hidden(),
            )
            .unwrap()
        };
        let before = run(0);
        let after = run(20);
        assert_eq!((after.best_epoch, after.train_loss.len()), (20, 20));
        assert!(after.dev_macro_f1.is_empty());
        let (first, last) = (after.train_loss[0], after.train_loss[19]);
        assert!(last < 0.7 * first, "pair loss {first:.4} -> {last:.4}");
        let gap = |t: &FineTuned| cosine_gap(&embed_states(&bert, t, &states).unwrap(), &y);
        let (g0, g1) = (gap(&before), gap(&after));
        assert!(g1 > g0 + 0.1, "same minus different cosine {g0:.4} -> {g1:.4}");
        // Deterministic for the seed.
        let again = run(20);
        assert_eq!(again.train_loss, after.train_loss);
        let key = "encoder.layer.0.output.dense.weight";
        let diff = (&again.tensors[key] - &after.tensors[key])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        // No pairs, no tuning.
        let mut zero = cfg(1);
        zero.pairs_per_reply = 0;
        assert!(finetune_states(
            &bert,
            &weights,
            (&refs, &y, &[1.0; 48]),
            None,
            &zero,
            3,
            &ProgressBar::hidden()
        )
        .is_err());
    }
}
