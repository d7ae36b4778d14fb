//! `triage bench embed`: whole-system embedding numbers on a message file: batch throughput
//! (tokenization included, length-sorted token-budgeted batches, the serving path's planner),
//! single-message latency, threads and peak RSS. `--impl candle-stock` runs candle-transformers'
//! stock `BertModel` through the same batching, as the in-run baseline for what our forward buys.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::ConfigArgs;
use crate::config::Overrides;
use crate::embed::{plan_batches, BatchLimits, EmbedError, Embedder};
use crate::model_files::{self, ModelFiles};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Embedding throughput and single-message latency over a file of messages (one per line).
    Embed(EmbedArgs),
    /// A Slack import's throughput against the embedder's batch rate, measured in the same run.
    Import(super::bench_import::ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Messages timed one at a time for latency.
    #[arg(long, default_value_t = 500)]
    pub single: usize,
    /// Only messages with fewer tokens than this are timed one at a time.
    #[arg(long, default_value_t = 40)]
    pub single_max_tokens: usize,
    /// Padded tokens per forward batch (overrides TRIAGE_EMBED_MAX_BATCH_TOKENS).
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
    #[arg(long)]
    pub max_batch_size: Option<usize>,
    #[arg(long = "impl", value_enum, default_value = "triage")]
    pub implementation: Impl,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `triage bench ...`.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let args = match command {
        BenchCommand::Embed(args) => args,
        BenchCommand::Import(args) => return super::bench_import::run(args),
    };
    let s = args.config.settings(Overrides {
        max_batch_tokens: args.max_batch_tokens,
        max_batch_size: args.max_batch_size,
        ..Overrides::default()
    })?;
    let files = model_files::resolve(s.model_dir.as_deref())?;
    let opts = BenchOptions {
        repeats: args.repeats,
        single: args.single,
        single_max_tokens: args.single_max_tokens,
        limits: s.batch_limits(),
        implementation: args.implementation,
        threads: rayon::current_num_threads(),
    };
    let report = bench_embed(&files, &args.input, &opts)?;
    super::print_result(&serde_json::to_value(&report)?);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impl {
    /// Our forward (the one `serve` uses).
    Triage,
    /// candle-transformers' stock BertModel with the same tokenizer, batching and pooling.
    CandleStock,
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub repeats: usize,
    /// Single-message latency is measured over (at most) this many messages...
    pub single: usize,
    /// ...of fewer than this many tokens (the latency target is for messages under 40 tokens).
    pub single_max_tokens: usize,
    pub limits: BatchLimits,
    pub implementation: Impl,
    pub threads: usize,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub sentences: usize,
    pub sentences_per_s: f64,
    pub runs_per_s: Vec<f64>,
    pub single_p50_ms: f64,
    pub single_p99_ms: f64,
    pub single_n: usize,
    pub threads: usize,
    pub peak_rss_mb: f64,
    pub mean_tokens: f64,
    pub max_batch_tokens: usize,
    pub max_batch_size: usize,
    #[serde(rename = "impl")]
    pub implementation: Impl,
    pub precision: crate::embed::Precision,
    /// The instruction set our kernels ran on (`avx512`, `avx2`, `portable`; int8: `avx512-vnni`).
    pub kernels: &'static str,
}

/// Something that embeds one planned batch of token sequences.
trait Forward {
    fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

impl Forward for Embedder {
    fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_tokens(seqs)
    }
}

struct Stock(candle_transformers::models::bert::BertModel);

impl Forward for Stock {
    fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let l = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for s in seqs {
            ids.extend(s.iter().copied().chain(std::iter::repeat_n(0, l - s.len())));
            mask.extend((0..l).map(|i| u32::from(i < s.len())));
        }
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(ids, (seqs.len(), l), &dev)?;
        let mask = Tensor::from_vec(mask, (seqs.len(), l), &dev)?;
        let out = self.0.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        let m = mask.to_dtype(candle_core::DType::F32)?.unsqueeze(2)?;
        let mean = out.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        Ok(mean.broadcast_div(&norm)?.to_vec2()?)
    }
}

fn load_stock(files: &ModelFiles) -> anyhow::Result<Stock> {
    use candle_transformers::models::bert::{BertModel, Config};
    let cfg: Config = serde_json::from_str(&std::fs::read_to_string(files.config())?)?;
    // SAFETY: the file was verified just before and is not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[files.weights()],
            candle_core::DType::F32,
            &Device::Cpu,
        )?
    };
    Ok(Stock(BertModel::load(vb, &cfg)?))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

pub fn bench_embed(files: &ModelFiles, input: &Path, opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let text = std::fs::read_to_string(input)?;
    let msgs: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    anyhow::ensure!(!msgs.is_empty(), "{} has no non-empty lines", input.display());
    let embedder = Embedder::load(files, opts.limits)?;
    let stock = match opts.implementation {
        Impl::Triage => None,
        Impl::CandleStock => Some(load_stock(files)?),
    };
    let model: &dyn Forward = match &stock {
        Some(s) => s,
        None => &embedder,
    };
    let tok = |m: &str| embedder.tokenize(m);
    // The serving path's planner and runner (batches side by side when there are several); the
    // stock model runs the same plan one batch after another.
    let run_all = |msgs: &[&str]| -> anyhow::Result<()> {
        let ids = embedder.tokenize_all(msgs)?;
        let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let plan = plan_batches(&lengths, opts.limits);
        if stock.is_none() {
            embedder.run_plan(&seqs, &plan, |_| {})?;
            return Ok(());
        }
        for batch in plan {
            let group: Vec<&[u32]> = batch.iter().map(|&i| seqs[i]).collect();
            model.forward(&group)?;
        }
        Ok(())
    };

    let lengths: Vec<usize> = msgs
        .iter()
        .map(|m| tok(m).map(|v| v.len()))
        .collect::<Result<_, _>>()?;
    let mean_tokens = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
    eprintln!(
        "{} messages, {:.1} tokens on average; warming up",
        msgs.len(),
        mean_tokens
    );
    run_all(&msgs[..msgs.len().min(64)])?;

    let progress = indicatif::ProgressBar::new(opts.repeats as u64);
    progress.set_message("batch throughput");
    let mut runs = Vec::new();
    for _ in 0..opts.repeats {
        let t = Instant::now();
        run_all(&msgs)?;
        runs.push(msgs.len() as f64 / t.elapsed().as_secs_f64());
        progress.inc(1);
    }
    progress.finish_and_clear();

    let short: Vec<&str> = msgs
        .iter()
        .zip(&lengths)
        .filter(|(_, &n)| n < opts.single_max_tokens)
        .map(|(m, _)| *m)
        .take(opts.single)
        .collect();
    let progress = indicatif::ProgressBar::new(short.len() as u64);
    let mut lat = Vec::with_capacity(short.len());
    for m in &short {
        let t = Instant::now();
        let ids = tok(m)?;
        model.forward(&[ids.as_slice()])?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        progress.inc(1);
    }
    progress.finish_and_clear();
    lat.sort_by(f64::total_cmp);

    Ok(BenchReport {
        sentences: msgs.len(),
        sentences_per_s: median(&runs),
        runs_per_s: runs,
        single_p50_ms: percentile(&lat, 50.0),
        single_p99_ms: percentile(&lat, 99.0),
        single_n: lat.len(),
        threads: opts.threads,
        peak_rss_mb: crate::telemetry::peak_rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64,
        mean_tokens,
        max_batch_tokens: opts.limits.max_batch_tokens,
        max_batch_size: opts.limits.max_batch_size,
        implementation: opts.implementation,
        precision: opts.limits.precision,
        kernels: match opts.limits.precision {
            crate::embed::Precision::Int8 => crate::embed::qkernels::isa(),
            _ => crate::embed::kernels::isa(),
        },
    })
}
