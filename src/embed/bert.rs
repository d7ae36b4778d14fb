//! Our own BERT encoder forward over candle tensors (as text-embeddings-inference does): we own the
//! hot path, so the layout is chosen for inference rather than for training:
//! - Q, K and V are one fused `[hidden, 3*hidden]` projection, pre-transposed (`x @ W`), with the
//!   attention scale `1/sqrt(head_dim)` folded into the Q columns;
//! - every linear weight is stored pre-transposed and contiguous, so no per-call transposes;
//! - softmax is `softmax_last_dim`; bias adds, GELU, residual adds and layer norms are fused
//!   in-place kernels ([`super::ops`]), so activations are not copied between them;
//! - padded keys are skipped inside the softmax kernel rather than masked with an added tensor.
//!
//! Weights are read tensor by tensor straight from the safetensors file into their final buffers,
//! so loading never holds the file and the tensors in memory at once (peak RSS stays near the
//! model's 90 MB).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use serde::Deserialize;

use super::{ops, EmbedError};

/// Attention scores made at once, at most (bytes): bounds activation memory for long sequences.
const ATTENTION_SCORES_BYTES: usize = 4 << 20;

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

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// `x @ w + b` with `w` stored `[in, out]` (pre-transposed).
struct Linear {
    w: Tensor,
    b: Tensor,
}

/// One encoder layer. Each `*_norm` is `[bias; gamma; beta]` of a projection and the layer norm
/// after it (see [`ops::add_norm_params`]); the projection itself has no separate bias.
struct Layer {
    qkv: Linear,
    attn_out: Tensor,
    attn_norm: Tensor,
    inter: Linear,
    out: Tensor,
    out_norm: Tensor,
    eps: f32,
}

/// Looks a tensor up by name, checking its shape.
type TensorSource<'a> = dyn FnMut(&str, &[usize]) -> Result<Tensor, EmbedError> + 'a;

/// Reads encoder layer `i` (`{prefix}encoder.layer.{i}.*`, the Hugging Face names) into the
/// inference layout.
fn load_layer(
    get: &mut TensorSource<'_>,
    prefix: &str,
    i: usize,
    cfg: &BertConfig,
) -> Result<Layer, EmbedError> {
    let h = cfg.hidden_size;
    let eps = cfg.layer_norm_eps as f32;
    let scale = 1.0 / ((h / cfg.num_attention_heads) as f64).sqrt();
    let p = format!("{prefix}encoder.layer.{i}.");
    let mut lin = |name: &str, out: usize, inp: usize| -> Result<(Tensor, Tensor), EmbedError> {
        let w = if inp == 0 { vec![out] } else { vec![out, inp] };
        Ok((
            get(&format!("{p}{name}.weight"), &w)?,
            get(&format!("{p}{name}.bias"), &[out])?,
        ))
    };
    let (qw, qb) = lin("attention.self.query", h, h)?;
    let (kw, kb) = lin("attention.self.key", h, h)?;
    let (vw, vb) = lin("attention.self.value", h, h)?;
    let (ow, ob) = lin("attention.output.dense", h, h)?;
    let (iw, ib) = lin("intermediate.dense", cfg.intermediate_size, h)?;
    let (o2w, o2b) = lin("output.dense", h, cfg.intermediate_size)?;
    // A layer norm's weight and bias are both `[h]`.
    let (ln1w, ln1b) = lin("attention.output.LayerNorm", h, 0)?;
    let (ln2w, ln2b) = lin("output.LayerNorm", h, 0)?;
    Ok(Layer {
        qkv: Linear {
            w: Tensor::cat(&[(qw * scale)?, kw, vw], 0)?.t()?.contiguous()?,
            b: Tensor::cat(&[(qb * scale)?, kb, vb], 0)?,
        },
        attn_out: ow.t()?.contiguous()?,
        attn_norm: ops::add_norm_params(&ob, &ln1w, &ln1b)?,
        inter: Linear {
            w: iw.t()?.contiguous()?,
            b: ib,
        },
        out: o2w.t()?.contiguous()?,
        out_norm: ops::add_norm_params(&o2b, &ln2w, &ln2b)?,
        eps,
    })
}

/// Replacement weights for the top encoder layers (a fine-tuned classifier's), run as a second
/// branch from the shared forward's hidden states at layer `from`, so a sequence that wants both
/// pays only for the replaced layers twice.
pub struct Tail {
    from: usize,
    layers: Vec<Layer>,
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
    word: Tensor,
    position: Tensor,
    token_type0: Tensor,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
}

impl Bert {
    pub fn load(config: &Path, weights: &Path) -> Result<Self, EmbedError> {
        let cfg = BertConfig::from_file(config)?;
        let mut st = SafetensorsFile::open(weights)?;
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps as f32;
        // sentence-transformers checkpoints have no "bert." prefix; HF BertModel ones do.
        let prefix = if st.entries.contains_key("embeddings.word_embeddings.weight") {
            ""
        } else {
            "bert."
        };
        let ln = |st: &mut SafetensorsFile, name: &str| -> Result<LayerNorm, EmbedError> {
            Ok(LayerNorm {
                weight: st.tensor(&format!("{prefix}{name}.weight"), &[h])?,
                bias: st.tensor(&format!("{prefix}{name}.bias"), &[h])?,
                eps,
            })
        };
        let word = st.tensor(
            &format!("{prefix}embeddings.word_embeddings.weight"),
            &[cfg.vocab_size, h],
        )?;
        let position = st.tensor(
            &format!("{prefix}embeddings.position_embeddings.weight"),
            &[cfg.max_position_embeddings, h],
        )?;
        let token_type0 = st
            .tensor(
                &format!("{prefix}embeddings.token_type_embeddings.weight"),
                &[cfg.type_vocab_size, h],
            )?
            .get(0)?;
        let emb_ln = ln(&mut st, "embeddings.LayerNorm")?;

        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            layers.push(load_layer(
                &mut |name, shape| st.tensor(name, shape),
                prefix,
                i,
                &cfg,
            )?);
        }
        Ok(Self {
            cfg,
            word,
            position,
            token_type0,
            emb_ln,
            layers,
        })
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
            Ok(t.to_dtype(DType::F32)?.contiguous()?)
        };
        let layers = (from..self.layers.len())
            .map(|i| load_layer(&mut get, "", i, &self.cfg))
            .collect::<Result<_, _>>()?;
        Ok(Tail { from, layers })
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Mean-pooled, L2-normalised sentence embeddings for token-id sequences (all non-empty,
    /// already truncated). Sequences are right-padded to the longest one; padded positions are
    /// masked out of attention and pooling, so results do not depend on the batch's composition
    /// beyond floating-point summation order.
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
        if tail.is_none() && !tuned.is_empty() {
            return Err(EmbedError::Invalid(
                "a tuned embedding was asked for without a tail".into(),
            ));
        }
        let (x, l) = self.embeddings(seqs)?;
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let mut out = vec![Embedded::default(); b];
        // The sequences whose rows `x` holds (all of them until the tail branches off), and theirs.
        let mut rows: Vec<usize> = (0..b).collect();
        let mut lens = lengths.clone();
        let mut x = Some(x);
        for (i, layer) in self.layers.iter().enumerate() {
            // The tail branches off before layer `from` runs on the shared rows.
            if let (Some(tail), Some(cur)) = (tail.filter(|t| t.from == i), x.as_ref()) {
                if !tuned.is_empty() {
                    let tuned_lens: Vec<usize> = tuned.iter().map(|&k| lengths[k]).collect();
                    let mut y = self.select_rows(cur, b, l, &tuned)?;
                    for t in &tail.layers {
                        y = self.layer_forward(t, &y, l, &tuned_lens)?;
                    }
                    for (&k, v) in tuned.iter().zip(self.pool(&y, &tuned_lens, l)?) {
                        out[k].tuned = Some(v);
                    }
                }
                // Sequences that want only the tuned embedding stop here.
                let keep: Vec<usize> = (0..b).filter(|&k| want_of(k) != Want::Tuned).collect();
                if keep.is_empty() {
                    x = None;
                } else if keep.len() < b {
                    x = Some(self.select_rows(cur, b, l, &keep)?);
                    lens = keep.iter().map(|&k| lengths[k]).collect();
                    rows = keep;
                }
            }
            match x.take() {
                Some(cur) => x = Some(self.layer_forward(layer, &cur, l, &lens)?),
                None => break,
            }
        }
        if let Some(x) = x {
            for (&k, v) in rows.iter().zip(self.pool(&x, &lens, l)?) {
                out[k].shared = Some(v);
            }
        }
        Ok(out)
    }

    /// Rows `[n*l, h]` of the sequences `idx` out of `[b*l, h]`.
    fn select_rows(&self, x: &Tensor, b: usize, l: usize, idx: &[usize]) -> candle_core::Result<Tensor> {
        let h = self.cfg.hidden_size;
        let ids = Tensor::from_vec(
            idx.iter().map(|&k| k as u32).collect::<Vec<_>>(),
            idx.len(),
            &Device::Cpu,
        )?;
        x.reshape((b, l, h))?
            .index_select(&ids, 0)?
            .reshape((idx.len() * l, h))
    }

    /// Hidden states entering layer `layer` (the embeddings for 0), one `[len, hidden]` tensor
    /// per sequence: what training a [`Tail`] from that layer starts from.
    pub fn hidden_states(&self, seqs: &[&[u32]], layer: usize) -> Result<Vec<Tensor>, EmbedError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let (mut x, l) = self.embeddings(seqs)?;
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        for layer in &self.layers[..layer.min(self.layers.len())] {
            x = self.layer_forward(layer, &x, l, &lengths)?;
        }
        let x = x.reshape((seqs.len(), l, self.cfg.hidden_size))?;
        Ok(lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| x.get(i)?.narrow(0, 0, n)?.contiguous())
            .collect::<candle_core::Result<_>>()?)
    }

    /// Embedding layer output for right-padded sequences: rows `[b*l, h]`, and `l`.
    fn embeddings(&self, seqs: &[&[u32]]) -> Result<(Tensor, usize), EmbedError> {
        let b = seqs.len();
        let l = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if l == 0 || l > self.cfg.max_position_embeddings {
            return Err(EmbedError::Invalid(format!("sequence length {l} out of range")));
        }
        let h = self.cfg.hidden_size;
        let mut ids = Vec::with_capacity(b * l);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(0u32, l - s.len()));
        }
        let ids = Tensor::from_vec(ids, b * l, &Device::Cpu)?;
        // Word + position + token type 0, then layer norm.
        let pos = self.position.narrow(0, 0, l)?.broadcast_add(&self.token_type0)?;
        let x = self
            .word
            .index_select(&ids, 0)?
            .reshape((b, l, h))?
            .broadcast_add(&pos)?;
        Ok((self.emb_ln.forward(&x.reshape((b * l, h))?)?, l))
    }

    /// One encoder layer over rows `[b*l, h]` of right-padded sequences of `lengths`; attention
    /// softmax counts only each sequence's real keys (padding gets exactly 0).
    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        l: usize,
        lengths: &[usize],
    ) -> candle_core::Result<Tensor> {
        let b = lengths.len();
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let hd = h / heads;
        // Each projection is one matmul; its bias is added inside the fused op that follows.
        let qkv = ops::matmul(x, &layer.qkv.w)?;
        ops::bias_add_(&qkv, &layer.qkv.b)?;
        let qkv = qkv.reshape((b, l, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        drop(qkv);
        // Scores are [seqs, heads, l, l]: at 256 tokens that is 3 MB per sequence, so they are
        // made a few sequences at a time, keeping peak memory flat whatever the batch.
        let chunk = (ATTENTION_SCORES_BYTES / (heads * l * l * 4)).clamp(1, b);
        let mut ctxs = Vec::with_capacity(b.div_ceil(chunk));
        for start in (0..b).step_by(chunk) {
            let n = chunk.min(b - start);
            let scores = q.narrow(0, start, n)?.matmul(&k.narrow(0, start, n)?.t()?)?;
            ops::masked_softmax_(&scores, &lengths[start..start + n])?;
            ctxs.push(scores.matmul(&v.narrow(0, start, n)?)?);
        }
        drop((q, k, v));
        let ctx = if ctxs.len() == 1 {
            ctxs.pop().expect("one chunk")
        } else {
            Tensor::cat(&ctxs, 0)?
        };
        drop(ctxs);
        let ctx = ctx.transpose(1, 2)?.reshape((b * l, h))?;
        let attn = ops::matmul(&ctx, &layer.attn_out)?;
        ops::bias_residual_layer_norm_(&attn, x, &layer.attn_norm, layer.eps)?;
        let inter = ops::matmul(&attn, &layer.inter.w)?;
        ops::bias_gelu_(&inter, &layer.inter.b)?;
        let out = ops::matmul(&inter, &layer.out)?;
        ops::bias_residual_layer_norm_(&out, &attn, &layer.out_norm, layer.eps)?;
        Ok(out)
    }

    /// Mean pooling over real tokens, then L2 normalisation.
    fn pool(&self, x: &Tensor, lengths: &[usize], l: usize) -> candle_core::Result<Vec<Vec<f32>>> {
        let b = lengths.len();
        let mut mask = Vec::with_capacity(b * l);
        for &n in lengths {
            mask.extend(std::iter::repeat_n(1f32, n));
            mask.extend(std::iter::repeat_n(0f32, l - n));
        }
        let mask = Tensor::from_vec(mask, (b, l), &Device::Cpu)?;
        let x = x.reshape((b, l, self.cfg.hidden_size))?;
        let summed = x.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
        let counts = mask.sum_keepdim(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norm)?.to_dtype(DType::F32)?.to_vec2::<f32>()
    }
}
