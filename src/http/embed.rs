//! `POST /v1/embed`: text-embeddings-inference's shape, `{"inputs": "text" | ["text", ...]}` ->
//! `[[f32; 384], ...]`, L2-normalised.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::extract::Json;
use super::{ApiError, AppState};
use crate::queue::Timings;

pub async fn embed(State(state): State<AppState>, Json(body): Json<Value>) -> Result<Response, ApiError> {
    let texts = inputs(&body)?;
    let handle = state
        .models
        .embed
        .get()
        .ok_or_else(|| ApiError::unavailable("the embedding model is still loading"))?;
    // Bulk work: its own queue budget, behind ingestion (see `crate::queue`).
    let (vectors, timings) = handle.bulk().embed(texts).await?;
    let mut resp = axum::Json(vectors).into_response();
    timing_headers(&mut resp, &timings);
    Ok(resp)
}

/// Per-phase timings in microseconds, as text-embeddings-inference sends them.
pub(super) fn timing_headers(resp: &mut Response, timings: &Timings) {
    let h = resp.headers_mut();
    for (name, d) in [
        ("x-tokenization-time", timings.tokenization),
        ("x-queue-time", timings.queue),
        ("x-inference-time", timings.inference),
    ] {
        h.insert(name, HeaderValue::from(d.as_micros() as u64));
    }
}

/// Validates `inputs` with messages that name the offending element.
fn inputs(body: &Value) -> Result<Vec<String>, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "expected a JSON object with \"inputs\""))?;
    let list = match obj.get("inputs") {
        None | Some(Value::Null) => return Err(ApiError::invalid("inputs", "\"inputs\" is required")),
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "inputs",
                "\"inputs\" must be a string or a list of strings",
            ))
        }
    };
    if list.is_empty() {
        return Err(ApiError::invalid("inputs", "\"inputs\" must not be empty"));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if s.trim().is_empty() => Err(ApiError::invalid(
                format!("inputs[{i}]"),
                format!("inputs[{i}] is an empty string"),
            )),
            Value::String(s) => Ok(s),
            other => Err(ApiError::invalid(
                format!("inputs[{i}]"),
                format!("inputs[{i}] must be a string, found {}", type_name(&other)),
            )),
        })
        .collect()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_accepts_a_string_or_a_list() {
        assert_eq!(inputs(&json!({"inputs": "hi"})).unwrap(), vec!["hi"]);
        assert_eq!(inputs(&json!({"inputs": ["a", "b"]})).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn inputs_names_the_problem() {
        let e = inputs(&json!({"inputs": []})).unwrap_err();
        assert_eq!(e.field(), Some("inputs"));
        let e = inputs(&json!({"inputs": ["a", 3]})).unwrap_err();
        assert_eq!(e.field(), Some("inputs[1]"));
        assert!(e.to_string().contains("a number"));
        assert!(inputs(&json!({"text": "a"})).is_err());
        assert!(inputs(&json!(["a"])).is_err());
    }
}
