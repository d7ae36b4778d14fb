//! The board's stylesheet and script, compiled into the binary (no build step, no files at run
//! time); cached by the browser until the binary changes (the URLs carry a content hash).

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;

use crate::http::ApiError;

const CSS: &str = include_str!("assets/board.css");
const JS: &str = include_str!("assets/board.js");

/// A short content hash, so a new binary's assets are fetched anew.
fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}

static VERSION: LazyLock<String> = LazyLock::new(|| short_hash(&format!("{CSS}{JS}")));

pub fn css_url() -> String {
    format!("/board/assets/board.css?v={}", *VERSION)
}

pub fn js_url() -> String {
    format!("/board/assets/board.js?v={}", *VERSION)
}

pub async fn serve(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (body, kind) = match name.as_str() {
        "board.css" => (CSS, "text/css; charset=utf-8"),
        "board.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return Err(ApiError::NotFound("asset")),
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response())
}
