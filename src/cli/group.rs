//! `triage train group` and `triage eval group`: the grouping core ([`crate::group`]) over the
//! interchange format of `../shared/data/grouping/`, with sentence embeddings computed in process by
//! the same embedder the server uses.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::{optional_embedder, print_result, ConfigArgs};
use crate::config::Overrides;
use crate::embed::Embedder;
use crate::group::data::{Corpus, Embeddings};
use crate::group::model::{DecisionRule, GroupConfig, GroupModel, MODEL_FORMAT};
use crate::group::train::{self, Fit, Target, Teacher, TrainOptions};

/// Embeds every line of a corpus (row i = line i), with a progress bar on stderr. With
/// `TRIAGE_EMBED_CACHE=DIR` the rows are kept in `DIR` (raw f32, named by the corpus's sha256 and
/// line count) and reused: training runs on the same files then skip the slow part.
pub fn embed_corpus(embedder: &Embedder, corpus: &Corpus) -> anyhow::Result<Embeddings> {
    let cache = std::env::var_os("TRIAGE_EMBED_CACHE").map(|d| {
        PathBuf::from(d).join(format!(
            "{}-{}-{}.f32",
            corpus.sha256,
            corpus.records.len(),
            &crate::model_files::Manifest::builtin().weights_sha256()[..12]
        ))
    });
    if let Some(path) = cache.as_deref().filter(|p| p.exists()) {
        return Ok(Embeddings::load(path, corpus.records.len())?);
    }
    let emb = embed_uncached(embedder, corpus)?;
    if let Some(path) = cache {
        let bytes: Vec<u8> = (0..corpus.records.len())
            .flat_map(|i| {
                emb.row(i)
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect::<Vec<u8>>()
            })
            .collect();
        std::fs::write(&path, bytes)?;
    }
    Ok(emb)
}

fn embed_uncached(embedder: &Embedder, corpus: &Corpus) -> anyhow::Result<Embeddings> {
    let bar = indicatif::ProgressBar::new(corpus.records.len() as u64);
    bar.set_message("embedding");
    let mut rows = Vec::with_capacity(corpus.records.len());
    for chunk in corpus.records.chunks(2048) {
        let texts: Vec<&str> = chunk.iter().map(|r| r.text.as_str()).collect();
        rows.extend(embedder.embed(&texts)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Embeddings::from_rows(rows)?)
}

/// `triage eval group`: replay a message stream through the online grouper and score it (VI, 1-1,
/// exact match).
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// Write one `{"id", "conversation", "parent"}` line per input message.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Only thread, reply, author and time signals (measures what the text model adds).
    #[arg(long)]
    pub no_embeddings: bool,
    #[arg(long, default_value = "models/grouping")]
    pub model: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `triage train group`: the conversation grouper's scorers from gold reply links.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub dev: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Hidden units of the scorer MLP (0: logistic).
    #[arg(long, default_value_t = 32)]
    pub hidden: usize,
    /// Train the embedding scorer on the first N channels only (embedding is the slow part).
    #[arg(long)]
    pub embedding_channels: Option<usize>,
    /// Train only the text-only scorer.
    #[arg(long)]
    pub no_embeddings: bool,
    /// Keep this grouping model's role-less scorers and train its role scorers (customer,
    /// agent) on --data, which must carry roles.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// With --base: open tickets stay candidates for this many hours of silence (instead of the
    /// base model's `bounds.open.seconds`).
    #[arg(long, requires = "base")]
    pub open_hours: Option<f64>,
    /// With --base: at most this many open tickets per decision (instead of the base model's
    /// `bounds.open.conversations`; at most the store's limit, 20).
    #[arg(long, requires = "base")]
    pub open_conversations: Option<usize>,
    /// Train without this feature (a name of `model.json`'s `features`) or kind of signal
    /// (`time`, `text`, `similarity`, ...); repeatable. For ablations.
    #[arg(long = "disable", value_name = "FEATURE")]
    pub disable: Vec<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `triage eval group`.
pub fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    let s = args.config.settings(Overrides::default())?;
    let embedder = optional_embedder(&s, args.no_embeddings)?;
    let out = eval_group(&Eval {
        data: &args.data,
        model: &args.model,
        predictions: args.predictions.as_deref(),
        embedder: embedder.as_ref(),
    })?;
    print_result(&out);
    Ok(())
}

/// `triage train group`.
pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let s = args.config.settings(Overrides::default())?;
    let embedder = optional_embedder(&s, args.no_embeddings)?;
    let out = train_group(&Train {
        data: &args.data,
        dev: &args.dev,
        out: &args.out,
        seed: args.seed,
        epochs: args.epochs,
        hidden: args.hidden,
        embedding_channels: args.embedding_channels,
        embedder: embedder.as_ref(),
        base: args.base.as_deref(),
        open_hours: args.open_hours,
        open_conversations: args.open_conversations,
        disable: &args.disable,
    })?;
    print_result(&out);
    Ok(())
}

pub struct Eval<'a> {
    pub data: &'a Path,
    pub model: &'a Path,
    pub predictions: Option<&'a Path>,
    /// `None`: the text-only scorer (`--no-embeddings`).
    pub embedder: Option<&'a Embedder>,
}

/// Replays the stream through the online grouper; returns the spec's result object.
pub fn eval_group(a: &Eval<'_>) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let corpus = Corpus::load(a.data)?;
    let model = GroupModel::load(&model_file(a.model))?;
    let emb = match a.embedder {
        Some(e) => Some(embed_corpus(e, &corpus)?),
        None => None,
    };
    let (pred, scores, decisions_per_s) = train::evaluate(&model, &corpus, emb.as_ref())?;
    if let Some(p) = a.predictions {
        let idx_of: HashMap<(&str, &str), usize> = corpus
            .records
            .iter()
            .map(|r| ((r.channel.as_str(), r.key.as_str()), r.idx))
            .collect();
        let mut w = std::io::BufWriter::new(std::fs::File::create(p)?);
        for (r, pr) in corpus.records.iter().zip(&pred) {
            // "parent" (the linked line's idx; its own when it starts a conversation) lets the
            // reference scorer report link precision / recall too.
            let parent = pr
                .linked_ts
                .as_deref()
                .and_then(|t| idx_of.get(&(r.channel.as_str(), t)))
                .unwrap_or(&r.idx);
            writeln!(
                w,
                "{}",
                json!({"id": r.id, "conversation": pr.conversation, "parent": parent})
            )?;
        }
        w.flush()?;
    }
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let attach: serde_json::Map<String, serde_json::Value> = corpus
        .attach_by_role(&pred)
        .into_iter()
        .map(|(role, a)| {
            (
                role.to_string(),
                json!({"messages": a.messages, "attached": r2(a.attached)}),
            )
        })
        .collect();
    Ok(json!({
        "messages": scores.messages,
        "vi": r2(scores.vi),
        "one_to_one": r2(scores.one_to_one),
        "exact_p": r2(scores.exact_p),
        "exact_r": r2(scores.exact_r),
        "exact_f1": r2(scores.exact_f1),
        "msgs_per_s": decisions_per_s.round(),
        "total_s": r2(started.elapsed().as_secs_f64()),
        "embeddings": a.embedder.is_some(),
        "attach_by_role": attach,
    }))
}

pub struct Train<'a> {
    pub data: &'a Path,
    pub dev: &'a Path,
    pub out: &'a Path,
    pub seed: u64,
    pub epochs: usize,
    pub hidden: usize,
    /// Train the embedding scorer on the first this-many channels of `data` only (embedding
    /// the whole train split is the slow part); `None`: all of them.
    pub embedding_channels: Option<usize>,
    pub embedder: Option<&'a Embedder>,
    /// Keep this model's role-less scorers and train only role scorers on `data` (which must
    /// carry roles).
    pub base: Option<&'a Path>,
    /// Open-ticket bounds for the role scorers, replacing the base model's (hours of silence,
    /// number of tickets).
    pub open_hours: Option<f64>,
    pub open_conversations: Option<usize>,
    /// Features (or kinds of signal) left out of training.
    pub disable: &'a [String],
}

/// Trains the text scorer and (with an embedder) the embedding scorer; writes `model.json` and
/// `metadata.json` into `out`.
pub fn train_group(a: &Train<'_>) -> anyhow::Result<serde_json::Value> {
    let data = Corpus::load(a.data)?;
    let dev = Corpus::load(a.dev)?;
    let base = match a.base {
        Some(p) => {
            let mut b = GroupModel::load(&model_file(p))?;
            if let Some(h) = a.open_hours {
                anyhow::ensure!(h > 0.0 && h.is_finite(), "--open-hours must be positive");
                b.config.bounds.open.seconds = h * 3600.0;
            }
            if let Some(n) = a.open_conversations {
                b.config.bounds.open.conversations = n;
            }
            // Through the store the grouper sees at most OPEN_CONVERSATIONS open tickets, so a
            // model that counts on more would be measured here on candidates it never gets live.
            let limit = crate::domain::OPEN_CONVERSATIONS as usize;
            anyhow::ensure!(
                b.config.bounds.open.conversations <= limit,
                "open conversations {} exceed the store's {limit}",
                b.config.bounds.open.conversations
            );
            Some(b)
        }
        None => None,
    };
    let config = match &base {
        Some(b) => b.config,
        None => GroupConfig {
            rule: DecisionRule::Conversation,
            ..GroupConfig::default()
        },
    };
    let fit = match &base {
        Some(b) => Fit::Roles(b),
        None => Fit::All,
    };
    for d in a.disable {
        let known = crate::group::features::FEATURE_NAMES.contains(&d.as_str())
            || crate::group::features::FEATURE_SIGNALS
                .iter()
                .any(|s| s.as_str() == d);
        anyhow::ensure!(known, "--disable {d:?}: no such feature or kind of signal");
    }
    let mut opts = TrainOptions {
        disabled: a.disable.to_vec(),
        seed: a.seed,
        epochs: a.epochs,
        hidden: a.hidden,
        target: Target::Conversation,
        teacher: Teacher::Predicted,
        ..TrainOptions::default()
    };
    let what = if base.is_some() { "role" } else { "text-only" };
    eprintln!("training the {what} scorer(s)");
    let (text, text_reports, cues) = train::train(&data, None, Some((&dev, None)), &config, &opts, fit)?;
    let mut model = match &base {
        Some(b) => {
            let mut b = b.clone();
            b.roles = None;
            let mut m = train::model_with_roles(&b, &text, false);
            if let Some(r) = &mut m.roles {
                r.cues = cues;
            }
            m
        }
        None => GroupModel {
            format: MODEL_FORMAT,
            config,
            text: text[0].clone(),
            embedding: None,
            roles: None,
        },
    };
    let mut emb_reports = Vec::new();
    let mut dev_emb = None;
    let mut emb_lines = 0;
    if let Some(embedder) = a.embedder {
        let prefix;
        let subset = match a.embedding_channels {
            Some(n) => {
                prefix = data.first_channels(n);
                &prefix
            }
            None => &data,
        };
        emb_lines = subset.records.len();
        eprintln!(
            "embedding {} train lines and {} dev lines",
            subset.records.len(),
            dev.records.len()
        );
        let emb = embed_corpus(embedder, subset)?;
        let de = embed_corpus(embedder, &dev)?;
        eprintln!("training the embedding scorer(s)");
        opts.use_embeddings = true;
        let fit = match &base {
            Some(_) => Fit::Roles(&model),
            None => Fit::All,
        };
        let (scorers, reports, learned) =
            train::train(subset, Some(&emb), Some((&dev, Some(&de))), &config, &opts, fit)?;
        model = match base {
            Some(_) => {
                let mut m = train::model_with_roles(&model, &scorers, true);
                // The embedding start cues, learned on the lines the embedding scorers saw.
                if let (Some(c), Some(learned)) = (m.roles.as_mut().and_then(|r| r.cues.as_mut()), learned) {
                    c.customer_embedding = learned.customer_embedding;
                    c.agent_embedding = learned.agent_embedding;
                }
                m
            }
            None => GroupModel {
                embedding: Some(scorers[0].clone()),
                ..model
            },
        };
        emb_reports = reports;
        dev_emb = Some(de);
    }
    std::fs::create_dir_all(a.out)?;
    model.save(&a.out.join("model.json"))?;
    let (pred_text, dev_text, _) = train::evaluate(&model, &dev, None)?;
    let mut attach = json!({"text": dev.attach_by_role(&pred_text)});
    let dev_embedding = match &dev_emb {
        Some(e) => {
            let (pred, scores, _) = train::evaluate(&model, &dev, Some(e))?;
            attach["embedding"] = json!(dev.attach_by_role(&pred));
            Some(scores)
        }
        None => None,
    };
    let mut metadata = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "seed": opts.seed,
        "files": {
            "train": {"path": a.data, "sha256": data.sha256},
            "dev": {"path": a.dev, "sha256": dev.sha256},
        },
        "embedder_sha256": crate::model_files::Manifest::builtin().weights_sha256(),
        "embedding_scorer_train_lines": emb_lines,
        "options": opts,
        "config": config,
        "dev": {"text": dev_text, "embedding": dev_embedding},
        "dev_attach_by_role": attach,
        "epochs": {"text": text_reports, "embedding": emb_reports},
    });
    if let Some(p) = a.base {
        // The role-less scorers are the base model's, unchanged: keep its record beside.
        let base_meta = std::fs::read(model_dir(p).join("metadata.json"))
            .ok()
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok());
        metadata["trained"] =
            json!("role scorers (customer, agent); the role-less scorers are the base model's");
        metadata["base"] = json!({"path": p, "metadata": base_meta});
    }
    std::fs::write(a.out.join("metadata.json"), serde_json::to_vec_pretty(&metadata)?)?;
    Ok(
        json!({"out": PathBuf::from(a.out), "dev_text": dev_text, "dev_embedding": dev_embedding, "dev_attach_by_role": attach}),
    )
}

/// `DIR` or `DIR/model.json` -> the model file.
fn model_file(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("model.json")
    } else {
        p.to_path_buf()
    }
}

fn model_dir(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.to_path_buf()
    } else {
        p.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }
}
