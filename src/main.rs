//! The `triage` binary: the command tree and its dispatch. Every command lives in `triage::cli`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use triage::cli::{bench, classify, embed, group, import, serve};

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
    /// Run the HTTP server (configuration: TOML file, then TRIAGE_* environment variables, then flags).
    Serve(serve::ServeArgs),
    /// Lines of text on stdin -> one JSON array (384 floats) per line on stdout.
    Embed(embed::EmbedArgs),
    /// Lines of replies on stdin -> one JSON status result per line on stdout.
    Classify(classify::ClassifyArgs),
    /// Train a model.
    Train {
        #[command(subcommand)]
        what: Train,
    },
    /// Evaluate a model on a labelled file.
    Eval {
        #[command(subcommand)]
        what: Eval,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Import history (a Slack export) through the whole pipeline.
    Import {
        #[command(subcommand)]
        what: import::ImportCommand,
    },
    /// The embedding model's files.
    Model {
        #[command(subcommand)]
        what: embed::ModelCommand,
    },
}

#[derive(Subcommand)]
enum Train {
    /// The conversation grouper's scorers from gold reply links.
    Group(group::TrainArgs),
    /// The reply-status model (in_progress / closed).
    Status(classify::TrainArgs),
}

#[derive(Subcommand)]
enum Eval {
    /// Replay a message stream through the online grouper and score it (VI, 1-1, exact match).
    Group(group::EvalArgs),
    /// Metrics of the status model (or the keyword baseline) on a labelled JSON Lines file.
    Status(classify::EvalArgs),
}

fn main() -> ExitCode {
    triage::telemetry::init_logging();
    let cli = Cli::parse();
    if let Some(p) = cli.precision {
        // Single-threaded here, before anything reads the environment.
        std::env::set_var("TRIAGE_EMBED_PRECISION", p.to_string());
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Classify(args) => classify::run_classify(args),
        Command::Train {
            what: Train::Group(args),
        } => group::run_train(args),
        Command::Train {
            what: Train::Status(args),
        } => classify::run_train(args),
        Command::Eval {
            what: Eval::Group(args),
        } => group::run_eval(args),
        Command::Eval {
            what: Eval::Status(args),
        } => classify::run_eval(args),
        Command::Bench { what } => bench::run(what),
        Command::Import { what } => import::run(what),
        Command::Model { what } => embed::model(what),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
