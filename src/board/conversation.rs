//! `GET /board/c/{id}`: one conversation. The timeline (customer and team messages, edited and
//! deleted ones marked), why each message joined (the grouper's confidence and reasons), the
//! model's label and score on each team reply, the history of status, owner, priority and grouping
//! changes with their actors, and the actions (status, owner, priority, title, linked issue,
//! merge, move a message out).

use super::session::Viewer;
use super::view::{self, ago, priority_name, status_name, trimmed, Nav, PRIORITIES};
use crate::domain::{Conversation, Event, EventKind, Message, Note, Role, Status};
use crate::http::{ApiError, AppState};
use crate::store::{ConversationFilter, MessageReasons, PageRequest};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::{html, Markup};
use std::collections::HashMap;

/// Messages and events shown (a conversation longer than this shows its first ones and says so).
const SHOWN: u32 = 1000;
/// Other conversations offered as merge or move targets.
const CANDIDATES: u32 = 100;

pub async fn page(
    State(state): State<AppState>,
    Viewer(user): Viewer,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let conv = state.store.get_conversation(&id).await?;
    let all = PageRequest {
        cursor: None,
        limit: SHOWN,
    };
    let same_channel = ConversationFilter {
        channel: Some(conv.channel.clone()),
        ..Default::default()
    };
    let (messages, events, notes, reasons, others, team) = tokio::try_join!(
        state.store.list_messages(&id, all.clone()),
        state.store.list_events(&id, all.clone()),
        state.store.list_notes(&id, all),
        state.store.message_reasons(&id),
        state.store.list_conversations(
            &same_channel,
            PageRequest {
                cursor: None,
                limit: CANDIDATES
            }
        ),
        state.store.list_team(),
    )?;
    let reasons: HashMap<&str, &MessageReasons> =
        reasons.iter().map(|r| (r.message_id.as_str(), r)).collect();
    let others: Vec<&Conversation> = others.items.iter().filter(|c| c.id != id).collect();
    let truncated = messages.next_cursor.is_some();
    // Messages and internal notes in one timeline, by time.
    let mut timeline: Vec<(chrono::DateTime<Utc>, Markup)> = messages
        .items
        .iter()
        .map(|m| {
            let at = crate::domain::ts_to_time(&m.ts).unwrap_or(conv.created_at);
            (at, message(m, reasons.get(m.id.as_str()).copied(), &others))
        })
        .chain(notes.items.iter().map(|n| (n.created_at, note(n))))
        .collect();
    timeline.sort_by_key(|(at, _)| *at);
    let now = Utc::now();
    let title = if conv.title.trim().is_empty() {
        "(no text)".to_owned()
    } else {
        trimmed(&conv.title, 120)
    };
    let body = html! {
        nav class="crumbs" aria-label="Breadcrumb" { a href="/board" { "Board" } " › " span { (trimmed(&title, 60)) } }
        h1 { (title) }
        p class="facts" {
            span class={"badge " (conv.status.as_str())} data-field="status" { (status_name(conv.status)) }
            " · owner " strong data-field="owner" { (conv.owner.as_deref().unwrap_or("unassigned")) }
            " · " span data-field="priority" { (priority_name(conv.priority)) }
            " · channel " code { (conv.channel) }
            " · opened " (ago(conv.created_at, now)) " ago · " (conv.message_count) " messages"
            @if let Some(issue) = &conv.linked_issue {
                " · issue " a href=(issue.url) data-field="issue" { (issue.key.as_deref().unwrap_or(&issue.url)) } " (" (issue.state) ")"
            }
        }
        div class="conversation" {
            section class="timeline" aria-labelledby="h-timeline" {
                h2 id="h-timeline" { "Messages" }
                @if truncated { p class="hint" { "Showing the first " (SHOWN) " messages." } }
                ol class="messages" {
                    @for (_, item) in &timeline { (item) }
                }
            }
            aside class="side" {
                (actions(&conv, &others, &team))
                section aria-labelledby="h-history" {
                    h2 id="h-history" { "History" }
                    @if events.items.is_empty() { p { "No changes yet." } }
                    ol class="history" {
                        @for e in &events.items { (event(e)) }
                    }
                }
            }
        }
    };
    let live = format!("conversation:{id}");
    Ok(view::html_response(
        StatusCode::OK,
        view::page(&title, Some(&user), Nav::Other, Some(&live), body),
    ))
}

fn role_name(m: &Message) -> &'static str {
    match m.role {
        Role::Customer => "customer",
        Role::Agent => "team",
    }
}

fn message(m: &Message, why: Option<&MessageReasons>, others: &[&Conversation]) -> Markup {
    let class = format!(
        "msg {}{}{}",
        role_name(m),
        if m.deleted { " deleted" } else { "" },
        if m.thread_ts.as_deref().is_some_and(|t| t != m.ts) {
            " reply"
        } else {
            ""
        }
    );
    let at = crate::domain::ts_to_time(&m.ts);
    html! {
        li class=(class) id={"m-" (m.id)} data-message=(m.id) {
            header {
                strong { (m.user) } " "
                span class={"role " (role_name(m))} { (role_name(m)) }
                @if let Some(at) = at { " · " time datetime=(at.to_rfc3339()) { (at.format("%b %e %H:%M")) } }
                @if m.thread_ts.as_deref().is_some_and(|t| t != m.ts) { " · in thread" }
                @if m.edited { " · " em { "edited" } }
                @if m.deleted { " · " em class="gone" { "deleted" } }
            }
            @if m.deleted { p class="text" { del { (m.text) } } } @else { p class="text" { (m.text) } }
            @if let (Some(label), Role::Agent) = (m.label, m.role) {
                p class="label" { "Model: " strong { (label.as_str()) } @if let Some(s) = m.score { " (" (format!("{s:.2}")) ")" } }
            }
            @if let Some(r) = why {
                details class="why" {
                    summary { "Why it joined: " (format!("{:.0}%", r.confidence * 100.0)) " confident · " (reason_summary(r)) }
                    ul {
                        @for reason in r.reasons.as_array().into_iter().flatten() {
                            li {
                                strong { (reason["signal"].as_str().unwrap_or("?")) } ": "
                                (reason["detail"].as_str().unwrap_or(""))
                                @if let Some(w) = reason["weight"].as_f64() { " (weight " (format!("{w:.2}")) ")" }
                            }
                        }
                    }
                }
            }
            form class="action move-message" data-action={"/board/api/messages/" (m.id) "/move"} data-kind="move" {
                label { span { "Move this message to" }
                    select name="conversation_id" {
                        option value="" { "a new conversation (split)" }
                        @for c in others { option value=(c.id) { (trimmed(&c.title, 50)) " (" (status_name(c.status)) ")" } }
                    }
                }
                button type="submit" { "Move" }
            }
        }
    }
}

fn note(n: &Note) -> Markup {
    html! {
        li class="msg note" id={"n-" (n.id)} {
            header {
                strong { (n.author) } " " span class="role note" { "internal note" }
                " · " time datetime=(n.created_at.to_rfc3339()) { (n.created_at.format("%b %e %H:%M")) }
            }
            p class="text" { (n.text) }
        }
    }
}

fn reason_summary(r: &MessageReasons) -> String {
    let signals: Vec<&str> = r
        .reasons
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["signal"].as_str())
        .collect();
    if signals.is_empty() {
        "no signal recorded".into()
    } else {
        signals.join(", ")
    }
}

fn event(e: &Event) -> Markup {
    let what = match e.kind {
        EventKind::Status => "status",
        EventKind::Owner => "owner",
        EventKind::Priority => "priority",
        EventKind::Grouping => "grouping",
    };
    html! {
        li class={"event " (what)} {
            time datetime=(e.at.to_rfc3339()) { (e.at.format("%b %e %H:%M")) } " "
            strong { (what) } ": " (e.before.as_deref().unwrap_or("—")) " → " (e.after.as_deref().unwrap_or("—"))
            " by " span class="actor" { (e.actor) }
            @if let Some(l) = e.model_label {
                " (model said " (l.as_str()) @if let Some(s) = e.model_score { " " (format!("{s:.2}")) } ")"
            }
        }
    }
}

fn actions(c: &Conversation, others: &[&Conversation], team: &[crate::domain::TeamMember]) -> Markup {
    let api = format!("/board/api/conversations/{}", c.id);
    html! {
        section class="actions" aria-labelledby="h-actions" {
            h2 id="h-actions" { "Actions" }
            datalist id="team-list" { @for m in team { option value=(m.slack_user_id) { (m.name) } } }
            form class="action" data-action=(api) data-kind="status" {
                label { span { "Status" }
                    select name="status" id="status-select" {
                        @for s in Status::ALL { option value=(s.as_str()) selected[s == c.status] { (status_name(s)) } }
                    }
                }
                label { span { "Issue URL (needed for On Hold)" }
                    input type="url" name="issue_url" value=[c.linked_issue.as_ref().map(|i| i.url.as_str())]; }
                button type="submit" { "Set status" }
            }
            form class="action" data-action=(api) data-kind="owner" {
                label { span { "Owner" } input type="text" name="owner" list="team-list" value=[c.owner.as_deref()]; }
                button type="submit" { "Set owner" }
            }
            form class="action" data-action=(api) data-kind="priority" {
                label { span { "Priority" }
                    select name="priority" {
                        @for p in PRIORITIES { option value=(p.as_str()) selected[p == c.priority] { (priority_name(p)) } }
                    }
                }
                button type="submit" { "Set priority" }
            }
            form class="action" data-action=(api) data-kind="title" {
                label { span { "Title" } input type="text" name="title" value=(c.title) required; }
                button type="submit" { "Rename" }
            }
            form class="action" data-action=(api) data-kind="issue" {
                label { span { "Linked issue" } input type="url" name="url" value=[c.linked_issue.as_ref().map(|i| i.url.as_str())] placeholder="https://…"; }
                button type="submit" { "Link" }
                @if c.linked_issue.is_some() { button type="submit" name="unlink" value="1" { "Unlink" } }
            }
            form class="action" data-action={(api) "/merge"} data-kind="merge" {
                label { span { "Merge this conversation into" }
                    select name="into" id="merge-into" required {
                        option value="" { "choose a conversation" }
                        @for o in others { option value=(o.id) { (trimmed(&o.title, 50)) " (" (status_name(o.status)) ")" } }
                    }
                }
                button type="submit" { "Merge" }
            }
            form class="action" data-action={(api) "/notes"} data-kind="note" {
                label { span { "Internal note (the team only; never sent to the customer)" }
                    textarea name="text" rows="3" required {} }
                button type="submit" { "Add note" }
            }
        }
    }
}
