//! The channel's open conversations for the grouper (issue 14): the first and the latest message
//! of each of its newest open conversations, so a customer's follow-up hours later still finds
//! their ticket when a busy channel has pushed it out of the recent messages. The same SQL on both
//! backends; `open_context_ops!()` expands inside `sqlite.rs` and `postgres.rs`.

/// `$1` channel, `$2` the incoming ts (only earlier messages), `$3` how many conversations. The
/// conversations come from the partial index `conversations_channel_open`; each one's first and
/// latest message from `messages_conversation` (conversation_id, ts).
macro_rules! open_context_sql {
    () => {
        concat!(
            context_select!(),
            " WHERE m.seq IN (\
             SELECT (SELECT f.seq FROM messages f WHERE f.conversation_id = o.id AND f.ts < $2 \
                     ORDER BY f.ts LIMIT 1) FROM open_c o \
             UNION SELECT (SELECT l.seq FROM messages l WHERE l.conversation_id = o.id AND l.ts < $2 \
                     ORDER BY l.ts DESC LIMIT 1) FROM open_c o)"
        )
    };
}

macro_rules! open_context_ops {
    () => {
        /// The first and latest message before `msg` of the channel's newest open conversations
        /// (at most [`crate::domain::OPEN_CONVERSATIONS`]), oldest first.
        async fn load_open(
            conn: &mut Conn,
            msg: &IncomingMessage,
        ) -> Result<Vec<ContextMessage>, StoreError> {
            let rows = sqlx::query_as::<_, ContextRow>(concat!(
                "WITH open_c AS (SELECT id FROM conversations WHERE channel = $1 AND status <> 'closed' \
                 ORDER BY seq DESC LIMIT $3) ",
                open_context_sql!()
            ))
            .bind(&msg.channel)
            .bind(&msg.ts)
            .bind(crate::domain::OPEN_CONVERSATIONS)
            .fetch_all(&mut *conn)
            .await?;
            let mut out = rows
                .into_iter()
                .map(ContextRow::into_domain)
                .collect::<Result<Vec<_>, _>>()?;
            out.sort_by(|a, b| a.ts.cmp(&b.ts));
            Ok(out)
        }
    };
}
