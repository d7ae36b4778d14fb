//! Row shapes shared by both backends (`FromRow` is derived generically over the database) and
//! their mapping to the domain.

use super::{GroupingRow, StatusLabelRow, StoreError};
use crate::domain::{
    ContextMessage, Conversation, Event, FileRef, LinkedIssue, Message, Note, NoteKind, ReplyLabel,
};
use chrono::{DateTime, Utc};
use std::str::FromStr;

/// Parses a stored enum column; a bad value means the database was written by something else.
pub fn parse_column<T: FromStr>(value: &str, column: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Unexpected(anyhow::anyhow!("bad value `{value}` in column {column}")))
}

#[derive(sqlx::FromRow, serde::Deserialize)]
pub struct ConversationRow {
    pub seq: i64,
    pub id: String,
    pub status: String,
    pub priority: String,
    pub owner: Option<String>,
    pub account_id: Option<String>,
    pub channel: String,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub issue_url: Option<String>,
    pub issue_provider: Option<String>,
    pub issue_key: Option<String>,
    pub issue_state: Option<String>,
    pub message_count: i64,
}

impl ConversationRow {
    pub fn into_domain(self) -> Result<(i64, Conversation), StoreError> {
        let linked_issue = self.issue_url.map(|url| LinkedIssue {
            url,
            provider: self.issue_provider,
            key: self.issue_key,
            state: self.issue_state.unwrap_or_else(LinkedIssue::open),
        });
        Ok((
            self.seq,
            Conversation {
                id: self.id,
                status: parse_column(&self.status, "status")?,
                priority: parse_column(&self.priority, "priority")?,
                owner: self.owner,
                account_id: self.account_id,
                channel: self.channel,
                title: self.title,
                created_at: self.created_at,
                first_response_at: self.first_response_at,
                closed_at: self.closed_at,
                linked_issue,
                message_count: self.message_count,
            },
        ))
    }
}

#[derive(sqlx::FromRow)]
pub struct MessageRow {
    pub seq: i64,
    pub id: String,
    pub conversation_id: String,
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user_id: String,
    pub role: String,
    pub text: String,
    pub files: Option<sqlx::types::Json<Vec<FileRef>>>,
    pub edited: bool,
    pub deleted: bool,
    pub label: Option<String>,
    pub score: Option<f32>,
}

impl MessageRow {
    pub fn into_domain(self) -> Result<(i64, Message), StoreError> {
        Ok((
            self.seq,
            Message {
                id: self.id,
                conversation_id: self.conversation_id,
                channel: self.channel,
                ts: self.ts,
                thread_ts: self.thread_ts,
                user: self.user_id,
                role: parse_column(&self.role, "role")?,
                text: self.text,
                files: self.files.map(|f| f.0).unwrap_or_default(),
                edited: self.edited,
                deleted: self.deleted,
                label: self
                    .label
                    .as_deref()
                    .map(|l| parse_column(l, "label"))
                    .transpose()?,
                score: self.score,
            },
        ))
    }
}

#[derive(sqlx::FromRow)]
pub struct NoteRow {
    pub seq: i64,
    pub id: String,
    pub conversation_id: String,
    pub author: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
    pub slack_channel: Option<String>,
    pub slack_ts: Option<String>,
}

impl NoteRow {
    pub fn into_domain(self) -> (i64, Note) {
        (
            self.seq,
            Note {
                id: self.id,
                conversation_id: self.conversation_id,
                kind: NoteKind::Note,
                author: self.author,
                text: self.text,
                created_at: self.created_at,
                slack_channel: self.slack_channel,
                slack_ts: self.slack_ts,
            },
        )
    }
}

#[derive(sqlx::FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub conversation_id: String,
    pub kind: String,
    pub actor: String,
    pub message_id: Option<String>,
    pub before_value: Option<String>,
    pub after_value: Option<String>,
    pub model_label: Option<String>,
    pub model_score: Option<f32>,
    pub at: DateTime<Utc>,
}

impl EventRow {
    pub fn into_domain(self) -> Result<(i64, Event), StoreError> {
        Ok((
            self.seq,
            Event {
                id: self.id,
                conversation_id: self.conversation_id,
                kind: parse_column(&self.kind, "kind")?,
                actor: self.actor,
                message_id: self.message_id,
                before: self.before_value,
                after: self.after_value,
                model_label: self
                    .model_label
                    .as_deref()
                    .map(|l| parse_column(l, "model_label"))
                    .transpose()?,
                model_score: self.model_score,
                at: self.at,
            },
        ))
    }
}

#[derive(sqlx::FromRow)]
pub struct ContextRow {
    pub id: String,
    pub conversation_id: String,
    pub conversation_status: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user_id: String,
    pub role: String,
    pub text: String,
    /// The embedding itself comes from the [`EmbeddingCache`](super::embeddings::EmbeddingCache).
    pub has_embedding: bool,
}

impl ContextRow {
    pub fn into_domain(self, embedding: Option<Vec<f32>>) -> Result<ContextMessage, StoreError> {
        Ok(ContextMessage {
            id: self.id,
            conversation_id: self.conversation_id,
            conversation_status: parse_column(&self.conversation_status, "status")?,
            ts: self.ts,
            thread_ts: self.thread_ts,
            user: self.user_id,
            role: parse_column(&self.role, "role")?,
            text: self.text,
            embedding,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct GroupingSql {
    #[sqlx(flatten)]
    pub message: MessageRow,
    pub human_corrected: bool,
}

impl GroupingSql {
    pub fn into_domain(self) -> Result<GroupingRow, StoreError> {
        Ok(GroupingRow {
            message: self.message.into_domain()?.1,
            human_corrected: self.human_corrected,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct StatusLabelSql {
    pub id: String,
    pub conversation_id: String,
    pub text: String,
    pub label: String,
    pub human_label: Option<String>,
    pub score: Option<f32>,
}

impl StatusLabelSql {
    pub fn into_domain(self) -> Result<StatusLabelRow, StoreError> {
        let model_label: ReplyLabel = parse_column(&self.label, "label")?;
        let human: Option<ReplyLabel> = self
            .human_label
            .as_deref()
            .map(|l| parse_column(l, "human_label"))
            .transpose()?;
        Ok(StatusLabelRow {
            text: self.text,
            label: human.unwrap_or(model_label),
            source: if human.is_some() { "human" } else { "model" },
            message_id: self.id,
            conversation_id: self.conversation_id,
            model_label: Some(model_label),
            score: self.score,
        })
    }
}
