//! `GET /board` (the Kanban, or the sign-in form), sign-in and sign-out, `GET /board/accounts`.

use super::session::{self, Viewer};
use super::view::{self, ago, page, priority_name, source_of, status_name, trimmed, Nav, PRIORITIES};
use crate::domain::{Account, Conversation, Priority, Status};
use crate::http::extract::Query;
use crate::http::{ApiError, AppState};
use crate::store::{CardDetail, ConversationFilter, PageRequest};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};

/// Cards per open column: the board shows every open conversation up to this many per status.
pub const OPEN_LIMIT: u32 = 5000;
/// Closed conversations read for the board, and shown (the most recently closed).
const CLOSED_READ: u32 = 200;
const CLOSED_SHOWN: usize = 20;
/// A single-status listing (`/board?status=closed`), per page.
const LIST_PAGE: u32 = 100;

#[derive(Deserialize, Default)]
pub struct BoardParams {
    token: Option<String>,
    user: Option<String>,
    owner: Option<String>,
    account: Option<String>,
    priority: Option<String>,
    channel: Option<String>,
    q: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

/// A filter value from the form: an empty field means no filter.
fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

pub async fn board(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<BoardParams>,
) -> Result<Response, ApiError> {
    if let Some(token) = p.token.as_deref() {
        return Ok(sign_in_with(&state, &headers, token, p.user.as_deref()));
    }
    let Some(user) = session::user_of(&state, &headers) else {
        return Ok(sign_in_page(StatusCode::OK, None));
    };
    let priority = given(&p.priority)
        .map(|v| v.parse::<Priority>())
        .transpose()
        .map_err(|e| ApiError::invalid("priority", e.to_string()))?;
    let only = given(&p.status)
        .map(|v| v.parse::<Status>())
        .transpose()
        .map_err(|e| ApiError::invalid("status", e.to_string()))?;
    let filter = ConversationFilter {
        status: None,
        owner: given(&p.owner),
        account: given(&p.account),
        channel: given(&p.channel),
        q: given(&p.q),
    };
    let (accounts, team) = tokio::try_join!(state.store.list_accounts(), state.store.list_team())?;
    let mut columns = Vec::new();
    let mut next_cursor = None;
    match only {
        Some(status) => {
            let f = ConversationFilter {
                status: Some(status),
                ..filter.clone()
            };
            let page = state
                .store
                .list_conversations(
                    &f,
                    PageRequest {
                        cursor: given(&p.cursor),
                        limit: LIST_PAGE,
                    },
                )
                .await?;
            next_cursor = page.next_cursor;
            columns.push((status, page.items, false));
        }
        None => {
            let read = |status: Status| {
                let f = ConversationFilter {
                    status: Some(status),
                    ..filter.clone()
                };
                let limit = if status == Status::Closed {
                    CLOSED_READ
                } else {
                    OPEN_LIMIT
                };
                let store = state.store.clone();
                async move {
                    store
                        .list_conversations(&f, PageRequest { cursor: None, limit })
                        .await
                }
            };
            let (a, b, c, d, e) = tokio::try_join!(
                read(Status::New),
                read(Status::OnYou),
                read(Status::InProgress),
                read(Status::OnHold),
                read(Status::Closed)
            )?;
            for (status, page) in Status::ALL.into_iter().zip([a, b, c, d, e]) {
                let more = page.next_cursor.is_some();
                let mut items = page.items;
                if status == Status::Closed {
                    items.sort_by(|x, y| y.closed_at.cmp(&x.closed_at));
                    let more = more || items.len() > CLOSED_SHOWN;
                    items.truncate(CLOSED_SHOWN);
                    columns.push((status, items, more));
                } else {
                    columns.push((status, items, more));
                }
            }
        }
    }
    for (_, items, _) in &mut columns {
        items.retain(|c| priority.is_none_or(|p| c.priority == p));
    }
    let ids: Vec<String> = columns
        .iter()
        .flat_map(|(_, items, _)| items.iter().map(|c| c.id.clone()))
        .collect();
    let details: HashMap<String, CardDetail> = state
        .store
        .card_details(&ids)
        .await?
        .into_iter()
        .map(|d| (d.conversation_id.clone(), d))
        .collect();
    let names: HashMap<&str, &str> = accounts
        .iter()
        .map(|a| (a.id.as_str(), a.name.as_str()))
        .collect();
    let owners: BTreeSet<String> = team
        .iter()
        .map(|m| m.slack_user_id.clone())
        .chain(accounts.iter().filter_map(|a| a.owner.clone()))
        .chain(
            columns
                .iter()
                .flat_map(|(_, items, _)| items.iter().filter_map(|c| c.owner.clone())),
        )
        .collect();
    let channels: BTreeSet<String> = accounts
        .iter()
        .flat_map(|a| a.channels.iter().cloned())
        .chain(
            columns
                .iter()
                .flat_map(|(_, items, _)| items.iter().map(|c| c.channel.clone())),
        )
        .collect();
    let count = |s: Status| {
        columns
            .iter()
            .find(|(st, _, _)| *st == s)
            .map(|(_, items, more)| (items.len(), *more))
    };
    let now = Utc::now();
    let card = |c: &Conversation| {
        render_card(
            c,
            details.get(&c.id),
            names.get(c.account_id.as_deref().unwrap_or("")).copied(),
            now,
        )
    };
    let query_without_status = filter_query(&p);
    let body = html! {
        h1 class="sr-only" { "Board" }
        @if only.is_none() {
            section class="counts" aria-label="Waiting on the team" {
                @for s in [Status::New, Status::OnYou] {
                    @if let Some((n, more)) = count(s) {
                        a class={"count " (s.as_str())} href={"#col-" (s.as_str())} {
                            strong data-count=(s.as_str()) { (n) @if more { "+" } }
                            " " (status_name(s))
                        }
                    }
                }
            }
        }
        form class="filters" role="search" method="get" action="/board" {
            @if let Some(s) = only { input type="hidden" name="status" value=(s.as_str()); }
            label { span { "Search" } input type="search" name="q" value=[given(&p.q)] placeholder="words in messages"; }
            (select("owner", "Owner", &given(&p.owner), owners.iter().map(|o| (o.clone(), o.clone()))))
            (select("account", "Account", &given(&p.account), accounts.iter().map(|a| (a.id.clone(), a.name.clone()))))
            (select("priority", "Priority", &given(&p.priority), PRIORITIES.iter().map(|p| (p.as_str().to_owned(), priority_name(*p).to_owned()))))
            (select("channel", "Channel", &given(&p.channel), channels.iter().map(|c| (c.clone(), c.clone()))))
            button type="submit" { "Apply" }
            a href="/board" { "Clear" }
        }
        div class={"board" @if only.is_some() { " single" }} id="board" {
            @for (status, items, more) in &columns {
                @let s = status.as_str();
                section class="column" data-column=(s) id={"col-" (s)} aria-labelledby={"h-" (s)} {
                    h2 id={"h-" (s)} { (status_name(*status)) " " span class="n" { (items.len()) @if *more { "+" } } }
                    ol class="cards" aria-label={(status_name(*status)) " conversations"} {
                        @for c in items { (card(c)) }
                    }
                    @if only.is_none() && *status == Status::Closed {
                        a class="all" href={"/board?status=closed" (query_without_status)} { "All closed conversations" }
                    } @else if *more && only.is_none() {
                        a class="all" href={"/board?status=" (s) (query_without_status)} { "All " (status_name(*status)) }
                    }
                }
            }
        }
        @if let Some(cursor) = next_cursor {
            a class="all" href={"/board?status=" (only.map_or("", Status::as_str)) "&cursor=" (cursor) (query_without_status)} { "Older" }
        }
        dialog id="hold-dialog" aria-labelledby="hold-title" {
            form method="dialog" {
                h2 id="hold-title" { "Put on hold" }
                p { "On Hold needs the issue the customer waits for; the conversation returns to On You when it closes." }
                label { span { "Issue URL" } input type="url" name="url" id="hold-url" required placeholder="https://github.com/org/repo/issues/1"; }
                div class="buttons" {
                    button type="submit" value="ok" { "Put on hold" }
                    button type="submit" value="cancel" formnovalidate { "Cancel" }
                }
            }
        }
        div id="move-menu" class="menu" role="menu" hidden {}
    };
    Ok(view::html_response(
        StatusCode::OK,
        page("Board", Some(&user), Nav::Board, Some("board"), body),
    ))
}

/// The filters of a board URL (for links that keep them), as `&k=v` pairs.
fn filter_query(p: &BoardParams) -> String {
    [
        ("owner", &p.owner),
        ("account", &p.account),
        ("priority", &p.priority),
        ("channel", &p.channel),
        ("q", &p.q),
    ]
    .iter()
    .filter_map(|(k, v)| given(v).map(|v| format!("&{k}={}", urlencode(&v))))
    .collect()
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn select(
    name: &str,
    label: &str,
    current: &Option<String>,
    options: impl Iterator<Item = (String, String)>,
) -> Markup {
    html! {
        label {
            span { (label) }
            select name=(name) {
                option value="" { "Any" }
                @for (value, text) in options {
                    option value=(value) selected[current.as_deref() == Some(value.as_str())] { (text) }
                }
            }
        }
    }
}

fn render_card(
    c: &Conversation,
    d: Option<&CardDetail>,
    account: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> Markup {
    let title = if c.title.trim().is_empty() {
        "(no text)"
    } else {
        c.title.as_str()
    };
    let source = source_of(d.and_then(|d| d.status_actor.as_deref()));
    html! {
        li class={"card prio-" (c.priority.as_str())} data-id=(c.id) data-status=(c.status.as_str()) {
            a class="title" href={"/board/c/" (c.id)} draggable="false" { (trimmed(title, 140)) }
            p class="who" {
                (d.and_then(|d| d.customer.as_deref()).unwrap_or("no customer message"))
                @if let Some(a) = account { " · " span class="acct" { (a) } }
            }
            p class="meta" {
                span title="age of the conversation" { "opened " (ago(c.created_at, now)) " ago" }
                @if let Some(t) = d.and_then(|d| d.last_customer_at) {
                    " · " span title="since the customer last wrote" { "customer " (ago(t, now)) " ago" }
                }
            }
            p class="meta" {
                span class="owner" { (c.owner.as_deref().unwrap_or("unassigned")) }
                @if c.priority != Priority::None { " · " span class={"prio " (c.priority.as_str())} { (priority_name(c.priority)) } }
                " · " span { (c.message_count) " msg" @if c.message_count != 1 { "s" } }
                @if let Some((kind, text)) = &source { " · " span class={"src " (kind)} title=(text) { (kind) } }
                @if let Some(issue) = &c.linked_issue { " · " a class="issue" href=(issue.url) { "issue (" (issue.state) ")" } }
            }
            button type="button" class="move" data-move=(c.id) aria-haspopup="menu" aria-expanded="false"
                aria-label={"Move: " (trimmed(title, 60))} { "Move" }
        }
    }
}

pub fn sign_in_page(status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        h1 { "Sign in to the board" }
        @if let Some(e) = error { p class="error" role="alert" { (e) } }
        form method="post" action="/board/sign-in" class="sign-in" {
            label { span { "API token" } input type="password" name="token" required autocomplete="current-password"; }
            label { span { "Your name (recorded on your changes)" }
                input type="text" name="user" pattern="[A-Za-z0-9_.@\\-]{1,64}" autocomplete="username" placeholder="e.g. alice"; }
            button type="submit" { "Sign in" }
        }
        p class="hint" { "Any API token of this server (TRIAGE_API_TOKENS) works; you can also open /board?token=… once." }
    };
    view::html_response(status, page("Sign in", None, Nav::Other, None, body))
}

/// A valid token sets the session cookie and redirects to the board; an invalid one shows the form.
fn sign_in_with(state: &AppState, headers: &HeaderMap, token: &str, user: Option<&str>) -> Response {
    let user = user
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .unwrap_or(session::DEFAULT_USER);
    if !session::valid_user(user) {
        return sign_in_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("A name may use letters, digits and _ . @ - (at most 64)."),
        );
    }
    let open = state.config.api_tokens.is_empty();
    if !open && !state.config.api_tokens.accepts(token) {
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("That token is not one of this server's API tokens."),
        );
    }
    let cookie = session::set_cookie(state, user, session::is_https(headers));
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/board".to_owned()),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
    #[serde(default)]
    user: Option<String>,
}

pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    if !session::same_origin(&headers) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            Some("Sign in from this server's own page."),
        );
    }
    sign_in_with(&state, &headers, &f.token, f.user.as_deref())
}

pub async fn sign_out() -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::clear_cookie()),
            (header::LOCATION, "/board".to_owned()),
        ],
    )
        .into_response()
}

pub async fn accounts(State(state): State<AppState>, Viewer(user): Viewer) -> Result<Response, ApiError> {
    let (accounts, team) = tokio::try_join!(state.store.list_accounts(), state.store.list_team())?;
    let mut open: HashMap<String, usize> = HashMap::new();
    for status in [Status::New, Status::OnYou, Status::InProgress, Status::OnHold] {
        let f = ConversationFilter {
            status: Some(status),
            ..Default::default()
        };
        let page = state
            .store
            .list_conversations(
                &f,
                PageRequest {
                    cursor: None,
                    limit: OPEN_LIMIT,
                },
            )
            .await?;
        for c in page.items {
            if let Some(a) = c.account_id {
                *open.entry(a).or_default() += 1;
            }
        }
    }
    let body = html! {
        h1 { "Accounts" }
        datalist id="team-list" {
            @for m in &team { option value=(m.slack_user_id) { (m.name) } }
        }
        @if accounts.is_empty() { p { "No accounts yet (POST /v1/accounts)." } }
        ul class="accounts" {
            @for a in &accounts { (account_row(a, open.get(&a.id).copied().unwrap_or(0))) }
        }
    };
    Ok(view::html_response(
        StatusCode::OK,
        page("Accounts", Some(&user), Nav::Accounts, None, body),
    ))
}

fn account_row(a: &Account, open: usize) -> Markup {
    html! {
        li class="account" id={"a-" (a.id)} {
            details {
                summary {
                    strong { (a.name) } " · owner " span class="owner" { (a.owner.as_deref().unwrap_or("none")) }
                    " · " a href={"/board?account=" (urlencode(&a.id))} { (open) " open" }
                }
                p { "Channels: " @if a.channels.is_empty() { "none" } @for (i, ch) in a.channels.iter().enumerate() { @if i > 0 { ", " } code { (ch) } } }
                form class="action" data-action={"/board/api/accounts/" (a.id)} data-kind="account-owner" {
                    label { span { "Account owner" } input type="text" name="owner" list="team-list" value=[a.owner.as_deref()]; }
                    button type="submit" { "Save owner" }
                }
            }
        }
    }
}
