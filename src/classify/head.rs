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

/// One head whose logits are the mean of `heads`' logits (all of one kind and cue layout): logistic
/// heads average their weights; MLPs become one MLP with their hidden units side by side and the
/// output layer divided by their number. Exact up to float rounding, and as cheap to run as the
/// members together (for logistic heads, as one member).
pub fn average(heads: &[Head]) -> candle_core::Result<Head> {
    let Some(first) = heads.first() else {
        candle_core::bail!("no heads to average");
    };
    if heads
        .iter()
        .any(|h| h.kind != first.kind || h.cues != first.cues || h.input_dim() != first.input_dim())
    {
        candle_core::bail!("heads of different kinds cannot be averaged");
    }
    let n = heads.len() as f64;
    let layer = |i: usize| -> (Vec<Tensor>, Vec<Tensor>) {
        heads
            .iter()
            .map(|h| (h.layers[i].0.clone(), h.layers[i].1.clone()))
            .unzip()
    };
    let mean = |t: &[Tensor]| Tensor::stack(t, 0)?.mean(0);
    let layers = match first.kind {
        HeadKind::Logistic => {
            let (w, b) = layer(0);
            vec![(mean(&w)?, mean(&b)?)]
        }
        HeadKind::Mlp { .. } => {
            let (w1, b1) = layer(0);
            let (w2, b2) = layer(1);
            vec![
                (Tensor::cat(&w1, 1)?, Tensor::cat(&b1, 0)?),
                ((Tensor::cat(&w2, 0)? / n)?, mean(&b2)?),
            ]
        }
    };
    let kind = match first.kind {
        HeadKind::Logistic => HeadKind::Logistic,
        HeadKind::Mlp { hidden } => HeadKind::Mlp {
            hidden: hidden * heads.len(),
        },
    };
    Ok(Head {
        kind,
        cues: first.cues,
        layers,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn random_head(kind: HeadKind, seed: u64) -> Head {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut m = |r: usize, c: usize| {
            let v: Vec<f32> = (0..r * c).map(|_| rng.random_range(-1.0..1.0f32)).collect();
            Tensor::from_vec(v, (r, c), &Device::Cpu).unwrap()
        };
        let layers = match kind {
            HeadKind::Logistic => vec![(m(DIM, 2), m(1, 2).squeeze(0).unwrap())],
            HeadKind::Mlp { hidden } => vec![
                (m(DIM, hidden), m(1, hidden).squeeze(0).unwrap()),
                (m(hidden, 2), m(1, 2).squeeze(0).unwrap()),
            ],
        };
        Head {
            kind,
            cues: false,
            layers,
        }
    }

    #[test]
    fn the_average_head_gives_the_mean_of_the_members_logits() {
        let x = random_head(HeadKind::Mlp { hidden: 5 }, 99).layers[0]
            .0
            .t()
            .unwrap()
            .contiguous()
            .unwrap();
        let x = x.narrow(0, 0, 4).unwrap().contiguous().unwrap(); // 4 rows of width DIM
        for kind in [HeadKind::Logistic, HeadKind::Mlp { hidden: 8 }] {
            let heads: Vec<Head> = (0..3).map(|s| random_head(kind, s)).collect();
            let avg = average(&heads).unwrap();
            let got = avg.logits(&x, None).unwrap().to_vec2::<f32>().unwrap();
            let mut want = vec![vec![0f32; 2]; 4];
            for h in &heads {
                for (w, r) in want
                    .iter_mut()
                    .zip(h.logits(&x, None).unwrap().to_vec2::<f32>().unwrap())
                {
                    for (a, b) in w.iter_mut().zip(r) {
                        *a += b / 3.0;
                    }
                }
            }
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - w).abs() < 1e-4, "{kind}: {g} vs {w}");
            }
            if let HeadKind::Mlp { hidden } = avg.kind {
                assert_eq!(hidden, 24);
            }
        }
        let mixed = [
            random_head(HeadKind::Logistic, 1),
            random_head(HeadKind::Mlp { hidden: 8 }, 2),
        ];
        assert!(average(&mixed).is_err());
        assert!(average(&[]).is_err());
    }
}
