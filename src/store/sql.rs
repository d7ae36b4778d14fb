//! SQL shared by both backends (parameters as `$n`, which SQLite accepts too). Macros rather than
//! consts because `concat!` needs literals and sqlx only takes `&'static str` as trusted SQL.

macro_rules! conversation_select {
    () => {
        "SELECT seq, id, status, priority, owner, account_id, channel, title, created_at, \
         first_response_at, closed_at, issue_url, issue_provider, issue_key, issue_state, message_count \
         FROM conversations"
    };
}

macro_rules! message_select {
    () => {
        "SELECT seq, id, conversation_id, channel, ts, thread_ts, user_id, role, text, files, edited, \
         deleted, label, score FROM messages"
    };
}

macro_rules! note_select {
    () => {
        "SELECT seq, id, conversation_id, author, text, created_at, slack_channel, slack_ts FROM notes"
    };
}

macro_rules! event_select {
    () => {
        "SELECT seq, id, conversation_id, kind, actor, message_id, before_value, after_value, model_label, \
         model_score, at FROM events"
    };
}

macro_rules! context_select {
    () => {
        "SELECT m.id, m.conversation_id, c.status AS conversation_status, m.ts, m.thread_ts, m.user_id, \
         m.role, m.text, m.embedding IS NOT NULL AS has_embedding FROM messages m JOIN conversations c ON c.id = m.conversation_id"
    };
}

// Conversation writes, the same SQL and bindings on both backends.

/// `INSERT INTO conversations` of all columns as `$1..$15`, in `bind_conversation!` order.
macro_rules! insert_conversation_sql {
    () => {
        "INSERT INTO conversations (id, status, priority, owner, account_id, channel, title, created_at, \
         first_response_at, closed_at, issue_url, issue_provider, issue_key, issue_state, message_count) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    };
}

/// Binds a conversation's 15 columns in `insert_conversation_sql!` order (any sqlx query type).
macro_rules! bind_conversation {
    ($query:expr, $c:expr) => {{
        let c: &Conversation = $c;
        let issue = c.linked_issue.as_ref();
        $query
            .bind(&c.id)
            .bind(c.status.as_str())
            .bind(c.priority.as_str())
            .bind(&c.owner)
            .bind(&c.account_id)
            .bind(&c.channel)
            .bind(&c.title)
            .bind(c.created_at)
            .bind(c.first_response_at)
            .bind(c.closed_at)
            .bind(issue.map(|i| &i.url))
            .bind(issue.and_then(|i| i.provider.as_ref()))
            .bind(issue.and_then(|i| i.key.as_ref()))
            .bind(issue.map(|i| &i.state))
            .bind(c.message_count)
    }};
}

/// `UPDATE conversations` of every mutable column, taking the same `$1..$15` as
/// `insert_conversation_sql!` (`channel`, `$6`, never changes).
macro_rules! update_conversation_sql {
    () => {
        "UPDATE conversations SET status = $2, priority = $3, owner = $4, account_id = $5, title = $7, \
         created_at = $8, first_response_at = $9, closed_at = $10, issue_url = $11, issue_provider = $12, \
         issue_key = $13, issue_state = $14, message_count = $15 WHERE id = $1 AND CAST($6 AS TEXT) IS NOT NULL"
    };
}

/// Binds a message's 13 `INSERT INTO messages` columns: id, conversation_id, channel, ts,
/// thread_ts, user_id, role, text, label, score, sent_at, embedding, files (any sqlx query type).
macro_rules! bind_message {
    ($query:expr, $m:expr, $sent_at:expr, $embedding:expr) => {{
        let m: &Message = $m;
        $query
            .bind(&m.id)
            .bind(&m.conversation_id)
            .bind(&m.channel)
            .bind(&m.ts)
            .bind(&m.thread_ts)
            .bind(&m.user)
            .bind(m.role.as_str())
            .bind(&m.text)
            .bind(m.label.map(ReplyLabel::as_str))
            .bind(m.score)
            .bind($sent_at)
            .bind($embedding.map(embedding_to_bytes))
            .bind(files_column(&m.files))
    }};
}
