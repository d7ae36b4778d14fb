//! What every board page shares: the layout, names for statuses and priorities, short times.

use super::assets;
use crate::domain::{Priority, Status};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

pub fn status_name(s: Status) -> &'static str {
    s.display_name()
}

pub const PRIORITIES: [Priority; 5] = [
    Priority::Urgent,
    Priority::High,
    Priority::Medium,
    Priority::Low,
    Priority::None,
];

pub fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Urgent => "Urgent",
        Priority::High => "High",
        Priority::Medium => "Medium",
        Priority::Low => "Low",
        Priority::None => "No priority",
    }
}

/// "45s", "12m", "3h", "4d": how long ago `then` was.
pub fn ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - then).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `text` cut to at most `max` characters on a character boundary, with an ellipsis when cut.
pub fn trimmed(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((i, _)) => format!("{}…", text[..i].trim_end()),
    }
}

/// Where a status came from, for a card: `model`, `person` or `rule`, from the recorded actor.
pub fn source_of(actor: Option<&str>) -> Option<(&'static str, String)> {
    let actor = actor?;
    Some(if actor == "model" {
        ("model", "set by the model".to_owned())
    } else if let Some(who) = actor.strip_prefix("human:") {
        ("person", format!("set by {who}"))
    } else {
        ("rule", format!("set by {actor}"))
    })
}

pub enum Nav {
    Board,
    Accounts,
    Other,
}

/// A whole page. `live` names what the page follows over server-sent events (`board` or
/// `conversation:<id>`); `None` for pages that do not.
pub fn page(title: &str, user: Option<&str>, nav: Nav, live: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · triage" }
                link rel="stylesheet" href=(assets::css_url());
                script src=(assets::js_url()) defer {}
            }
            body data-live=[live] {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/board" { "triage" }
                    @if let Some(user) = user {
                        nav aria-label="Board pages" {
                            a href="/board" aria-current=[matches!(nav, Nav::Board).then_some("page")] { "Board" }
                            a href="/board/accounts" aria-current=[matches!(nav, Nav::Accounts).then_some("page")] { "Accounts" }
                        }
                        span class="who" { "Signed in as " strong { (user) } }
                        form method="post" action="/board/sign-out" class="inline" {
                            button type="submit" class="link" { "Sign out" }
                        }
                    }
                }
                div id="flash" role="alert" aria-live="assertive" {}
                div id="live-note" class="sr-only" role="status" aria-live="polite" {}
                main id="main" tabindex="-1" { (body) }
            }
        }
    }
}

pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_times_and_trimmed_text() {
        let now = Utc::now();
        let table = [(5, "5s"), (125, "2m"), (3 * 3600 + 5, "3h"), (86400 * 4, "4d")];
        for (secs, want) in table {
            assert_eq!(ago(now - chrono::Duration::seconds(secs), now), want);
        }
        assert_eq!(ago(now + chrono::Duration::seconds(30), now), "0s");
        assert_eq!(trimmed("  short ", 10), "short");
        assert_eq!(trimmed("héllo wörld again", 11), "héllo wörld…");
        assert_eq!(source_of(Some("human:alice")).unwrap().0, "person");
        assert_eq!(source_of(Some("model")).unwrap().0, "model");
        assert_eq!(source_of(Some("rule:issue_closed")).unwrap().0, "rule");
        assert_eq!(source_of(None), None);
    }
}
