//! `triage embed` (stdin lines through the embedder) and `triage model verify|pull` (the embedding
//! model's files).

use std::io::{BufRead, BufWriter, Write};

use serde_json::json;

use super::{load_embedder, print_result, ConfigArgs};
use crate::config::Overrides;
use crate::model_files;

/// Lines read per forward plan: large enough to batch well, small enough to stream.
const EMBED_CHUNK: usize = 1024;

#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `triage embed`: one JSON array per stdin line, in order (an empty line still gets a vector, so
/// output line N always belongs to input line N). Uses the same length-sorted batch planner as the
/// server, so the same inputs give the same vectors as `POST /v1/embed`.
pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let settings = args.config.settings(Overrides::default())?;
    let embedder = load_embedder(&settings)?;
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut chunk: Vec<String> = Vec::with_capacity(EMBED_CHUNK);
    let flush = |chunk: &mut Vec<String>, out: &mut BufWriter<_>| -> anyhow::Result<()> {
        let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for v in embedder.embed(&texts)? {
            serde_json::to_writer(&mut *out, &v)?;
            out.write_all(b"\n")?;
        }
        chunk.clear();
        Ok(())
    };
    for line in stdin.lines() {
        chunk.push(line?);
        if chunk.len() == EMBED_CHUNK {
            flush(&mut chunk, &mut out)?;
        }
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Resolve and verify the model files; prints where they are.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Download into the Hugging Face cache (needs the hub; honours HF_HOME, HF_HUB_OFFLINE).
    Pull,
    /// Activation statistics for `--precision int8` (SmoothQuant), from a message file.
    CalibrateInt8 {
        #[command(flatten)]
        config: ConfigArgs,
        /// One message per line (the benchmark set: ../shared/data/bench/messages-2000.txt).
        #[arg(long)]
        input: std::path::PathBuf,
        /// Default: int8-calibration.json beside the model folder.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 0.5)]
        alpha: f32,
    },
}

/// `triage model verify|pull`.
pub fn model(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Verify { config } => {
            let settings = config.settings(Overrides::default())?;
            let files = model_files::resolve(settings.model_dir.as_deref())?;
            print_result(
                &json!({"model": files.manifest.name, "revision": files.manifest.revision,
                                 "dir": files.dir, "verified": true}),
            );
        }
        ModelCommand::CalibrateInt8 {
            config,
            input,
            out,
            alpha,
        } => {
            let settings = config.settings(Overrides::default())?;
            let files = model_files::resolve(settings.model_dir.as_deref())?;
            let out = out.unwrap_or_else(|| crate::embed::calibration_path(&files));
            let c = crate::embed::calibrate::calibrate_file(&files, &input, alpha)?;
            std::fs::write(&out, serde_json::to_string(&c)?)?;
            print_result(&json!({"wrote": out, "messages": c.messages, "tokens": c.tokens, "alpha": alpha}));
        }
        ModelCommand::Pull => {
            let files = model_files::pull()?;
            print_result(&json!({"model": files.manifest.name, "dir": files.dir, "verified": true}));
        }
    }
    Ok(())
}
