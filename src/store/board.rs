//! What the board reads beyond the API's lists (each card's customer, last customer message and
//! status source; why each message joined its conversation) and the grouper's reasons the ingest
//! unit of work writes. Written once for both backends: `board_queries!()` expands inside
//! `sqlite.rs` and `postgres.rs` after `shared_queries!()`.

use serde::Serialize;

/// What a board card shows beyond the [`Conversation`](crate::domain::Conversation) itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CardDetail {
    pub conversation_id: String,
    /// The author of the conversation's first customer message: the Slack name cached for the
    /// user (`slack_names`), else the user id.
    pub customer: Option<String>,
    /// When the customer last wrote.
    pub last_customer_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The actor of the latest status change (`model`, `human:<user>`, `rule:<name>`); `None`
    /// while the conversation is still in its first status.
    pub status_actor: Option<String>,
}

/// Why one message joined its conversation: the grouper's confidence and reasons as JSON
/// (`[{"signal", "detail", "weight"}]`, the pipeline's `Reason`s).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageReasons {
    pub message_id: String,
    pub confidence: f32,
    pub reasons: serde_json::Value,
}

/// Conversations per `IN (...)` query: well under both backends' parameter limits.
pub(crate) const CARD_CHUNK: usize = 500;

macro_rules! board_queries {
    () => {
        #[derive(sqlx::FromRow)]
        struct CardDetailRow {
            id: String,
            customer: Option<String>,
            last_customer_at: Option<DateTime<Utc>>,
            status_actor: Option<String>,
        }

        async fn card_details(
            pool: &sqlx::Pool<Db>,
            ids: &[String],
        ) -> Result<Vec<super::board::CardDetail>, StoreError> {
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(super::board::CARD_CHUNK) {
                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "SELECT c.id, \
                     (SELECT COALESCE(n.name, m.user_id) FROM messages m LEFT JOIN slack_names n \
                      ON n.kind = 'user' AND n.id = m.user_id WHERE m.conversation_id = c.id \
                      AND m.role = 'customer' ORDER BY m.ts LIMIT 1) AS customer, \
                     (SELECT MAX(m.sent_at) FROM messages m WHERE m.conversation_id = c.id \
                      AND m.role = 'customer') AS last_customer_at, \
                     (SELECT e.actor FROM events e WHERE e.conversation_id = c.id \
                      AND e.kind = 'status' ORDER BY e.seq DESC LIMIT 1) AS status_actor \
                     FROM conversations c WHERE c.id IN (",
                );
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(id.clone());
                }
                qb.push(")");
                let rows = qb.build_query_as::<CardDetailRow>().fetch_all(pool).await?;
                out.extend(rows.into_iter().map(|r| super::board::CardDetail {
                    conversation_id: r.id,
                    customer: r.customer,
                    last_customer_at: r.last_customer_at,
                    status_actor: r.status_actor,
                }));
            }
            Ok(out)
        }

        async fn insert_reasons(conn: &mut Conn, r: &super::board::MessageReasons) -> Result<(), StoreError> {
            sqlx::query("INSERT INTO message_reasons (message_id, confidence, reasons) VALUES ($1, $2, $3)")
                .bind(&r.message_id)
                .bind(r.confidence)
                .bind(r.reasons.to_string())
                .execute(conn)
                .await?;
            Ok(())
        }

        async fn message_reasons(
            pool: &sqlx::Pool<Db>,
            conversation_id: &str,
        ) -> Result<Vec<super::board::MessageReasons>, StoreError> {
            let rows: Vec<(String, f32, String)> = sqlx::query_as(
                "SELECT r.message_id, r.confidence, r.reasons FROM message_reasons r \
                 JOIN messages m ON m.id = r.message_id WHERE m.conversation_id = $1 ORDER BY m.ts",
            )
            .bind(conversation_id)
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|(message_id, confidence, reasons)| {
                    let reasons = serde_json::from_str(&reasons).map_err(|e| {
                        StoreError::Unexpected(anyhow::anyhow!("bad reasons of message {message_id}: {e}"))
                    })?;
                    Ok(super::board::MessageReasons {
                        message_id,
                        confidence,
                        reasons,
                    })
                })
                .collect()
        }
    };
}
