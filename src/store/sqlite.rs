//! SQLite backend: one file, WAL, one writer at a time.
//!
//! Writes start with `BEGIN IMMEDIATE`, which takes SQLite's single write lock up front: that
//! serialises ingestion, so grouping decisions never race, and avoids the deadlock of two deferred
//! transactions both upgrading from read to write. Inside one process, writers also queue on a
//! mutex first: SQLite's busy handler waits by sleeping and polling, which under contention
//! costs far more than the writes themselves; the busy timeout remains for other processes.

use super::rows::{
    parse_column, ContextRow, ConversationRow, EventRow, GroupingSql, MessageRow, StatusLabelSql,
};
use super::*;
use crate::domain::{
    apply_issue_closed, apply_issue_reopened, apply_merge, apply_move, apply_patch, build_conversation,
    check_merge, check_move, human_label, new_id, split_conversation, ContextMessage, CONTEXT_MESSAGES,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use std::time::Duration as StdDuration;
use tokio::sync::{Mutex, MutexGuard};

type Conn = SqliteConnection;

pub struct SqliteStore {
    pool: SqlitePool,
    writer: Mutex<()>,
}

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
        })
    }

    /// This process's writer turn and a write transaction; keep the turn until the commit.
    async fn write_tx(&self) -> Result<(MutexGuard<'_, ()>, Transaction<'static, Sqlite>), StoreError> {
        let turn = self.writer.lock().await;
        Ok((turn, self.pool.begin_with("BEGIN IMMEDIATE").await?))
    }

    async fn list_conversations_inner(
        &self,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        if let Some(terms) = filter.q.as_deref().and_then(fts_terms) {
            return self.search_conversations(filter, page, &terms).await;
        }
        let mut qb = QueryBuilder::<Sqlite>::new(concat!(conversation_select!(), " WHERE TRUE"));
        if let Some(cursor) = page.seq_cursor()? {
            qb.push(" AND seq < ").push_bind(cursor);
        }
        push_filters(&mut qb, filter);
        qb.push(" ORDER BY seq DESC LIMIT ").push_bind(page.fetch_limit());
        let rows = qb
            .build_query_as::<ConversationRow>()
            .fetch_all(&self.pool)
            .await?;
        let rows = rows
            .into_iter()
            .map(|r| r.into_domain().map(|(seq, c)| (seq.to_string(), c)))
            .collect::<Result<_, _>>()?;
        Ok(Page::from_rows(rows, page.limit))
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

    async fn update_conversation_inner(
        &self,
        id: &str,
        patch: ConversationPatch,
        actor: Actor,
    ) -> Result<Conversation, StoreError> {
        let (_turn, mut tx) = self.write_tx().await?;
        let mut conv = require_conversation(&mut tx, id).await?;
        let prediction = latest_prediction(&mut tx, id).await?;
        let events = apply_patch(&mut conv, patch, &actor, prediction, Utc::now())?;
        write_conversation(&mut tx, &conv).await?;
        if let Some(label) = human_label(&events) {
            record_human_label(&mut tx, id, label).await?;
        }
        insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        Ok(conv)
    }

    async fn merge_inner(&self, from: &str, into: &str, actor: Actor) -> Result<Conversation, StoreError> {
        check_merge(from, into)?;
        let (_turn, mut tx) = self.write_tx().await?;
        let source = require_conversation(&mut tx, from).await?;
        let mut target = require_conversation(&mut tx, into).await?;
        let event = apply_merge(&mut target, &source, &actor, Utc::now());
        for statement in [
            sqlx::query("UPDATE messages SET conversation_id = $1 WHERE conversation_id = $2"),
            sqlx::query("UPDATE events SET conversation_id = $1 WHERE conversation_id = $2"),
        ] {
            statement.bind(into).bind(from).execute(&mut *tx).await?;
        }
        write_conversation(&mut tx, &target).await?;
        mark_corrected(&mut tx, into).await?;
        insert_events(&mut tx, &[event]).await?;
        sqlx::query("DELETE FROM conversations WHERE id = $1")
            .bind(from)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(target)
    }

    async fn move_inner(
        &self,
        message_id: &str,
        to: Option<&str>,
        actor: Actor,
    ) -> Result<(Message, Conversation), StoreError> {
        let (_turn, mut tx) = self.write_tx().await?;
        let (mut message, sent_at) = require_message(&mut tx, message_id).await?;
        check_move(&message, to)?;
        let mut source = require_conversation(&mut tx, &message.conversation_id).await?;
        let mut target = match to {
            Some(id) => require_conversation(&mut tx, id).await?,
            None => {
                let account = account_for_channel(&mut tx, &message.channel).await?;
                let conv = split_conversation(&message, sent_at, account);
                insert_conversation(&mut tx, &conv).await?;
                conv
            }
        };
        let events = apply_move(&mut message, &mut source, &mut target, &actor, Utc::now());
        sqlx::query("UPDATE messages SET conversation_id = $1 WHERE id = $2")
            .bind(&target.id)
            .bind(message_id)
            .execute(&mut *tx)
            .await?;
        for conv in [&source, &target] {
            write_conversation(&mut tx, conv).await?;
            mark_corrected(&mut tx, &conv.id).await?;
        }
        insert_events(&mut tx, &events).await?;
        tx.commit().await?;
        Ok((message, target))
    }

    async fn issue_changed_inner(&self, change: &IssueChange) -> Result<Vec<Conversation>, StoreError> {
        let (_turn, mut tx) = self.write_tx().await?;
        let rows = sqlx::query_as::<_, ConversationRow>(concat!(
            conversation_select!(),
            " WHERE issue_url = $1 OR (issue_key = $2 AND ($3 IS NULL OR issue_provider = $3))"
        ))
        .bind(&change.url)
        .bind(&change.key)
        .bind(&change.provider)
        .fetch_all(&mut *tx)
        .await?;
        let now = Utc::now();
        let mut changed = Vec::with_capacity(rows.len());
        for row in rows {
            let (_, mut conv) = row.into_domain()?;
            let event = if change.closed {
                apply_issue_closed(&mut conv, now)
            } else {
                apply_issue_reopened(&mut conv);
                None
            };
            write_conversation(&mut tx, &conv).await?;
            insert_events(&mut tx, event.as_slice()).await?;
            changed.push(conv);
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn put_account(
        &self,
        id: &str,
        account: AccountInput,
        create: bool,
    ) -> Result<Account, StoreError> {
        let (_turn, mut tx) = self.write_tx().await?;
        let sql = if create {
            "INSERT INTO accounts (name, owner, id) VALUES ($1, $2, $3)"
        } else {
            "UPDATE accounts SET name = $1, owner = $2 WHERE id = $3"
        };
        sqlx::query(sql)
            .bind(&account.name)
            .bind(&account.owner)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM account_channels WHERE account_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for channel in &account.channels {
            sqlx::query("INSERT INTO account_channels (channel, account_id) VALUES ($1, $2)")
                .bind(channel)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    unique_as_conflict(e, format!("channel {channel} belongs to another account"))
                })?;
        }
        tx.commit().await?;
        Ok(Account {
            id: id.to_owned(),
            name: account.name,
            owner: account.owner,
            channels: account.channels,
        })
    }

    async fn get_account_inner(&self, id: &str) -> Result<Account, StoreError> {
        let (name, owner) =
            sqlx::query_as::<_, (String, Option<String>)>("SELECT name, owner FROM accounts WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound("account"))?;
        let channels =
            sqlx::query_scalar("SELECT channel FROM account_channels WHERE account_id = $1 ORDER BY channel")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        Ok(Account {
            id: id.to_owned(),
            name,
            owner,
            channels,
        })
    }

    async fn analytics_inner(&self) -> Result<Analytics, StoreError> {
        let by_status =
            sqlx::query_as::<_, (String, i64)>("SELECT status, COUNT(*) FROM conversations GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        let duration = |sql: &'static str| sqlx::query_as::<_, (i64, Option<f64>)>(sql).fetch_one(&self.pool);
        let (fr_count, fr_avg) = duration(FIRST_RESPONSE).await?;
        let (tc_count, tc_avg) = duration(TIME_TO_CLOSE).await?;
        let open = sqlx::query_as::<_, (String, i64)>(
            "SELECT COALESCE(owner, 'unassigned'), COUNT(*) FROM conversations WHERE status <> 'closed' \
             GROUP BY COALESCE(owner, 'unassigned')",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(Analytics {
            by_status: by_status.into_iter().collect(),
            first_response: DurationStats {
                count: fr_count,
                avg_seconds: fr_avg,
            },
            time_to_close: DurationStats {
                count: tc_count,
                avg_seconds: tc_avg,
            },
            open_per_owner: open.into_iter().collect(),
        })
    }
}

// julianday() parses the stored RFC 3339 text; days -> seconds.
const FIRST_RESPONSE: &str =
    "SELECT COUNT(*), AVG((julianday(first_response_at) - julianday(created_at)) * 86400.0) \
     FROM conversations WHERE first_response_at IS NOT NULL";
const TIME_TO_CLOSE: &str = "SELECT COUNT(*), AVG((julianday(closed_at) - julianday(created_at)) * 86400.0) \
     FROM conversations WHERE closed_at IS NOT NULL";

impl Store for SqliteStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn list_conversations<'a>(
        &'a self,
        filter: &'a ConversationFilter,
        page: PageRequest,
    ) -> StoreFuture<'a, Page<Conversation>> {
        Box::pin(async move { self.list_conversations_inner(filter, &page).await })
    }

    fn get_conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Conversation> {
        Box::pin(async move { require_conversation(&mut *self.pool.acquire().await?, id).await })
    }

    fn create_conversation(&self, new: NewConversation, actor: Actor) -> StoreFuture<'_, Conversation> {
        Box::pin(async move {
            let (_turn, mut tx) = self.write_tx().await?;
            let account = match &new.account_id {
                None => account_for_channel(&mut tx, &new.channel).await?,
                Some(id) => {
                    ensure_account(&mut tx, id).await?;
                    None
                }
            };
            let (conv, event) = build_conversation(new, account, &actor, Utc::now())?;
            insert_conversation(&mut tx, &conv).await?;
            insert_events(&mut tx, event.as_slice()).await?;
            tx.commit().await?;
            Ok(conv)
        })
    }

    fn update_conversation<'a>(
        &'a self,
        id: &'a str,
        patch: ConversationPatch,
        actor: Actor,
    ) -> StoreFuture<'a, Conversation> {
        Box::pin(self.update_conversation_inner(id, patch, actor))
    }

    fn delete_conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (_turn, mut tx) = self.write_tx().await?;
            let done = sqlx::query("DELETE FROM conversations WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound("conversation"));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn list_messages<'a>(
        &'a self,
        conversation_id: &'a str,
        page: PageRequest,
    ) -> StoreFuture<'a, Page<Message>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            require_conversation(&mut conn, conversation_id).await?;
            let rows = sqlx::query_as::<_, MessageRow>(concat!(
                message_select!(),
                " WHERE conversation_id = $1 AND ts > $2 ORDER BY ts LIMIT $3"
            ))
            .bind(conversation_id)
            .bind(page.cursor.as_deref().unwrap_or(""))
            .bind(page.fetch_limit())
            .fetch_all(&mut *conn)
            .await?;
            let rows = rows
                .into_iter()
                .map(|r| r.into_domain().map(|(_, m)| (m.ts.clone(), m)))
                .collect::<Result<_, _>>()?;
            Ok(Page::from_rows(rows, page.limit))
        })
    }

    fn list_events<'a>(
        &'a self,
        conversation_id: &'a str,
        page: PageRequest,
    ) -> StoreFuture<'a, Page<Event>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            require_conversation(&mut conn, conversation_id).await?;
            let rows = sqlx::query_as::<_, EventRow>(concat!(
                event_select!(),
                " WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            ))
            .bind(conversation_id)
            .bind(page.seq_cursor()?.unwrap_or(0))
            .bind(page.fetch_limit())
            .fetch_all(&mut *conn)
            .await?;
            let rows = rows
                .into_iter()
                .map(|r| r.into_domain().map(|(seq, e)| (seq.to_string(), e)))
                .collect::<Result<_, _>>()?;
            Ok(Page::from_rows(rows, page.limit))
        })
    }

    fn merge_conversations<'a>(
        &'a self,
        from: &'a str,
        into: &'a str,
        actor: Actor,
    ) -> StoreFuture<'a, Conversation> {
        Box::pin(self.merge_inner(from, into, actor))
    }

    fn move_message<'a>(
        &'a self,
        message_id: &'a str,
        to: Option<&'a str>,
        actor: Actor,
    ) -> StoreFuture<'a, (Message, Conversation)> {
        Box::pin(self.move_inner(message_id, to, actor))
    }

    fn find_message<'a>(&'a self, channel: &'a str, ts: &'a str) -> StoreFuture<'a, Option<Message>> {
        Box::pin(async move { find_message(&mut *self.pool.acquire().await?, channel, ts).await })
    }

    fn begin_ingest<'a>(&'a self, _channel: &'a str) -> StoreFuture<'a, Box<dyn IngestUnit<'a> + 'a>> {
        Box::pin(async move {
            // SQLite has one writer: its write lock is every channel's lock.
            let (turn, tx) = self.write_tx().await?;
            Ok(Box::new(SqliteUnit { _turn: turn, tx }) as Box<dyn IngestUnit<'a> + 'a>)
        })
    }

    fn issue_changed<'a>(&'a self, change: &'a IssueChange) -> StoreFuture<'a, Vec<Conversation>> {
        Box::pin(self.issue_changed_inner(change))
    }

    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
        Box::pin(async move {
            let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM accounts ORDER BY name, id")
                .fetch_all(&self.pool)
                .await?;
            let mut accounts = Vec::with_capacity(ids.len());
            for id in ids {
                accounts.push(self.get_account_inner(&id).await?);
            }
            Ok(accounts)
        })
    }

    fn get_account<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Account> {
        Box::pin(self.get_account_inner(id))
    }

    fn create_account(&self, new: AccountInput) -> StoreFuture<'_, Account> {
        Box::pin(async move { self.put_account(&new_id(), new, true).await })
    }

    fn update_account<'a>(&'a self, id: &'a str, patch: AccountPatch) -> StoreFuture<'a, Account> {
        Box::pin(async move {
            let current = self.get_account_inner(id).await?;
            self.put_account(id, patch.apply(current), false).await
        })
    }

    fn list_team(&self) -> StoreFuture<'_, Vec<TeamMember>> {
        Box::pin(async move {
            let rows = sqlx::query_as::<_, (String, String, Option<String>)>(
                "SELECT slack_user_id, name, triage_channel FROM team_members ORDER BY name, slack_user_id",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(slack_user_id, name, triage_channel)| TeamMember {
                    slack_user_id,
                    name,
                    triage_channel,
                })
                .collect())
        })
    }

    fn put_team_member(&self, member: TeamMember) -> StoreFuture<'_, TeamMember> {
        Box::pin(async move {
            let (_turn, mut tx) = self.write_tx().await?;
            sqlx::query(
                "INSERT INTO team_members (slack_user_id, name, triage_channel) VALUES ($1, $2, $3) \
                 ON CONFLICT (slack_user_id) DO UPDATE SET name = excluded.name, triage_channel = excluded.triage_channel",
            )
            .bind(&member.slack_user_id)
            .bind(&member.name)
            .bind(&member.triage_channel)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(member)
        })
    }

    fn export_status_labels(&self, since: Option<DateTime<Utc>>) -> StoreFuture<'_, Vec<StatusLabelRow>> {
        Box::pin(async move {
            let rows = sqlx::query_as::<_, StatusLabelSql>(
                "SELECT id, conversation_id, text, label, human_label, score FROM messages \
                 WHERE role = 'agent' AND label IS NOT NULL AND NOT deleted AND sent_at >= $1 ORDER BY sent_at, seq",
            )
            .bind(since.unwrap_or(DateTime::UNIX_EPOCH))
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(StatusLabelSql::into_domain).collect()
        })
    }

    fn export_grouping(&self, since: Option<DateTime<Utc>>) -> StoreFuture<'_, Vec<GroupingRow>> {
        Box::pin(async move {
            let rows = sqlx::query_as::<_, GroupingSql>(
                "SELECT m.seq, m.id, m.conversation_id, m.channel, m.ts, m.thread_ts, m.user_id, m.role, m.text, \
                 m.edited, m.deleted, m.label, m.score, c.human_corrected FROM messages m \
                 JOIN conversations c ON c.id = m.conversation_id \
                 WHERE m.channel IN (SELECT channel FROM conversations WHERE human_corrected) AND m.sent_at >= $1 \
                 ORDER BY m.channel, m.ts",
            )
            .bind(since.unwrap_or(DateTime::UNIX_EPOCH))
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(GroupingSql::into_domain).collect()
        })
    }

    fn analytics(&self) -> StoreFuture<'_, Analytics> {
        Box::pin(self.analytics_inner())
    }
}

/// The ingest unit of work: this process's writer turn and a `BEGIN IMMEDIATE` transaction.
struct SqliteUnit<'a> {
    _turn: MutexGuard<'a, ()>,
    tx: Transaction<'static, Sqlite>,
}

impl<'a> IngestUnit<'a> for SqliteUnit<'a> {
    fn load_context<'b>(&'b mut self, msg: &'b IncomingMessage) -> StoreFuture<'b, Option<ChannelContext>> {
        Box::pin(load_context(&mut self.tx, msg))
    }

    fn conversation<'b>(&'b mut self, id: &'b str) -> StoreFuture<'b, Option<Conversation>> {
        Box::pin(fetch_conversation(&mut self.tx, id))
    }

    fn channel_account<'b>(&'b mut self, channel: &'b str) -> StoreFuture<'b, Option<AccountRef>> {
        Box::pin(account_for_channel(&mut self.tx, channel))
    }

    fn write<'b>(&'b mut self, plan: &'b IngestPlan, msg: &'b IncomingMessage) -> StoreFuture<'b, bool> {
        Box::pin(async move {
            let tx = &mut self.tx;
            if plan.new_conversation {
                insert_conversation(tx, &plan.conversation).await?;
            } else {
                write_conversation(tx, &plan.conversation).await?;
            }
            // The unique key makes a concurrent replay visible here; the caller rolls back.
            if !insert_message(tx, &plan.message, msg.sent_at(), msg.embedding.as_deref()).await? {
                return Ok(false);
            }
            insert_events(tx, &plan.events).await?;
            Ok(true)
        })
    }

    fn commit(self: Box<Self>) -> StoreFuture<'a, ()> {
        Box::pin(async move { Ok(self.tx.commit().await?) })
    }

    fn rollback(self: Box<Self>) -> StoreFuture<'a, ()> {
        Box::pin(async move { Ok(self.tx.rollback().await?) })
    }
}

/// The list filters other than text search, as `AND` clauses.
fn push_filters(qb: &mut QueryBuilder<Sqlite>, filter: &ConversationFilter) {
    if let Some(status) = filter.status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(owner) = &filter.owner {
        qb.push(" AND owner = ").push_bind(owner.clone());
    }
    if let Some(account) = &filter.account {
        qb.push(" AND account_id = ").push_bind(account.clone());
    }
    if let Some(channel) = &filter.channel {
        qb.push(" AND channel = ").push_bind(channel.clone());
    }
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

fn unique_as_conflict(e: sqlx::Error, message: String) -> StoreError {
    match e.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::Conflict(message),
        _ => e.into(),
    }
}

async fn find_message(conn: &mut Conn, channel: &str, ts: &str) -> Result<Option<Message>, StoreError> {
    sqlx::query_as::<_, MessageRow>(concat!(message_select!(), " WHERE channel = $1 AND ts = $2"))
        .bind(channel)
        .bind(ts)
        .fetch_optional(conn)
        .await?
        .map(|r| r.into_domain().map(|(_, m)| m))
        .transpose()
}

async fn require_message(conn: &mut Conn, id: &str) -> Result<(Message, DateTime<Utc>), StoreError> {
    let sent_at: DateTime<Utc> = sqlx::query_scalar("SELECT sent_at FROM messages WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound("message"))?;
    let row = sqlx::query_as::<_, MessageRow>(concat!(message_select!(), " WHERE id = $1"))
        .bind(id)
        .fetch_one(conn)
        .await?;
    Ok((row.into_domain()?.1, sent_at))
}

async fn fetch_conversation(conn: &mut Conn, id: &str) -> Result<Option<Conversation>, StoreError> {
    sqlx::query_as::<_, ConversationRow>(concat!(conversation_select!(), " WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|r| r.into_domain().map(|(_, c)| c))
        .transpose()
}

async fn require_conversation(conn: &mut Conn, id: &str) -> Result<Conversation, StoreError> {
    fetch_conversation(conn, id)
        .await?
        .ok_or(StoreError::NotFound("conversation"))
}

async fn account_for_channel(conn: &mut Conn, channel: &str) -> Result<Option<AccountRef>, StoreError> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT a.id, a.owner FROM account_channels ac JOIN accounts a ON a.id = ac.account_id WHERE ac.channel = $1",
    )
    .bind(channel)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(id, owner)| AccountRef { id, owner }))
}

async fn ensure_account(conn: &mut Conn, id: &str) -> Result<(), StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    found
        .map(drop)
        .ok_or_else(|| StoreError::invalid("account_id", "unknown account"))
}

/// One context row as JSON: `[id, conversation_id, status, ts, thread_ts, user, role, text, hex(embedding)]`.
macro_rules! context_json {
    () => {
        "json_group_array(json_array(m.id, m.conversation_id, c.status, m.ts, m.thread_ts, m.user_id, m.role, \
         m.text, hex(m.embedding)))"
    };
}

/// The channel context in one round trip, or `None` when (channel, ts) is already stored. sqlx
/// hands SQLite rows over one at a time between threads, and at a hundred rows per message that
/// hand-over, not SQLite, was most of the ingest time: both lists come back as one JSON array each.
async fn load_context(conn: &mut Conn, msg: &IncomingMessage) -> Result<Option<ChannelContext>, StoreError> {
    let (stored, recent, thread): (bool, String, String) = sqlx::query_as(concat!(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE channel = $1 AND ts = $2), (SELECT ",
        context_json!(),
        " FROM (SELECT * FROM messages WHERE channel = $1 AND ts < $2 ORDER BY ts DESC LIMIT $4) m \
           JOIN conversations c ON c.id = m.conversation_id), \
         (SELECT ",
        context_json!(),
        " FROM (SELECT * FROM messages WHERE seq IN \
              (SELECT seq FROM messages WHERE channel = $1 AND ts = $3 \
               UNION ALL SELECT seq FROM messages WHERE channel = $1 AND thread_ts = $3) \
              ORDER BY ts LIMIT $4) m \
           JOIN conversations c ON c.id = m.conversation_id)"
    ))
    .bind(&msg.channel)
    .bind(&msg.ts)
    .bind(msg.thread_key())
    .bind(CONTEXT_MESSAGES)
    .fetch_one(&mut *conn)
    .await?;
    if stored {
        return Ok(None);
    }
    Ok(Some(ChannelContext {
        recent: context_rows(&recent)?,
        thread: context_rows(&thread)?,
    }))
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
    Option<String>,
);

/// Parses a `context_json!` array, oldest first.
fn context_rows(json: &str) -> Result<Vec<ContextMessage>, StoreError> {
    let rows: Vec<ContextJson> = serde_json::from_str(json)
        .map_err(|e| StoreError::Unexpected(anyhow::anyhow!("context rows: {e}")))?;
    let mut out = rows
        .into_iter()
        .map(
            |(id, conversation_id, status, ts, thread_ts, user_id, role, text, embedding)| {
                ContextRow {
                    id,
                    conversation_id,
                    conversation_status: status,
                    ts,
                    thread_ts,
                    user_id,
                    role,
                    text,
                    embedding: embedding
                        .filter(|h| !h.is_empty())
                        .and_then(|h| hex::decode(h).ok()),
                }
                .into_domain()
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.ts.cmp(&b.ts));
    Ok(out)
}

async fn insert_conversation(conn: &mut Conn, c: &Conversation) -> Result<(), StoreError> {
    bind_conversation!(sqlx::query(insert_conversation_sql!()), c)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes back every mutable column; callers hold the conversation's lock.
async fn write_conversation(conn: &mut Conn, c: &Conversation) -> Result<(), StoreError> {
    bind_conversation!(sqlx::query(update_conversation_sql!()), c)
        .execute(conn)
        .await?;
    Ok(())
}

async fn mark_corrected(conn: &mut Conn, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE conversations SET human_corrected = TRUE WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
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
         sent_at, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
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

/// The model's label on the conversation's latest classified reply.
async fn latest_prediction(
    conn: &mut Conn,
    conversation_id: &str,
) -> Result<Option<(ReplyLabel, f32)>, StoreError> {
    let row: Option<(String, Option<f32>)> = sqlx::query_as(
        "SELECT label, score FROM messages WHERE conversation_id = $1 AND label IS NOT NULL ORDER BY ts DESC LIMIT 1",
    )
    .bind(conversation_id)
    .fetch_optional(conn)
    .await?;
    row.map(|(label, score)| Ok((parse_column(&label, "label")?, score.unwrap_or(0.0))))
        .transpose()
}

/// Stores a person's status decision on the conversation's last message when that is a team reply.
async fn record_human_label(
    conn: &mut Conn,
    conversation_id: &str,
    label: ReplyLabel,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE messages SET human_label = $1 WHERE id = \
         (SELECT id FROM messages WHERE conversation_id = $2 ORDER BY ts DESC LIMIT 1) AND role = 'agent'",
    )
    .bind(label.as_str())
    .bind(conversation_id)
    .execute(conn)
    .await?;
    Ok(())
}
