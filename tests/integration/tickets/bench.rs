//! Scale benchmark, not part of the normal run:
//! `cargo test --release --test api bench -- --ignored --nocapture`.
//! Fills 1,000,000 messages in 100,000 conversations (BENCH_MESSAGES) through the ingest pipeline
//! (grouping, status machine, events; inference excluded: a fixed prediction), then times filtered
//! lists. BENCH_PIPELINE_MESSAGES ingests only the newest that many through the pipeline (the
//! ingest rate is measured on those) after bulk-inserting the older rest, so that the measured
//! ingest runs against a database already at full size, as a long-running deployment's would.

use crate::tickets::helpers::{Backend, KeywordClassifier, TestDb, TestGrouper};
use serde_json::json;
use sqlx::{Connection, PgConnection, SqliteConnection};
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triage::domain::{ReplyLabel, Role, Status};
use triage::pipeline::{IncomingMessage, Pipeline, Prediction};
use triage::store::{self, ConversationFilter, PageRequest, Store};

const PER_CONVERSATION: usize = 10;
const CHANNELS: usize = 100;
const WRITERS: usize = 4;
const QUERIES: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: minutes of work"]
async fn bench_sqlite() {
    run(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: minutes of work"]
async fn bench_postgres() {
    run(Backend::Postgres).await
}

fn message(i: usize) -> (IncomingMessage, Option<Prediction>) {
    let conversation = i / PER_CONVERSATION;
    let pos = i % PER_CONVERSATION;
    let channel = conversation % CHANNELS;
    // Conversations of a channel are 10 minutes apart; their messages a few seconds apart.
    let root_secs = 1_600_000_000 + (conversation / CHANNELS) * 600;
    let ts = format!("{}.{:06}", root_secs + pos * 5, pos);
    let role = if pos % 2 == 1 { Role::Agent } else { Role::Customer };
    let text = match (pos, conversation % 7) {
        (0, 0) => format!("kubernetes deployment failing for customer {conversation}"),
        (0, _) => format!("billing export question {conversation}"),
        _ => format!("follow-up {pos} on {conversation}"),
    };
    let msg = IncomingMessage {
        channel: format!("C{channel}"),
        ts,
        thread_ts: (pos > 0).then(|| format!("{root_secs}.000000")),
        user: if role == Role::Agent {
            format!("AGENT{}", conversation % 5)
        } else {
            format!("U{conversation}")
        },
        role,
        text,
        files: Vec::new(),
        embedding: None,
    };
    let label = if pos == PER_CONVERSATION - 1 && conversation.is_multiple_of(3) {
        ReplyLabel::Closed
    } else {
        ReplyLabel::InProgress
    };
    (
        msg,
        (role == Role::Agent).then_some(Prediction { label, score: 0.9 }),
    )
}

async fn run(backend: Backend) {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
    let total = env("BENCH_MESSAGES").unwrap_or(1_000_000);
    // Whole conversations only, so pipeline and bulk never share one.
    let piped =
        env("BENCH_PIPELINE_MESSAGES").unwrap_or(total).min(total) / PER_CONVERSATION * PER_CONVERSATION;
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let store: Arc<dyn Store> = store::connect(&db.url).await.unwrap();

    let bulk = total - piped;
    bulk_fill(&db.url, 0, bulk).await;
    if backend == Backend::Postgres {
        // Planner statistics, as autovacuum would have gathered them on a long-running database.
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
    }

    // Each writer owns whole channels, so writers contend only where the backend serialises.
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            // Inference excluded: the fixed prediction goes straight to the store's unit of work.
            let pipeline = Pipeline::new(store.clone(), Arc::new(KeywordClassifier), Arc::new(TestGrouper));
            tokio::spawn(async move {
                for i in (bulk..total).filter(|i| (i / PER_CONVERSATION) % CHANNELS % WRITERS == w) {
                    let (msg, prediction) = message(i);
                    let outcome = pipeline.ingest_analysed(&msg, prediction).await.unwrap();
                    assert!(outcome.created);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let ingest_secs = started.elapsed().as_secs_f64();

    let filters = [
        ConversationFilter {
            status: Some(Status::OnYou),
            ..Default::default()
        },
        ConversationFilter {
            status: Some(Status::Closed),
            channel: Some("C7".into()),
            ..Default::default()
        },
        ConversationFilter {
            owner: Some("nobody".into()),
            ..Default::default()
        },
        ConversationFilter {
            channel: Some("C42".into()),
            ..Default::default()
        },
        ConversationFilter {
            q: Some("kubernetes deployment".into()),
            ..Default::default()
        },
        ConversationFilter {
            status: Some(Status::InProgress),
            q: Some("billing".into()),
            ..Default::default()
        },
    ];
    let mut timings = Vec::with_capacity(QUERIES);
    let mut per_filter: Vec<Vec<Duration>> = vec![Vec::new(); filters.len()];
    for i in 0..QUERIES {
        let filter = &filters[i % filters.len()];
        let start = Instant::now();
        let page = store
            .list_conversations(
                filter,
                PageRequest {
                    cursor: None,
                    limit: 50,
                },
            )
            .await
            .unwrap();
        timings.push(start.elapsed());
        per_filter[i % filters.len()].push(start.elapsed());
        // Follow one cursor too: keyset pages cost the same deep in the list.
        if let Some(cursor) = page.next_cursor {
            let start = Instant::now();
            store
                .list_conversations(
                    filter,
                    PageRequest {
                        cursor: Some(cursor),
                        limit: 50,
                    },
                )
                .await
                .unwrap();
            timings.push(start.elapsed());
        }
    }
    timings.sort();
    let pct = |p: f64| timings[((timings.len() as f64 * p) as usize).min(timings.len() - 1)];
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    // Which filter is slow, on stderr (first pages only).
    for (filter, t) in filters.iter().zip(per_filter.iter_mut()) {
        t.sort();
        eprintln!(
            "{filter:?}: p50 {} ms, max {} ms",
            ms(t[t.len() / 2]),
            ms(t[t.len() - 1])
        );
    }
    println!(
        "{}",
        json!({
            "backend": format!("{backend:?}"),
            "messages": total,
            "conversations": total / PER_CONVERSATION,
            "pipeline_messages": piped,
            "ingest_msgs_per_s": (piped as f64 / ingest_secs).round(),
            "list_queries": timings.len(),
            "list_p50_ms": ms(pct(0.50)),
            "list_p99_ms": ms(pct(0.99)),
        })
    );
}

/// Inserts messages `from..to` and their conversations directly, in the state the pipeline would
/// leave them (without events). Values are generated here, so plain SQL literals are safe.
async fn bulk_fill(url: &str, from: usize, to: usize) {
    const BATCH: usize = 10_000;
    for start in (from..to).step_by(BATCH) {
        let end = (start + BATCH).min(to);
        let mut conversations = String::from(
            "INSERT INTO conversations (id, status, priority, owner, channel, title, created_at, \
             first_response_at, closed_at, message_count) VALUES ",
        );
        let mut messages = String::from(
            "INSERT INTO messages (id, conversation_id, channel, ts, thread_ts, user_id, role, text, label, score, sent_at) VALUES ",
        );
        let time = |ts: &str| triage::pipeline::ts_to_time(ts).unwrap().to_rfc3339();
        for c in (start / PER_CONVERSATION)..end.div_ceil(PER_CONVERSATION) {
            let conv = format!("bulk-{c}");
            let (root, _) = message(c * PER_CONVERSATION);
            let (last, prediction) = message(c * PER_CONVERSATION + PER_CONVERSATION - 1);
            let closed = prediction.is_some_and(|p| p.label == ReplyLabel::Closed);
            let (status, closed_at) = if closed {
                ("closed", format!("'{}'", time(&last.ts)))
            } else {
                ("in_progress", "NULL".into())
            };
            let first_response = time(&message(c * PER_CONVERSATION + 1).0.ts);
            let sep = if c == start / PER_CONVERSATION { "" } else { "," };
            write!(
                conversations,
                "{sep}('{conv}', '{status}', 'none', NULL, '{}', '{}', '{}', '{first_response}', {closed_at}, {PER_CONVERSATION})",
                root.channel, root.text, time(&root.ts)
            )
            .unwrap();
            for i in c * PER_CONVERSATION..(c + 1) * PER_CONVERSATION {
                let (m, p) = message(i);
                let sep = if i == start { "" } else { "," };
                let thread = m.thread_ts.as_ref().map_or("NULL".into(), |t| format!("'{t}'"));
                let (label, score) = p.map_or(("NULL".into(), "NULL".into()), |p| {
                    (format!("'{}'", p.label.as_str()), p.score.to_string())
                });
                write!(
                    messages,
                    "{sep}('bulk-{i}', '{conv}', '{}', '{}', {thread}, '{}', '{}', '{}', {label}, {score}, '{}')",
                    m.channel, m.ts, m.user, m.role.as_str(), m.text, time(&m.ts)
                )
                .unwrap();
            }
        }
        for sql in [conversations, messages] {
            if url.starts_with("sqlite:") {
                let mut conn = SqliteConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            } else {
                let mut conn = PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
}
