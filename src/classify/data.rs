//! Labelled reply files: JSON Lines, one `{"text", "label", "note"?}` per line (extra fields, such as
//! the shared data's `source` or `votes`, are ignored). Every error names the file and line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Label;

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: Label,
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
        out.push(Example { text, label });
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
