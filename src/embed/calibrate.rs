//! Calibration for the int8 mode: the largest absolute value each input channel of each
//! projection takes over a message set, run through the exact f32 forward. SmoothQuant turns these
//! into per-channel factors `s = max|x|^alpha / max|w|^(1 - alpha)` that move activation outliers
//! (a few LayerNorm channels of BERT are 10-50x the rest) into the weights before quantizing.
//!
//! The file (`models/int8-calibration.json`) is made by `triage model calibrate-int8` from the
//! benchmark messages and records the weights' sha256 it was made for; loading checks it.

use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{plan_batches, BatchLimits, Bert, EmbedError};

/// The default calibration file's name, beside the model folder (`models/`).
pub const FILE_NAME: &str = "int8-calibration.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    /// What made this file (for the record).
    pub command: String,
    pub weights_sha256: String,
    pub alpha: f32,
    pub messages: usize,
    pub tokens: usize,
    /// Per encoder layer: the input channels' absolute maxima of its four projections.
    pub layers: Vec<LayerStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerStats {
    pub qkv: Vec<f32>,
    pub attn_out: Vec<f32>,
    pub inter: Vec<f32>,
    pub out: Vec<f32>,
}

impl Calibration {
    pub fn read(path: &Path, weights_sha256: &str) -> Result<Self, EmbedError> {
        let err = |e: String| EmbedError::Load(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "{e} (int8 precision needs it: `triage model calibrate-int8` makes it)"
            ))
        })?;
        let c: Calibration = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if c.weights_sha256 != weights_sha256 {
            return Err(err(format!(
                "made for weights {}, these are {weights_sha256}",
                c.weights_sha256
            )));
        }
        if !(0.0..=1.0).contains(&c.alpha) {
            return Err(err(format!("alpha {} is not in [0, 1]", c.alpha)));
        }
        Ok(c)
    }

    /// Layer `i`'s maxima as `[qkv, attn_out, inter, out]`, checked against the model's sizes.
    pub fn layer(&self, i: usize, hidden: usize, inter: usize) -> Result<[&[f32]; 4], EmbedError> {
        let l = self
            .layers
            .get(i)
            .ok_or_else(|| EmbedError::Load(format!("calibration has no layer {i}")))?;
        let all = [&l.qkv[..], &l.attn_out[..], &l.inter[..], &l.out[..]];
        for (v, want) in all.iter().zip([hidden, hidden, hidden, inter]) {
            if v.len() != want || v.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(EmbedError::Load(format!(
                    "calibration layer {i}: {} values (want {want}) or a bad value",
                    v.len()
                )));
            }
        }
        Ok(all)
    }
}

/// SmoothQuant factors for a `[n, k]` weight whose input channels reach `act_max`.
pub fn smoothing(act_max: &[f32], w: &[f32], n: usize, k: usize, alpha: f32) -> Vec<f32> {
    let mut w_max = vec![0f32; k];
    for row in w.chunks_exact(k).take(n) {
        for (m, v) in w_max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    act_max
        .iter()
        .zip(&w_max)
        .map(|(&a, &wm)| (a.max(1e-5).powf(alpha) / wm.max(1e-5).powf(1.0 - alpha)).clamp(1e-3, 1e3))
        .collect()
}

/// Runs `seqs` through the f32 model and records every projection input's channel maxima.
pub fn collect(
    model: &Bert,
    seqs: &[Vec<u32>],
    alpha: f32,
    command: String,
    weights_sha256: String,
) -> Result<Calibration, EmbedError> {
    if model.precision() != super::Precision::F32 {
        return Err(EmbedError::Invalid("calibration runs on the f32 model".into()));
    }
    let cfg = model.config();
    let (h, m) = (cfg.hidden_size, cfg.intermediate_size);
    let stats = Mutex::new(
        (0..cfg.num_hidden_layers)
            .map(|_| LayerStats {
                qkv: vec![0.0; h],
                attn_out: vec![0.0; h],
                inter: vec![0.0; h],
                out: vec![0.0; m],
            })
            .collect::<Vec<_>>(),
    );
    let observe = |layer: usize, which: usize, data: &[f32]| {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        let l = &mut s[layer];
        let v = match which {
            0 => &mut l.qkv,
            1 => &mut l.attn_out,
            2 => &mut l.inter,
            _ => &mut l.out,
        };
        let k = v.len();
        for row in data.chunks_exact(k) {
            for (m, x) in v.iter_mut().zip(row) {
                *m = m.max(x.abs());
            }
        }
    };
    let lengths: Vec<usize> = seqs.iter().map(Vec::len).collect();
    for batch in plan_batches(&lengths, BatchLimits::default()) {
        let group: Vec<&[u32]> = batch.iter().map(|&i| seqs[i].as_slice()).collect();
        model.run_observed(&group, &observe)?;
    }
    Ok(Calibration {
        command,
        weights_sha256,
        alpha,
        messages: seqs.len(),
        tokens: lengths.iter().sum(),
        layers: stats.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

/// Calibration from a message file (one message per line) on the f32 model in `files`.
pub fn calibrate_file(
    files: &crate::model_files::ModelFiles,
    input: &Path,
    alpha: f32,
) -> Result<Calibration, EmbedError> {
    let text = std::fs::read_to_string(input)
        .map_err(|e| EmbedError::Invalid(format!("{}: {e}", input.display())))?;
    let embedder = super::Embedder::load(files, BatchLimits::default())?;
    let seqs = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| embedder.tokenize(l))
        .collect::<Result<Vec<_>, _>>()?;
    if seqs.is_empty() {
        return Err(EmbedError::Invalid(format!(
            "{} has no messages",
            input.display()
        )));
    }
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let command = format!("triage model calibrate-int8 --input {name} --alpha {alpha}");
    collect(
        embedder.model(),
        &seqs,
        alpha,
        command,
        files.manifest.weights_sha256().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_balances_activation_and_weight_ranges() {
        // Channel 0: activation outlier (100) with small weights; channel 1: the opposite.
        let w = vec![0.01, 1.0, -0.02, 0.5];
        let s = smoothing(&[100.0, 0.1], &w, 2, 2, 0.5);
        // After smoothing, activation max / s and weight max * s meet at sqrt(a * w).
        assert!((100.0 / s[0] - 0.02 * s[0]).abs() < 1e-3, "{s:?}");
        assert!((0.1 / s[1] - 1.0 * s[1]).abs() < 1e-4, "{s:?}");
        assert!(s[0] > 1.0 && s[1] < 1.0);
    }
}
