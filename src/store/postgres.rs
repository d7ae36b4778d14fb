//! PostgreSQL backend, for several replicas sharing one database.
//!
//! Grouping decisions for a channel are serialised across processes with a transaction-scoped
//! advisory lock on the channel, so two replicas never split one conversation between them or both
//! insert the same message; human edits lock the rows they change (`FOR UPDATE`).

use super::rows::{
    parse_column, ContextRow, ConversationRow, EventRow, GroupingSql, MessageRow, StatusLabelSql,
};
use super::*;
use crate::domain::{
    apply_issue_closed, apply_issue_reopened, apply_merge, apply_move, apply_patch, build_conversation,
    check_merge, check_move, human_label, new_id, split_conversation, CONTEXT_MESSAGES,
};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Transaction};

type Conn = PgConnection;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new().max_connections(16).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    async fn list_conversations_inner(
        &self,
        filter: &ConversationFilter,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new(concat!(conversation_select!(), " WHERE TRUE"));
        if let Some(cursor) = page.seq_cursor()? {
            qb.push(" AND seq < ").push_bind(cursor);
        }
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
        if let Some(q) = filter.q.as_deref().filter(|q| !q.trim().is_empty()) {
            // The words of all its messages (see migrations/postgres/0003_conversation_search.sql).
            qb.push(" AND search @@ plainto_tsquery('english', ")
                .push_bind(q.to_owned())
                .push(")");
        }
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

    async fn update_conversation_inner(
        &self,
        id: &str,
        patch: ConversationPatch,
        actor: Actor,
    ) -> Result<Conversation, StoreError> {
        let mut tx = self.write_tx().await?;
        let mut conv = lock_conversation(&mut tx, id).await?;
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
        let mut tx = self.write_tx().await?;
        let source = require_conversation(&mut tx, from).await?;
        let target = require_conversation(&mut tx, into).await?;
        // The channel locks first (the order ingestion takes them), then the rows.
        lock_channels(&mut tx, &[source.channel.as_str(), target.channel.as_str()]).await?;
        let source = lock_conversation(&mut tx, &source.id).await?;
        let mut target = lock_conversation(&mut tx, &target.id).await?;
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
        let mut tx = self.write_tx().await?;
        let (message, _) = require_message(&mut tx, message_id).await?;
        check_move(&message, to)?;
        lock_channels(&mut tx, &[message.channel.as_str()]).await?;
        // Re-read under the lock: ingestion or another move may have changed it meanwhile.
        let (mut message, sent_at) = require_message(&mut tx, message_id).await?;
        let mut source = lock_conversation(&mut tx, &message.conversation_id).await?;
        let mut target = match to {
            Some(id) => lock_conversation(&mut tx, id).await?,
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
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query_as::<_, ConversationRow>(concat!(
            conversation_select!(),
            " WHERE issue_url = $1 OR (issue_key = $2 AND ($3::text IS NULL OR issue_provider = $3)) \
             ORDER BY seq FOR UPDATE"
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
        let mut tx = self.write_tx().await?;
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

const FIRST_RESPONSE: &str =
    "SELECT COUNT(*), AVG(EXTRACT(EPOCH FROM first_response_at - created_at))::float8 \
     FROM conversations WHERE first_response_at IS NOT NULL";
const TIME_TO_CLOSE: &str = "SELECT COUNT(*), AVG(EXTRACT(EPOCH FROM closed_at - created_at))::float8 \
     FROM conversations WHERE closed_at IS NOT NULL";

impl Store for PgStore {
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
            let mut tx = self.write_tx().await?;
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
            let done = sqlx::query("DELETE FROM conversations WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
            match done.rows_affected() {
                0 => Err(StoreError::NotFound("conversation")),
                _ => Ok(()),
            }
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

    fn begin_ingest<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Box<dyn IngestUnit<'a> + 'a>> {
        Box::pin(async move {
            // BEGIN and the channel lock in one round trip (the key is a number, so inlining it is safe).
            let tx = self
                .pool
                .begin_with(sqlx::AssertSqlSafe(format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({})",
                    channel_lock_key(channel)
                )))
                .await?;
            Ok(Box::new(PgUnit { tx }) as Box<dyn IngestUnit<'a> + 'a>)
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
            sqlx::query(
                "INSERT INTO team_members (slack_user_id, name, triage_channel) VALUES ($1, $2, $3) \
                 ON CONFLICT (slack_user_id) DO UPDATE SET name = excluded.name, triage_channel = excluded.triage_channel",
            )
            .bind(&member.slack_user_id)
            .bind(&member.name)
            .bind(&member.triage_channel)
            .execute(&self.pool)
            .await?;
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

/// The ingest unit of work: a transaction holding the channel's advisory lock.
struct PgUnit {
    tx: Transaction<'static, Postgres>,
}

impl<'a> IngestUnit<'a> for PgUnit {
    /// Read after the channel lock, so a replica's concurrent insert is seen.
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
        Box::pin(write_ingest(
            &mut self.tx,
            plan,
            msg.sent_at(),
            msg.embedding.as_deref(),
        ))
    }

    fn commit(self: Box<Self>) -> StoreFuture<'a, ()> {
        Box::pin(async move { Ok(self.tx.commit().await?) })
    }

    fn rollback(self: Box<Self>) -> StoreFuture<'a, ()> {
        Box::pin(async move { Ok(self.tx.rollback().await?) })
    }
}

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

#[derive(sqlx::FromRow)]
struct PartRow {
    part: i32,
    #[sqlx(flatten)]
    row: ContextRow,
}

/// The channel context in one round trip, or `None` when (channel, ts) is already stored (read
/// after the channel lock, so a replica's concurrent insert is seen).
async fn load_context(conn: &mut Conn, msg: &IncomingMessage) -> Result<Option<ChannelContext>, StoreError> {
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
         UNION ALL SELECT seq FROM messages WHERE channel = $1 AND thread_ts = $3) ORDER BY m.ts LIMIT $4) ctx)"
    ))
    .bind(&msg.channel)
    .bind(&msg.ts)
    .bind(msg.thread_key())
    .bind(CONTEXT_MESSAGES)
    .fetch_all(&mut *conn)
    .await?;
    let mut ctx = ChannelContext::default();
    for PartRow { part, row } in rows {
        match part {
            0 => return Ok(None),
            1 => ctx.recent.push(row.into_domain()?),
            _ => ctx.thread.push(row.into_domain()?),
        }
    }
    ctx.recent.sort_by(|a, b| a.ts.cmp(&b.ts));
    ctx.thread.sort_by(|a, b| a.ts.cmp(&b.ts));
    Ok(Some(ctx))
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
async fn write_ingest(
    conn: &mut Conn,
    plan: &IngestPlan,
    sent_at: DateTime<Utc>,
    embedding: Option<&[f32]>,
) -> Result<bool, StoreError> {
    macro_rules! ingest_sql {
        ($conversation:expr) => {
            concat!(
                "WITH conv AS (",
                $conversation,
                "), msg AS (INSERT INTO messages (id, conversation_id, channel, ts, thread_ts, user_id, role, \
                 text, label, score, sent_at, embedding) \
                 VALUES ($16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27) \
                 ON CONFLICT (channel, ts) DO NOTHING RETURNING id), ev AS (",
                events_from_arrays!("$28", "$29", "$30", "$31", "$32", "$33", "$34", "$35", "$36", "$37"),
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
    let query = bind_message!(query, &plan.message, sent_at, embedding);
    let inserted: i64 = bind_events!(query, &plan.events).fetch_one(conn).await?;
    Ok(inserted == 1)
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
