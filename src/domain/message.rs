//! Messages: as stored, and as they enter the pipeline; Slack timestamps.

use super::status::ReplyLabel;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Who wrote a message: the customer, or the support team (an agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Agent => "agent",
        }
    }
}

impl FromStr for Role {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "customer" => Role::Customer,
            "agent" => Role::Agent,
            other => anyhow::bail!("unknown role `{other}`"),
        })
    }
}

/// A file shared with a message (a Slack `file_share`): its name and permalink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub name: String,
    #[serde(default)]
    pub permalink: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user: String,
    pub role: Role,
    pub text: String,
    /// Files shared with it (an attachment-only message has empty `text`).
    pub files: Vec<FileRef>,
    pub edited: bool,
    /// A tombstone: deleted in Slack, kept for the history.
    pub deleted: bool,
    pub label: Option<ReplyLabel>,
    pub score: Option<f32>,
}

/// A message entering the pipeline, `ts`/`thread_ts` normalised by [`normalize_ts`].
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingMessage {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user: String,
    pub role: Role,
    pub text: String,
    pub files: Vec<FileRef>,
    /// Its sentence embedding (from inference); stored with the message so any replica can
    /// rebuild the grouper's view of the channel.
    pub embedding: Option<Vec<f32>>,
}

impl IncomingMessage {
    /// True for a reply inside a Slack thread (a thread's root has `thread_ts == ts`).
    pub fn in_thread(&self) -> bool {
        self.thread_ts.as_deref().is_some_and(|t| t != self.ts)
    }

    /// The key shared by a thread's root and its replies.
    pub fn thread_key(&self) -> &str {
        self.thread_ts.as_deref().unwrap_or(&self.ts)
    }

    pub fn sent_at(&self) -> DateTime<Utc> {
        ts_to_time(&self.ts).unwrap_or_else(Utc::now)
    }

    /// What a new conversation is titled after: the text, or the file names of an
    /// attachment-only message.
    pub fn title_source(&self) -> String {
        if self.text.trim().is_empty() && !self.files.is_empty() {
            let names: Vec<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
            names.join(", ")
        } else {
            self.text.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Slack timestamp: {0}")]
pub struct BadTs(pub String);

/// The latest second a ts may name: 9999-12-31T23:59:59Z (what both databases and chrono hold).
pub const MAX_TS_SECONDS: u64 = 253_402_300_799;

/// Normalises a Slack ts (`"1700000000.000100"`, `"1700000000"` or a JSON number) to
/// `seconds.microseconds` with six digits, so equal instants compare equal as text. The one ts
/// parser of every adapter: plain decimal digits only (no sign, no exponent: `"1.7e9"` and
/// `1e308` are refused), seconds from 1 to [`MAX_TS_SECONDS`] (`"0"` is no message's time);
/// digits past the microsecond are dropped.
pub fn normalize_ts(value: &serde_json::Value) -> Result<String, BadTs> {
    let bad = || BadTs(value.to_string());
    let text = match value {
        serde_json::Value::String(s) => s.trim().to_owned(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(bad()),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((&text, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    if !(1..=MAX_TS_SECONDS).contains(&secs) {
        return Err(bad());
    }
    let micros: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    Ok(format!("{secs}.{micros}"))
}

/// The instant of a normalised Slack ts.
pub fn ts_to_time(ts: &str) -> Option<DateTime<Utc>> {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    Utc.timestamp_opt(secs.parse().ok()?, micros.parse::<u32>().ok()?.checked_mul(1000)?)
        .single()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalises_slack_timestamps() {
        let table = [
            (json!("1700000000.0001"), Some("1700000000.000100")),
            (json!("1700000000"), Some("1700000000.000000")),
            (json!(" 1700000000.123456 "), Some("1700000000.123456")),
            (json!(1700000000), Some("1700000000.000000")),
            (json!(1700000000.5), Some("1700000000.500000")),
            (json!("-1"), None),
            (json!("abc"), None),
            (json!("1.2.3"), None),
            (json!(""), None),
            (json!(null), None),
            (json!("0"), None),
            (json!(0), None),
            (json!("0.5"), None),
            (json!("1.7e9"), None),
            (json!(1e308), None),
            (json!("1e308"), None),
            (json!("+1700000000"), None),
            (json!(253_402_300_800u64), None),
            (json!(253_402_300_799u64), Some("253402300799.000000")),
            (json!("1"), Some("1.000000")),
        ];
        for (input, want) in table {
            assert_eq!(normalize_ts(&input).ok().as_deref(), want, "{input}");
        }
    }

    #[test]
    fn thread_keys_and_times() {
        let msg = |ts: &str, thread_ts: Option<&str>| IncomingMessage {
            channel: "C1".into(),
            ts: ts.into(),
            thread_ts: thread_ts.map(Into::into),
            user: "U1".into(),
            role: Role::Customer,
            text: String::new(),
            files: Vec::new(),
            embedding: None,
        };
        // (ts, thread_ts, in_thread, thread_key)
        let table = [
            ("2.000000", None, false, "2.000000"),
            ("2.000000", Some("2.000000"), false, "2.000000"),
            ("3.000000", Some("2.000000"), true, "2.000000"),
        ];
        for (ts, thread_ts, in_thread, key) in table {
            let m = msg(ts, thread_ts);
            assert_eq!(
                (m.in_thread(), m.thread_key()),
                (in_thread, key),
                "{ts} {thread_ts:?}"
            );
        }
        assert_eq!(
            ts_to_time("1700000000.500000").unwrap().timestamp_millis(),
            1_700_000_000_500
        );
        assert_eq!(ts_to_time("x"), None);
    }
}
