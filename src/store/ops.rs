//! The `Store` operations and the ingest unit of work, written once for both backends.
//!
//! `store_ops!(Backend)` expands inside `sqlite.rs` and `postgres.rs` after `shared_queries!()`.
//! Each backend supplies what truly differs, by name:
//! - `Backend::write_tx` (a write transaction; SQLite also takes this process's writer turn) and
//!   `Backend::ingest_tx` (the same, holding the channel's lock), both a `WriteTx` that derefs to
//!   the connection and has `commit` and `rollback`;
//! - `Backend::list_conversations_inner` (text search differs);
//! - `lock_channels`, `lock_conversation` (row and advisory locks on PostgreSQL; SQLite's single
//!   writer already serialises everything);
//! - `insert_events`, `load_context`, `write_ingest` (batched statements per dialect);
//! - `for_update!()` and the analytics queries `FIRST_RESPONSE`, `TIME_TO_CLOSE`.
//!
//! Edits and deletions of stored messages are in `edits.rs` (`message_edit_ops!`), internal notes
//! in `notes.rs` (`note_ops!`), the inbound inbox in `inbox.rs` (`inbox_ops!`).

macro_rules! store_ops {
    ($backend:ty) => {
        /// One message's ingest, in a transaction holding the channel's lock.
        struct Unit<'a> {
            tx: WriteTx<'a>,
            embeddings: &'a EmbeddingCache,
        }

        impl<'a> IngestUnit<'a> for Unit<'a> {
            fn load_context<'b>(
                &'b mut self,
                msg: &'b IncomingMessage,
            ) -> StoreFuture<'b, Option<ChannelContext>> {
                Box::pin(load_context(&mut self.tx, self.embeddings, msg))
            }

            fn conversation<'b>(&'b mut self, id: &'b str) -> StoreFuture<'b, Option<Conversation>> {
                Box::pin(fetch_conversation(&mut self.tx, id))
            }

            fn channel_account<'b>(&'b mut self, channel: &'b str) -> StoreFuture<'b, Option<AccountRef>> {
                Box::pin(account_for_channel(&mut self.tx, channel))
            }

            fn write<'b>(
                &'b mut self,
                plan: &'b IngestPlan,
                msg: &'b IncomingMessage,
            ) -> StoreFuture<'b, bool> {
                Box::pin(async move {
                    let written = write_ingest(&mut self.tx, plan, msg).await?;
                    // The next message's context reads this one: its embedding is known here.
                    if let (true, Some(e)) = (written, &msg.embedding) {
                        self.embeddings.put(&plan.message.id, &plan.message.text, e.as_slice().into());
                    }
                    Ok(written)
                })
            }

            fn record_reasons<'b>(&'b mut self, reasons: &'b MessageReasons) -> StoreFuture<'b, ()> {
                Box::pin(insert_reasons(&mut self.tx, reasons))
            }

            fn commit(self: Box<Self>) -> StoreFuture<'a, ()> {
                Box::pin(self.tx.commit())
            }

            fn rollback(self: Box<Self>) -> StoreFuture<'a, ()> {
                Box::pin(self.tx.rollback())
            }
        }

        impl $backend {
            async fn create_inner(
                &self,
                new: NewConversation,
                actor: Actor,
            ) -> Result<Written<Conversation>, StoreError> {
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
                let events = Vec::from_iter(event);
                insert_events(&mut tx, &events).await?;
                tx.commit().await?;
                Ok(Written { value: conv, events })
            }

            async fn update_inner(
                &self,
                id: &str,
                patch: ConversationPatch,
                actor: Actor,
            ) -> Result<Written<Conversation>, StoreError> {
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
                Ok(Written { value: conv, events })
            }

            async fn delete_inner(&self, id: &str) -> Result<(), StoreError> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query("DELETE FROM conversations WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound("conversation"));
                }
                tx.commit().await
            }

            async fn merge_inner(
                &self,
                from: &str,
                into: &str,
                actor: Actor,
            ) -> Result<Written<Conversation>, StoreError> {
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
                    sqlx::query("UPDATE notes SET conversation_id = $1 WHERE conversation_id = $2"),
                ] {
                    statement.bind(into).bind(from).execute(&mut *tx).await?;
                }
                write_conversation(&mut tx, &target).await?;
                mark_corrected(&mut tx, into).await?;
                let events = vec![event];
                insert_events(&mut tx, &events).await?;
                sqlx::query("DELETE FROM conversations WHERE id = $1")
                    .bind(from)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Written { value: target, events })
            }

            async fn move_inner(
                &self,
                message_id: &str,
                to: Option<&str>,
                actor: Actor,
            ) -> Result<Written<Moved>, StoreError> {
                let mut tx = self.write_tx().await?;
                let (message, _) = require_message(&mut tx, message_id).await?;
                check_move(&message, to)?;
                lock_channels(&mut tx, &[message.channel.as_str()]).await?;
                // Re-read under the lock: ingestion or another move may have changed it meanwhile.
                let (mut message, sent_at) = require_message(&mut tx, message_id).await?;
                check_move(&message, to)?;
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
                let value = Moved {
                    message,
                    from: source,
                    to: target,
                };
                Ok(Written { value, events })
            }

            async fn issue_changed_inner(
                &self,
                change: &IssueChange,
            ) -> Result<Written<Vec<Conversation>>, StoreError> {
                let mut tx = self.write_tx().await?;
                let rows = sqlx::query_as::<_, ConversationRow>(concat!(
                    conversation_select!(),
                    " WHERE issue_url = $1 \
                     OR (issue_key = $2 AND (CAST($3 AS TEXT) IS NULL OR issue_provider = $3)) \
                     ORDER BY seq",
                    for_update!()
                ))
                .bind(&change.url)
                .bind(&change.key)
                .bind(&change.provider)
                .fetch_all(&mut *tx)
                .await?;
                let now = Utc::now();
                let mut changed = Vec::with_capacity(rows.len());
                let mut events = Vec::new();
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
                    events.extend(event);
                    changed.push(conv);
                }
                tx.commit().await?;
                Ok(Written {
                    value: changed,
                    events,
                })
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
                let (name, owner) = sqlx::query_as::<_, (String, Option<String>)>(
                    "SELECT name, owner FROM accounts WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound("account"))?;
                let channels = sqlx::query_scalar(
                    "SELECT channel FROM account_channels WHERE account_id = $1 ORDER BY channel",
                )
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

            async fn list_accounts_inner(&self) -> Result<Vec<Account>, StoreError> {
                let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM accounts ORDER BY name, id")
                    .fetch_all(&self.pool)
                    .await?;
                let mut accounts = Vec::with_capacity(ids.len());
                for id in ids {
                    accounts.push(self.get_account_inner(&id).await?);
                }
                Ok(accounts)
            }

            async fn put_team_member_inner(&self, member: TeamMember) -> Result<TeamMember, StoreError> {
                let mut tx = self.write_tx().await?;
                sqlx::query(
                    "INSERT INTO team_members (slack_user_id, name, triage_channel) VALUES ($1, $2, $3) \
                     ON CONFLICT (slack_user_id) DO UPDATE SET name = excluded.name, \
                     triage_channel = excluded.triage_channel",
                )
                .bind(&member.slack_user_id)
                .bind(&member.name)
                .bind(&member.triage_channel)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(member)
            }

            async fn list_messages_inner(
                &self,
                conversation_id: &str,
                page: PageRequest,
            ) -> Result<Page<Message>, StoreError> {
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
            }

            async fn list_events_inner(
                &self,
                conversation_id: &str,
                page: PageRequest,
            ) -> Result<Page<Event>, StoreError> {
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
            }

            async fn export_status_labels_inner(
                &self,
                since: Option<DateTime<Utc>>,
            ) -> Result<Vec<StatusLabelRow>, StoreError> {
                let rows = sqlx::query_as::<_, StatusLabelSql>(
                    "SELECT id, conversation_id, text, label, human_label, score FROM messages \
                     WHERE role = 'agent' AND label IS NOT NULL AND NOT deleted AND sent_at >= $1 \
                     ORDER BY sent_at, seq",
                )
                .bind(since.unwrap_or(DateTime::UNIX_EPOCH))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(StatusLabelSql::into_domain).collect()
            }

            async fn export_grouping_inner(
                &self,
                since: Option<DateTime<Utc>>,
            ) -> Result<Vec<GroupingRow>, StoreError> {
                let rows = sqlx::query_as::<_, GroupingSql>(
                    "SELECT m.seq, m.id, m.conversation_id, m.channel, m.ts, m.thread_ts, m.user_id, m.role, \
                     m.text, m.files, m.edited, m.deleted, m.label, m.score, c.human_corrected FROM messages m \
                     JOIN conversations c ON c.id = m.conversation_id \
                     WHERE m.channel IN (SELECT channel FROM conversations WHERE human_corrected) \
                     AND m.sent_at >= $1 ORDER BY m.channel, m.ts",
                )
                .bind(since.unwrap_or(DateTime::UNIX_EPOCH))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(GroupingSql::into_domain).collect()
            }

            async fn analytics_inner(&self) -> Result<Analytics, StoreError> {
                let by_status = sqlx::query_as::<_, (String, i64)>(
                    "SELECT status, COUNT(*) FROM conversations GROUP BY status",
                )
                .fetch_all(&self.pool)
                .await?;
                let duration =
                    |sql: &'static str| sqlx::query_as::<_, (i64, Option<f64>)>(sql).fetch_one(&self.pool);
                let (fr_count, fr_avg) = duration(FIRST_RESPONSE).await?;
                let (tc_count, tc_avg) = duration(TIME_TO_CLOSE).await?;
                let open = sqlx::query_as::<_, (String, i64)>(
                    "SELECT COALESCE(owner, 'unassigned'), COUNT(*) FROM conversations \
                     WHERE status <> 'closed' \
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

        impl Store for $backend {
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

            fn create_conversation(
                &self,
                new: NewConversation,
                actor: Actor,
            ) -> StoreFuture<'_, Written<Conversation>> {
                Box::pin(self.create_inner(new, actor))
            }

            fn update_conversation<'a>(
                &'a self,
                id: &'a str,
                patch: ConversationPatch,
                actor: Actor,
            ) -> StoreFuture<'a, Written<Conversation>> {
                Box::pin(self.update_inner(id, patch, actor))
            }

            fn delete_conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
                Box::pin(self.delete_inner(id))
            }

            fn list_messages<'a>(
                &'a self,
                conversation_id: &'a str,
                page: PageRequest,
            ) -> StoreFuture<'a, Page<Message>> {
                Box::pin(self.list_messages_inner(conversation_id, page))
            }

            fn list_events<'a>(
                &'a self,
                conversation_id: &'a str,
                page: PageRequest,
            ) -> StoreFuture<'a, Page<Event>> {
                Box::pin(self.list_events_inner(conversation_id, page))
            }

            fn merge_conversations<'a>(
                &'a self,
                from: &'a str,
                into: &'a str,
                actor: Actor,
            ) -> StoreFuture<'a, Written<Conversation>> {
                Box::pin(self.merge_inner(from, into, actor))
            }

            fn move_message<'a>(
                &'a self,
                message_id: &'a str,
                to: Option<&'a str>,
                actor: Actor,
            ) -> StoreFuture<'a, Written<Moved>> {
                Box::pin(self.move_inner(message_id, to, actor))
            }

            fn find_message<'a>(&'a self, channel: &'a str, ts: &'a str) -> StoreFuture<'a, Option<Message>> {
                Box::pin(async move { find_message(&mut *self.pool.acquire().await?, channel, ts).await })
            }

            fn stored_ts<'a>(&'a self, channel: &'a str, ts: &'a [String]) -> StoreFuture<'a, Vec<String>> {
                Box::pin(async move { stored_among(&mut *self.pool.acquire().await?, channel, ts).await })
            }

            fn edit_message<'a>(
                &'a self,
                channel: &'a str,
                ts: &'a str,
                edit: MessageEdit,
            ) -> StoreFuture<'a, Written<Edited>> {
                Box::pin(self.edit_inner(channel, ts, edit))
            }

            fn delete_message<'a>(&'a self, channel: &'a str, ts: &'a str) -> StoreFuture<'a, Written<Edited>> {
                Box::pin(self.delete_message_inner(channel, ts))
            }

            fn inbox_add(&self, entry: InboxEntry) -> StoreFuture<'_, bool> {
                Box::pin(self.inbox_add_inner(entry))
            }

            fn inbox_pending(&self, limit: u32) -> StoreFuture<'_, Vec<InboxItem>> {
                Box::pin(self.inbox_pending_inner(limit))
            }

            fn inbox_finish<'a>(&'a self, seq: i64, outcome: &'a str) -> StoreFuture<'a, ()> {
                Box::pin(self.inbox_finish_inner(seq, outcome))
            }

            fn inbox_failed<'a>(&'a self, seq: i64, error: &'a str) -> StoreFuture<'a, u32> {
                Box::pin(self.inbox_failed_inner(seq, error))
            }

            fn inbox_counts(&self) -> StoreFuture<'_, BTreeMap<String, i64>> {
                Box::pin(self.inbox_counts_inner())
            }

            fn inbox_prune(&self, before: DateTime<Utc>) -> StoreFuture<'_, u64> {
                Box::pin(self.inbox_prune_inner(before))
            }

            fn add_note(&self, note: Note) -> StoreFuture<'_, (Note, bool)> {
                Box::pin(self.add_note_inner(note))
            }

            fn list_notes<'a>(&'a self, conversation_id: &'a str, page: PageRequest) -> StoreFuture<'a, Page<Note>> {
                Box::pin(self.list_notes_inner(conversation_id, page))
            }

            fn begin_ingest<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Box<dyn IngestUnit<'a> + 'a>> {
                Box::pin(async move {
                    let tx = self.ingest_tx(channel).await?;
                    Ok(Box::new(Unit {
                        tx,
                        embeddings: &self.embeddings,
                    }) as Box<dyn IngestUnit<'a> + 'a>)
                })
            }

            fn issue_changed<'a>(
                &'a self,
                change: &'a IssueChange,
            ) -> StoreFuture<'a, Written<Vec<Conversation>>> {
                Box::pin(self.issue_changed_inner(change))
            }

            fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
                Box::pin(self.list_accounts_inner())
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
                        "SELECT slack_user_id, name, triage_channel FROM team_members \
                         ORDER BY name, slack_user_id",
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
                Box::pin(self.put_team_member_inner(member))
            }

            fn export_status_labels(
                &self,
                since: Option<DateTime<Utc>>,
            ) -> StoreFuture<'_, Vec<StatusLabelRow>> {
                Box::pin(self.export_status_labels_inner(since))
            }

            fn export_grouping(&self, since: Option<DateTime<Utc>>) -> StoreFuture<'_, Vec<GroupingRow>> {
                Box::pin(self.export_grouping_inner(since))
            }

            fn card_details<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<CardDetail>> {
                Box::pin(card_details(&self.pool, ids))
            }

            fn message_reasons<'a>(&'a self, conversation_id: &'a str) -> StoreFuture<'a, Vec<MessageReasons>> {
                Box::pin(message_reasons(&self.pool, conversation_id))
            }

            fn outbox(&self) -> &dyn SlackOutbox {
                self
            }

            fn directory(&self) -> &dyn super::slack_names::SlackDirectory {
                self
            }

            fn analytics(&self) -> StoreFuture<'_, Analytics> {
                Box::pin(self.analytics_inner())
            }

            fn put_import_job<'a>(&'a self, job: &'a ImportJob) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let summary = job.summary.as_ref().map(|s| s.to_string());
                    sqlx::query(
                        "INSERT INTO import_jobs (id, state, total, done, summary, error, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (id) DO UPDATE SET state = excluded.state, total = excluded.total, \
                         done = excluded.done, summary = excluded.summary, error = excluded.error, \
                         updated_at = excluded.updated_at WHERE import_jobs.state = 'running'",
                    )
                    .bind(&job.id)
                    .bind(&job.state)
                    .bind(job.total)
                    .bind(job.done)
                    .bind(summary)
                    .bind(&job.error)
                    .bind(job.created_at)
                    .bind(job.updated_at)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            fn get_import_job<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ImportJob> {
                Box::pin(async move {
                    type Row = (String, String, i64, i64, Option<String>, Option<String>, DateTime<Utc>, DateTime<Utc>);
                    let row: Option<Row> = sqlx::query_as(
                        "SELECT id, state, total, done, summary, error, created_at, updated_at \
                         FROM import_jobs WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                    let (id, state, total, done, summary, error, created_at, updated_at) =
                        row.ok_or(StoreError::NotFound("import"))?;
                    let summary = summary
                        .map(|s| serde_json::from_str(&s))
                        .transpose()
                        .map_err(|e| StoreError::Unexpected(e.into()))?;
                    Ok(ImportJob { id, state, total, done, summary, error, created_at, updated_at })
                })
            }
        }
    };
}
