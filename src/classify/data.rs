//! Labelled reply files: JSON Lines, one `{"text", "label", "kind"?, "source"?, "note"?}` per line
//! (other fields, such as the shared data's `votes`, are ignored); a real reply's `url` is kept. `kind`
//! says what sort of reply it is (`released`, `duplicate`, `info_request`, ...; see
//! `training-data/status/README.md`) and `source` where it comes from (`github`, `handwritten`);
//! `triage eval status` breaks its errors down by both. Every error names the file and line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Label;

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: Label,
    /// What sort of reply this is, when the file says.
    pub kind: Option<String>,
    /// Where the reply comes from, when the file says.
    pub source: Option<String>,
    /// The thread a real reply was taken from (`https://github.com/owner/repo/...`), when the file
    /// says; cross-validation keeps each repository's rows in one fold.
    pub url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no examples")]
    Empty { path: PathBuf },
}

#[derive(Deserialize)]
struct Row {
    text: Option<serde_json::Value>,
    label: Option<serde_json::Value>,
    kind: Option<serde_json::Value>,
    source: Option<serde_json::Value>,
    url: Option<serde_json::Value>,
}

/// An optional string field: absent or null is `None`, anything but a string is an error.
fn optional_string(v: Option<serde_json::Value>, name: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" must be a string")),
    }
}

/// Reads a whole file; blank lines are skipped, anything else must be a valid example.
pub fn load_jsonl(path: &Path) -> Result<Vec<Example>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let examples = parse_jsonl(&text).map_err(|(line, message)| DataError::Line {
        path: path.to_path_buf(),
        line,
        message,
    })?;
    if examples.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(examples)
}

/// Parses JSON Lines; an error is `(1-based line number, message)`.
pub fn parse_jsonl(text: &str) -> Result<Vec<Example>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line)
            .map_err(|e| (n, format!("not a JSON object with \"text\" and \"label\": {e}")))?;
        let text = match row.text {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s,
            Some(serde_json::Value::String(_)) => return Err((n, "\"text\" is empty".into())),
            None | Some(serde_json::Value::Null) => return Err((n, "\"text\" is missing".into())),
            Some(_) => return Err((n, "\"text\" must be a string".into())),
        };
        let label = match row.label {
            Some(serde_json::Value::String(s)) => Label::parse(&s).ok_or_else(|| {
                (
                    n,
                    format!(
                        "unknown label {s:?} (expected one of: {})",
                        Label::ALL.map(Label::as_str).join(", ")
                    ),
                )
            })?,
            None | Some(serde_json::Value::Null) => return Err((n, "\"label\" is missing".into())),
            Some(_) => return Err((n, "\"label\" must be a string".into())),
        };
        let kind = optional_string(row.kind, "kind").map_err(|m| (n, m))?;
        let source = optional_string(row.source, "source").map_err(|m| (n, m))?;
        let url = optional_string(row.url, "url").map_err(|m| (n, m))?;
        out.push(Example {
            text,
            label,
            kind,
            source,
            url,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_skips_blank_lines() {
        let rows = parse_jsonl(
            "{\"text\": \"Taking a look\", \"label\": \"in_progress\", \"note\": \"ack\"}\n\n\
             {\"text\": \"Fixed in 2.3.\", \"label\": \"closed\", \"source\": \"x\"}\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].label, Label::Closed);
        assert_eq!(rows[0].kind, None);
        assert_eq!(rows[1].source.as_deref(), Some("x"));
    }

    #[test]
    fn reads_kind_and_source_and_rejects_non_strings() {
        let rows = parse_jsonl(
            "{\"text\": \"Dup of #4\", \"label\": \"closed\", \"kind\": \"duplicate\", \"source\": \"github\", \"url\": \"u\"}\n",
        )
        .unwrap();
        assert_eq!(rows[0].kind.as_deref(), Some("duplicate"));
        assert_eq!(rows[0].source.as_deref(), Some("github"));
        assert_eq!(rows[0].url.as_deref(), Some("u"));
        let (line, msg) = parse_jsonl("{\"text\": \"a\", \"label\": \"closed\", \"kind\": 3}").unwrap_err();
        assert_eq!((line, msg.as_str()), (1, "\"kind\" must be a string"));
    }

    #[test]
    fn errors_name_the_line() {
        let ok = "{\"text\": \"a\", \"label\": \"closed\"}\n";
        let (line, msg) = parse_jsonl(&format!("{ok}{ok}not json\n")).unwrap_err();
        assert_eq!(line, 3);
        assert!(msg.contains("JSON"), "{msg}");
        let (line, msg) =
            parse_jsonl(&format!("{ok}{{\"text\": \"  \", \"label\": \"closed\"}}\n")).unwrap_err();
        assert_eq!((line, msg.as_str()), (2, "\"text\" is empty"));
        let (line, msg) = parse_jsonl("{\"label\": \"closed\"}").unwrap_err();
        assert_eq!((line, msg.as_str()), (1, "\"text\" is missing"));
        let (line, msg) = parse_jsonl("{\"text\": \"a\", \"label\": \"open\"}").unwrap_err();
        assert_eq!(line, 1);
        assert!(msg.contains("unknown label \"open\""), "{msg}");
    }

    #[test]
    fn file_errors_carry_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(&p, "{\"text\": \"a\", \"label\": \"closed\"}\n{oops\n").unwrap();
        let e = load_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains("d.jsonl:2:"), "{e}");
    }
}
