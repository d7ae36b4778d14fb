//! The one request body of `POST /v1/group` and `POST /v1/messages`, and its one validation
//! (`ts` / `thread_ts` normalised by [`crate::domain::normalize_ts`]).

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use crate::domain::{normalize_ts, validate, FileRef, Role};

/// `{"channel", "ts", "thread_ts"?, "user", "text", "role"?, "files"?, "dry_run"?}`; `ts` is a Slack
/// ts string or a number of seconds; `files` (`[{"name", "permalink"?}]`) are kept on the message.
#[derive(Debug, Deserialize)]
pub struct MessageBody {
    pub channel: String,
    pub ts: Value,
    #[serde(default)]
    pub thread_ts: Option<Value>,
    pub user: String,
    pub text: String,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub files: Vec<FileRef>,
    #[serde(default)]
    pub dry_run: bool,
}

/// A checked message: channel and user identifiers, a non-blank text (see [`validate`]), `ts`
/// values as `seconds.micros`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageIn {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user: String,
    pub text: String,
    /// As sent; each endpoint picks its default.
    pub role: Option<Role>,
    pub files: Vec<FileRef>,
    pub dry_run: bool,
}

impl MessageBody {
    pub fn validate(self) -> Result<MessageIn, ApiError> {
        validate::id("channel", &self.channel)?;
        validate::id("user", &self.user)?;
        // An attachment-only message (a Slack file share) may have no text; any other must.
        if self.files.is_empty() {
            validate::message_text("text", &self.text)?;
        } else {
            validate::text("text", &self.text, validate::MAX_TEXT_CHARS, false)?;
        }
        for (i, f) in self.files.iter().enumerate() {
            if f.name.trim().is_empty() {
                return Err(ApiError::invalid(
                    format!("files[{i}].name"),
                    "a file needs a name",
                ));
            }
            validate::text(
                &format!("files[{i}].name"),
                &f.name,
                validate::MAX_NAME_CHARS,
                true,
            )?;
        }
        let ts = slack_ts(&self.ts, "ts")?;
        let thread_ts = match self.thread_ts {
            None | Some(Value::Null) => None,
            Some(t) => Some(slack_ts(&t, "thread_ts")?),
        };
        Ok(MessageIn {
            channel: self.channel,
            ts,
            thread_ts,
            user: self.user,
            text: self.text,
            role: self.role,
            files: self.files,
            dry_run: self.dry_run,
        })
    }
}

fn slack_ts(value: &Value, field: &str) -> Result<String, ApiError> {
    normalize_ts(value).map_err(|_| {
        ApiError::invalid(
            field,
            format!(
                "{field} must be a Slack ts like \"1700000000.000100\" or a positive number of seconds, not {value}"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<MessageIn, ApiError> {
        super::super::extract::parse_json::<MessageBody>(v.to_string().as_bytes())?.validate()
    }

    #[test]
    fn one_normalisation_for_both_endpoints() {
        let m = check(
            json!({"channel": "C", "ts": 1700000000.5, "user": "U", "text": "x",
                             "thread_ts": "1700000000.0001", "role": "agent"}),
        )
        .unwrap();
        assert_eq!(m.ts, "1700000000.500000");
        assert_eq!(m.thread_ts.as_deref(), Some("1700000000.000100"));
        assert_eq!(m.role, Some(Role::Agent));
        let m =
            check(json!({"channel": "C", "ts": "1700000000", "user": "U", "text": "x", "thread_ts": null}))
                .unwrap();
        assert_eq!(
            (m.ts.as_str(), m.thread_ts, m.dry_run),
            ("1700000000.000000", None, false)
        );
    }

    #[test]
    fn errors_name_the_field() {
        let field = |v: Value| check(v).unwrap_err().field().map(str::to_owned);
        let ok = json!({"channel": "C", "ts": "1", "user": "U", "text": "x"});
        let with = |k: &str, v: Value| {
            let mut b = ok.clone();
            b[k] = v;
            b
        };
        assert_eq!(field(with("channel", json!(" "))).as_deref(), Some("channel"));
        assert_eq!(field(with("user", json!(""))).as_deref(), Some("user"));
        assert_eq!(field(with("text", json!(" \n"))).as_deref(), Some("text"));
        assert_eq!(
            field(with("channel", json!("C".repeat(256)))).as_deref(),
            Some("channel")
        );
        assert_eq!(field(with("ts", json!("0"))).as_deref(), Some("ts"));
        assert_eq!(field(with("ts", json!("1.7e9"))).as_deref(), Some("ts"));
        assert_eq!(field(with("ts", json!(1e308))).as_deref(), Some("ts"));
        assert_eq!(field(with("ts", json!("yesterday"))).as_deref(), Some("ts"));
        assert_eq!(field(with("ts", json!(-1))).as_deref(), Some("ts"));
        assert_eq!(
            field(with("thread_ts", json!(true))).as_deref(),
            Some("thread_ts")
        );
        assert_eq!(field(with("role", json!("boss"))).as_deref(), Some("role"));
        assert_eq!(field(with("dry_run", json!("yes"))).as_deref(), Some("dry_run"));
        assert_eq!(
            field(with("files", json!([{"name": "a.log"}, {"name": " "}]))).as_deref(),
            Some("files[1].name")
        );
    }
}
