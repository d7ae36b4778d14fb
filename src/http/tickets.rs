//! Tickets: conversations, messages, accounts, team, exports and analytics (`/v1/*`).

use super::auth::Acting;
use super::cursor;
use super::error::ApiError;
use super::export;
use super::extract::{Json, Query};
use super::message::MessageBody;
use super::AppState;
use crate::domain::{normalize_ts, validate, Actor, Edited, NewNote, SlackRef, Status};
use crate::pipeline::{IncomingMessage, Reason};
use crate::store::{
    AccountInput, AccountPatch, Conversation, ConversationFilter, ConversationPatch, Message,
    NewConversation, PageRequest, Role, TeamMember,
};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/conversations",
            get(list_conversations).post(create_conversation),
        )
        .route(
            "/v1/conversations/{id}",
            get(get_conversation)
                .patch(update_conversation)
                .delete(delete_conversation),
        )
        .route("/v1/conversations/{id}/messages", get(list_messages))
        .route("/v1/conversations/{id}/events", get(list_events))
        .route("/v1/conversations/{id}/notes", get(list_notes).post(add_note))
        .route("/v1/conversations/{id}/merge", post(merge))
        .route("/v1/messages", post(ingest))
        .route("/v1/messages/{id}/move", post(move_message))
        .route(
            "/v1/channels/{channel}/messages/{ts}",
            axum::routing::patch(edit_at_source).delete(delete_at_source),
        )
        .route("/v1/accounts", get(list_accounts).post(create_account))
        .route("/v1/accounts/{id}", get(get_account).patch(update_account))
        .route("/v1/team", get(list_team))
        .route("/v1/team/{slack_user_id}", put(put_team_member))
        .route("/v1/export/labels", get(export_labels))
        .route("/v1/analytics", get(analytics))
}

#[derive(Deserialize)]
struct PageParams {
    cursor: Option<String>,
    limit: Option<u32>,
}

impl PageParams {
    /// The page asked for in the list `query` describes (its cursor must come from that list).
    fn page(self, query: &str) -> Result<PageRequest, ApiError> {
        let cursor = self.cursor.map(|c| cursor::open(&c, query)).transpose()?;
        match self.limit.unwrap_or(DEFAULT_LIMIT) {
            limit @ 1..=MAX_LIMIT => Ok(PageRequest { cursor, limit }),
            _ => Err(ApiError::invalid(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }
}

#[derive(Deserialize)]
struct ListParams {
    status: Option<String>,
    owner: Option<String>,
    account: Option<String>,
    channel: Option<String>,
    q: Option<String>,
    // Not a flattened `PageParams`: serde's flatten loses the query string's number parsing.
    cursor: Option<String>,
    limit: Option<u32>,
}

async fn list_conversations(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<impl IntoResponse, ApiError> {
    let status = params
        .status
        .map(|s| s.parse::<Status>())
        .transpose()
        .map_err(|e| ApiError::invalid("status", e.to_string()))?;
    validate::opt_id("owner", params.owner.as_deref())?;
    validate::opt_id("account", params.account.as_deref())?;
    validate::opt_id("channel", params.channel.as_deref())?;
    if let Some(q) = &params.q {
        validate::search_query("q", q)?;
    }
    let filter = ConversationFilter {
        status,
        owner: params.owner,
        account: params.account,
        channel: params.channel,
        q: params.q,
    };
    let query = format!("conversations\n{filter:?}");
    let page = PageParams {
        cursor: params.cursor,
        limit: params.limit,
    }
    .page(&query)?;
    let found = state.store.list_conversations(&filter, page).await?;
    Ok(axum::Json(cursor::seal_page(found, &query)))
}

async fn create_conversation(
    State(state): State<AppState>,
    Acting(actor): Acting,
    Json(new): Json<NewConversation>,
) -> Result<impl IntoResponse, ApiError> {
    new.validate()?;
    let conv = state.pipeline.create_conversation(new, actor).await?;
    Ok((StatusCode::CREATED, axum::Json(conv)))
}

async fn get_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(state.store.get_conversation(&id).await?))
}

async fn update_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Acting(actor): Acting,
    Json(patch): Json<ConversationPatch>,
) -> Result<impl IntoResponse, ApiError> {
    patch.validate()?;
    Ok(axum::Json(
        state.pipeline.update_conversation(&id, patch, actor).await?,
    ))
}

async fn delete_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.pipeline.delete_conversation(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<impl IntoResponse, ApiError> {
    let query = format!("messages\n{id}");
    let found = state.store.list_messages(&id, params.page(&query)?).await?;
    Ok(axum::Json(cursor::seal_page(found, &query)))
}

async fn list_notes(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<impl IntoResponse, ApiError> {
    let query = format!("notes\n{id}");
    let found = state.store.list_notes(&id, params.page(&query)?).await?;
    Ok(axum::Json(cursor::seal_page(found, &query)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: String,
    /// The Slack message the note is (a reply in a triage card's thread): adding it again is a
    /// no-op answered 200 with the stored note.
    #[serde(default)]
    slack: Option<SlackRefBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackRefBody {
    channel: String,
    ts: serde_json::Value,
}

/// An internal note by the acting user (`X-Triage-User`): never sent to the customer, never
/// classified. 201 when new; 200 when its Slack message was added before.
async fn add_note(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Acting(actor): Acting,
    Json(body): Json<NoteBody>,
) -> Result<impl IntoResponse, ApiError> {
    let author = match actor {
        Actor::Human(user) => user,
        other => other.to_string(),
    };
    let slack = match body.slack {
        Some(r) => {
            validate::id("slack.channel", &r.channel)?;
            let ts = normalize_ts(&r.ts)
                .map_err(|_| ApiError::invalid("slack.ts", "slack.ts must be a Slack ts"))?;
            Some(SlackRef {
                channel: r.channel,
                ts,
            })
        }
        None => None,
    };
    let new = NewNote {
        author,
        text: body.text,
        slack,
    };
    let (note, created) = state.pipeline.add_note(&id, new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(note)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    text: String,
}

/// The (channel, ts) of a message at its source, checked.
fn source(channel: &str, ts: &str) -> Result<String, ApiError> {
    validate::id("channel", channel)?;
    normalize_ts(&serde_json::Value::String(ts.to_owned()))
        .map_err(|_| ApiError::invalid("ts", "ts must be a Slack ts like \"1700000000.000100\""))
}

fn edited(e: Option<Edited>) -> Result<Response, ApiError> {
    let e = e.ok_or(ApiError::NotFound("message"))?;
    Ok(axum::Json(json!({
        "message": e.message, "conversation": e.conversation, "changed": e.changed
    }))
    .into_response())
}

/// `PATCH /v1/channels/{channel}/messages/{ts}` `{"text"}`: the message was edited where it was
/// written (Slack's `message_changed`); an edited team reply is classified again. 404 when
/// (channel, ts) was never stored.
async fn edit_at_source(
    State(state): State<AppState>,
    Path((channel, ts)): Path<(String, String)>,
    Json(body): Json<EditBody>,
) -> Result<Response, ApiError> {
    let ts = source(&channel, &ts)?;
    validate::text("text", &body.text, validate::MAX_TEXT_CHARS, false)?;
    edited(state.pipeline.edit_message(&channel, &ts, &body.text).await?)
}

/// `DELETE /v1/channels/{channel}/messages/{ts}`: deleted at its source; kept as a tombstone.
async fn delete_at_source(
    State(state): State<AppState>,
    Path((channel, ts)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ts = source(&channel, &ts)?;
    edited(state.pipeline.delete_message(&channel, &ts).await?)
}

async fn list_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<impl IntoResponse, ApiError> {
    let query = format!("events\n{id}");
    let found = state.store.list_events(&id, params.page(&query)?).await?;
    Ok(axum::Json(cursor::seal_page(found, &query)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeBody {
    into: String,
}

async fn merge(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Acting(actor): Acting,
    Json(body): Json<MergeBody>,
) -> Result<impl IntoResponse, ApiError> {
    validate::id("into", &body.into)?;
    let conversation = state.pipeline.merge_conversations(&id, &body.into, actor).await?;
    Ok(axum::Json(json!({ "conversation": conversation })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    /// `null` splits the message into a new conversation.
    conversation_id: Option<String>,
}

async fn move_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Acting(actor): Acting,
    Json(body): Json<MoveBody>,
) -> Result<impl IntoResponse, ApiError> {
    validate::opt_id("conversation_id", body.conversation_id.as_deref())?;
    let (message, conversation) = state
        .pipeline
        .move_message(&id, body.conversation_id.as_deref(), actor)
        .await?;
    Ok(axum::Json(
        json!({ "message": message, "conversation": conversation }),
    ))
}

/// A `/v1/messages` body as the pipeline takes it: the role defaults from `TRIAGE_TEAM_USERS`.
fn incoming(body: MessageBody, state: &AppState) -> Result<IncomingMessage, ApiError> {
    let m = body.validate()?;
    if m.dry_run {
        return Err(ApiError::invalid(
            "dry_run",
            "dry runs belong to /v1/group; /v1/messages stores",
        ));
    }
    let role = m.role.unwrap_or(if state.config.team_users.contains(&m.user) {
        Role::Agent
    } else {
        Role::Customer
    });
    Ok(IncomingMessage {
        channel: m.channel,
        ts: m.ts,
        thread_ts: m.thread_ts,
        user: m.user,
        role,
        text: m.text,
        files: m.files,
        embedding: None,
    })
}

fn ingested(
    status: StatusCode,
    message: Message,
    conversation: Conversation,
    reasons: Vec<Reason>,
) -> Response {
    (
        status,
        axum::Json(json!({ "message": message, "conversation": conversation, "reasons": reasons })),
    )
        .into_response()
}

async fn ingest(State(state): State<AppState>, Json(body): Json<MessageBody>) -> Result<Response, ApiError> {
    let msg = incoming(body, &state)?;
    let outcome = state.pipeline.ingest(msg).await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(ingested(
        status,
        outcome.message,
        outcome.conversation,
        outcome.reasons,
    ))
}

async fn list_accounts(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(
        json!({ "items": state.store.list_accounts().await?, "next_cursor": null }),
    ))
}

async fn create_account(
    State(state): State<AppState>,
    Json(input): Json<AccountInput>,
) -> Result<impl IntoResponse, ApiError> {
    input.validate()?;
    Ok((
        StatusCode::CREATED,
        axum::Json(state.store.create_account(input).await?),
    ))
}

async fn get_account(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(state.store.get_account(&id).await?))
}

async fn update_account(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(patch): Json<AccountPatch>,
) -> Result<impl IntoResponse, ApiError> {
    patch.validate()?;
    Ok(axum::Json(state.store.update_account(&id, patch).await?))
}

async fn list_team(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(
        json!({ "items": state.store.list_team().await?, "next_cursor": null }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamBody {
    name: String,
    #[serde(default)]
    triage_channel: Option<String>,
}

async fn put_team_member(
    State(state): State<AppState>,
    Path(slack_user_id): Path<String>,
    Json(body): Json<TeamBody>,
) -> Result<impl IntoResponse, ApiError> {
    let member = TeamMember {
        slack_user_id,
        name: body.name,
        triage_channel: body.triage_channel,
    };
    member.validate()?;
    Ok(axum::Json(state.store.put_team_member(member).await?))
}

#[derive(Deserialize)]
struct ExportParams {
    kind: Option<String>,
    since: Option<String>,
}

async fn export_labels(
    State(state): State<AppState>,
    Query(params): Query<ExportParams>,
) -> Result<Response, ApiError> {
    let since = params
        .since
        .map(|s| DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)))
        .transpose()
        .map_err(|e| ApiError::invalid("since", format!("not an RFC 3339 time: {e}")))?;
    let body = match params.kind.as_deref() {
        Some("status") => export::jsonl(&state.store.export_status_labels(since).await?),
        Some("grouping") => export::jsonl(&export::grouping_stream(
            &state.store.export_grouping(since).await?,
        )),
        _ => return Err(ApiError::invalid("kind", "kind must be status or grouping")),
    }
    .map_err(anyhow::Error::from)?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

async fn analytics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(state.store.analytics().await?))
}
