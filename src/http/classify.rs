//! `POST /v1/classify`: `{"text": "...", "role": "agent"}` -> `{"label", "scores", "model"}`;
//! `{"inputs": ["...", ...]}` -> a list of those. For a head over the embedding, texts are embedded
//! through the embedder's queue (so they batch with every other request); the lexical n-gram head
//! reads the text alone.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::extract::Json;
use super::{ApiError, AppState};
use crate::classify::Label;

enum Body {
    One(String),
    Many(Vec<String>),
}

pub async fn classify(State(state): State<AppState>, Json(body): Json<Value>) -> Result<Response, ApiError> {
    let body = parse(&body)?;
    let (Some(handle), Some(model)) = (state.models.embed.get(), state.models.status.get()) else {
        return Err(ApiError::unavailable("the models are still loading"));
    };
    // One text is an adapter classifying a message as it arrives (the ingest lane); a list is
    // bulk work, behind ingestion with its own budget (see `crate::queue`).
    let (texts, handle) = match &body {
        Body::One(t) => (vec![t.clone()], handle.clone()),
        Body::Many(ts) => (ts.clone(), handle.bulk()),
    };
    // A fine-tuned model reads the embedding through its own top layers (run in the same batches,
    // instead of the shared top layers).
    // The lexical head reads only the text: no forward, no embedding timings.
    let (vectors, timings) = if !model.needs_embeddings() {
        (Vec::new(), None)
    } else if model.needs_tail() {
        let (v, t) = handle.embed_tuned(texts.clone()).await?;
        (v, Some(t))
    } else {
        let (v, t) = handle.embed(texts.clone()).await?;
        (v, Some(t))
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let preds = model
        .predict(&refs, &vectors)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let id = model.id();
    let results: Vec<Value> = preds
        .iter()
        .map(|p| {
            json!({
                "label": p.label.as_str(),
                "scores": {"in_progress": p.score(Label::InProgress), "closed": p.score(Label::Closed)},
                "model": id,
            })
        })
        .collect();
    let mut resp = match body {
        Body::One(_) => axum::Json(results.into_iter().next().unwrap_or(Value::Null)).into_response(),
        Body::Many(_) => axum::Json(results).into_response(),
    };
    if let Some(timings) = &timings {
        super::embed::timing_headers(&mut resp, timings);
    }
    Ok(resp)
}

fn text_of(v: &Value, field: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) if s.trim().is_empty() => Err(ApiError::invalid(field, format!("{field} is empty"))),
        Value::String(s) => Ok(s.clone()),
        Value::Null => Err(ApiError::invalid(field, format!("{field} is required"))),
        _ => Err(ApiError::invalid(field, format!("{field} must be a string"))),
    }
}

fn check_role(v: Option<&Value>, field: &str) -> Result<(), ApiError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(r)) if r == "agent" || r == "customer" => Ok(()),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("{field} must be \"agent\" or \"customer\""),
        )),
    }
}

/// `{"text", "role"?}` or `{"inputs": [text | {"text", "role"?}, ...]}`.
fn parse(body: &Value) -> Result<Body, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "expected a JSON object with \"text\" or \"inputs\""))?;
    if let Some(inputs) = obj.get("inputs") {
        let list = inputs
            .as_array()
            .ok_or_else(|| ApiError::invalid("inputs", "\"inputs\" must be a list"))?;
        if list.is_empty() {
            return Err(ApiError::invalid("inputs", "\"inputs\" must not be empty"));
        }
        let texts = list
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(o) => {
                    check_role(o.get("role"), &format!("inputs[{i}].role"))?;
                    text_of(
                        o.get("text").unwrap_or(&Value::Null),
                        &format!("inputs[{i}].text"),
                    )
                }
                v => text_of(v, &format!("inputs[{i}]")),
            })
            .collect::<Result<_, _>>()?;
        return Ok(Body::Many(texts));
    }
    check_role(obj.get("role"), "role")?;
    Ok(Body::One(text_of(
        obj.get("text").unwrap_or(&Value::Null),
        "text",
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_field() {
        assert!(matches!(parse(&json!({"text": "hi", "role": "agent"})), Ok(Body::One(t)) if t == "hi"));
        assert!(matches!(parse(&json!({"inputs": ["a", {"text": "b"}]})), Ok(Body::Many(v)) if v.len() == 2));
        let e = parse(&json!({"text": "  "})).err().unwrap();
        assert_eq!((e.status_and_code().0.as_u16(), e.field()), (422, Some("text")));
        let e = parse(&json!({"inputs": ["ok", ""]})).err().unwrap();
        assert_eq!(e.field(), Some("inputs[1]"));
        let e = parse(&json!({"inputs": [{"text": ""}]})).err().unwrap();
        assert_eq!(e.field(), Some("inputs[0].text"));
        let e = parse(&json!({"text": "a", "role": "bot"})).err().unwrap();
        assert_eq!(e.field(), Some("role"));
        assert_eq!(parse(&json!({})).err().unwrap().field(), Some("text"));
        assert_eq!(
            parse(&json!({"inputs": []})).err().unwrap().field(),
            Some("inputs")
        );
    }
}
