//! The BERT encoder: weights read (and shape-checked) through candle tensors at load, then packed
//! once into the layout the matmul kernels read ([`super::kernels`], [`super::qkernels`]); the
//! forward itself runs on plain buffers ([`super::forward`]):
//! - Q, K and V are one fused `[3*hidden, hidden]` projection with the attention scale
//!   `1/sqrt(head_dim)` folded into Q;
//! - in int8 mode every projection is quantized per output channel after SmoothQuant with the
//!   calibration file's activation maxima ([`super::calibrate`]); embeddings, attention, layer
//!   norms and pooling stay f32.
//!
//! Weights are read tensor by tensor straight from the safetensors file into their final buffers,
//! so loading never holds the file and the tensors in memory at once (peak RSS stays near the
//! model's 90 MB).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::calibrate::Calibration;
use super::forward::{self, AddNorm, Lin};
use super::kernels::PackedF32;
use super::qkernels::PackedI8;
use super::{EmbedError, Precision};

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
}

impl BertConfig {
    pub fn from_file(path: &Path) -> Result<Self, EmbedError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EmbedError::Load(format!("{}: {e}", path.display())))?;
        let cfg: BertConfig =
            serde_json::from_str(&text).map_err(|e| EmbedError::Load(format!("{}: {e}", path.display())))?;
        if cfg.hidden_act != "gelu" {
            return Err(EmbedError::Load(format!(
                "{}: hidden_act {:?} is not supported (only exact \"gelu\")",
                path.display(),
                cfg.hidden_act
            )));
        }
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(EmbedError::Load(
                "hidden_size is not a multiple of num_attention_heads".into(),
            ));
        }
        Ok(cfg)
    }
}

/// Minimal safetensors reader: header parsed once, each tensor read with one positioned read.
struct SafetensorsFile {
    file: File,
    data_start: u64,
    entries: HashMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

impl SafetensorsFile {
    fn open(path: &Path) -> Result<Self, EmbedError> {
        let err = |e: String| EmbedError::Load(format!("{}: {e}", path.display()));
        let mut file = File::open(path).map_err(|e| err(e.to_string()))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(|e| err(e.to_string()))?;
        let len = u64::from_le_bytes(len);
        if len > 100 << 20 {
            return Err(err(format!("header of {len} bytes is not plausible")));
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header).map_err(|e| err(e.to_string()))?;
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| err(format!("bad header: {e}")))?;
        let mut entries = HashMap::new();
        for (name, v) in raw {
            if name == "__metadata__" {
                continue;
            }
            let e: Entry = serde_json::from_value(v).map_err(|e| err(format!("{name}: {e}")))?;
            entries.insert(name, e);
        }
        Ok(Self {
            file,
            data_start: 8 + len,
            entries,
        })
    }

    /// An f32 tensor, read into its own buffer (no intermediate copy of the file).
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, EmbedError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| EmbedError::Load(format!("weights have no tensor {name}")))?;
        if e.dtype != "F32" || e.shape != shape {
            return Err(EmbedError::Load(format!(
                "{name}: expected F32 {shape:?}, found {} {:?}",
                e.dtype, e.shape
            )));
        }
        let n: usize = shape.iter().product();
        if e.data_offsets[1] - e.data_offsets[0] != (n * 4) as u64 {
            return Err(EmbedError::Load(format!(
                "{name}: byte length does not match its shape"
            )));
        }
        let mut data = vec![0f32; n];
        // SAFETY: f32 has no invalid bit patterns; the slice covers exactly `data`'s allocation.
        let bytes = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), n * 4) };
        self.file
            .seek(SeekFrom::Start(self.data_start + e.data_offsets[0]))
            .and_then(|_| self.file.read_exact(bytes))
            .map_err(|err| EmbedError::Load(format!("{name}: {err}")))?;
        if cfg!(target_endian = "big") {
            for x in &mut data {
                *x = f32::from_bits(x.to_bits().swap_bytes());
            }
        }
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    }
}

/// Looks a tensor up by name, checking its shape.
type TensorSource<'a> = dyn FnMut(&str, &[usize]) -> Result<Tensor, EmbedError> + 'a;

fn to_vec(t: &Tensor) -> Result<Vec<f32>, EmbedError> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// A projection's weight `[n, k]` packed for `precision`; in int8 with SmoothQuant factors from
/// the activation maxima `act_max` of its input channels.
fn pack(w: &[f32], n: usize, k: usize, int8: Option<(&[f32], f32)>) -> Lin {
    match int8 {
        None => Lin::F32(PackedF32::from_out_in(w, n, k)),
        Some((act_max, alpha)) => {
            let smooth = super::calibrate::smoothing(act_max, w, n, k, alpha);
            Lin::I8(PackedI8::from_out_in(w, n, k, &smooth))
        }
    }
}

/// Reads encoder layer `i` (`{prefix}encoder.layer.{i}.*`, the Hugging Face names) into the
/// inference layout, quantized when `calib` is given.
fn load_layer(
    get: &mut TensorSource<'_>,
    prefix: &str,
    i: usize,
    cfg: &BertConfig,
    calib: Option<&Calibration>,
) -> Result<forward::Layer, EmbedError> {
    let h = cfg.hidden_size;
    let m = cfg.intermediate_size;
    let eps = cfg.layer_norm_eps as f32;
    let scale = 1.0 / ((h / cfg.num_attention_heads) as f32).sqrt();
    let p = format!("{prefix}encoder.layer.{i}.");
    let mut lin = |name: &str, out: usize, inp: usize| -> Result<(Vec<f32>, Vec<f32>), EmbedError> {
        let w = if inp == 0 { vec![out] } else { vec![out, inp] };
        Ok((
            to_vec(&get(&format!("{p}{name}.weight"), &w)?)?,
            to_vec(&get(&format!("{p}{name}.bias"), &[out])?)?,
        ))
    };
    let (mut qkv, mut qkv_bias) = lin("attention.self.query", h, h)?;
    qkv.iter_mut().for_each(|v| *v *= scale);
    qkv_bias.iter_mut().for_each(|v| *v *= scale);
    for name in ["attention.self.key", "attention.self.value"] {
        let (w, b) = lin(name, h, h)?;
        qkv.extend(w);
        qkv_bias.extend(b);
    }
    let (ow, ob) = lin("attention.output.dense", h, h)?;
    let (iw, ib) = lin("intermediate.dense", m, h)?;
    let (o2w, o2b) = lin("output.dense", h, m)?;
    // A layer norm's weight and bias are both `[h]`.
    let (ln1w, ln1b) = lin("attention.output.LayerNorm", h, 0)?;
    let (ln2w, ln2b) = lin("output.LayerNorm", h, 0)?;
    let stats = match calib {
        Some(c) => Some(c.layer(i, h, m)?),
        None => None,
    };
    let q = |which: usize| stats.map(|s| (s[which], calib.map_or(0.5, |c| c.alpha)));
    Ok(forward::Layer {
        qkv: pack(&qkv, 3 * h, h, q(0)),
        qkv_bias,
        attn_out: pack(&ow, h, h, q(1)),
        attn_norm: AddNorm {
            bias: ob,
            gamma: ln1w,
            beta: ln1b,
            eps,
        },
        inter: pack(&iw, m, h, q(2)),
        inter_bias: ib,
        out: pack(&o2w, h, m, q(3)),
        out_norm: AddNorm {
            bias: o2b,
            gamma: ln2w,
            beta: ln2b,
            eps,
        },
    })
}

/// Replacement weights for the top encoder layers (a fine-tuned classifier's), run as a second
/// branch from the shared forward's hidden states at layer `from`, so a sequence that wants both
/// pays only for the replaced layers twice. Always f32 (they are two layers, and the classifier
/// was trained on exact activations).
pub struct Tail {
    from: usize,
    layers: Vec<forward::Layer>,
}

/// Which embeddings a sequence needs from a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Want {
    /// The shared sentence embedding (what `/v1/embed` and the grouper read).
    #[default]
    Shared,
    /// Only the embedding through the [`Tail`]: the shared top layers are skipped.
    Tuned,
    /// Both, from one pass: the layers below the tail run once.
    Both,
}

/// Per-sequence result of a forward pass: the embeddings its [`Want`] asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embedded {
    pub shared: Option<Vec<f32>>,
    pub tuned: Option<Vec<f32>>,
}

pub struct Bert {
    cfg: BertConfig,
    precision: Precision,
    word: Vec<f32>,
    /// Position embeddings with token type 0's embedding already added.
    position: Vec<f32>,
    emb_gamma: Vec<f32>,
    emb_beta: Vec<f32>,
    layers: Vec<forward::Layer>,
}

impl Bert {
    /// Loads f32 weights; `Precision::Int8` quantizes the encoder layers with `calib`'s statistics.
    pub fn load(
        config: &Path,
        weights: &Path,
        precision: Precision,
        calib: Option<&Calibration>,
    ) -> Result<Self, EmbedError> {
        let cfg = BertConfig::from_file(config)?;
        let hd = cfg.hidden_size / cfg.num_attention_heads;
        if hd % super::kernels::NR != 0 || hd > forward::MAX_HEAD {
            return Err(EmbedError::Load(format!(
                "head size {hd} is not a multiple of {} (the kernels' panel width)",
                super::kernels::NR
            )));
        }
        let calib = match precision {
            Precision::F32 => None,
            Precision::Int8 => Some(
                calib.ok_or_else(|| EmbedError::Load("int8 precision needs a calibration file".into()))?,
            ),
        };
        let mut st = SafetensorsFile::open(weights)?;
        let h = cfg.hidden_size;
        // sentence-transformers checkpoints have no "bert." prefix; HF BertModel ones do.
        let prefix = if st.entries.contains_key("embeddings.word_embeddings.weight") {
            ""
        } else {
            "bert."
        };
        let word = to_vec(&st.tensor(
            &format!("{prefix}embeddings.word_embeddings.weight"),
            &[cfg.vocab_size, h],
        )?)?;
        let mut position = to_vec(&st.tensor(
            &format!("{prefix}embeddings.position_embeddings.weight"),
            &[cfg.max_position_embeddings, h],
        )?)?;
        let token_type0 = to_vec(
            &st.tensor(
                &format!("{prefix}embeddings.token_type_embeddings.weight"),
                &[cfg.type_vocab_size, h],
            )?
            .get(0)?,
        )?;
        for row in position.chunks_exact_mut(h) {
            row.iter_mut().zip(&token_type0).for_each(|(p, t)| *p += t);
        }
        let emb_gamma = to_vec(&st.tensor(&format!("{prefix}embeddings.LayerNorm.weight"), &[h])?)?;
        let emb_beta = to_vec(&st.tensor(&format!("{prefix}embeddings.LayerNorm.bias"), &[h])?)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            layers.push(load_layer(
                &mut |name, shape| st.tensor(name, shape),
                prefix,
                i,
                &cfg,
                calib,
            )?);
        }
        Ok(Self {
            cfg,
            precision,
            word,
            position,
            emb_gamma,
            emb_beta,
            layers,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes of packed encoder-layer weights (f32: ~42 MB; int8: ~11 MB).
    pub fn layer_weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.qkv.bytes() + l.attn_out.bytes() + l.inter.bytes() + l.out.bytes())
            .sum()
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    pub fn max_positions(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    /// Replacement weights for layers `from..`, named as Hugging Face names them
    /// (`encoder.layer.{i}.*`, `[out, in]` linear weights), as `triage train status` writes them.
    pub fn tail_from_tensors(
        &self,
        tensors: &HashMap<String, Tensor>,
        from: usize,
    ) -> Result<Tail, EmbedError> {
        if from >= self.layers.len() {
            return Err(EmbedError::Load(format!(
                "a tail from layer {from} of a {}-layer encoder",
                self.layers.len()
            )));
        }
        let mut get = |name: &str, shape: &[usize]| -> Result<Tensor, EmbedError> {
            let t = tensors
                .get(name)
                .ok_or_else(|| EmbedError::Load(format!("fine-tuned layers have no tensor {name}")))?;
            if t.dims() != shape {
                return Err(EmbedError::Load(format!(
                    "{name}: expected {shape:?}, found {:?}",
                    t.dims()
                )));
            }
            Ok(t.clone())
        };
        let layers = (from..self.layers.len())
            .map(|i| load_layer(&mut get, "", i, &self.cfg, None))
            .collect::<Result<_, _>>()?;
        Ok(Tail { from, layers })
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Mean-pooled, L2-normalised sentence embeddings for token-id sequences (all non-empty,
    /// already truncated). Sequences are not padded: each one's result is the same whatever else
    /// is in the batch.
    pub fn embed(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_with_tail(seqs, None, &[])?
            .into_iter()
            .map(|e| {
                e.shared
                    .ok_or_else(|| EmbedError::Invalid("no shared embedding".into()))
            })
            .collect()
    }

    /// As [`Bert::embed`], with each sequence `i` getting what `want[i]` asks for (missing entries:
    /// [`Want::Shared`]); the tuned embedding comes from `tail`'s layers replacing the top ones,
    /// from the same hidden states.
    pub fn embed_with_tail(
        &self,
        seqs: &[&[u32]],
        tail: Option<&Tail>,
        want: &[Want],
    ) -> Result<Vec<Embedded>, EmbedError> {
        let b = seqs.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        let want_of = |i: usize| want.get(i).copied().unwrap_or_default();
        let tuned: Vec<usize> = (0..b).filter(|&i| want_of(i) != Want::Shared).collect();
        let tail = match tail {
            Some(t) if !tuned.is_empty() => t,
            None if !tuned.is_empty() => {
                return Err(EmbedError::Invalid(
                    "a tuned embedding was asked for without a tail".into(),
                ))
            }
            _ => {
                let mut x = self.embeddings(seqs)?;
                let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
                self.run(&self.layers, 0, &mut x, &lens);
                return Ok(forward::pool(&x, &lens, self.cfg.hidden_size)
                    .into_iter()
                    .map(|v| Embedded {
                        shared: Some(v),
                        tuned: None,
                    })
                    .collect());
            }
        };
        let h = self.cfg.hidden_size;
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let mut x = self.embeddings(seqs)?;
        self.run(&self.layers[..tail.from], 0, &mut x, &lens);
        let mut out = vec![Embedded::default(); b];
        let (mut y, tuned_lens) = select(&x, &lens, &tuned, h);
        self.run(&tail.layers, tail.from, &mut y, &tuned_lens);
        for (&k, v) in tuned.iter().zip(forward::pool(&y, &tuned_lens, h)) {
            out[k].tuned = Some(v);
        }
        drop(y);
        let keep: Vec<usize> = (0..b).filter(|&k| want_of(k) != Want::Tuned).collect();
        if !keep.is_empty() {
            let (mut z, keep_lens) = select(&x, &lens, &keep, h);
            drop(x);
            self.run(&self.layers[tail.from..], tail.from, &mut z, &keep_lens);
            for (&k, v) in keep.iter().zip(forward::pool(&z, &keep_lens, h)) {
                out[k].shared = Some(v);
            }
        }
        Ok(out)
    }

    /// Experiment features (status head, `triage train status --features`): per sequence, the
    /// shared embedding ([`Bert::embed`]), then the mean-pooled, L2-normalised output of layer
    /// `layer` (1-based count of layers run, e.g. 4 of 6) when given, then the L2-normalised
    /// elementwise max over the last layer's token states when `max`; one forward pass.
    pub fn embed_pooled(
        &self,
        seqs: &[&[u32]],
        layer: Option<usize>,
        max: bool,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let n_layers = self.layers.len();
        if let Some(k) = layer {
            if k == 0 || k > n_layers {
                return Err(EmbedError::Invalid(format!("layer {k} is not in 1..={n_layers}")));
            }
        }
        let h = self.cfg.hidden_size;
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let mut x = self.embeddings(seqs)?;
        let k = layer.unwrap_or(0);
        self.run(&self.layers[..k], 0, &mut x, &lens);
        let mid = layer.map(|_| forward::pool(&x, &lens, h));
        self.run(&self.layers[k..], k, &mut x, &lens);
        let mut out = forward::pool(&x, &lens, h);
        if let Some(mid) = mid {
            for (o, m) in out.iter_mut().zip(mid) {
                o.extend(m);
            }
        }
        if max {
            let mut start = 0;
            for (o, &n) in out.iter_mut().zip(&lens) {
                o.extend(max_pool(&x[start * h..(start + n) * h], h));
                start += n;
            }
        }
        Ok(out)
    }

    fn run(&self, layers: &[forward::Layer], first: usize, x: &mut [f32], lens: &[usize]) {
        forward::run_layers(
            layers,
            first,
            x,
            lens,
            self.cfg.num_attention_heads,
            super::ops::intra_op(),
            None,
        );
    }

    /// Runs every layer on one thread, showing `observe` each projection's input (calibration).
    pub(crate) fn run_observed(
        &self,
        seqs: &[&[u32]],
        observe: &forward::Observer<'_>,
    ) -> Result<(), EmbedError> {
        let mut x = self.embeddings(seqs)?;
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let heads = self.cfg.num_attention_heads;
        forward::run_layers(&self.layers, 0, &mut x, &lens, heads, false, Some(observe));
        Ok(())
    }

    /// Hidden states entering layer `layer` (the embeddings for 0), one `[len, hidden]` tensor
    /// per sequence: what training a [`Tail`] from that layer starts from.
    pub fn hidden_states(&self, seqs: &[&[u32]], layer: usize) -> Result<Vec<Tensor>, EmbedError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let h = self.cfg.hidden_size;
        let mut x = self.embeddings(seqs)?;
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        self.run(&self.layers[..layer.min(self.layers.len())], 0, &mut x, &lens);
        let mut start = 0;
        let mut out = Vec::with_capacity(seqs.len());
        for &n in &lens {
            out.push(Tensor::from_slice(
                &x[start * h..(start + n) * h],
                (n, h),
                &Device::Cpu,
            )?);
            start += n;
        }
        Ok(out)
    }

    /// Embedding layer output for the concatenated sequences: `[tokens, hidden]`.
    fn embeddings(&self, seqs: &[&[u32]]) -> Result<Vec<f32>, EmbedError> {
        let h = self.cfg.hidden_size;
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        let mut x = Vec::with_capacity(total * h);
        for s in seqs {
            if s.is_empty() || s.len() > self.cfg.max_position_embeddings {
                return Err(EmbedError::Invalid(format!(
                    "sequence length {} out of range",
                    s.len()
                )));
            }
            for (pos, &id) in s.iter().enumerate() {
                let id = id as usize;
                if id >= self.cfg.vocab_size {
                    return Err(EmbedError::Invalid(format!("token id {id} out of range")));
                }
                let w = &self.word[id * h..(id + 1) * h];
                let p = &self.position[pos * h..(pos + 1) * h];
                x.extend(w.iter().zip(p).map(|(a, b)| a + b));
            }
        }
        let eps = self.cfg.layer_norm_eps as f32;
        forward::layer_norm(&mut x, &self.emb_gamma, &self.emb_beta, eps);
        Ok(x)
    }
}

/// Elementwise maximum over the rows (width `h`) of one sequence's token states, L2-normalised.
fn max_pool(rows: &[f32], h: usize) -> Vec<f32> {
    let mut m = vec![f32::NEG_INFINITY; h];
    for row in rows.chunks_exact(h) {
        for (a, &v) in m.iter_mut().zip(row) {
            *a = a.max(v);
        }
    }
    let norm = m
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    m.iter().map(|v| (f64::from(*v) / norm) as f32).collect()
}

/// The rows of sequences `idx` out of concatenated `x`, and their lengths.
fn select(x: &[f32], lens: &[usize], idx: &[usize], h: usize) -> (Vec<f32>, Vec<usize>) {
    let mut starts = Vec::with_capacity(lens.len());
    let mut s = 0;
    for &n in lens {
        starts.push(s);
        s += n;
    }
    let mut out = Vec::new();
    let mut out_lens = Vec::with_capacity(idx.len());
    for &k in idx {
        out.extend_from_slice(&x[starts[k] * h..(starts[k] + lens[k]) * h]);
        out_lens.push(lens[k]);
    }
    (out, out_lens)
}
