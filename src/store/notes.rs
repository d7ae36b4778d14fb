//! Internal notes (the `notes` table), written once for both backends: `note_ops!(Backend)`
//! expands in `sqlite.rs` and `postgres.rs` beside `store_ops!`. Notes are not messages: nothing
//! here touches `messages`, so they never reach the grouper's context or the status model.

macro_rules! note_ops {
    ($backend:ty) => {
        impl $backend {
            async fn add_note_inner(&self, note: Note) -> Result<(Note, bool), StoreError> {
                let mut tx = self.write_tx().await?;
                // Locked so that a merge moving this conversation's notes cannot miss this one.
                lock_conversation(&mut tx, &note.conversation_id).await?;
                let done = sqlx::query(
                    "INSERT INTO notes (id, conversation_id, author, text, created_at, slack_channel, slack_ts) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (slack_channel, slack_ts) DO NOTHING",
                )
                .bind(&note.id)
                .bind(&note.conversation_id)
                .bind(&note.author)
                .bind(&note.text)
                .bind(note.created_at)
                .bind(&note.slack_channel)
                .bind(&note.slack_ts)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    tx.commit().await?;
                    return Ok((note, true));
                }
                tx.rollback().await?;
                // Added before from the same Slack message.
                let row = sqlx::query_as::<_, NoteRow>(concat!(
                    note_select!(),
                    " WHERE slack_channel = $1 AND slack_ts = $2"
                ))
                .bind(&note.slack_channel)
                .bind(&note.slack_ts)
                .fetch_one(&self.pool)
                .await?;
                Ok((row.into_domain().1, false))
            }

            async fn list_notes_inner(
                &self,
                conversation_id: &str,
                page: PageRequest,
            ) -> Result<Page<Note>, StoreError> {
                let mut conn = self.pool.acquire().await?;
                require_conversation(&mut conn, conversation_id).await?;
                let rows = sqlx::query_as::<_, NoteRow>(concat!(
                    note_select!(),
                    " WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ))
                .bind(conversation_id)
                .bind(page.seq_cursor()?.unwrap_or(0))
                .bind(page.fetch_limit())
                .fetch_all(&mut *conn)
                .await?;
                let rows = rows
                    .into_iter()
                    .map(|r| {
                        let (seq, note) = r.into_domain();
                        (seq.to_string(), note)
                    })
                    .collect();
                Ok(Page::from_rows(rows, page.limit))
            }
        }
    };
}
