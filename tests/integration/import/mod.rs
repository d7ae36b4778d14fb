//! `triage import slack-export` with the real models over a real database: the houstondatavis
//! export (read from ../shared, never copied into the repository) on SQLite and PostgreSQL, a
//! slackdump-style fixture generated from it at test time, and a malformed file mid-export.

mod fixtures;
mod http;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use triage::import::{ImportError, ImportOptions, ImportSummary};
use triage::store::{ConversationFilter, PageRequest, Store};

use crate::tickets::helpers::{on_both_backends, Backend, TestDb};

/// `../shared/data/slack-export/houstondatavis` beside the checkout (one level further up from a
/// git worktree under `wt/`).
pub fn houstondatavis() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ["../shared", "../../shared"]
        .iter()
        .map(|s| repo.join(s).join("data/slack-export/houstondatavis"))
        .find(|p| p.join("channels.json").exists())
        .expect("../shared/data/slack-export/houstondatavis is missing")
}

/// The export's entries, as stated: 1,382 message objects in 16 channels, of which 1,025 are
/// people's messages (964 plain, 61 file shares) and 357 are joins, purpose changes and other
/// non-conversation subtypes; no threads.
pub const ENTRIES: u64 = 1382;
pub const MESSAGES: u64 = 1025;
pub const IGNORED: u64 = 357;
pub const CHANNELS: u64 = 16;

/// What the files say, counted independently of the importer: people's messages per channel id,
/// and ignored entries per subtype.
pub struct Counted {
    pub per_channel: BTreeMap<String, u64>,
    pub ignored: BTreeMap<String, u64>,
    pub entries: u64,
}

pub fn count_files(dir: &Path) -> Counted {
    let channels: Vec<Value> = read(&dir.join("channels.json"));
    let mut c = Counted {
        per_channel: BTreeMap::new(),
        ignored: BTreeMap::new(),
        entries: 0,
    };
    for ch in channels {
        let (id, name) = (ch["id"].as_str().unwrap(), ch["name"].as_str().unwrap());
        let Ok(days) = std::fs::read_dir(dir.join(name)) else {
            continue;
        };
        for day in days {
            let msgs: Vec<Value> = read(&day.unwrap().path());
            for m in msgs {
                c.entries += 1;
                let sub = m.get("subtype").and_then(Value::as_str);
                let person = m.get("user").is_some();
                match sub {
                    None | Some("file_share") if person => *c.per_channel.entry(id.into()).or_default() += 1,
                    _ => *c.ignored.entry(sub.unwrap_or("bot_message").into()).or_default() += 1,
                }
            }
        }
    }
    c
}

pub fn read<T: serde::de::DeserializeOwned>(p: &Path) -> T {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The workspace's admins and owners (from users.json): the "team" of these tests.
pub fn admins(dir: &Path) -> HashSet<String> {
    let users: Vec<Value> = read(&dir.join("users.json"));
    users
        .iter()
        .filter(|u| u["is_admin"] == true || u["is_owner"] == true)
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

pub fn settings(db: &TestDb) -> triage::config::Settings {
    let mut s = crate::helpers::settings();
    s.database_url = db.url.clone();
    s
}

pub async fn import(db: &TestDb, path: &Path, opts: &ImportOptions) -> anyhow::Result<ImportSummary> {
    triage::cli::import::run_import(&settings(db), path, opts).await
}

/// Messages stored per channel, summed over the conversations' message counts.
pub async fn stored_per_channel(store: &dyn Store, channels: &[String]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ch in channels {
        let filter = ConversationFilter {
            channel: Some(ch.clone()),
            ..Default::default()
        };
        let mut page = PageRequest {
            cursor: None,
            limit: 200,
        };
        let mut n = 0;
        loop {
            let p = store.list_conversations(&filter, page.clone()).await.unwrap();
            n += p.items.iter().map(|c| c.message_count as u64).sum::<u64>();
            match p.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        if n > 0 {
            out.insert(ch.clone(), n);
        }
    }
    out
}

async fn houstondatavis_imports_once(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let dir = houstondatavis();
    let files = count_files(&dir);
    assert_eq!(files.entries, ENTRIES);
    assert_eq!(files.per_channel.values().sum::<u64>(), MESSAGES);
    assert_eq!(files.ignored.values().sum::<u64>(), IGNORED);
    let opts = ImportOptions {
        team_users: admins(&dir),
        ..Default::default()
    };
    assert!(!opts.team_users.is_empty());

    let first = import(&db, &dir, &opts).await.expect("import");
    assert_eq!(
        (
            first.messages_imported,
            first.duplicates_skipped,
            first.ignored,
            first.channels
        ),
        (MESSAGES, 0, IGNORED, CHANNELS),
        "{first:?}"
    );
    assert_eq!(first.ignored_subtypes, files.ignored, "{first:?}");
    assert_eq!(
        (
            first.thread_replies,
            first.repeats_merged,
            first.placeholder_users
        ),
        (0, 0, 0)
    );
    assert!(
        first.conversations > 0 && first.conversations <= MESSAGES,
        "{first:?}"
    );

    let store = triage::store::connect(&db.url).await.unwrap();
    let channels: Vec<String> = files.per_channel.keys().cloned().collect();
    assert_eq!(
        stored_per_channel(store.as_ref(), &channels).await,
        files.per_channel
    );
    let analytics = store.analytics().await.unwrap();
    assert_eq!(
        analytics.by_status.values().sum::<i64>() as u64,
        first.conversations,
        "{analytics:?}"
    );
    // The admins' replies were read by the status model: not every conversation is still new.
    assert!(
        analytics.by_status.get("new").copied().unwrap_or(0) < first.conversations as i64,
        "{analytics:?}"
    );

    let second = import(&db, &dir, &opts).await.expect("second import");
    assert_eq!(
        (
            second.messages_imported,
            second.duplicates_skipped,
            second.ignored,
            second.conversations
        ),
        (0, MESSAGES, IGNORED, 0),
        "{second:?}"
    );
    assert_eq!(
        stored_per_channel(store.as_ref(), &channels).await,
        files.per_channel
    );
}

on_both_backends!(houstondatavis_imports_once);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slackdump_snapshots_import_exactly_the_unique_messages() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixtures::slackdump(&houstondatavis(), tmp.path());
    assert!(
        fx.repeats > 100 && fx.replies > 50,
        "fixture too small: {:?}",
        fx.repeats
    );

    // The first snapshot alone, then the whole overlapping set.
    let early = import(&db, &fx.early, &ImportOptions::default()).await.unwrap();
    assert_eq!(early.messages_imported, fx.early_unique, "{early:?}");
    let all = import(&db, &fx.all, &ImportOptions::default()).await.unwrap();
    assert_eq!(
        (all.messages_imported, all.duplicates_skipped, all.ignored),
        (MESSAGES - fx.early_unique, fx.early_unique, IGNORED),
        "{all:?}"
    );
    assert_eq!(all.repeats_merged, fx.repeats, "{all:?}");
    assert_eq!(
        early.thread_replies + all.thread_replies,
        fx.replies,
        "{early:?} {all:?}"
    );

    // Thread replies sit in their root's conversation.
    let store = triage::store::connect(&db.url).await.unwrap();
    for (channel, root, reply) in fx.sample_threads.iter().take(20) {
        let r = store
            .find_message(channel, root)
            .await
            .unwrap()
            .expect("root stored");
        let m = store
            .find_message(channel, reply)
            .await
            .unwrap()
            .expect("reply stored");
        assert_eq!(
            m.conversation_id, r.conversation_id,
            "{channel} {reply} under {root}"
        );
        assert_eq!(m.thread_ts.as_deref(), Some(root.as_str()));
    }
    let per_channel = count_files(&houstondatavis()).per_channel;
    let channels: Vec<String> = per_channel.keys().cloned().collect();
    assert_eq!(stored_per_channel(store.as_ref(), &channels).await, per_channel);

    // Dry run of the zip of the same set: counts only, everything already stored.
    let zip = fixtures::zip_dir(&fx.all, &tmp.path().join("all.zip"));
    let dry = import(
        &db,
        &zip,
        &ImportOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (dry.messages_imported, dry.duplicates_skipped, dry.dry_run),
        (0, MESSAGES, true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_file_stops_the_import_and_a_fixed_rerun_completes() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("export");
    fixtures::copy_dir(&houstondatavis(), &dir);
    // A day file of `general` in the middle of the export: cut after its 40th line.
    let mut days: Vec<PathBuf> = std::fs::read_dir(dir.join("general"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    days.sort();
    let victim = days
        .iter()
        .skip(days.len() / 2)
        .find(|p| std::fs::read_to_string(p).unwrap().lines().count() > 60)
        .unwrap()
        .clone();
    let good = std::fs::read_to_string(&victim).unwrap();
    let broken: String = good
        .lines()
        .take(40)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "  \"text\": }\n";
    std::fs::write(&victim, broken).unwrap();

    let err = import(&db, &dir, &ImportOptions::default()).await.unwrap_err();
    let name = format!("general/{}", victim.file_name().unwrap().to_string_lossy());
    match err.downcast_ref::<ImportError>() {
        Some(ImportError::Malformed { file, line, .. }) => {
            assert_eq!((file.as_str(), *line), (name.as_str(), 41))
        }
        _ => panic!("not a malformed-file error: {err:#}"),
    }
    assert!(format!("{err:#}").contains(&format!("{name} line 41")), "{err:#}");
    let store = triage::store::connect(&db.url).await.unwrap();
    let channels: Vec<String> = count_files(&houstondatavis())
        .per_channel
        .keys()
        .cloned()
        .collect();
    assert!(stored_per_channel(store.as_ref(), &channels).await.is_empty());

    std::fs::write(&victim, good).unwrap();
    let fixed = import(&db, &dir, &ImportOptions::default()).await.unwrap();
    assert_eq!((fixed.messages_imported, fixed.duplicates_skipped), (MESSAGES, 0));
    let again = import(&db, &dir, &ImportOptions::default()).await.unwrap();
    assert_eq!((again.messages_imported, again.duplicates_skipped), (0, MESSAGES));
}
