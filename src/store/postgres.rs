//! PostgreSQL backend, for several replicas sharing one database.
//!
//! Grouping decisions for a channel are serialised across processes with a transaction-scoped
//! advisory lock on the channel, so two replicas never split one conversation between them or both
//! insert the same message; human edits lock the rows they change (`FOR UPDATE`).

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
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::Postgres;

type Conn = PgConnection;
type Db = Postgres;

pub struct PgStore {
    pool: PgPool,
    embeddings: EmbeddingCache,
}

/// Locks the rows a write transaction reads before changing them.
macro_rules! for_update {
    () => {
        " FOR UPDATE"
    };
}

shared_queries!();
board_queries!();
store_ops!(PgStore);
message_edit_ops!(PgStore);
outbox_ops!(PgStore);
note_ops!(PgStore);
inbox_ops!(PgStore);
slack_names_ops!(PgStore);

type WriteTx<'a> = super::tx::WriteTx<'a, Postgres>;

impl PgStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new().max_connections(16).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore {
            pool,
            embeddings: EmbeddingCache::default(),
        })
    }

    async fn write_tx(&self) -> Result<WriteTx<'_>, StoreError> {
        Ok(WriteTx::new(self.pool.begin().await?, None))
    }

    /// A write transaction holding `channel`'s advisory lock, taken with BEGIN in one round trip
    /// (the key is a number, so inlining it is safe).
    async fn ingest_tx(&self, channel: &str) -> Result<WriteTx<'_>, StoreError> {
        let sql = format!(
            "BEGIN; SELECT pg_advisory_xact_lock({})",
            channel_lock_key(channel)
        );
        Ok(WriteTx::new(
            self.pool.begin_with(sqlx::AssertSqlSafe(sql)).await?,
            None,
        ))
    }

    async fn list_conversations_inner(
        &self,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        list_page(&self.pool, filter, page, |qb| {
            if let Some(q) = filter.q.as_deref().filter(|q| !q.trim().is_empty()) {
                // The words of all its messages (see migrations/postgres/0003_conversation_search.sql).
                qb.push(" AND search @@ plainto_tsquery('english', ")
                    .push_bind(q.to_owned())
                    .push(")");
            }
        })
        .await
    }
}

const FIRST_RESPONSE: &str =
    "SELECT COUNT(*), AVG(EXTRACT(EPOCH FROM first_response_at - created_at))::float8 \
     FROM conversations WHERE first_response_at IS NOT NULL";
const TIME_TO_CLOSE: &str = "SELECT COUNT(*), AVG(EXTRACT(EPOCH FROM closed_at - created_at))::float8 \
     FROM conversations WHERE closed_at IS NOT NULL";

/// Serialises grouping in these channels with every other transaction of every replica.
/// Sorted and deduplicated so that two transactions never wait on each other in a cycle.
async fn lock_channels(conn: &mut Conn, channels: &[&str]) -> Result<(), StoreError> {
    let mut channels = channels.to_vec();
    channels.sort_unstable();
    channels.dedup();
    for channel in channels {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(channel_lock_key(channel))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The advisory-lock key of a channel: FNV-1a of its name, the same in every replica and release.
fn channel_lock_key(channel: &str) -> i64 {
    let hash = channel.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash as i64
}

async fn lock_conversation(conn: &mut Conn, id: &str) -> Result<Conversation, StoreError> {
    sqlx::query_as::<_, ConversationRow>(concat!(conversation_select!(), " WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(StoreError::NotFound("conversation"))?
        .into_domain()
        .map(|(_, c)| c)
}

#[derive(sqlx::FromRow)]
struct PartRow {
    part: i32,
    #[sqlx(flatten)]
    row: ContextRow,
}

/// The timestamps among `ts` that `channel` has stored.
async fn stored_among(conn: &mut Conn, channel: &str, ts: &[String]) -> Result<Vec<String>, StoreError> {
    if ts.is_empty() {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT ts FROM messages WHERE channel = $1 AND ts = ANY($2)")
            .bind(channel)
            .bind(ts)
            .fetch_all(conn)
            .await?,
    )
}

/// The channel context in one round trip, or `None` when (channel, ts) is already stored (read
/// after the channel lock, so a replica's concurrent insert is seen).
async fn load_context(
    conn: &mut Conn,
    cache: &EmbeddingCache,
    msg: &IncomingMessage,
) -> Result<Option<ChannelContext>, StoreError> {
    let rows = sqlx::query_as::<_, PartRow>(concat!(
        "(SELECT 0 AS part, ctx.* FROM (",
        context_select!(),
        " WHERE m.channel = $1 AND m.ts = $2) ctx) \
         UNION ALL (SELECT 1, ctx.* FROM (",
        context_select!(),
        " WHERE m.channel = $1 AND m.ts < $2 ORDER BY m.ts DESC LIMIT $4) ctx) \
         UNION ALL (SELECT 2, ctx.* FROM (",
        context_select!(),
        " WHERE m.seq IN (SELECT seq FROM messages WHERE channel = $1 AND ts = $3 \
         UNION ALL SELECT seq FROM messages WHERE channel = $1 AND thread_ts = $3) ORDER BY m.ts LIMIT $4) ctx) \
         UNION ALL (SELECT 3, ctx.* FROM (",
        context_select!(),
        " WHERE ",
        open_messages_where!(),
        ") ctx)"
    ))
    .bind(&msg.channel)
    .bind(&msg.ts)
    .bind(msg.thread_key())
    .bind(CONTEXT_MESSAGES)
    .bind(OPEN_CONVERSATIONS)
    .fetch_all(&mut *conn)
    .await?;
    let (mut recent, mut thread, mut open) = (Vec::new(), Vec::new(), Vec::new());
    for PartRow { part, row } in rows {
        match part {
            0 => return Ok(None),
            1 => recent.push(row),
            2 => thread.push(row),
            _ => open.push(row),
        }
    }
    let missing = cache.misses(recent.iter().chain(&thread).chain(&open));
    let fetched = if missing.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as("SELECT id, embedding FROM messages WHERE id = ANY($1) AND embedding IS NOT NULL")
            .bind(&missing)
            .fetch_all(&mut *conn)
            .await?
    };
    Ok(Some(cache.context(recent, thread, open, fetched)?))
}

/// `INSERT INTO events` selecting from ten array parameters (their `$n` given as literals), one
/// array per column as `bind_events!` binds them; with `ORDER BY e.n` the events' `seq` follows
/// the given order.
macro_rules! events_from_arrays {
    ($a:literal, $b:literal, $c:literal, $d:literal, $e:literal, $f:literal, $g:literal, $h:literal, $i:literal, $j:literal) => {
        concat!(
            "INSERT INTO events (id, conversation_id, kind, actor, message_id, before_value, after_value, \
             model_label, model_score, at) \
             SELECT e.id, e.conversation_id, e.kind, e.actor, e.message_id, e.before_value, e.after_value, \
             e.model_label, e.model_score, e.at FROM UNNEST(",
            $a, "::TEXT[], ", $b, "::TEXT[], ", $c, "::TEXT[], ", $d, "::TEXT[], ", $e, "::TEXT[], ",
            $f, "::TEXT[], ", $g, "::TEXT[], ", $h, "::TEXT[], ", $i, "::REAL[], ", $j,
            "::TIMESTAMPTZ[]) WITH ORDINALITY AS e(id, conversation_id, kind, actor, message_id, \
             before_value, after_value, model_label, model_score, at, n)"
        )
    };
}

/// Binds events as the ten column arrays `events_from_arrays!` reads (any sqlx query type).
macro_rules! bind_events {
    ($query:expr, $events:expr) => {{
        let events: &[Event] = $events;
        $query
            .bind(events.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.conversation_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.actor.clone()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.message_id.clone()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.before.clone()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.after.clone()).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.model_label.map(ReplyLabel::as_str))
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.model_score).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
    }};
}

/// Inserts events in order, in one round trip.
async fn insert_events(conn: &mut Conn, events: &[Event]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let sql = concat!(
        events_from_arrays!("$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10"),
        " ORDER BY e.n"
    );
    bind_events!(sqlx::query(sql), events).execute(conn).await?;
    Ok(())
}

/// An ingest's writes as one statement, one round trip: the conversation (inserted or written
/// back), the message unless (channel, ts) is already stored, and its events only when the message
/// went in. Returns whether it did; when not, the caller rolls back (the conversation part ran).
/// Foreign keys and the search trigger run at the end of the statement, after every part.
async fn write_ingest(conn: &mut Conn, plan: &IngestPlan, msg: &IncomingMessage) -> Result<bool, StoreError> {
    macro_rules! ingest_sql {
        ($conversation:expr) => {
            concat!(
                "WITH conv AS (",
                $conversation,
                "), msg AS (INSERT INTO messages (id, conversation_id, channel, ts, thread_ts, user_id, role, \
                 text, label, score, sent_at, embedding, files) \
                 VALUES ($16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28) \
                 ON CONFLICT (channel, ts) DO NOTHING RETURNING id), ev AS (",
                events_from_arrays!("$29", "$30", "$31", "$32", "$33", "$34", "$35", "$36", "$37", "$38"),
                " WHERE EXISTS (SELECT 1 FROM msg) ORDER BY e.n) SELECT COUNT(*) FROM msg"
            )
        };
    }
    let sql = if plan.new_conversation {
        ingest_sql!(insert_conversation_sql!())
    } else {
        ingest_sql!(update_conversation_sql!())
    };
    let query = bind_conversation!(sqlx::query_scalar::<_, i64>(sql), &plan.conversation);
    let query = bind_message!(query, &plan.message, msg.sent_at(), msg.embedding.as_deref());
    let inserted: i64 = bind_events!(query, &plan.events).fetch_one(conn).await?;
    Ok(inserted == 1)
}
