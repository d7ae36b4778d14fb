//! Reading a Slack export: a folder or a `.zip` with `channels.json`, `users.json`, optional
//! `groups.json` / `mpims.json` / `dms.json`, and one `<folder>/<YYYY-MM-DD>.json` array of
//! message objects per conversation and day. slackdump's output has the same layout; it may repeat
//! a message across overlapping snapshots and repeat thread replies under their parent
//! (`slackdump_thread_replies`, or `replies` holding whole messages).
//!
//! A channel's files are read whole before anything of the channel is returned: its messages are
//! flattened, deduplicated on `ts` (the copy with the latest `edited.ts` wins, so an edited
//! message keeps its latest text) and sorted by `ts`. A file that is not valid JSON is an
//! [`ImportError::Malformed`] naming the file, line and column.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::ImportError;
use crate::domain::normalize_ts;

/// Where the export's files are.
enum Files {
    Dir(PathBuf),
    /// The zip and the folder inside it that holds `channels.json` (`""` at the top).
    Zip(PathBuf, String),
}

/// One conversation of the export (a channel, private channel, multi-party DM or DM).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportChannel {
    /// Slack's id (`C...`, `G...`, `D...`): the key under which its messages are stored.
    pub id: String,
    /// Its name (the id for a DM).
    pub name: String,
    /// The folder of its day files.
    pub folder: String,
    /// Its day files (relative paths), sorted.
    pub files: Vec<String>,
}

/// One person of `users.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportUser {
    pub id: String,
    pub name: String,
    pub team_id: Option<String>,
    pub is_bot: bool,
}

/// An opened export: its conversations and people, files read on demand.
pub struct Export {
    files: Files,
    pub channels: Vec<ExportChannel>,
    pub users: Vec<ExportUser>,
}

/// The messages of one channel, ready to import.
#[derive(Debug, Default)]
pub struct ChannelMessages {
    /// One object per distinct `ts`, in `ts` order, each with its normalised ts.
    pub messages: Vec<(String, Value)>,
    /// Copies of a message seen more than once (overlapping snapshots, replies under parents).
    pub repeats: usize,
    /// Entries that are not messages with a valid `ts`.
    pub invalid: usize,
}

#[derive(Deserialize)]
struct ChannelEntry {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct UserEntry {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    real_name: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default)]
    is_bot: bool,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    real_name: Option<String>,
}

const LISTS: [&str; 4] = ["channels.json", "groups.json", "mpims.json", "dms.json"];

impl Export {
    /// Opens a folder or a `.zip` and reads its channel lists and `users.json`.
    pub fn open(path: &Path) -> Result<Export, ImportError> {
        let files = if path.is_dir() {
            Files::Dir(path.to_owned())
        } else if path.is_file() {
            let names = zip_names(path)?;
            let root = names
                .iter()
                .filter(|n| *n == "channels.json" || n.ends_with("/channels.json") || is_list(n))
                .map(|n| n.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned())
                .min_by_key(|d| d.len())
                .ok_or_else(|| not_export(path))?;
            Files::Zip(path.to_owned(), root)
        } else {
            return Err(ImportError::Io {
                file: path.display().to_string(),
                message: "no such file or folder".into(),
            });
        };
        let mut export = Export {
            files,
            channels: Vec::new(),
            users: Vec::new(),
        };
        let all = export.list_files()?;
        let mut by_folder: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for f in &all {
            if let Some((folder, file)) = f.split_once('/') {
                if file.ends_with(".json") && !file.contains('/') {
                    by_folder.entry(folder).or_default().push(f.clone());
                }
            }
        }
        let mut found_list = false;
        for list in LISTS {
            if !all.iter().any(|f| f == list) {
                continue;
            }
            found_list = true;
            let entries: Vec<ChannelEntry> = export.read_json(list)?;
            for c in entries {
                let folder = c
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| c.id.clone());
                let mut files = by_folder.remove(folder.as_str()).unwrap_or_default();
                files.sort();
                export.channels.push(ExportChannel {
                    name: folder.clone(),
                    id: c.id,
                    folder,
                    files,
                });
            }
        }
        if !found_list {
            return Err(not_export(path));
        }
        for (folder, _) in by_folder {
            tracing::warn!(folder, "a folder of the export is in no channel list; skipped");
        }
        if all.iter().any(|f| f == "users.json") {
            let users: Vec<UserEntry> = export.read_json("users.json")?;
            export.users = users.into_iter().map(ExportUser::from).collect();
        }
        Ok(export)
    }

    /// Reads and parses every day file of `channels` without keeping anything: a malformed file
    /// is found before any message is imported. Returns the number of message entries.
    pub fn validate(&self, channels: &[&ExportChannel]) -> Result<usize, ImportError> {
        let mut n = 0;
        for c in channels {
            for f in &c.files {
                let entries: Vec<serde::de::IgnoredAny> = self.read_json(f)?;
                n += entries.len();
            }
        }
        Ok(n)
    }

    /// The channel's messages: flattened, deduplicated and sorted (see the module doc).
    pub fn channel_messages(&self, channel: &ExportChannel) -> Result<ChannelMessages, ImportError> {
        let mut out = ChannelMessages::default();
        // ts -> (edited ts, message)
        let mut by_ts: HashMap<String, (String, Value)> = HashMap::new();
        for f in &channel.files {
            let entries: Vec<Value> = self.read_json(f)?;
            let mut queue = entries;
            while let Some(mut m) = queue.pop() {
                let Some(obj) = m.as_object_mut() else {
                    out.invalid += 1;
                    continue;
                };
                for key in ["slackdump_thread_replies", "replies"] {
                    if let Some(Value::Array(replies)) = obj.get(key) {
                        if replies.iter().all(|r| r.get("text").is_some()) {
                            let replies = replies.clone();
                            obj.remove(key);
                            queue.extend(replies);
                        }
                    }
                }
                let is_message = obj.get("type").is_none_or(|t| t == "message");
                let ts = obj.get("ts").and_then(|t| normalize_ts(t).ok());
                let (true, Some(ts)) = (is_message, ts) else {
                    out.invalid += 1;
                    continue;
                };
                let edited = obj
                    .get("edited")
                    .and_then(|e| e.get("ts"))
                    .and_then(|t| normalize_ts(t).ok())
                    .unwrap_or_default();
                match by_ts.get(&ts) {
                    Some((seen, _)) => {
                        out.repeats += 1;
                        if edited > *seen {
                            by_ts.insert(ts, (edited, m));
                        }
                    }
                    None => {
                        by_ts.insert(ts, (edited, m));
                    }
                }
            }
        }
        out.messages = by_ts.into_iter().map(|(ts, (_, m))| (ts, m)).collect();
        out.messages.sort_by(|a, b| ts_key(&a.0).cmp(&ts_key(&b.0)));
        Ok(out)
    }

    /// Every file path of the export, relative to its root.
    fn list_files(&self) -> Result<Vec<String>, ImportError> {
        match &self.files {
            Files::Dir(root) => {
                let mut out = Vec::new();
                let entries = std::fs::read_dir(root).map_err(|e| io(root, e))?;
                for e in entries {
                    let e = e.map_err(|e| io(root, e))?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    let path = e.path();
                    if path.is_dir() {
                        for f in std::fs::read_dir(&path).map_err(|e| io(&path, e))? {
                            let f = f.map_err(|e| io(&path, e))?;
                            out.push(format!("{name}/{}", f.file_name().to_string_lossy()));
                        }
                    } else {
                        out.push(name);
                    }
                }
                Ok(out)
            }
            Files::Zip(zip, root) => {
                let prefix = if root.is_empty() {
                    String::new()
                } else {
                    format!("{root}/")
                };
                Ok(zip_names(zip)?
                    .into_iter()
                    .filter_map(|n| n.strip_prefix(&prefix).map(str::to_owned))
                    .filter(|n| !n.ends_with('/'))
                    .collect())
            }
        }
    }

    fn read_bytes(&self, rel: &str) -> Result<Vec<u8>, ImportError> {
        match &self.files {
            Files::Dir(root) => {
                let path = root.join(rel);
                std::fs::read(&path).map_err(|e| io(&path, e))
            }
            Files::Zip(zip, root) => {
                let name = if root.is_empty() {
                    rel.to_owned()
                } else {
                    format!("{root}/{rel}")
                };
                let file = File::open(zip).map_err(|e| io(zip, e))?;
                let mut archive = zip::ZipArchive::new(file).map_err(|e| bad_zip(zip, e))?;
                let mut entry = archive.by_name(&name).map_err(|e| bad_zip(zip, e))?;
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| io(&zip.join(&name), e))?;
                Ok(bytes)
            }
        }
    }

    /// Parses one file; a syntax or shape error names the file, line and column.
    fn read_json<T: serde::de::DeserializeOwned>(&self, rel: &str) -> Result<T, ImportError> {
        let bytes = self.read_bytes(rel)?;
        serde_json::from_slice(&bytes).map_err(|e| ImportError::Malformed {
            file: rel.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }
}

/// Sorts `seconds.micros` numerically (the seconds part may differ in length).
fn ts_key(ts: &str) -> (u64, u32) {
    let (s, f) = ts.split_once('.').unwrap_or((ts, "0"));
    (s.parse().unwrap_or(0), f.parse().unwrap_or(0))
}

fn is_list(name: &str) -> bool {
    LISTS
        .iter()
        .any(|l| name == *l || name.ends_with(&format!("/{l}")))
}

impl From<UserEntry> for ExportUser {
    fn from(u: UserEntry) -> Self {
        let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let (display, profile_real) = match u.profile {
            Some(p) => (nonempty(p.display_name), nonempty(p.real_name)),
            None => (None, None),
        };
        let name = nonempty(u.real_name)
            .or(profile_real)
            .or(display)
            .or(nonempty(u.name))
            .unwrap_or_else(|| u.id.clone());
        ExportUser {
            id: u.id,
            name,
            team_id: u.team_id,
            is_bot: u.is_bot,
        }
    }
}

fn zip_names(path: &Path) -> Result<Vec<String>, ImportError> {
    let file = File::open(path).map_err(|e| io(path, e))?;
    let archive = zip::ZipArchive::new(file).map_err(|e| bad_zip(path, e))?;
    archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()).map_err(|e| bad_zip(path, e)))
        .collect()
}

fn not_export(path: &Path) -> ImportError {
    ImportError::NotAnExport(format!(
        "{}: no channels.json, groups.json, mpims.json or dms.json found",
        path.display()
    ))
}

fn io(path: &Path, e: std::io::Error) -> ImportError {
    ImportError::Io {
        file: path.display().to_string(),
        message: e.to_string(),
    }
}

fn bad_zip(path: &Path, e: zip::result::ZipError) -> ImportError {
    ImportError::NotAnExport(format!("{}: not a readable zip: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, rel: &str, v: &Value) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    }

    #[test]
    fn dedupes_flattens_and_keeps_the_latest_edit() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "channels.json", &json!([{"id": "C1", "name": "support"}]));
        write(
            d,
            "users.json",
            &json!([{"id": "U1", "name": "ann", "real_name": "Ann Lee"}]),
        );
        write(
            d,
            "support/2024-01-01.json",
            &json!([
                {"type": "message", "ts": "10.000100", "user": "U1", "text": "old",
                 "edited": {"ts": "11.0"}},
                {"type": "message", "ts": "12.0", "user": "U1", "text": "root", "thread_ts": "12.0",
                 "slackdump_thread_replies": [
                    {"type": "message", "ts": "13.0", "user": "U2", "text": "reply", "thread_ts": "12.0"}
                 ]}
            ]),
        );
        // A later, overlapping snapshot: the edit and the reply again.
        write(
            d,
            "support/2024-01-02.json",
            &json!([
                {"type": "message", "ts": "10.0001", "user": "U1", "text": "new", "edited": {"ts": "20.0"}},
                {"type": "message", "ts": "13.0", "user": "U2", "text": "reply", "thread_ts": "12.0"},
                {"ts": "x"}
            ]),
        );
        let export = Export::open(d).unwrap();
        assert_eq!(export.users[0].name, "Ann Lee");
        let c = &export.channels[0];
        assert_eq!((c.id.as_str(), c.files.len()), ("C1", 2));
        assert_eq!(export.validate(&[c]).unwrap(), 5);
        let m = export.channel_messages(c).unwrap();
        let got: Vec<(&str, &str)> = m
            .messages
            .iter()
            .map(|(ts, v)| (ts.as_str(), v["text"].as_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.000100", "new"),
                ("12.000000", "root"),
                ("13.000000", "reply")
            ]
        );
        assert_eq!((m.repeats, m.invalid), (2, 1));
    }

    #[test]
    fn malformed_files_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "channels.json", &json!([{"id": "C1", "name": "support"}]));
        std::fs::create_dir_all(d.join("support")).unwrap();
        std::fs::write(
            d.join("support/2024-01-01.json"),
            "[\n{\"ts\": \"1.0\",\n \"text\": }\n]",
        )
        .unwrap();
        let export = Export::open(d).unwrap();
        let err = export.validate(&[&export.channels[0]]).unwrap_err();
        match &err {
            ImportError::Malformed { file, line, .. } => {
                assert_eq!((file.as_str(), *line), ("support/2024-01-01.json", 3))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().contains("support/2024-01-01.json line 3"),
            "{err}"
        );
        assert!(matches!(
            Export::open(&d.join("support")),
            Err(ImportError::NotAnExport(_))
        ));
    }

    #[test]
    fn reads_a_zip_with_a_top_folder() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.zip");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        for (name, v) in [
            ("ws/channels.json", json!([{"id": "C1", "name": "general"}])),
            (
                "ws/general/2024-01-01.json",
                json!([{"type": "message", "ts": "5.0", "user": "U1", "text": "hi"}]),
            ),
        ] {
            zip.start_file(name, opts).unwrap();
            zip.write_all(v.to_string().as_bytes()).unwrap();
        }
        zip.finish().unwrap();
        let export = Export::open(&path).unwrap();
        let m = export.channel_messages(&export.channels[0]).unwrap();
        assert_eq!(m.messages.len(), 1);
        assert!(export.users.is_empty());
    }
}
