//! SQLite backend: one file, WAL, one writer at a time.
//!
//! Writes start with `BEGIN IMMEDIATE`, which takes SQLite's single write lock up front: that
//! serialises ingestion, so grouping decisions never race, and avoids the deadlock of two deferred
//! transactions both upgrading from read to write. Inside one process, writers also queue on a
//! mutex first: SQLite's busy handler waits by sleeping and polling, which under contention
//! costs far more than the writes themselves; the busy timeout remains for other processes.

use super::embeddings::EmbeddingCache;
use super::rows::{
    parse_column, ContextRow, ConversationRow, EventRow, GroupingSql, MessageRow, NoteRow, StatusLabelSql,
};
use super::*;
use crate::domain::{
    apply_delete, apply_edit, apply_issue_closed, apply_issue_reopened, apply_merge, apply_move, apply_patch,
    build_conversation, check_merge, check_move, human_label, new_id, split_conversation, CONTEXT_MESSAGES,
    OPEN_CONVERSATIONS,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use std::time::Duration as StdDuration;
use tokio::sync::Mutex;

type Conn = SqliteConnection;
type Db = Sqlite;

pub struct SqliteStore {
    pool: SqlitePool,
    writer: Mutex<()>,
    embeddings: EmbeddingCache,
}

/// Row locks: none needed, the writer lock covers every row.
macro_rules! for_update {
    () => {
        ""
    };
}

shared_queries!();
board_queries!();
store_ops!(SqliteStore);
message_edit_ops!(SqliteStore);
outbox_ops!(SqliteStore);
note_ops!(SqliteStore);
inbox_ops!(SqliteStore);
slack_names_ops!(SqliteStore);

type WriteTx<'a> = super::tx::WriteTx<'a, Sqlite>;

impl SqliteStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options: SqliteConnectOptions = url.parse()?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed data on a process crash and skips an fsync per commit.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(StdDuration::from_secs(30))
            // 16 MiB of page cache per connection (SQLite's default is 2 MiB): the indexes the
            // pipeline reads stay in memory instead of costing a read call per page.
            .pragma("cache_size", "-16384");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore {
            pool,
            writer: Mutex::new(()),
            embeddings: EmbeddingCache::default(),
        })
    }

    /// This process's writer turn and a write transaction.
    async fn write_tx(&self) -> Result<WriteTx<'_>, StoreError> {
        let turn = self.writer.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx::new(tx, Some(turn)))
    }

    /// SQLite has one writer: its write lock is every channel's lock.
    async fn ingest_tx(&self, _channel: &str) -> Result<WriteTx<'_>, StoreError> {
        self.write_tx().await
    }

    async fn list_conversations_inner(
        &self,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        match filter.q.as_deref().and_then(fts_terms) {
            Some(terms) => self.search_conversations(filter, page, &terms).await,
            None => list_page(&self.pool, filter, page, |_| ()).await,
        }
    }

    /// A text search over `conversation_search`, read newest conversation first (see its migration):
    /// hits of one conversation are adjacent, so it reads chunks until a page of distinct
    /// conversations is full, without collecting every match. The first term drives; every other
    /// term must occur somewhere in the same conversation (as PostgreSQL's per-conversation words
    /// do), checked by a rowid-range lookup.
    async fn search_conversations(
        &self,
        filter: &ConversationFilter,
        page: &PageRequest,
        terms: &[String],
    ) -> Result<Page<Conversation>, StoreError> {
        let want = page.fetch_limit() as usize;
        let chunk = (want * 4) as i64;
        let mut below: i64 = match page.seq_cursor()? {
            Some(cursor) => cursor.checked_shl(32).unwrap_or(i64::MAX),
            None => i64::MAX,
        };
        let mut rows: Vec<(String, Conversation)> = Vec::with_capacity(want);
        loop {
            let mut qb = QueryBuilder::<Sqlite>::new(concat!(
                conversation_select!(),
                " JOIN conversation_search f ON conversations.seq = (f.rowid >> 32) WHERE conversation_search MATCH "
            ));
            qb.push_bind(&terms[0]).push(" AND f.rowid < ").push_bind(below);
            for term in &terms[1..] {
                qb.push(" AND EXISTS (SELECT 1 FROM conversation_search(")
                    .push_bind(term)
                    .push(
                        ") g WHERE g.rowid BETWEEN (conversations.seq << 32) \
                     AND (conversations.seq << 32) + 4294967295)",
                    );
            }
            push_filters(&mut qb, filter);
            qb.push(" ORDER BY f.rowid DESC LIMIT ").push_bind(chunk);
            let hits = qb
                .build_query_as::<ConversationRow>()
                .fetch_all(&self.pool)
                .await?;
            let exhausted = (hits.len() as i64) < chunk;
            for hit in hits {
                let (seq, conv) = hit.into_domain()?;
                below = seq << 32;
                if rows.last().is_none_or(|(key, _)| *key != seq.to_string()) {
                    rows.push((seq.to_string(), conv));
                }
            }
            if exhausted || rows.len() >= want {
                break;
            }
        }
        rows.truncate(want);
        Ok(Page::from_rows(rows, page.limit))
    }
}

// julianday() parses the stored RFC 3339 text; days -> seconds.
const FIRST_RESPONSE: &str =
    "SELECT COUNT(*), AVG((julianday(first_response_at) - julianday(created_at)) * 86400.0) \
     FROM conversations WHERE first_response_at IS NOT NULL";
const TIME_TO_CLOSE: &str = "SELECT COUNT(*), AVG((julianday(closed_at) - julianday(created_at)) * 86400.0) \
     FROM conversations WHERE closed_at IS NOT NULL";

/// Nothing to lock: SQLite's single writer already serialises every channel.
async fn lock_channels(_conn: &mut Conn, _channels: &[&str]) -> Result<(), StoreError> {
    Ok(())
}

/// A conversation to change (the writer lock covers it).
async fn lock_conversation(conn: &mut Conn, id: &str) -> Result<Conversation, StoreError> {
    require_conversation(conn, id).await
}

/// FTS5 has its own query syntax; quoting every word makes each a literal term (a phrase of its
/// tokens), so user input is never an FTS5 expression.
fn fts_terms(q: &str) -> Option<Vec<String>> {
    let terms: Vec<String> = q
        .split_whitespace()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then_some(terms)
}

/// One context row as JSON: `[id, conversation_id, status, ts, thread_ts, user, role, text,
/// has_embedding]`; the embeddings come from the store's `EmbeddingCache`.
macro_rules! context_json {
    () => {
        "json_group_array(json_array(m.id, m.conversation_id, c.status, m.ts, m.thread_ts, m.user_id, m.role, \
         m.text, m.has_embedding))"
    };
}

/// The columns a context list reads, for its subqueries: `SELECT *` would copy every row's
/// embedding (1.5 kB) into the sorted subquery's temporary table only to test it for NULL.
macro_rules! context_columns {
    () => {
        "SELECT seq, id, conversation_id, ts, thread_ts, user_id, role, text, \
         embedding IS NOT NULL AS has_embedding FROM messages"
    };
}

/// The context query (`$1` channel, `$2` ts, `$3` thread key) with its two limits written in, not
/// bound: SQLite reads a bound LIMIT's value while planning (3.4x and later), so a statement with a
/// LIMIT parameter expires at every bind and is parsed and planned again on every call, which
/// was a third of the database thread's time in an import.
static CONTEXT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    concat!(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE channel = $1 AND ts = $2), (SELECT ",
        context_json!(),
        " FROM (",
        context_columns!(),
        " WHERE channel = $1 AND ts < $2 ORDER BY ts DESC LIMIT $4) m \
               JOIN conversations c ON c.id = m.conversation_id), \
             (SELECT ",
        context_json!(),
        " FROM (",
        context_columns!(),
        " WHERE seq IN \
                  (SELECT seq FROM messages WHERE channel = $1 AND ts = $3 \
                   UNION ALL SELECT seq FROM messages WHERE channel = $1 AND thread_ts = $3) \
                  ORDER BY ts LIMIT $4) m \
               JOIN conversations c ON c.id = m.conversation_id), \
             (SELECT ",
        context_json!(),
        " FROM (",
        context_columns!(),
        " m WHERE ",
        open_messages_where!(),
        ") m JOIN conversations c ON c.id = m.conversation_id)"
    )
    .replace("$4", &CONTEXT_MESSAGES.to_string())
    .replace("$5", &OPEN_CONVERSATIONS.to_string())
});

/// The channel context in one round trip, or `None` when (channel, ts) is already stored. sqlx
/// hands SQLite rows over one at a time between threads, and at a hundred rows per message that
/// hand-over, not SQLite, was most of the ingest time: each list (recent, thread, open) comes back
/// as one JSON array. Embeddings come from `cache`; the ones it lacks are read by id.
async fn load_context(
    conn: &mut Conn,
    cache: &EmbeddingCache,
    msg: &IncomingMessage,
) -> Result<Option<ChannelContext>, StoreError> {
    let (stored, recent, thread, open): (bool, String, String, String) = sqlx::query_as(CONTEXT_SQL.as_str())
        .bind(&msg.channel)
        .bind(&msg.ts)
        .bind(msg.thread_key())
        .fetch_one(&mut *conn)
        .await?;
    if stored {
        return Ok(None);
    }
    let (recent, thread, open) = (
        context_rows(&recent)?,
        context_rows(&thread)?,
        context_rows(&open)?,
    );
    let missing = cache.misses(recent.iter().chain(&thread).chain(&open));
    let fetched = if missing.is_empty() {
        Vec::new()
    } else {
        let ids = serde_json::to_string(&missing).map_err(|e| StoreError::Unexpected(e.into()))?;
        sqlx::query_as(
            "SELECT id, embedding FROM messages WHERE id IN (SELECT value FROM json_each($1)) \
             AND embedding IS NOT NULL",
        )
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?
    };
    Ok(Some(cache.context(recent, thread, open, fetched)?))
}

type ContextJson = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    i64,
);

/// Parses a `context_json!` array.
fn context_rows(json: &str) -> Result<Vec<ContextRow>, StoreError> {
    let rows: Vec<ContextJson> = serde_json::from_str(json)
        .map_err(|e| StoreError::Unexpected(anyhow::anyhow!("context rows: {e}")))?;
    Ok(rows
        .into_iter()
        .map(
            |(id, conversation_id, status, ts, thread_ts, user_id, role, text, has_embedding)| ContextRow {
                id,
                conversation_id,
                conversation_status: status,
                ts,
                thread_ts,
                user_id,
                role,
                text,
                has_embedding: has_embedding != 0,
            },
        )
        .collect())
}

/// The timestamps among `ts` that `channel` has stored.
async fn stored_among(conn: &mut Conn, channel: &str, ts: &[String]) -> Result<Vec<String>, StoreError> {
    if ts.is_empty() {
        return Ok(Vec::new());
    }
    let list = serde_json::to_string(ts).map_err(|e| StoreError::Unexpected(e.into()))?;
    Ok(sqlx::query_scalar(
        "SELECT ts FROM messages WHERE channel = $1 AND ts IN (SELECT value FROM json_each($2))",
    )
    .bind(channel)
    .bind(list)
    .fetch_all(conn)
    .await?)
}

/// Inserts unless (channel, ts) exists; false when another writer stored it first.
async fn insert_message(
    conn: &mut Conn,
    m: &Message,
    sent_at: DateTime<Utc>,
    embedding: Option<&[f32]>,
) -> Result<bool, StoreError> {
    let done = bind_message!(
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, channel, ts, thread_ts, user_id, role, text, label, score, \
         sent_at, embedding, files) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (channel, ts) DO NOTHING",
        ),
        m,
        sent_at,
        embedding
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn insert_events(conn: &mut Conn, events: &[Event]) -> Result<(), StoreError> {
    for e in events {
        sqlx::query(
            "INSERT INTO events (id, conversation_id, kind, actor, message_id, before_value, after_value, \
             model_label, model_score, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&e.id)
        .bind(&e.conversation_id)
        .bind(e.kind.as_str())
        .bind(&e.actor)
        .bind(&e.message_id)
        .bind(&e.before)
        .bind(&e.after)
        .bind(e.model_label.map(ReplyLabel::as_str))
        .bind(e.model_score)
        .bind(e.at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// An ingest's writes: the conversation (inserted or written back), the message unless (channel,
/// ts) is already stored, and its events when the message went in. Returns whether it did.
async fn write_ingest(conn: &mut Conn, plan: &IngestPlan, msg: &IncomingMessage) -> Result<bool, StoreError> {
    if plan.new_conversation {
        insert_conversation(conn, &plan.conversation).await?;
    } else {
        write_conversation(conn, &plan.conversation).await?;
    }
    if !insert_message(conn, &plan.message, msg.sent_at(), msg.embedding.as_deref()).await? {
        return Ok(false);
    }
    insert_events(conn, &plan.events).await?;
    Ok(true)
}
