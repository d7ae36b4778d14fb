//! Fixtures made at test time from the houstondatavis export (in temp dirs, never committed).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::read;

pub struct Slackdump {
    /// Every snapshot, overlapping, with thread replies repeated under their roots.
    pub all: PathBuf,
    /// The snapshots of the first half of the history only.
    pub early: PathBuf,
    /// People's messages in `early` (what importing it stores).
    pub early_unique: u64,
    /// Message objects written more than once across `all` (window overlaps and copies under roots).
    pub repeats: u64,
    /// Messages made thread replies.
    pub replies: u64,
    /// (channel id, root ts, reply ts).
    pub sample_threads: Vec<(String, String, String)>,
}

fn person(m: &Value) -> bool {
    let sub = m.get("subtype").and_then(Value::as_str);
    m.get("user").is_some() && matches!(sub, None | Some("file_share"))
}

fn secs(m: &Value) -> f64 {
    m["ts"].as_str().unwrap().parse().unwrap()
}

const DAY: f64 = 86400.0;

/// slackdump's layout from a standard export: each channel's history cut into 10-day windows
/// starting every 7 days (so 3 days of every window repeat in the next), one file per window named
/// by its first day, and every 4th plain message made a reply in the thread of the plain message
/// before it, the reply repeated under its root (`slackdump_thread_replies`).
pub fn slackdump(src: &Path, out: &Path) -> Slackdump {
    let (all, early) = (out.join("slackdump-all"), out.join("slackdump-early"));
    let channels: Vec<Value> = read(&src.join("channels.json"));
    for dir in [&all, &early] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(src.join("channels.json"), dir.join("channels.json")).unwrap();
        std::fs::copy(src.join("users.json"), dir.join("users.json")).unwrap();
    }
    let mut fx = Slackdump {
        all: all.clone(),
        early: early.clone(),
        early_unique: 0,
        repeats: 0,
        replies: 0,
        sample_threads: Vec::new(),
    };
    let mut entries = 0u64;
    let mut written = 0u64;
    let mut early_seen = HashSet::new();
    // The cut between the early and late snapshots: the middle of the whole history.
    let mut every: Vec<Value> = Vec::new();
    for ch in &channels {
        let name = ch["name"].as_str().unwrap();
        let Ok(days) = std::fs::read_dir(src.join(name)) else {
            continue;
        };
        for d in days {
            let v: Vec<Value> = read(&d.unwrap().path());
            every.extend(v);
        }
    }
    let (lo, hi) = every
        .iter()
        .map(secs)
        .fold((f64::MAX, f64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    let cut = (lo + hi) / 2.0;
    for ch in &channels {
        let (id, name) = (ch["id"].as_str().unwrap(), ch["name"].as_str().unwrap());
        let Ok(days) = std::fs::read_dir(src.join(name)) else {
            continue;
        };
        let mut msgs: Vec<Value> = Vec::new();
        for d in days {
            let v: Vec<Value> = read(&d.unwrap().path());
            msgs.extend(v);
        }
        msgs.sort_by(|a, b| secs(a).total_cmp(&secs(b)));
        entries += msgs.len() as u64;
        // Threads: every 4th plain message replies to the previous plain root.
        let mut root: Option<usize> = None;
        let mut replies: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut plain = 0;
        for i in 0..msgs.len() {
            if !(person(&msgs[i]) && msgs[i].get("subtype").is_none()) {
                continue;
            }
            plain += 1;
            match root {
                Some(r) if plain % 4 == 0 => {
                    let root_ts = msgs[r]["ts"].clone();
                    msgs[i]["thread_ts"] = root_ts.clone();
                    msgs[r]["thread_ts"] = root_ts;
                    replies.entry(r).or_default().push(i);
                    fx.replies += 1;
                    if fx.sample_threads.len() < 50 {
                        fx.sample_threads.push((
                            id.into(),
                            msgs[r]["ts"].as_str().unwrap().into(),
                            msgs[i]["ts"].as_str().unwrap().into(),
                        ));
                    }
                }
                _ => root = Some(i),
            }
        }
        for (r, rs) in &replies {
            let copies: Vec<Value> = rs.iter().map(|&i| msgs[i].clone()).collect();
            msgs[*r]["slackdump_thread_replies"] = json!(copies);
        }
        let first = secs(&msgs[0]);
        let mut start = (first / DAY).floor() * DAY;
        let last = secs(msgs.last().unwrap());
        while start <= last {
            let window: Vec<&Value> = msgs
                .iter()
                .filter(|m| (start..start + 10.0 * DAY).contains(&secs(m)))
                .collect();
            if !window.is_empty() {
                let objects: u64 = window
                    .iter()
                    .map(|m| {
                        1 + m
                            .get("slackdump_thread_replies")
                            .map_or(0, |r| r.as_array().unwrap().len() as u64)
                    })
                    .sum();
                written += objects;
                let day = chrono::DateTime::from_timestamp(start as i64, 0)
                    .unwrap()
                    .format("%Y-%m-%d");
                let body = serde_json::to_vec_pretty(&window).unwrap();
                let mut targets = vec![all.join(name)];
                if start < cut {
                    targets.push(early.join(name));
                    for m in &window {
                        let nested = m
                            .get("slackdump_thread_replies")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        for x in std::iter::once((*m).clone()).chain(nested) {
                            if person(&x) {
                                early_seen.insert((id.to_owned(), x["ts"].as_str().unwrap().to_owned()));
                            }
                        }
                    }
                }
                for t in targets {
                    std::fs::create_dir_all(&t).unwrap();
                    std::fs::write(t.join(format!("{day}.json")), &body).unwrap();
                }
            }
            start += 7.0 * DAY;
        }
    }
    fx.repeats = written - entries;
    fx.early_unique = early_seen.len() as u64;
    fx
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Zips `dir` under a top folder named after it, as Slack's export zips are laid out.
pub fn zip_dir(dir: &Path, out: &Path) -> PathBuf {
    let top = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    let mut stack = vec![(dir.to_owned(), top)];
    while let Some((path, rel)) = stack.pop() {
        for e in std::fs::read_dir(&path).unwrap() {
            let e = e.unwrap();
            let name = format!("{rel}/{}", e.file_name().to_string_lossy());
            if e.path().is_dir() {
                stack.push((e.path(), name));
            } else {
                zip.start_file(name, opts).unwrap();
                zip.write_all(&std::fs::read(e.path()).unwrap()).unwrap();
            }
        }
    }
    zip.finish().unwrap();
    out.to_owned()
}
