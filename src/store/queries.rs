//! The store's reads and writes on one connection or transaction, written once for both backends.
//!
//! `shared_queries!()` expands inside `sqlite.rs` and `postgres.rs`, where `Conn` and `Db` name the
//! backend's connection and database types. The SQL is the dialect both share (parameters as `$n`,
//! which SQLite accepts too); what truly differs (locking, text search, batched inserts, the
//! channel-context query) stays in each backend and is called here by name.

macro_rules! shared_queries {
    () => {
        async fn find_message(
            conn: &mut Conn,
            channel: &str,
            ts: &str,
        ) -> Result<Option<Message>, StoreError> {
            sqlx::query_as::<_, MessageRow>(concat!(
                message_select!(),
                " WHERE channel = $1 AND ts = $2"
            ))
            .bind(channel)
            .bind(ts)
            .fetch_optional(conn)
            .await?
            .map(|r| r.into_domain().map(|(_, m)| m))
            .transpose()
        }

        /// A message and the time it was sent.
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

        async fn account_for_channel(
            conn: &mut Conn,
            channel: &str,
        ) -> Result<Option<AccountRef>, StoreError> {
            let row: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT a.id, a.owner FROM account_channels ac JOIN accounts a ON a.id = ac.account_id \
                 WHERE ac.channel = $1",
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

        /// The model's label on the conversation's latest classified reply.
        async fn latest_prediction(
            conn: &mut Conn,
            conversation_id: &str,
        ) -> Result<Option<(ReplyLabel, f32)>, StoreError> {
            let row: Option<(String, Option<f32>)> = sqlx::query_as(
                "SELECT label, score FROM messages WHERE conversation_id = $1 AND label IS NOT NULL \
                 ORDER BY ts DESC LIMIT 1",
            )
            .bind(conversation_id)
            .fetch_optional(conn)
            .await?;
            row.map(|(label, score)| Ok((parse_column(&label, "label")?, score.unwrap_or(0.0))))
                .transpose()
        }

        /// The conversation's latest status event.
        async fn latest_status_event(
            conn: &mut Conn,
            conversation_id: &str,
        ) -> Result<Option<Event>, StoreError> {
            sqlx::query_as::<_, EventRow>(concat!(
                event_select!(),
                " WHERE conversation_id = $1 AND kind = 'status' ORDER BY seq DESC LIMIT 1"
            ))
            .bind(conversation_id)
            .fetch_optional(conn)
            .await?
            .map(|r| r.into_domain().map(|(_, e)| e))
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
                 (SELECT id FROM messages WHERE conversation_id = $2 ORDER BY ts DESC LIMIT 1) \
                 AND role = 'agent'",
            )
            .bind(label.as_str())
            .bind(conversation_id)
            .execute(conn)
            .await?;
            Ok(())
        }

        /// The list filters other than text search, as `AND` clauses.
        fn push_filters(qb: &mut sqlx::QueryBuilder<Db>, filter: &ConversationFilter) {
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

        /// A page of conversations, newest first, keyed by `seq`; `search` adds the dialect's
        /// text-search clause for `filter.q`.
        async fn list_page(
            pool: &sqlx::Pool<Db>,
            filter: &ConversationFilter,
            page: &PageRequest,
            search: impl FnOnce(&mut sqlx::QueryBuilder<Db>),
        ) -> Result<Page<Conversation>, StoreError> {
            let mut qb = sqlx::QueryBuilder::<Db>::new(concat!(conversation_select!(), " WHERE TRUE"));
            if let Some(cursor) = page.seq_cursor()? {
                qb.push(" AND seq < ").push_bind(cursor);
            }
            push_filters(&mut qb, filter);
            search(&mut qb);
            qb.push(" ORDER BY seq DESC LIMIT ")
                .push_bind(page.fetch_limit());
            let rows = qb
                .build_query_as::<ConversationRow>()
                .fetch_all(pool)
                .await?;
            let rows = rows
                .into_iter()
                .map(|r| r.into_domain().map(|(seq, c)| (seq.to_string(), c)))
                .collect::<Result<_, _>>()?;
            Ok(Page::from_rows(rows, page.limit))
        }

        fn unique_as_conflict(e: sqlx::Error, message: String) -> StoreError {
            match e.as_database_error() {
                Some(db) if db.is_unique_violation() => StoreError::Conflict(message),
                _ => e.into(),
            }
        }
    };
}
