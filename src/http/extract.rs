//! The one JSON body extractor (and the query extractor) for every route: malformed JSON is 400
//! `bad_request`, JSON of the wrong shape 422 `invalid_request` naming the field, a body over
//! [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES) 413, a body too slow to arrive 408. It reads any
//! Content-Type. A NUL character in any string of a body, path or query is 422 naming where
//! ([`crate::domain::validate`]'s rule, applied here once for every route). Messages are written
//! for the client: no Rust type names, no parser positions.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(Json)
    }
}

/// Why a body could not be read: over the limit (413), too slow (408, see
/// [`super::server::BodyTimeout`]) or cut off (400).
pub fn body_error(rejection: BytesRejection) -> ApiError {
    if let Some(timeout) = super::server::body_timeout(&rejection) {
        return ApiError::TimedOut(timeout.to_string());
    }
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::BadRequest(rejection.body_text()),
    }
}

/// Parses a JSON body; a value of the wrong shape names the path of the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if has_nul_escape(bytes) {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            if let Some(field) = nul_path(&value, String::new()) {
                let field = if field.is_empty() {
                    "body".to_owned()
                } else {
                    field
                };
                return Err(ApiError::invalid(
                    field.clone(),
                    format!("{field} must not contain NUL characters (U+0000)"),
                ));
            }
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = for_users(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Data => {
                let parent = (path != ".").then_some(path);
                // serde names a missing or unknown field in its message, not its path.
                let named = quoted_after(&message, "missing field `")
                    .or_else(|| quoted_after(&message, "unknown field `"))
                    .map(|name| match &parent {
                        Some(p) => format!("{p}.{name}"),
                        None => name.to_owned(),
                    });
                ApiError::Invalid {
                    field: Some(named.or(parent).unwrap_or_else(|| "body".to_owned())),
                    message,
                }
            }
            _ => ApiError::BadRequest(format!("malformed JSON: {message}")),
        }
    })
}

/// Whether the raw JSON holds a `\u0000` escape (the only way a NUL can be in JSON text).
fn has_nul_escape(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2; // an escaped character, possibly a backslash
        } else {
            i += 1;
        }
    }
    false
}

/// The JSON path (`a.b[2]`) of the first key or string holding a NUL.
fn nul_path(value: &serde_json::Value, here: String) -> Option<String> {
    use serde_json::Value;
    let join = |key: &str| {
        if here.is_empty() {
            key.to_owned()
        } else {
            format!("{here}.{key}")
        }
    };
    match value {
        Value::String(s) => s.contains('\0').then_some(here),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{here}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join(&k.replace('\0', "\\u0000")))
            } else {
                nul_path(v, join(k))
            }
        }),
        _ => None,
    }
}

/// The text between `prefix` and the next backtick.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    rest.split('`').next()
}

/// A serde message in the client's words: no parser position, no Rust type names.
pub fn for_users(message: &str) -> String {
    let mut m = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message[..i].to_owned(),
        _ => message.to_owned(),
    };
    if m.starts_with("data did not match any variant of untagged enum") {
        return "the value has the wrong type or format".to_owned();
    }
    for (rust, words) in [
        ("untagged enum ", "a value of another form"),
        ("struct variant ", "an object"),
        ("tuple variant ", "a list"),
        ("struct ", "an object"),
        ("enum ", "a string"),
        ("tuple struct ", "a list"),
    ] {
        while let Some(i) = m.find(&format!("expected {rust}")) {
            let start = i + "expected ".len();
            let name_end = m[start + rust.len()..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(m.len(), |j| start + rust.len() + j);
            m.replace_range(start..name_end, words);
        }
    }
    for (rust, words) in [
        ("u8", "a small non-negative integer"),
        ("u16", "a non-negative integer"),
        ("u32", "a non-negative integer"),
        ("u64", "a non-negative integer"),
        ("usize", "a non-negative integer"),
        ("i32", "an integer"),
        ("i64", "an integer"),
        ("f32", "a number"),
        ("f64", "a number"),
        ("a borrowed string", "a string"),
    ] {
        let pattern = format!("expected {rust}");
        if m.ends_with(&pattern) {
            let cut = m.len() - rust.len();
            m.replace_range(cut.., words);
        }
    }
    m
}

/// Refuses a request whose path or query holds an encoded NUL (`%00`): 422 naming the query
/// parameter (or `path`), the same answer on both backends for every route.
pub async fn refuse_nul(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let has = |s: &str| s.contains("%00");
    let uri = req.uri();
    let field = if has(uri.path()) {
        Some("path".to_owned())
    } else if uri.query().is_some_and(has) {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| q.0)
            .unwrap_or_default();
        Some(
            pairs
                .into_iter()
                .find(|(k, v)| k.contains('\0') || v.contains('\0'))
                .map_or_else(|| "query".to_owned(), |(k, _)| k.replace('\0', "\\u0000")),
        )
    } else {
        None
    };
    match field {
        Some(field) => ApiError::invalid(
            field.clone(),
            format!("{field} must not contain NUL characters (U+0000)"),
        )
        .into_response(),
        None => next.run(req).await,
    }
}

pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|r| {
                // "Failed to deserialize query string: limit: invalid digit found in string"
                let text = r.body_text();
                let detail = text
                    .split_once("query string: ")
                    .map_or(text.as_str(), |(_, d)| d);
                let (field, message) = match detail.split_once(": ") {
                    Some((f, m)) if !f.is_empty() && f.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                        (f.to_owned(), format!("{f}: {}", for_users(m)))
                    }
                    _ => ("query".to_owned(), for_users(detail)),
                };
                ApiError::Invalid {
                    field: Some(field),
                    message,
                }
            })?;
        Ok(Query(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        status: Option<Colour>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Colour {
        Red,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"status": "blue"}"#).unwrap_err();
        assert_eq!((e.status_and_code().0.as_u16(), e.field()), (422, Some("status")));
        let e = parse_json::<Body>(br#"{"inner": {"n": -1}}"#).unwrap_err();
        assert_eq!(e.field(), Some("inner.n"));
        let e = parse_json::<Body>(br#"{"status": "#).unwrap_err();
        assert_eq!(e.status_and_code().1, "bad_request");
        let e = parse_json::<Body>(br#""text""#).unwrap_err();
        assert_eq!((e.status_and_code().0.as_u16(), e.field()), (422, Some("body")));
        assert_eq!(e.to_string(), "invalid type: string \"text\", expected an object");
        let e = parse_json::<Inner>(br#"{}"#).unwrap_err();
        assert_eq!(
            (e.field(), e.to_string().as_str()),
            (Some("n"), "missing field `n`")
        );
        let e = parse_json::<Body>(br#"{"inner": {"n": "x"}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid type: string \"x\", expected a non-negative integer"
        );
    }

    #[test]
    fn nul_anywhere_is_refused_with_its_path() {
        let e = parse_json::<serde_json::Value>(br#"{"a": [1, {"b": "x\u0000"}]}"#).unwrap_err();
        assert_eq!((e.status_and_code().0.as_u16(), e.field()), (422, Some("a[1].b")));
        // An escaped backslash followed by "u0000" is text, not a NUL.
        assert!(parse_json::<serde_json::Value>(br#"{"a": "\\u0000"}"#).is_ok());
        assert!(!has_nul_escape(br#"{"a": "\\u0000"}"#));
        assert!(has_nul_escape(br#"{"a": "\\\u0000"}"#));
    }
}
