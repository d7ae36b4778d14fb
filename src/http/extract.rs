//! The one JSON body extractor (and the query extractor) for every route: malformed JSON is 400
//! `bad_request`, JSON of the wrong shape 422 `invalid_request` naming the field, a body over
//! [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES) 413. It reads any Content-Type.

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

/// Why a body could not be read: over the limit (413) or cut off (400).
pub fn body_error(rejection: BytesRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::BadRequest(rejection.body_text()),
    }
}

/// Parses a JSON body; a value of the wrong shape names the path of the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => ApiError::Invalid {
                field: (path != ".").then_some(path),
                message: inner.to_string(),
            },
            _ => ApiError::BadRequest(format!("malformed JSON: {inner}")),
        }
    })
}

pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::Invalid {
                field: None,
                message: r.body_text(),
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
        assert_eq!((e.status_and_code().0.as_u16(), e.field()), (422, None));
    }
}
