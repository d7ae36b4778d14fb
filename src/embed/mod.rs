//! Local sentence embeddings: all-MiniLM-L6-v2 on CPU, matching sentence-transformers (mean
//! pooling over the tokens, L2 normalisation, truncation at 256 tokens), in f32 (exact) or int8
//! ([`Precision`]).
//!
//! Weights are read with candle and packed once at load for our own matmul kernels (AVX-512 FMA,
//! AVX-512 VNNI for int8, portable fallbacks); the forward runs on plain buffers over ragged
//! batches. This is the ML core: no HTTP, no SQL. The serving runtime is in [`crate::queue`].

mod bert;
pub mod calibrate;
mod forward;
pub mod kernels;
pub mod ops;
pub mod qkernels;
mod team;

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub use bert::{Bert, BertConfig, Embedded, Tail, Want};

use crate::model_files::ModelFiles;

/// Embedding dimension of all-MiniLM-L6-v2.
pub const DIM: usize = 384;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("loading the embedding model: {0}")]
    Load(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("inference: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Numeric precision of the encoder layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Exact: matches sentence-transformers to cosine 1 - 1e-7.
    #[default]
    F32,
    /// Per-channel int8 weights (SmoothQuant-calibrated), per-token uint8 activations.
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "int8" | "i8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision {other:?} (expected f32 or int8)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        })
    }
}

/// Batching limits (and the precision the model is loaded in). A batch's cost is its token count,
/// which also bounds its activation memory, so the budget is in tokens.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_batch_tokens: usize,
    pub max_batch_size: usize,
    pub precision: Precision,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_batch_tokens: 2048,
            max_batch_size: 128,
            precision: Precision::F32,
        }
    }
}

/// Splits sequences (given by their token counts) into batches: sorted by length (longest first,
/// deterministic), each batch's total tokens within the budget (batches are ragged: no padding;
/// a single over-long sequence still gets its own batch). Returns indices into `lengths`; every
/// index appears exactly once.
pub fn plan_batches(lengths: &[usize], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Longest first; ties keep input order so the plan is deterministic.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut tokens = 0;
    for i in order {
        let len = lengths[i].max(1);
        if !current.is_empty()
            && (tokens + len > limits.max_batch_tokens || current.len() >= limits.max_batch_size)
        {
            batches.push(std::mem::take(&mut current));
            tokens = 0;
        }
        tokens += len;
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// [`plan_batches`] for `threads` compute threads, which take the batches one each: a plan of few
/// batches whose count is not a multiple of `threads` leaves threads idle while the last batches
/// run (three batches on two threads: one thread waits a third of the time). Such a plan is cut
/// again into the next multiple of `threads` batches of about equal tokens, still in length order.
/// Plans of many batches (at least eight per thread) lose little and are kept, as is any plan the
/// cut would put over the limits.
pub fn plan_parallel(lengths: &[usize], limits: BatchLimits, threads: usize) -> Vec<Vec<usize>> {
    let plan = plan_batches(lengths, limits);
    let n = plan.len();
    if threads <= 1 || n == 0 || n >= 8 * threads || n % threads == 0 {
        return plan;
    }
    let order: Vec<usize> = plan.iter().flatten().copied().collect();
    let target = n.div_ceil(threads).saturating_mul(threads).min(order.len());
    if target <= n {
        return plan;
    }
    let cost = |i: usize| lengths[i].max(1);
    let total: usize = order.iter().map(|&i| cost(i)).sum();
    let mut balanced: Vec<Vec<usize>> = Vec::with_capacity(target);
    let mut current = Vec::new();
    let mut done = 0;
    for (k, &i) in order.iter().enumerate() {
        current.push(i);
        done += cost(i);
        let groups_left = target - balanced.len() - 1;
        let items_left = order.len() - k - 1;
        // Close the group at its share of the tokens, or when every later group needs one of the
        // items left.
        let share = (balanced.len() + 1) * total / target;
        if groups_left > 0 && (done >= share || items_left == groups_left) {
            balanced.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        balanced.push(current);
    }
    let fits = |b: &Vec<usize>| {
        b.len() <= limits.max_batch_size
            && (b.len() == 1 || b.iter().map(|&i| cost(i)).sum::<usize>() <= limits.max_batch_tokens)
    };
    if balanced.len() == target && balanced.iter().all(fits) {
        balanced
    } else {
        plan
    }
}

pub struct Embedder {
    tokenizer: Tokenizer,
    model: Bert,
    limits: BatchLimits,
    /// A fine-tuned classifier's top layers, set once its model is loaded.
    tail: std::sync::OnceLock<Tail>,
}

impl Embedder {
    /// Loads verified model files. `max_seq_length` comes from the manifest (256 for this model,
    /// what sentence-transformers uses; the shipped tokenizer.json says 128 and pads to 128).
    /// In int8 precision the calibration file is `TRIAGE_EMBED_CALIBRATION`, else
    /// `int8-calibration.json` beside the model folder (`models/`).
    pub fn load(files: &ModelFiles, limits: BatchLimits) -> Result<Self, EmbedError> {
        let tokenizer = load_tokenizer(&files.tokenizer(), files.manifest.max_seq_length)?;
        let calib = match limits.precision {
            Precision::F32 => None,
            Precision::Int8 => Some(calibrate::Calibration::read(
                &calibration_path(files),
                files.manifest.weights_sha256(),
            )?),
        };
        let model = Bert::load(
            &files.config(),
            &files.weights(),
            limits.precision,
            calib.as_ref(),
        )?;
        Ok(Self {
            tokenizer,
            model,
            limits,
            tail: std::sync::OnceLock::new(),
        })
    }

    pub fn model(&self) -> &Bert {
        &self.model
    }

    /// Installs a fine-tuned tail (see [`Bert::tail_from_tensors`]); a second one is refused.
    pub fn set_tail(&self, tail: Tail) -> Result<(), EmbedError> {
        self.tail
            .set(tail)
            .map_err(|_| EmbedError::Invalid("a tail is already installed".into()))
    }

    pub fn tail(&self) -> Option<&Tail> {
        self.tail.get()
    }

    pub fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Token ids with [CLS]/[SEP], truncated to the model's maximum.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        tokenize_with(&self.tokenizer, text)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The batches for sequences of these lengths on this process's compute threads
    /// ([`plan_parallel`]).
    pub fn plan(&self, lengths: &[usize]) -> Vec<Vec<usize>> {
        plan_parallel(lengths, self.limits, rayon::current_num_threads())
    }

    /// One forward pass over one batch (as planned by [`plan_batches`]).
    pub fn embed_tokens(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.model.embed(seqs)
    }

    /// Tokenizes texts, in input order; many texts are split over the compute threads.
    pub fn tokenize_all(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, EmbedError> {
        if texts.len() >= 64 && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            return texts.par_iter().map(|t| self.tokenize(t)).collect();
        }
        texts.iter().map(|t| self.tokenize(t)).collect()
    }

    /// Embeds texts in length-sorted batches; results in input order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids = self.tokenize_all(texts)?;
        self.embed_ids(&ids)
    }

    /// Embeds tokenized sequences in length-sorted batches; results in input order.
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        self.run_plan(&seqs, &self.plan(&lengths), |_| {})
    }

    /// Experiment features for the status head ([`Bert::embed_pooled`]): the shared
    /// embedding, then layer `layer`'s mean pool and/or the last layer's max pool; one forward per
    /// batch, batches as planned for [`Embedder::embed`]; results in input order.
    pub fn embed_pooled(
        &self,
        texts: &[&str],
        layer: Option<usize>,
        max: bool,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids = self.tokenize_all(texts)?;
        let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let plan = self.plan(&lengths);
        let run = |batch: &Vec<usize>| -> Result<Vec<Vec<f32>>, EmbedError> {
            let group: Vec<&[u32]> = batch.iter().map(|&i| seqs[i]).collect();
            self.model.embed_pooled(&group, layer, max)
        };
        run_batches(seqs.len(), &plan, run)
    }

    /// Embeds texts through `tail` only (the shared top layers are skipped), in input order: the
    /// embedding a fine-tuned status model reads.
    pub fn embed_tuned(&self, texts: &[&str], tail: &Tail) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>, _>>()?;
        self.embed_ids_through(&ids, tail, Want::Tuned)?
            .into_iter()
            .map(|e| {
                e.tuned
                    .ok_or_else(|| EmbedError::Invalid("no tuned embedding".into()))
            })
            .collect()
    }

    /// Embeds tokenized sequences through `tail`, each getting what `want` asks for, in input order.
    pub fn embed_ids_through(
        &self,
        ids: &[Vec<u32>],
        tail: &Tail,
        want: Want,
    ) -> Result<Vec<Embedded>, EmbedError> {
        let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let wants = vec![want; seqs.len()];
        self.run_plan_with_tail(&seqs, Some(tail), &wants, &self.plan(&lengths), |_| {})
    }

    /// Runs planned batches (from [`plan_batches`] over `seqs`) and returns one vector per
    /// sequence, in `seqs` order. With several batches and several threads, batches run side by
    /// side, each on one thread (no per-operation synchronisation); a lone batch splits each
    /// operation over the threads instead. Either way each sequence's result is the same: the
    /// kernels never split a dot product across threads. `on_batch` sees each batch's statistics.
    pub fn run_plan(
        &self,
        seqs: &[&[u32]],
        plan: &[Vec<usize>],
        on_batch: impl Fn(BatchStats) + Sync,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.run_plan_with_tail(seqs, None, &[], plan, on_batch)?
            .into_iter()
            .map(|e| {
                e.shared
                    .ok_or_else(|| EmbedError::Invalid("no shared embedding".into()))
            })
            .collect()
    }

    /// As [`Embedder::run_plan`], each sequence `i` getting what `want[i]` asks for (missing:
    /// [`Want::Shared`]), the tuned embedding through `tail`.
    pub fn run_plan_with_tail(
        &self,
        seqs: &[&[u32]],
        tail: Option<&Tail>,
        want: &[Want],
        plan: &[Vec<usize>],
        on_batch: impl Fn(BatchStats) + Sync,
    ) -> Result<Vec<Embedded>, EmbedError> {
        let run = |batch: &Vec<usize>| -> Result<Vec<Embedded>, EmbedError> {
            let group: Vec<&[u32]> = batch.iter().map(|&i| seqs[i]).collect();
            let wants: Vec<Want> = batch
                .iter()
                .map(|&i| want.get(i).copied().unwrap_or_default())
                .collect();
            let t = std::time::Instant::now();
            let out = self.model.embed_with_tail(&group, tail, &wants)?;
            on_batch(BatchStats {
                sequences: group.len(),
                padded_tokens: group.iter().map(|s| s.len()).sum(),
                elapsed: t.elapsed(),
            });
            Ok(out)
        };
        run_batches(seqs.len(), plan, run)
    }
}

/// Runs `run` on every batch of `plan` (over `n` sequences) and returns its results in sequence
/// order. With several batches and several threads, batches run side by side, each on one thread;
/// a lone batch splits each operation over the threads instead.
fn run_batches<T: Default + Clone + Send>(
    n: usize,
    plan: &[Vec<usize>],
    run: impl Fn(&Vec<usize>) -> Result<Vec<T>, EmbedError> + Sync,
) -> Result<Vec<T>, EmbedError> {
    let results: Vec<Vec<T>> = if plan.len() > 1 && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        plan.par_iter()
            .map(|b| ops::single_threaded(|| run(b)))
            .collect::<Result<_, _>>()?
    } else {
        plan.iter().map(run).collect::<Result<_, _>>()?
    };
    let mut out = vec![T::default(); n];
    for (batch, vecs) in plan.iter().zip(results) {
        for (&i, v) in batch.iter().zip(vecs) {
            out[i] = v;
        }
    }
    Ok(out)
}

/// Where int8 mode reads its calibration.
pub fn calibration_path(files: &ModelFiles) -> std::path::PathBuf {
    match std::env::var_os("TRIAGE_EMBED_CALIBRATION") {
        Some(p) => p.into(),
        None => files
            .dir
            .parent()
            .unwrap_or(Path::new("."))
            .join(calibrate::FILE_NAME),
    }
}

/// What one forward batch did, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct BatchStats {
    pub sequences: usize,
    pub padded_tokens: usize,
    pub elapsed: std::time::Duration,
}

pub fn load_tokenizer(path: &Path, max_len: usize) -> Result<Tokenizer, EmbedError> {
    let mut tok =
        Tokenizer::from_file(path).map_err(|e| EmbedError::Tokenizer(format!("{}: {e}", path.display())))?;
    // Replace the file's fixed padding to 128 with none (we pad per batch) and its truncation at 128
    // with sentence-transformers' max_seq_length.
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: max_len,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
    Ok(tok)
}

pub fn tokenize_with(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, EmbedError> {
    let enc = tokenizer
        .encode(text, true)
        .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

/// Cosine similarity of two vectors (1.0 for identical directions).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    (dot / (na.sqrt() * nb.sqrt()).max(1e-30)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_index_once_and_respects_the_budget() {
        let lengths = vec![5, 100, 7, 7, 300, 1, 60, 60, 61, 2];
        let limits = BatchLimits {
            max_batch_tokens: 128,
            max_batch_size: 3,
            ..BatchLimits::default()
        };
        let plan = plan_batches(&lengths, limits);
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for b in &plan {
            let tokens: usize = b.iter().map(|&i| lengths[i]).sum();
            assert!(b.len() <= 3);
            // Only a lone over-long sequence may exceed the budget.
            assert!(tokens <= 128 || b.len() == 1, "{b:?}");
        }
        // Sorted: the 300-token sequence is alone and first.
        assert_eq!(plan[0], vec![4]);
    }

    #[test]
    fn a_plan_of_few_batches_is_cut_into_a_multiple_of_the_threads() {
        let limits = BatchLimits {
            max_batch_tokens: 100,
            max_batch_size: 50,
            ..BatchLimits::default()
        };
        // 25 sequences of 10 tokens: three greedy batches (100, 100, 50 tokens).
        let lengths = vec![10; 25];
        assert_eq!(plan_batches(&lengths, limits).len(), 3);
        let plan = plan_parallel(&lengths, limits, 2);
        assert_eq!(plan.len(), 4);
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        assert_eq!(
            seen,
            plan_batches(&lengths, limits).concat(),
            "length order is kept"
        );
        seen.sort();
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
        let tokens: Vec<usize> = plan.iter().map(|b| b.iter().map(|&i| lengths[i]).sum()).collect();
        assert!(tokens.iter().all(|&t| (60..=70).contains(&t)), "{tokens:?}");
        // One thread, an even count, or many batches: the greedy plan.
        assert_eq!(plan_parallel(&lengths, limits, 1), plan_batches(&lengths, limits));
        assert_eq!(plan_parallel(&lengths, limits, 3), plan_batches(&lengths, limits));
        let many = vec![10; 10 * 16 + 5];
        assert_eq!(plan_parallel(&many, limits, 2), plan_batches(&many, limits));
        // Two short sequences in one batch: one each.
        assert_eq!(plan_parallel(&[3, 4], limits, 2).len(), 2);
        // A lone sequence stays one batch.
        assert_eq!(plan_parallel(&[3], limits, 2), vec![vec![0]]);
    }

    #[test]
    fn plan_of_nothing_is_empty() {
        assert!(plan_batches(&[], BatchLimits::default()).is_empty());
    }
}
