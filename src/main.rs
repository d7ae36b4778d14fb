//! The `triage` command line: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "triage",
    version,
    about = "Slack-first support ticketing with local ML"
)]
struct Cli {
    /// Embedding precision, f32 or int8 (overrides TRIAGE_EMBED_PRECISION).
    #[arg(long, global = true)]
    precision: Option<triage::embed::Precision>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (configuration: TOML file, then TRIAGE_* environment variables).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides TRIAGE_BIND.
        #[arg(long)]
        bind: Option<String>,
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Lines of text on stdin -> one JSON array (384 floats) per line on stdout.
    Embed {
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Lines of replies on stdin -> one JSON status result per line on stdout.
    Classify {
        #[arg(long)]
        model_dir: Option<PathBuf>,
        /// The trained status model (default: TRIAGE_STATUS_MODEL_DIR or models/status).
        #[arg(long)]
        status_model_dir: Option<PathBuf>,
    },
    /// Train a model.
    Train {
        #[command(subcommand)]
        what: TrainCommand,
    },
    /// Evaluate a model on a labelled file.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// The embedding model's files.
    Model {
        #[command(subcommand)]
        what: ModelCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Embedding throughput and single-message latency over a file of messages (one per line).
    Embed {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        model_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Messages timed one at a time for latency.
        #[arg(long, default_value_t = 500)]
        single: usize,
        /// Only messages with fewer tokens than this are timed one at a time.
        #[arg(long, default_value_t = 40)]
        single_max_tokens: usize,
        #[arg(long)]
        max_batch_tokens: Option<usize>,
        #[arg(long)]
        max_batch_size: Option<usize>,
        #[arg(long = "impl", value_enum, default_value = "triage")]
        implementation: triage::bench::Impl,
    },
}

#[derive(Subcommand)]
enum TrainCommand {
    /// The conversation grouper's scorers from gold reply links.
    Group {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        dev: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 13)]
        seed: u64,
        #[arg(long, default_value_t = 6)]
        epochs: usize,
        /// Hidden units of the scorer MLP (0: logistic).
        #[arg(long, default_value_t = 32)]
        hidden: usize,
        /// Train the embedding scorer on the first N channels only (embedding is the slow part).
        #[arg(long)]
        embedding_channels: Option<usize>,
        /// Train only the text-only scorer.
        #[arg(long)]
        no_embeddings: bool,
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// The reply-status head (in_progress / closed) over the frozen sentence embedding.
    Status {
        /// Labelled training files (JSON Lines: text, label).
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        /// The dev file: early stopping, choice of variant, temperature.
        #[arg(long)]
        dev: PathBuf,
        /// Extra labelled files tried as additions to --data (e.g. ../shared/data/status/*.jsonl);
        /// each is kept only if it improves dev macro-F1.
        #[arg(long, num_args = 1..)]
        mix: Vec<PathBuf>,
        /// At most this many rows (seeded sample) from each --mix file.
        #[arg(long, default_value_t = 3000)]
        mix_max: usize,
        /// Fine-tune this many top encoder layers with the classifier first (0: heads over the
        /// frozen embedding only).
        #[arg(long, default_value_t = 0)]
        finetune_layers: usize,
        /// Fine-tuning epochs (the best on dev is kept).
        #[arg(long, default_value_t = 6)]
        finetune_epochs: usize,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Replay a message stream through the online grouper and score it (VI, 1-1, exact match).
    Group {
        #[arg(long)]
        data: PathBuf,
        /// Write one `{"id", "conversation", "parent"}` line per input message.
        #[arg(long)]
        predictions: Option<PathBuf>,
        /// Only thread, reply, author and time signals (measures what the text model adds).
        #[arg(long)]
        no_embeddings: bool,
        #[arg(long, default_value = "models/grouping")]
        model: PathBuf,
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Metrics of the status model (or the keyword baseline) on a labelled JSON Lines file.
    Status {
        #[arg(long)]
        data: PathBuf,
        /// Print each misclassified row on stderr.
        #[arg(long)]
        errors: bool,
        /// Score the status model (with the keyword baseline beside it) or only the baseline.
        #[arg(long, value_enum, default_value = "model")]
        predict: triage::status_cli::Evaluate,
        /// The baseline every result is compared with (only `keywords` exists).
        #[arg(long, default_value = "keywords", value_parser = ["keywords"])]
        baseline: String,
        #[arg(long)]
        model_dir: Option<PathBuf>,
        #[arg(long)]
        status_model_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Resolve and verify the model files; prints where they are.
    Verify {
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
    /// Download into the Hugging Face cache (needs the hub; honours HF_HOME, HF_HUB_OFFLINE).
    Pull,
    /// Activation statistics for `--precision int8` (SmoothQuant), from a message file.
    CalibrateInt8 {
        #[arg(long)]
        model_dir: Option<PathBuf>,
        /// One message per line (the benchmark set: ../shared/data/bench/messages-2000.txt).
        #[arg(long)]
        input: PathBuf,
        /// Default: int8-calibration.json beside the model folder.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 0.5)]
        alpha: f32,
    },
}

fn main() -> ExitCode {
    triage::telemetry::init_logging();
    let cli = Cli::parse();
    if let Some(p) = cli.precision {
        // Single-threaded here, before anything reads the environment.
        std::env::set_var("TRIAGE_EMBED_PRECISION", p.to_string());
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn settings(model_dir: Option<PathBuf>) -> anyhow::Result<triage::config::Settings> {
    let mut s = triage::config::Settings::load(None)?;
    if model_dir.is_some() {
        s.model_dir = model_dir;
    }
    Ok(s)
}

/// The embedder, unless a command was asked to run without embeddings.
fn optional_embedder(
    s: &triage::config::Settings,
    no_embeddings: bool,
) -> anyhow::Result<Option<triage::embed::Embedder>> {
    (!no_embeddings)
        .then(|| triage::cli::load_embedder(s))
        .transpose()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            bind,
            model_dir,
        } => {
            let mut s = triage::config::Settings::load(config.as_deref())?;
            if let Some(b) = bind {
                s.bind = b;
            }
            if model_dir.is_some() {
                s.model_dir = model_dir;
            }
            triage::config::init_compute_threads(s.embed.threads);
            tokio::runtime::Runtime::new()?.block_on(async {
                let app = triage::serve::Application::build(s).await?;
                app.run_until_stopped(triage::serve::shutdown_signal()).await
            })
        }
        Command::Embed { model_dir } => {
            let s = settings(model_dir)?;
            triage::config::init_compute_threads(s.embed.threads);
            triage::cli::embed_stdin(&s)
        }
        Command::Classify {
            model_dir,
            status_model_dir,
        } => {
            let mut s = settings(model_dir)?;
            if let Some(d) = status_model_dir {
                s.status_model_dir = d;
            }
            triage::config::init_compute_threads(s.embed.threads);
            triage::status_cli::classify_stdin(&s)
        }
        Command::Train {
            what:
                TrainCommand::Status {
                    data,
                    dev,
                    mix,
                    mix_max,
                    finetune_layers,
                    finetune_epochs,
                    out,
                    seed,
                    model_dir,
                },
        } => {
            let s = settings(model_dir)?;
            triage::config::init_compute_threads(s.embed.threads);
            let finetune = match finetune_layers {
                0 => None,
                layers => Some((
                    triage::classify::finetune::FineTuneConfig {
                        layers,
                        epochs: finetune_epochs,
                        ..Default::default()
                    },
                    triage::model::resolve(s.model_dir.as_deref())?.weights(),
                )),
            };
            let opts = triage::classify::train::TrainOptions {
                data,
                dev,
                mix,
                mix_max,
                seed,
                finetune,
                variants: triage::classify::train::default_variants(),
                command: std::iter::once("triage".to_string())
                    .chain(std::env::args().skip(1))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            triage::status_cli::train(&s, &opts, &out).map(|_| ())
        }
        Command::Eval {
            what:
                EvalCommand::Group {
                    data,
                    predictions,
                    no_embeddings,
                    model,
                    model_dir,
                },
        } => {
            let s = settings(model_dir)?;
            triage::config::init_compute_threads(s.embed.threads);
            let embedder = optional_embedder(&s, no_embeddings)?;
            let out = triage::group_cli::eval_group(&triage::group_cli::EvalArgs {
                data: &data,
                model: &model,
                predictions: predictions.as_deref(),
                embedder: embedder.as_ref(),
            })?;
            println!("{out}");
            Ok(())
        }
        Command::Train {
            what:
                TrainCommand::Group {
                    data,
                    dev,
                    out,
                    seed,
                    epochs,
                    hidden,
                    embedding_channels,
                    no_embeddings,
                    model_dir,
                },
        } => {
            let s = settings(model_dir)?;
            triage::config::init_compute_threads(s.embed.threads);
            let embedder = optional_embedder(&s, no_embeddings)?;
            let res = triage::group_cli::train_group(&triage::group_cli::TrainArgs {
                data: &data,
                dev: &dev,
                out: &out,
                seed,
                epochs,
                hidden,
                embedding_channels,
                embedder: embedder.as_ref(),
            })?;
            println!("{res}");
            Ok(())
        }
        Command::Eval {
            what:
                EvalCommand::Status {
                    data,
                    errors,
                    predict,
                    baseline: _,
                    model_dir,
                    status_model_dir,
                },
        } => {
            let mut s = settings(model_dir)?;
            if let Some(d) = status_model_dir {
                s.status_model_dir = d;
            }
            triage::config::init_compute_threads(s.embed.threads);
            triage::status_cli::eval(&s, &data, predict, errors).map(|_| ())
        }
        Command::Bench {
            what:
                BenchCommand::Embed {
                    input,
                    model_dir,
                    repeats,
                    single,
                    single_max_tokens,
                    max_batch_tokens,
                    max_batch_size,
                    implementation,
                },
        } => {
            let s = settings(model_dir)?;
            let threads = triage::config::init_compute_threads(s.embed.threads);
            let mut limits = s.batch_limits();
            if let Some(t) = max_batch_tokens {
                limits.max_batch_tokens = t;
            }
            if let Some(b) = max_batch_size {
                limits.max_batch_size = b;
            }
            let files = triage::model::resolve(s.model_dir.as_deref())?;
            let opts = triage::bench::BenchOptions {
                repeats,
                single,
                single_max_tokens,
                limits,
                implementation,
                threads,
            };
            let report = triage::bench::bench_embed(&files, &input, &opts)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Model {
            what:
                ModelCommand::CalibrateInt8 {
                    model_dir,
                    input,
                    out,
                    alpha,
                },
        } => {
            let s = settings(model_dir)?;
            let files = triage::model::resolve(s.model_dir.as_deref())?;
            let out = out.unwrap_or_else(|| triage::embed::calibration_path(&files));
            let c = triage::embed::calibrate::calibrate_file(&files, &input, alpha)?;
            std::fs::write(&out, serde_json::to_string(&c)?)?;
            println!(
                "{}",
                serde_json::json!({"wrote": out, "messages": c.messages, "tokens": c.tokens, "alpha": alpha})
            );
            Ok(())
        }
        Command::Model {
            what: ModelCommand::Verify { model_dir },
        } => {
            let s = settings(model_dir)?;
            let files = triage::model::resolve(s.model_dir.as_deref())?;
            println!(
                "{}",
                serde_json::json!({"model": files.manifest.name, "revision": files.manifest.revision,
                                   "dir": files.dir, "verified": true})
            );
            Ok(())
        }
        Command::Model {
            what: ModelCommand::Pull,
        } => {
            let files = triage::model::pull()?;
            println!(
                "{}",
                serde_json::json!({"model": files.manifest.name, "dir": files.dir, "verified": true})
            );
            Ok(())
        }
    }
}
