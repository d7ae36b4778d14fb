//! The one set of input rules, applied by every adapter before anything reaches the store, so
//! that SQLite and PostgreSQL see (and answer) exactly the same inputs:
//!
//! - **NUL** (U+0000) is refused in every string (PostgreSQL cannot store it in text, and
//!   silently dropping it would change what the client sent);
//! - **identifiers** (channel, user, owner, account and conversation ids, issue keys) are
//!   non-empty, at most [`MAX_ID_CHARS`] characters, without control characters or surrounding
//!   whitespace;
//! - **free text** (message text, titles, names, search queries) keeps tab, newline and other
//!   control characters but not NUL, within its length limit; message text and names must be
//!   non-empty after trimming;
//! - **linked issues** have an `http(s)` URL of at most [`MAX_URL_CHARS`], a known provider
//!   ([`ISSUE_PROVIDERS`]) if any, and a known state ([`ISSUE_STATES`]).
//!
//! Lengths count Unicode scalar values (what a user sees as characters, roughly).

use super::account::{AccountInput, AccountPatch, TeamMember};
use super::conversation::{ConversationPatch, LinkedIssue, NewConversation};

pub const MAX_ID_CHARS: usize = 255;
pub const MAX_NAME_CHARS: usize = 255;
pub const MAX_TITLE_CHARS: usize = 500;
/// Slack's own limit for a message's text.
pub const MAX_TEXT_CHARS: usize = 40_000;
pub const MAX_URL_CHARS: usize = 2048;
pub const MAX_QUERY_CHARS: usize = 500;
pub const ISSUE_PROVIDERS: [&str; 4] = ["github", "gitlab", "jira", "linear"];
pub const ISSUE_STATES: [&str; 2] = ["open", "closed"];

/// An input that breaks a rule: the field (a JSON path such as `channels[2]`) and a message for
/// the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: String) -> Invalid {
    Invalid {
        field: field.to_owned(),
        message,
    }
}

fn length(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    let n = value.chars().count();
    if n > max {
        return Err(invalid(
            field,
            format!("{field} is {n} characters long; at most {max} are accepted"),
        ));
    }
    Ok(())
}

fn no_nul(field: &str, value: &str) -> Result<(), Invalid> {
    if value.contains('\0') {
        return Err(invalid(
            field,
            format!("{field} must not contain NUL characters (U+0000)"),
        ));
    }
    Ok(())
}

/// A required identifier.
pub fn id(field: &str, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        return Err(invalid(field, format!("{field} is required")));
    }
    no_nul(field, value)?;
    if value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    if value.trim() != value {
        return Err(invalid(
            field,
            format!("{field} must not start or end with whitespace"),
        ));
    }
    length(field, value, MAX_ID_CHARS)
}

pub fn opt_id(field: &str, value: Option<&str>) -> Result<(), Invalid> {
    value.map_or(Ok(()), |v| id(field, v))
}

/// Free text of at most `max` characters; `required` refuses an empty or blank one.
pub fn text(field: &str, value: &str, max: usize, required: bool) -> Result<(), Invalid> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, format!("{field} is empty")));
    }
    no_nul(field, value)?;
    length(field, value, max)
}

/// A message's text.
pub fn message_text(field: &str, value: &str) -> Result<(), Invalid> {
    text(field, value, MAX_TEXT_CHARS, true)
}

/// A full-text search query (may be blank: then it filters nothing).
pub fn search_query(field: &str, value: &str) -> Result<(), Invalid> {
    text(field, value, MAX_QUERY_CHARS, false)
}

/// An issue URL: `http://` or `https://`, a host, no whitespace or control characters.
pub fn issue_url(field: &str, value: &str) -> Result<(), Invalid> {
    no_nul(field, value)?;
    length(field, value, MAX_URL_CHARS)?;
    let lower = value.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    let ok = host.is_some_and(|h| !h.is_empty() && !h.starts_with(':'))
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(invalid(
            field,
            format!("{field} must be an http(s) URL such as https://github.com/org/repo/issues/1"),
        ));
    }
    Ok(())
}

pub fn linked_issue(prefix: &str, issue: &LinkedIssue) -> Result<(), Invalid> {
    let f = |name: &str| format!("{prefix}.{name}");
    issue_url(&f("url"), &issue.url)?;
    if let Some(provider) = &issue.provider {
        if !ISSUE_PROVIDERS.contains(&provider.as_str()) {
            return Err(invalid(
                &f("provider"),
                format!("{} must be one of {}", f("provider"), ISSUE_PROVIDERS.join(", ")),
            ));
        }
    }
    opt_id(&f("key"), issue.key.as_deref())?;
    if !ISSUE_STATES.contains(&issue.state.as_str()) {
        return Err(invalid(
            &f("state"),
            format!("{} must be one of {}", f("state"), ISSUE_STATES.join(", ")),
        ));
    }
    Ok(())
}

impl NewConversation {
    pub fn validate(&self) -> Result<(), Invalid> {
        id("channel", &self.channel)?;
        text("title", &self.title, MAX_TITLE_CHARS, false)?;
        opt_id("owner", self.owner.as_deref())?;
        opt_id("account_id", self.account_id.as_deref())?;
        self.linked_issue
            .as_ref()
            .map_or(Ok(()), |i| linked_issue("linked_issue", i))
    }
}

impl ConversationPatch {
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(title) = &self.title {
            text("title", title, MAX_TITLE_CHARS, false)?;
        }
        opt_id("owner", self.owner.as_ref().and_then(|o| o.as_deref()))?;
        match &self.linked_issue {
            Some(Some(issue)) => linked_issue("linked_issue", issue),
            _ => Ok(()),
        }
    }
}

fn channels(list: &[String]) -> Result<(), Invalid> {
    list.iter()
        .enumerate()
        .try_for_each(|(i, c)| id(&format!("channels[{i}]"), c))
}

impl AccountInput {
    pub fn validate(&self) -> Result<(), Invalid> {
        text("name", &self.name, MAX_NAME_CHARS, true)?;
        opt_id("owner", self.owner.as_deref())?;
        channels(&self.channels)
    }
}

impl AccountPatch {
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(name) = &self.name {
            text("name", name, MAX_NAME_CHARS, true)?;
        }
        opt_id("owner", self.owner.as_ref().and_then(|o| o.as_deref()))?;
        self.channels.as_deref().map_or(Ok(()), channels)
    }
}

impl TeamMember {
    pub fn validate(&self) -> Result<(), Invalid> {
        id("slack_user_id", &self.slack_user_id)?;
        text("name", &self.name, MAX_NAME_CHARS, true)?;
        opt_id("triage_channel", self.triage_channel.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(id("channel", "C0123ABC").is_ok());
        let field = |v: &str| id("channel", v).err().map(|e| e.message);
        assert_eq!(field(""), Some("channel is required".into()));
        assert_eq!(field("  "), Some("channel is required".into()));
        assert!(field("C\0").unwrap().contains("NUL"));
        assert!(field("C\u{7}").unwrap().contains("control"));
        assert!(field(" C").unwrap().contains("whitespace"));
        assert!(id("channel", &"x".repeat(MAX_ID_CHARS)).is_ok());
        assert!(field(&"x".repeat(MAX_ID_CHARS + 1))
            .unwrap()
            .contains("at most 255"));
        // Characters, not bytes.
        assert!(id("channel", &"é".repeat(MAX_ID_CHARS)).is_ok());
    }

    #[test]
    fn free_text() {
        assert!(message_text("text", "line one\n\tline two\u{1b}").is_ok());
        assert!(message_text("text", " \n ").is_err());
        assert!(message_text("text", "a\0b").is_err());
        assert!(message_text("text", &"x".repeat(MAX_TEXT_CHARS + 1)).is_err());
        assert!(search_query("q", "").is_ok());
        assert!(search_query("q", "\0").is_err());
    }

    #[test]
    fn linked_issues() {
        let issue = |url: &str, provider: Option<&str>, state: &str| LinkedIssue {
            url: url.into(),
            provider: provider.map(Into::into),
            key: None,
            state: state.into(),
        };
        let field = |i: LinkedIssue| linked_issue("linked_issue", &i).err().map(|e| e.field);
        assert_eq!(
            field(issue("https://github.com/o/r/issues/1", Some("github"), "open")),
            None
        );
        assert_eq!(field(issue("HTTP://tracker.local:8080/x", None, "closed")), None);
        assert_eq!(
            field(issue("not a url", Some("github"), "open")).as_deref(),
            Some("linked_issue.url")
        );
        assert_eq!(
            field(issue("ftp://x/1", None, "open")).as_deref(),
            Some("linked_issue.url")
        );
        assert_eq!(
            field(issue("https:///1", None, "open")).as_deref(),
            Some("linked_issue.url")
        );
        assert_eq!(
            field(issue("https://x/1", Some("bogus"), "open")).as_deref(),
            Some("linked_issue.provider")
        );
        assert_eq!(
            field(issue("https://x/1", None, "done")).as_deref(),
            Some("linked_issue.state")
        );
    }
}
