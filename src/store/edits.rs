//! Edits and deletions of stored messages (Slack's `message_changed` / `message_deleted`), written
//! once for both backends: `message_edit_ops!(Backend)` expands in `sqlite.rs` and `postgres.rs`
//! beside `store_ops!`, with the same backend hooks (`write_tx`, `lock_channels`,
//! `lock_conversation`, `insert_events`).

macro_rules! message_edit_ops {
    ($backend:ty) => {
        impl $backend {
            /// The message (channel, ts) and its conversation, both locked: the channel's lock first
            /// (the order ingestion takes), then the conversation's row.
            async fn lock_message(
                tx: &mut WriteTx<'_>,
                channel: &str,
                ts: &str,
            ) -> Result<(Message, Conversation), StoreError> {
                lock_channels(tx, &[channel]).await?;
                let message = find_message(tx, channel, ts)
                    .await?
                    .ok_or(StoreError::NotFound("message"))?;
                let conv = lock_conversation(tx, &message.conversation_id).await?;
                Ok((message, conv))
            }

            async fn edit_inner(
                &self,
                channel: &str,
                ts: &str,
                edit: MessageEdit,
            ) -> Result<Written<Edited>, StoreError> {
                let mut tx = self.write_tx().await?;
                let (mut message, mut conv) = Self::lock_message(&mut tx, channel, ts).await?;
                if message.text == edit.text {
                    tx.rollback().await?;
                    let value = Edited {
                        message,
                        conversation: conv,
                        changed: false,
                    };
                    return Ok(Written {
                        value,
                        events: Vec::new(),
                    });
                }
                let last = latest_status_event(&mut tx, &conv.id).await?;
                let events = apply_edit(&mut message, &mut conv, &edit, last.as_ref(), Utc::now());
                sqlx::query(
                    "UPDATE messages SET text = $1, edited = TRUE, label = $2, score = $3, embedding = $4 \
                     WHERE id = $5",
                )
                .bind(&message.text)
                .bind(message.label.map(ReplyLabel::as_str))
                .bind(message.score)
                .bind(edit.embedding.as_deref().map(embedding_to_bytes))
                .bind(&message.id)
                .execute(&mut *tx)
                .await?;
                write_conversation(&mut tx, &conv).await?;
                insert_events(&mut tx, &events).await?;
                tx.commit().await?;
                let value = Edited {
                    message,
                    conversation: conv,
                    changed: true,
                };
                Ok(Written { value, events })
            }

            async fn delete_message_inner(
                &self,
                channel: &str,
                ts: &str,
            ) -> Result<Written<Edited>, StoreError> {
                let mut tx = self.write_tx().await?;
                let (mut message, conv) = Self::lock_message(&mut tx, channel, ts).await?;
                let changed = apply_delete(&mut message);
                if changed {
                    sqlx::query("UPDATE messages SET deleted = TRUE WHERE id = $1")
                        .bind(&message.id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                } else {
                    tx.rollback().await?;
                }
                let value = Edited {
                    message,
                    conversation: conv,
                    changed,
                };
                Ok(Written {
                    value,
                    events: Vec::new(),
                })
            }
        }
    };
}
