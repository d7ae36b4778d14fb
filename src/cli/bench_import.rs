//! `triage bench import`: the throughput of a Slack import (the whole pipeline: batched
//! embeddings, status model, grouping, SQLite writes) against `bench embed`'s batch rate over the
//! same texts, measured in the same run (before and after the import).
//!
//! The export is generated at run time from a message stream in the grouping data's JSON Lines
//! format (`channel`, `ts`, `user`, `text`, `kind`): each source channel becomes a Slack channel,
//! one file per day, system lines become `channel_join` entries (ignored, as Slack's are) and the
//! most active authors are the team, so their replies go through the status model.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use super::bench::{bench_embed, BenchOptions, Impl};
use super::ConfigArgs;
use crate::config::Overrides;
use crate::import::ImportOptions;
use crate::model_files;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Messages in the grouping data's JSON Lines format (e.g. ../shared/data/grouping/ubuntu-train.jsonl).
    #[arg(long)]
    pub input: PathBuf,
    /// People's messages in the generated export.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// The most active authors who are the team.
    #[arg(long, default_value_t = 10)]
    pub team: usize,
    /// Passes of `bench embed` before and after the import (the baseline is their median).
    #[arg(long, default_value_t = 1)]
    pub embed_repeats: usize,
    /// Keep the generated export and database in this folder (default: a temp dir, removed).
    #[arg(long)]
    pub keep: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Serialize)]
pub struct ImportBenchReport {
    pub messages: u64,
    pub import_msgs_per_s: f64,
    pub embed_sentences_per_s: f64,
    /// Embed batch rate before and after the import.
    pub embed_runs_per_s: Vec<f64>,
    pub ratio: f64,
    pub seconds: f64,
    pub conversations: u64,
    pub ignored: u64,
    pub team_users: u64,
    pub threads: usize,
    pub precision: crate::embed::Precision,
    /// Where the import's time went, per stage (they overlap: the reader analyses the next
    /// batches while the writer stores).
    pub phase_seconds: std::collections::BTreeMap<String, f64>,
    /// CPU seconds the import used, by kind of thread: `compute` (inference: the compute pool,
    /// the forward-pass team, the model thread), `sqlite` (the database's worker threads),
    /// `pipeline` (the runtime's threads: the reader, the writer's grouping and planning),
    /// `exited` (threads gone before the end), and `total`; `embed_cpu_seconds` is the same for
    /// one `bench embed` pass. Unlike the rate, these hardly depend on what else the machine runs.
    pub cpu_seconds: BTreeMap<String, f64>,
    pub embed_cpu_seconds: f64,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let s = args.config.settings(Overrides::default())?;
    let tmp = tempfile::tempdir()?;
    let root = args.keep.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&root)?;
    let export = root.join("export");
    let (texts, team) = generate(&args.input, args.messages, args.team, &export)?;
    let lines = root.join("texts.txt");
    std::fs::write(&lines, texts.join("\n"))?;
    let files = model_files::resolve(s.model_dir.as_deref())?;
    let opts = BenchOptions {
        repeats: args.embed_repeats,
        single: 0,
        single_max_tokens: 0,
        limits: s.batch_limits(),
        implementation: Impl::Triage,
        threads: rayon::current_num_threads(),
    };
    let before = process_cpu_seconds();
    let mut embed_runs = bench_embed(&files, &lines, &opts)?.runs_per_s;
    let embed_cpu = (process_cpu_seconds() - before) / args.embed_repeats.max(1) as f64;
    let mut settings = s.clone();
    let db = root.join("bench-import.db");
    let _ = std::fs::remove_file(&db);
    settings.database_url = format!("sqlite://{}", db.display());
    let import_opts = ImportOptions {
        team_users: team.iter().cloned().collect(),
        ..Default::default()
    };
    let (threads_before, total_before) = (thread_cpu_seconds(), process_cpu_seconds());
    let summary = tokio::runtime::Runtime::new()?.block_on(super::import::run_import(
        &settings,
        &export,
        &import_opts,
    ))?;
    let cpu_seconds = cpu_by_kind(
        &threads_before,
        &thread_cpu_seconds(),
        process_cpu_seconds() - total_before,
    );
    embed_runs.extend(bench_embed(&files, &lines, &opts)?.runs_per_s);
    let mut sorted = embed_runs.clone();
    sorted.sort_by(f64::total_cmp);
    let embed = sorted[sorted.len() / 2];
    let rate = summary.messages_imported as f64 / summary.seconds;
    let report = ImportBenchReport {
        messages: summary.messages_imported,
        import_msgs_per_s: rate,
        embed_sentences_per_s: embed,
        embed_runs_per_s: embed_runs,
        ratio: rate / embed,
        seconds: summary.seconds,
        conversations: summary.conversations,
        ignored: summary.ignored,
        team_users: summary.team_users,
        threads: rayon::current_num_threads(),
        precision: s.embed.precision,
        phase_seconds: summary.phase_seconds.clone(),
        cpu_seconds,
        embed_cpu_seconds: embed_cpu,
    };
    super::print_result(&serde_json::to_value(&report)?);
    Ok(())
}

/// The process's CPU time (user + system, every thread that ever ran), in seconds.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0.0;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(u.ru_utime) + secs(u.ru_stime)
    }
}

/// CPU seconds of each live thread, by thread id: (name, seconds). Empty where /proc is not there.
fn thread_cpu_seconds() -> HashMap<String, (String, f64)> {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (name) state ppid ...": utime and stime are the 12th and 13th fields after the name.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        out.insert(
            task.file_name().to_string_lossy().into_owned(),
            (stat[open + 1..close].to_owned(), (tick(11) + tick(12)) / ticks),
        );
    }
    out
}

/// The CPU the import used between two [`thread_cpu_seconds`] readings, by kind of thread.
fn cpu_by_kind(
    before: &HashMap<String, (String, f64)>,
    after: &HashMap<String, (String, f64)>,
    total: f64,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut live = 0.0;
    for (tid, (name, secs)) in after {
        let used = secs - before.get(tid).map_or(0.0, |(_, s)| *s);
        let kind = if name.starts_with("compute-") || name.starts_with("embed-team") || name == "triage-model"
        {
            "compute"
        } else if name.starts_with("sqlx-sqlite") {
            "sqlite"
        } else {
            "pipeline"
        };
        *out.entry(kind.to_owned()).or_insert(0.0) += used;
        live += used;
    }
    out.insert("exited".to_owned(), (total - live).max(0.0));
    out.insert("total".to_owned(), total);
    out
}

/// Writes a Slack export of the first `n` people's messages of `input` into `out`; returns their
/// (non-empty) texts and the team's user ids.
fn generate(
    input: &std::path::Path,
    n: usize,
    team_size: usize,
    out: &std::path::Path,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let file = std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let mut rows = Vec::new();
    let mut people = 0;
    for line in BufReader::new(file).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        let system = v["system"].as_bool().unwrap_or(false);
        if !system {
            people += 1;
        }
        rows.push(v);
        if people == n {
            break;
        }
    }
    anyhow::ensure!(people == n, "{} has only {people} messages", input.display());
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut channels: BTreeMap<String, String> = BTreeMap::new();
    // channel folder -> day -> messages
    let mut days: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    let mut texts = Vec::new();
    for (i, v) in rows.iter().enumerate() {
        let nick = v["user"].as_str().unwrap_or("someone").to_owned();
        let next = ids.len();
        let user = ids
            .entry(nick.clone())
            .or_insert_with(|| format!("U{next:08}"))
            .clone();
        let source = v["channel"].as_str().unwrap_or("c").to_owned();
        let k = channels.len();
        let folder = channels
            .entry(source)
            .or_insert_with(|| format!("chan-{k:04}"))
            .clone();
        let secs = v["ts"].as_f64().unwrap_or(0.0) as i64;
        // Minute-resolution source times: the row number keeps every ts distinct.
        let ts = format!("{secs}.{:06}", i % 1_000_000);
        let text = v["text"].as_str().unwrap_or("").to_owned();
        let mut m = json!({"type": "message", "ts": ts, "user": user, "text": text});
        match v["kind"].as_str() {
            _ if v["system"].as_bool().unwrap_or(false) => m["subtype"] = json!("channel_join"),
            Some("action") => m["subtype"] = json!("me_message"),
            _ => {}
        }
        if m.get("subtype").is_none() || m["subtype"] == "me_message" {
            *counts.entry(user.clone()).or_default() += 1;
            if !text.trim().is_empty() {
                texts.push(text.replace(['\n', '\r'], " "));
            }
        }
        let day = chrono::DateTime::from_timestamp(secs, 0)
            .unwrap_or_default()
            .format("%Y-%m-%d")
            .to_string();
        days.entry(folder).or_default().entry(day).or_default().push(m);
    }
    let mut ranked: Vec<(&String, &usize)> = counts.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let team: Vec<String> = ranked.iter().take(team_size).map(|(u, _)| (*u).clone()).collect();
    std::fs::create_dir_all(out)?;
    let list: Vec<Value> = channels
        .values()
        .enumerate()
        .map(|(i, name)| json!({"id": format!("C{i:08}"), "name": name}))
        .collect();
    std::fs::write(out.join("channels.json"), serde_json::to_vec(&list)?)?;
    let users: Vec<Value> = ids
        .iter()
        .map(|(nick, id)| json!({"id": id, "name": nick, "real_name": nick}))
        .collect();
    std::fs::write(out.join("users.json"), serde_json::to_vec(&users)?)?;
    for (folder, by_day) in days {
        std::fs::create_dir_all(out.join(&folder))?;
        for (day, msgs) in by_day {
            std::fs::write(
                out.join(&folder).join(format!("{day}.json")),
                serde_json::to_vec(&msgs)?,
            )?;
        }
    }
    Ok((texts, team))
}
