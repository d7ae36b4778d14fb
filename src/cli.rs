//! Commands that stream data through the core (the binary only parses arguments).

use std::io::{BufRead, BufWriter, Write};

use crate::config::Settings;
use crate::embed::Embedder;
use crate::model;

/// Lines read per forward plan: large enough to batch well, small enough to stream.
const EMBED_CHUNK: usize = 1024;

/// Resolves, verifies and loads the embedding model the settings point at (every command that
/// embeds starts here).
pub fn load_embedder(settings: &Settings) -> anyhow::Result<Embedder> {
    let files = model::resolve(settings.model_dir.as_deref())?;
    Ok(Embedder::load(&files, settings.batch_limits())?)
}

/// `triage embed`: one JSON array per stdin line, in order (an empty line still gets a vector, so
/// output line N always belongs to input line N). Uses the same length-sorted batch planner as the
/// server, so the same inputs give the same vectors as `POST /v1/embed`.
pub fn embed_stdin(settings: &Settings) -> anyhow::Result<()> {
    let embedder = load_embedder(settings)?;
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
