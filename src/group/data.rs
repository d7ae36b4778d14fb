//! The grouping corpus (`shared/data/grouping/*.jsonl`, see its README), raw f32 embedding files,
//! and running a grouper over a corpus.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::grouper::{Grouper, IncomingMessage};
use super::metrics::{score, Scores};
use super::{GroupError, Role, EMBEDDING_DIM};

/// One corpus line. Gold fields are absent in plain message streams.
#[derive(Debug, Clone)]
pub struct Record {
    /// The input's `id`, echoed in predictions.
    pub id: Value,
    pub channel: String,
    /// Line number within the channel.
    pub idx: usize,
    /// The ts as the grouper sees it (unique per channel).
    pub key: String,
    pub user: String,
    pub text: String,
    pub system: bool,
    pub action: bool,
    pub thread_ts: Option<String>,
    pub role: Option<Role>,
    /// Scored (annotated) line.
    pub eval: bool,
    pub gold: Option<String>,
    pub parents: Vec<usize>,
}

#[derive(Deserialize)]
struct RawRecord {
    #[serde(default)]
    id: Value,
    channel: String,
    idx: Option<usize>,
    ts: Value,
    #[serde(default)]
    user: String,
    #[serde(default)]
    text: String,
    kind: Option<String>,
    #[serde(default)]
    system: bool,
    thread_ts: Option<Value>,
    role: Option<String>,
    #[serde(default)]
    eval: bool,
    gold: Option<String>,
    #[serde(default)]
    parents: Vec<usize>,
}

pub struct Corpus {
    pub records: Vec<Record>,
    /// Line numbers (into `records`) of each channel, in file order.
    pub channels: Vec<Vec<usize>>,
    /// sha256 of the file, for training metadata.
    pub sha256: String,
}

fn ts_string(v: &Value, idx: usize) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        // The corpus has epoch seconds at minute resolution, so many lines share a ts; the line
        // number becomes the microsecond part to keep (channel, ts) unique, as Slack's ts are.
        Value::Number(n) => {
            let t = n.as_f64()?;
            Some(if t.fract() == 0.0 {
                format!("{}.{:06}", t as i64, idx % 1_000_000)
            } else {
                format!("{t:.6}")
            })
        }
        _ => None,
    }
}

impl Corpus {
    /// The first `n` channels only (same records, same ids), e.g. to train the embedding scorer
    /// on a prefix when embedding everything would take too long.
    pub fn first_channels(&self, n: usize) -> Corpus {
        let mut records = Vec::new();
        let mut channels = Vec::new();
        for lines in self.channels.iter().take(n) {
            channels.push((records.len()..records.len() + lines.len()).collect());
            records.extend(lines.iter().map(|&i| self.records[i].clone()));
        }
        Corpus {
            records,
            channels,
            sha256: self.sha256.clone(),
        }
    }

    pub fn load(path: &Path) -> Result<Corpus, GroupError> {
        let raw = std::fs::read(path).map_err(|e| GroupError::io(path, e))?;
        let sha256 = hex::encode(Sha256::digest(&raw));
        let text =
            std::str::from_utf8(&raw).map_err(|e| GroupError::Invalid(format!("{}: {e}", path.display())))?;
        let mut records = Vec::new();
        let mut channels: Vec<Vec<usize>> = Vec::new();
        let mut channel_of: std::collections::HashMap<String, usize> = Default::default();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: RawRecord = serde_json::from_str(line)
                .map_err(|e| GroupError::Invalid(format!("{} line {}: {e}", path.display(), n + 1)))?;
            let c = *channel_of.entry(r.channel.clone()).or_insert_with(|| {
                channels.push(Vec::new());
                channels.len() - 1
            });
            let idx = r.idx.unwrap_or(channels[c].len());
            let key = ts_string(&r.ts, idx)
                .ok_or_else(|| GroupError::Invalid(format!("{} line {}: bad ts", path.display(), n + 1)))?;
            let kind = r.kind.as_deref().unwrap_or("msg");
            channels[c].push(records.len());
            records.push(Record {
                id: r.id,
                channel: r.channel,
                idx,
                key,
                user: r.user,
                text: r.text,
                system: r.system || kind == "system",
                action: kind == "action",
                thread_ts: r.thread_ts.as_ref().and_then(|v| ts_string(v, idx)),
                role: r.role.as_deref().and_then(Role::parse),
                eval: r.eval,
                gold: r.gold,
                parents: r.parents,
            });
        }
        Ok(Corpus {
            records,
            channels,
            sha256,
        })
    }

    /// Scores predicted conversation ids (parallel to `records`) on the `eval` lines, pooled.
    pub fn score(&self, predicted: &[Prediction]) -> Scores {
        let (mut gold, mut pred) = (Vec::new(), Vec::new());
        for (r, p) in self.records.iter().zip(predicted) {
            if r.eval {
                gold.push(format!("{}|{}", r.channel, r.gold.as_deref().unwrap_or("")));
                pred.push(format!("{}|{}", r.channel, p.conversation));
            }
        }
        score(&gold, &pred)
    }
}

/// How often a message that continues a gold conversation is predicted in the same conversation
/// as that conversation's previous message, for one author role.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Attach {
    /// Scored messages that continue a gold conversation.
    pub messages: usize,
    /// Percent of them predicted with the previous message.
    pub attached: f64,
}

impl Corpus {
    /// [`Attach`] per role (`"customer"`, `"agent"`, `"none"` for messages without one); roles
    /// with no such message are left out.
    pub fn attach_by_role(
        &self,
        predicted: &[Prediction],
    ) -> std::collections::BTreeMap<&'static str, Attach> {
        let mut counts: std::collections::BTreeMap<&'static str, (usize, usize)> = Default::default();
        for lines in &self.channels {
            let mut last: std::collections::HashMap<&str, usize> = Default::default();
            for &l in lines {
                let r = &self.records[l];
                let Some(gold) = r.gold.as_deref() else { continue };
                if let Some(prev) = last.insert(gold, l) {
                    if r.eval {
                        let role = match r.role {
                            Some(Role::Customer) => "customer",
                            Some(Role::Agent) => "agent",
                            None => "none",
                        };
                        let e = counts.entry(role).or_default();
                        e.0 += 1;
                        e.1 += usize::from(predicted[l].conversation == predicted[prev].conversation);
                    }
                }
            }
        }
        counts
            .into_iter()
            .map(|(k, (n, a))| {
                (
                    k,
                    Attach {
                        messages: n,
                        attached: 100.0 * a as f64 / n.max(1) as f64,
                    },
                )
            })
            .collect()
    }
}

/// Row i = sentence embedding of line i: a raw little-endian f32 file, 384 floats per row.
pub struct Embeddings {
    data: Vec<f32>,
}

impl Embeddings {
    pub fn load(path: &Path, rows: usize) -> Result<Embeddings, GroupError> {
        let raw = std::fs::read(path).map_err(|e| GroupError::io(path, e))?;
        if raw.len() != rows * EMBEDDING_DIM * 4 {
            return Err(GroupError::Invalid(format!(
                "{}: {} bytes, expected {rows} rows of {EMBEDDING_DIM} f32",
                path.display(),
                raw.len()
            )));
        }
        let data = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Embeddings { data })
    }

    /// Rows computed in process (row i = line i), `EMBEDDING_DIM` floats each.
    pub fn from_rows(rows: Vec<Vec<f32>>) -> Result<Embeddings, GroupError> {
        if let Some(bad) = rows.iter().position(|r| r.len() != EMBEDDING_DIM) {
            return Err(GroupError::Invalid(format!(
                "embedding row {bad} is not {EMBEDDING_DIM}-dimensional"
            )));
        }
        Ok(Embeddings { data: rows.concat() })
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * EMBEDDING_DIM..(i + 1) * EMBEDDING_DIM]
    }
}

pub fn incoming<'a>(r: &'a Record, embedding: Option<&'a [f32]>) -> IncomingMessage<'a> {
    IncomingMessage {
        channel: &r.channel,
        ts: &r.key,
        user: &r.user,
        text: &r.text,
        system: r.system,
        action: r.action,
        thread_ts: r.thread_ts.as_deref(),
        role: r.role,
        embedding,
    }
}

/// What the grouper said about one line.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub conversation: String,
    /// ts of the message it was linked to (None: it started a conversation).
    pub linked_ts: Option<String>,
}

/// Streams every line through the grouper; returns a prediction per line and the time spent
/// deciding.
pub fn run(
    grouper: &mut Grouper,
    corpus: &Corpus,
    emb: Option<&Embeddings>,
) -> Result<(Vec<Prediction>, Duration), GroupError> {
    let mut out = Vec::with_capacity(corpus.records.len());
    let start = Instant::now();
    for (i, r) in corpus.records.iter().enumerate() {
        let d = grouper.process(&incoming(r, emb.map(|e| e.row(i))), false)?;
        out.push(Prediction {
            conversation: d.conversation_id,
            linked_ts: d.linked_ts,
        });
    }
    Ok((out, start.elapsed()))
}
