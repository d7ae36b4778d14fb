//! Training one head: the candidate head configurations, class and source weights, candle-nn AdamW on
//! weighted cross-entropy with early stopping on the dev loss, and temperature fitting. The
//! orchestration (data, fine-tuning, choosing among candidates) is in [`super::train`].

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::head::{prediction, to_tensor, Head, HeadKind};
use super::{Label, StatusError};

/// One candidate head and how to train it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadConfig {
    pub kind: HeadKind,
    /// Append the keyword rule's cue features to the embedding.
    pub cues: bool,
    pub lr: f64,
    pub weight_decay: f64,
    /// Dropout on the MLP's hidden layer (ignored by the logistic head).
    pub dropout: f32,
    pub batch_size: usize,
    pub max_epochs: usize,
    /// Epochs without a better dev loss before stopping.
    pub patience: usize,
    /// Keep the epoch with the lowest dev loss (and stop after `patience` epochs without a better
    /// one); when false, train exactly `max_epochs` epochs and keep the last, so the dev file is
    /// only scored, never used to choose (the epoch count then comes from cross-validation).
    pub early_stopping: bool,
}

impl HeadConfig {
    /// `logistic`, `mlp-64+cues`, ...
    pub fn name(&self) -> String {
        format!("{}{}", self.kind, if self.cues { "+cues" } else { "" })
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "head": self.kind.to_string(),
            "keyword_cues": self.cues,
            "optimizer": "AdamW",
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "dropout": self.dropout,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "loss": "class-weighted cross-entropy",
            "early_stopping": if self.early_stopping {
                "lowest dev loss".to_string()
            } else {
                format!("none: exactly {} epochs", self.max_epochs)
            },
        })
    }
}

/// The candidates `triage train status` tries, simplest first (ties go to the simpler one).
pub fn default_variants() -> Vec<HeadConfig> {
    let base = HeadConfig {
        kind: HeadKind::Logistic,
        cues: false,
        lr: 1e-2,
        weight_decay: 1e-4,
        dropout: 0.0,
        batch_size: 32,
        max_epochs: 300,
        patience: 30,
        early_stopping: true,
    };
    let plain = [
        base,
        HeadConfig {
            kind: HeadKind::Mlp { hidden: 64 },
            lr: 2e-3,
            weight_decay: 1e-2,
            dropout: 0.2,
            ..base
        },
        HeadConfig {
            kind: HeadKind::Mlp { hidden: 256 },
            lr: 1e-3,
            weight_decay: 1e-2,
            dropout: 0.3,
            ..base
        },
    ];
    plain
        .iter()
        .copied()
        .chain(plain.iter().map(|c| HeadConfig { cues: true, ..*c }))
        .collect()
}

/// The smallest shift `s >= 0` such that calling a row Closed only when its logit margin
/// (Closed minus In Progress) exceeds `s` gives a Closed precision of at least `precision` on
/// `gold`; the largest margin when no shift reaches it (then no row of `margins` is Closed).
pub fn closed_margin_shift(margins: &[f32], gold: &[Label], precision: f64) -> f32 {
    let mut candidates: Vec<f32> = margins.iter().copied().filter(|m| *m > 0.0).collect();
    candidates.push(0.0);
    candidates.sort_by(f32::total_cmp);
    for &s in &candidates {
        let (mut tp, mut fp) = (0usize, 0usize);
        for (m, g) in margins.iter().zip(gold) {
            if *m > s {
                match g {
                    Label::Closed => tp += 1,
                    Label::InProgress => fp += 1,
                }
            }
        }
        if tp + fp > 0 && tp as f64 / (tp + fp) as f64 >= precision {
            return s;
        }
    }
    candidates.last().copied().unwrap_or(0.0)
}

/// `head` with its Closed logit lowered by `shift` (its output bias), so it calls a row Closed
/// only when the margin exceeds `shift`.
pub fn shift_closed(head: &Head, shift: f32) -> candle_core::Result<Head> {
    let mut out = head.clone();
    let last = out.layers.len() - 1;
    let mut b = out.layers[last].1.to_vec1::<f32>()?;
    b[Label::Closed.index()] -= shift;
    out.layers[last].1 = Tensor::from_vec(b, Label::ALL.len(), &Device::Cpu)?;
    Ok(out)
}

/// A trained head (the best epoch's weights) and its dev logits.
pub struct Trained {
    pub head: Head,
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub dev_loss: f64,
    pub dev_logits: Vec<[f32; 2]>,
}

/// Like [`class_weights`] but counting each example with its weight: `W / (k * W(class))`.
pub fn weighted_class_weights(y: &[Label], w: &[f32]) -> [f32; 2] {
    let mut sums = [0f64; 2];
    for (l, wi) in y.iter().zip(w) {
        sums[l.index()] += f64::from(*wi);
    }
    let total: f64 = sums.iter().sum();
    sums.map(|c| if c == 0.0 { 0.0 } else { (total / (2.0 * c)) as f32 })
}

/// Per-example weights giving every group (a source) the same total weight, with mean weight 1:
/// `n / (groups * size(group))`.
pub fn balanced_weights(groups: &[String]) -> Vec<f32> {
    let mut sizes: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for g in groups {
        *sizes.entry(g.as_str()).or_default() += 1;
    }
    let (n, k) = (groups.len() as f32, sizes.len() as f32);
    groups
        .iter()
        .map(|g| n / (k * sizes[g.as_str()] as f32))
        .collect()
}

/// `n / (k * count(class))`: each class contributes equally to the loss.
pub fn class_weights(y: &[Label]) -> [f32; 2] {
    let mut counts = [0usize; 2];
    for l in y {
        counts[l.index()] += 1;
    }
    counts.map(|c| {
        if c == 0 {
            0.0
        } else {
            y.len() as f32 / (2.0 * c as f32)
        }
    })
}

/// A freshly initialised head over rows of width `d` (embedding(s), then cues when `cues`).
fn init_head(kind: HeadKind, cues: bool, d: usize, rng: &mut StdRng) -> candle_core::Result<Head> {
    // torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    let mut linear = |inp: usize, out: usize| -> candle_core::Result<(Tensor, Tensor)> {
        let a = 1.0 / (inp as f32).sqrt();
        let w: Vec<f32> = (0..inp * out).map(|_| rng.random_range(-a..a)).collect();
        let b: Vec<f32> = (0..out).map(|_| rng.random_range(-a..a)).collect();
        Ok((
            Tensor::from_vec(w, (inp, out), &Device::Cpu)?,
            Tensor::from_vec(b, out, &Device::Cpu)?,
        ))
    };
    let k = Label::ALL.len();
    let layers = match kind {
        HeadKind::Logistic => vec![linear(d, k)?],
        HeadKind::Mlp { hidden } => vec![linear(d, hidden)?, linear(hidden, k)?],
    };
    Ok(Head { kind, cues, layers })
}

/// Mean of `weight[y] * -log softmax(logits)[y]` over the batch, normalised by the weights.
fn weighted_nll(logits: &Tensor, y: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&y.unsqueeze(1)?, 1)?.squeeze(1)?;
    (picked * w)?.sum_all()?.neg()? / w.sum_all()?.to_scalar::<f32>()? as f64
}

fn labels_tensor(y: &[Label]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(
        y.iter().map(|l| l.index() as u32).collect::<Vec<_>>(),
        y.len(),
        &Device::Cpu,
    )
}

/// Trains one head on feature rows (embeddings, plus cues when `cfg.cues`). `progress` advances by
/// one per epoch.
pub fn train_head(
    train_x: &[Vec<f32>],
    train_y: &[Label],
    dev_x: &[Vec<f32>],
    dev_y: &[Label],
    cfg: &HeadConfig,
    seed: u64,
    progress: &ProgressBar,
) -> Result<Trained, StatusError> {
    let ones = vec![1.0; train_y.len()];
    train_head_weighted(train_x, train_y, &ones, dev_x, dev_y, cfg, seed, progress)
}

/// [`train_head`] with a loss weight per training row (on top of the class weights, which are
/// computed from the weighted counts).
#[allow(clippy::too_many_arguments)]
pub fn train_head_weighted(
    train_x: &[Vec<f32>],
    train_y: &[Label],
    row_weights: &[f32],
    dev_x: &[Vec<f32>],
    dev_y: &[Label],
    cfg: &HeadConfig,
    seed: u64,
    progress: &ProgressBar,
) -> Result<Trained, StatusError> {
    if row_weights.len() != train_y.len() {
        return Err(StatusError::Other(format!(
            "{} training rows but {} weights",
            train_y.len(),
            row_weights.len()
        )));
    }
    if train_x.is_empty() || dev_x.is_empty() {
        return Err(StatusError::Other(
            "training and dev sets must not be empty".into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let init = init_head(cfg.kind, cfg.cues, train_x[0].len(), &mut rng)?;
    let vars: Vec<(Var, Var)> = init
        .layers
        .iter()
        .map(|(w, b)| Ok((Var::from_tensor(w)?, Var::from_tensor(b)?)))
        .collect::<candle_core::Result<_>>()?;
    // The head reads the variables' tensors, so the optimiser's in-place updates are seen.
    let live = Head {
        kind: cfg.kind,
        cues: cfg.cues,
        layers: vars
            .iter()
            .map(|(w, b)| (w.as_tensor().clone(), b.as_tensor().clone()))
            .collect(),
    };
    let mut opt = AdamW::new(
        vars.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;

    let cw = weighted_class_weights(train_y, row_weights);
    let x = to_tensor(train_x)?;
    let y = labels_tensor(train_y)?;
    let w = Tensor::from_vec(
        train_y
            .iter()
            .zip(row_weights)
            .map(|(l, rw)| cw[l.index()] * rw)
            .collect::<Vec<_>>(),
        train_y.len(),
        &Device::Cpu,
    )?;
    let dx = to_tensor(dev_x)?;
    let dy = labels_tensor(dev_y)?;
    let dw = Tensor::ones(dev_y.len(), DType::F32, &Device::Cpu)?;

    let hidden = match cfg.kind {
        HeadKind::Mlp { hidden } if cfg.dropout > 0.0 => Some(hidden),
        _ => None,
    };
    let mut order: Vec<u32> = (0..train_x.len() as u32).collect();
    let mut best: Option<(f64, usize, Head)> = None;
    let mut epochs_run = 0;
    for epoch in 1..=cfg.max_epochs {
        epochs_run = epoch;
        order.shuffle(&mut rng);
        for chunk in order.chunks(cfg.batch_size.max(1)) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &Device::Cpu)?;
            let mask = match hidden {
                Some(h) => {
                    let keep = 1.0 - cfg.dropout;
                    let m: Vec<f32> = (0..chunk.len() * h)
                        .map(|_| {
                            if rng.random::<f32>() < keep {
                                1.0 / keep
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    Some(Tensor::from_vec(m, (chunk.len(), h), &Device::Cpu)?)
                }
                None => None,
            };
            let logits = live.logits(&x.index_select(&idx, 0)?, mask.as_ref())?;
            let loss = weighted_nll(&logits, &y.index_select(&idx, 0)?, &w.index_select(&idx, 0)?)?;
            opt.backward_step(&loss)?;
        }
        let dev_loss = f64::from(weighted_nll(&live.logits(&dx, None)?, &dy, &dw)?.to_scalar::<f32>()?);
        progress.inc(1);
        let improved = !cfg.early_stopping || best.as_ref().is_none_or(|(l, _, _)| dev_loss < l - 1e-6);
        if improved {
            let snapshot = Head {
                kind: cfg.kind,
                cues: cfg.cues,
                layers: live
                    .layers
                    .iter()
                    .map(|(w, b)| Ok((w.copy()?, b.copy()?)))
                    .collect::<candle_core::Result<_>>()?,
            };
            best = Some((dev_loss, epoch, snapshot));
        } else if best.as_ref().is_some_and(|(_, e, _)| epoch - e >= cfg.patience) {
            break;
        }
    }
    let (dev_loss, best_epoch, head) = best.expect("at least one epoch ran");
    let dev_logits = head
        .logits(&dx, None)?
        .to_vec2::<f32>()?
        .into_iter()
        .map(|r| [r[0], r[1]])
        .collect();
    Ok(Trained {
        head,
        best_epoch,
        epochs_run,
        dev_loss,
        dev_logits,
    })
}

fn nll_at(logits: &[[f32; 2]], y: &[Label], t: f64) -> f64 {
    logits
        .iter()
        .zip(y)
        .map(|(l, g)| -f64::from(prediction(l, t as f32).score(*g)).max(1e-12).ln())
        .sum::<f64>()
        / y.len().max(1) as f64
}

/// The temperature minimising the dev negative log-likelihood (golden-section search on ln T).
pub fn fit_temperature(logits: &[[f32; 2]], y: &[Label]) -> f32 {
    let f = |lt: f64| nll_at(logits, y, lt.exp());
    let (mut a, mut b) = ((0.05f64).ln(), (20.0f64).ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    for _ in 0..60 {
        if f(c) < f(d) {
            b = d;
        } else {
            a = c;
        }
        c = b - g * (b - a);
        d = a + g * (b - a);
    }
    ((a + b) / 2.0).exp() as f32
}
