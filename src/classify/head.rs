//! The classifier head: logits = `x W + b` (logistic) or `relu(x W1 + b1) W2 + b2` (MLP) over the
//! 384-d sentence embedding; probabilities are `softmax(logits / T)`. Stored as safetensors
//! (`w`, `b` or `w1`, `b1`, `w2`, `b2`, plus the scalar `temperature`).
//!
//! A head may also read the lexical cue features ([`cues::cues`]) appended to the
//! embedding; its first weight matrix then has `DIM + N_CUES` rows.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::cues::{self, N_CUES};
use super::{Label, Prediction};
use crate::embed::DIM;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    Logistic,
    Mlp { hidden: usize },
}

impl std::fmt::Display for HeadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadKind::Logistic => write!(f, "logistic"),
            HeadKind::Mlp { hidden } => write!(f, "mlp-{hidden}"),
        }
    }
}

/// The head's parameters (plain tensors; training wraps them in `Var`s).
#[derive(Debug, Clone)]
pub struct Head {
    pub kind: HeadKind,
    /// Reads `embedding ++ cues::cues(text)` rather than the embedding alone.
    pub cues: bool,
    /// `[(w, b)]` for logistic, `[(w1, b1), (w2, b2)]` for the MLP; `w` is `[in, out]`.
    pub layers: Vec<(Tensor, Tensor)>,
}

impl Head {
    /// Logits `[n, 2]` for embeddings `[n, DIM]`. `hidden_mask` (dropout, training only) multiplies
    /// the MLP's hidden activations.
    pub fn logits(&self, x: &Tensor, hidden_mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(w)?.broadcast_add(b)?;
            if i < last {
                h = h.relu()?;
                if let Some(m) = hidden_mask {
                    h = (h * m)?;
                }
            }
        }
        Ok(h)
    }

    /// Width of the rows the head reads (embedding or embeddings, then cues).
    pub fn input_dim(&self) -> usize {
        self.layers[0].0.dims()[0]
    }

    /// Calibrated predictions for a batch of texts and their embeddings.
    pub fn predict(
        &self,
        texts: &[&str],
        embeddings: &[Vec<f32>],
        temperature: f32,
    ) -> candle_core::Result<Vec<Prediction>> {
        if embeddings.is_empty() {
            return Ok(Vec::new());
        }
        if texts.len() != embeddings.len() {
            candle_core::bail!("{} texts but {} embeddings", texts.len(), embeddings.len());
        }
        let x = to_tensor(&features(texts, embeddings, self.cues))?;
        let logits = self.logits(&x, None)?.to_vec2::<f32>()?;
        Ok(logits.iter().map(|l| prediction(l, temperature)).collect())
    }

    pub fn save(&self, path: &Path, temperature: f32) -> candle_core::Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        let names: &[(&str, &str)] = match self.kind {
            HeadKind::Logistic => &[("w", "b")],
            HeadKind::Mlp { .. } => &[("w1", "b1"), ("w2", "b2")],
        };
        for ((w, b), (wn, bn)) in self.layers.iter().zip(names) {
            tensors.insert(wn.to_string(), w.contiguous()?);
            tensors.insert(bn.to_string(), b.contiguous()?);
        }
        tensors.insert("temperature".into(), Tensor::new(&[temperature], &Device::Cpu)?);
        candle_core::safetensors::save(&tensors, path)
    }

    /// Reads a head and its temperature, checking every shape.
    pub fn load(path: &Path) -> Result<(Head, f32), String> {
        let t = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| e.to_string())?;
        let get = |name: &str, shape: &[usize]| -> Result<Tensor, String> {
            let x = t.get(name).ok_or_else(|| format!("no tensor {name:?}"))?;
            if x.dims() != shape || x.dtype() != DType::F32 {
                return Err(format!(
                    "tensor {name:?} is {:?} {:?}, expected F32 {shape:?}",
                    x.dtype(),
                    x.dims()
                ));
            }
            Ok(x.clone())
        };
        let k = Label::ALL.len();
        let first = t
            .get("w")
            .or_else(|| t.get("w1"))
            .ok_or("no tensor \"w\" or \"w1\"")?;
        let (rows, cols) = first.dims2().map_err(|_| "first weight is not a matrix")?;
        let cues = match rows {
            r if r == DIM => false,
            r if r == DIM + N_CUES => true,
            r => {
                return Err(format!(
                    "first weight has {r} rows; expected {DIM} or {}",
                    DIM + N_CUES
                ))
            }
        };
        let head = if t.contains_key("w") {
            Head {
                kind: HeadKind::Logistic,
                cues,
                layers: vec![(get("w", &[rows, k])?, get("b", &[k])?)],
            }
        } else {
            let hidden = cols;
            Head {
                kind: HeadKind::Mlp { hidden },
                cues,
                layers: vec![
                    (get("w1", &[rows, hidden])?, get("b1", &[hidden])?),
                    (get("w2", &[hidden, k])?, get("b2", &[k])?),
                ],
            }
        };
        let temp = get("temperature", &[1])?
            .to_vec1::<f32>()
            .map_err(|e| e.to_string())?[0];
        if !(temp.is_finite() && temp > 0.0) {
            return Err(format!("temperature {temp} is not a positive number"));
        }
        Ok((head, temp))
    }
}

/// Width of a head's input over one embedding.
pub fn input_dim(cues: bool) -> usize {
    DIM + if cues { N_CUES } else { 0 }
}

/// The head's input rows: each embedding, followed by its text's cues when `cues`.
pub fn features(texts: &[&str], embeddings: &[Vec<f32>], cues: bool) -> Vec<Vec<f32>> {
    embeddings
        .iter()
        .zip(texts)
        .map(|(e, t)| {
            let mut row = e.clone();
            if cues {
                row.extend(cues::cues(t));
            }
            row
        })
        .collect()
}

pub fn to_tensor(rows: &[Vec<f32>]) -> candle_core::Result<Tensor> {
    let n = rows.len();
    let d = rows.first().map_or(DIM, Vec::len);
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    if flat.len() != n * d {
        candle_core::bail!("embeddings of different lengths");
    }
    Tensor::from_vec(flat, (n, d), &Device::Cpu)
}

/// Softmax of `logits / temperature`, computed stably in f64.
pub fn prediction(logits: &[f32], temperature: f32) -> Prediction {
    let z: Vec<f64> = logits
        .iter()
        .map(|&l| f64::from(l) / f64::from(temperature))
        .collect();
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    let scores = [(e[0] / s) as f32, (e[1] / s) as f32];
    let label = if scores[1] > scores[0] {
        Label::Closed
    } else {
        Label::InProgress
    };
    Prediction { label, scores }
}
