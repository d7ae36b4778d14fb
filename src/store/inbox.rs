//! The inbox of inbound deliveries (the `slack_inbox` table): written before a delivery is
//! acknowledged, read back by the worker in arrival order, marked with what processing did.
//! `inbox_ops!(Backend)` expands in `sqlite.rs` and `postgres.rs` beside `store_ops!`.

macro_rules! inbox_ops {
    ($backend:ty) => {
        impl $backend {
            async fn inbox_add_inner(&self, entry: InboxEntry) -> Result<bool, StoreError> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(
                    "INSERT INTO slack_inbox (event_id, team_id, payload, retry_num, received_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
                )
                .bind(&entry.event_id)
                .bind(&entry.team_id)
                .bind(&entry.payload)
                .bind(i64::from(entry.retry_num))
                .bind(entry.received_at)
                .execute(&mut *tx)
                .await?;
                let new = done.rows_affected() == 1;
                if !new {
                    // A retry of a stored delivery: remembered, never dropped.
                    sqlx::query(
                        "UPDATE slack_inbox SET retry_num = $2 WHERE event_id = $1 AND retry_num < $2",
                    )
                    .bind(&entry.event_id)
                    .bind(i64::from(entry.retry_num))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(new)
            }

            async fn inbox_pending_inner(&self, limit: u32) -> Result<Vec<InboxItem>, StoreError> {
                let rows = sqlx::query_as::<_, (i64, String, Option<String>, String, i64)>(
                    "SELECT seq, event_id, team_id, payload, attempts FROM slack_inbox \
                     WHERE processed_at IS NULL ORDER BY seq LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, event_id, team_id, payload, attempts)| InboxItem {
                        seq,
                        event_id,
                        team_id,
                        payload,
                        attempts: attempts.max(0) as u32,
                    })
                    .collect())
            }

            async fn inbox_finish_inner(&self, seq: i64, outcome: &str) -> Result<(), StoreError> {
                let mut tx = self.write_tx().await?;
                sqlx::query("UPDATE slack_inbox SET processed_at = $2, outcome = $3 WHERE seq = $1")
                    .bind(seq)
                    .bind(Utc::now())
                    .bind(outcome)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }

            async fn inbox_failed_inner(&self, seq: i64, error: &str) -> Result<u32, StoreError> {
                let mut tx = self.write_tx().await?;
                let attempts: i64 = sqlx::query_scalar(
                    "UPDATE slack_inbox SET attempts = attempts + 1, last_error = $2 WHERE seq = $1 \
                     RETURNING attempts",
                )
                .bind(seq)
                .bind(error)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0);
                tx.commit().await?;
                Ok(attempts.max(0) as u32)
            }

            async fn inbox_counts_inner(&self) -> Result<BTreeMap<String, i64>, StoreError> {
                let rows = sqlx::query_as::<_, (String, i64)>(
                    "SELECT COALESCE(outcome, 'pending'), COUNT(*) FROM slack_inbox \
                     GROUP BY COALESCE(outcome, 'pending')",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().collect())
            }

            async fn inbox_prune_inner(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
                let mut tx = self.write_tx().await?;
                let done = sqlx::query(
                    "DELETE FROM slack_inbox WHERE processed_at IS NOT NULL AND processed_at < $1",
                )
                .bind(before)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }
        }
    };
}
