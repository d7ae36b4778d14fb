//! The one auth layer: bearer tokens for `/v1/*` (kept as SHA-256 digests, compared in constant
//! time; the scheme is case-insensitive), the acting user, and webhook signatures.

use super::error::ApiError;
use super::AppState;
use crate::store::Actor;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

pub use crate::config::Secret;

/// The accepted API tokens, kept as SHA-256 digests so that checking one takes the same time
/// whatever prefix of it an attacker guessed.
#[derive(Clone, Default)]
pub struct ApiTokens(Vec<[u8; 32]>);

impl ApiTokens {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(tokens: I) -> Self {
        ApiTokens(
            tokens
                .into_iter()
                .filter(|t| !t.as_ref().is_empty())
                .map(|t| digest(t.as_ref()))
                .collect(),
        )
    }

    /// No tokens configured: `/v1` is open (`serve` allows that only on a loopback address).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A secret key for `purpose` derived from the tokens (the board's session cookies): every
    /// replica with the same tokens derives the same key, and changing the tokens revokes it.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let mut h = Sha256::new();
        h.update(purpose.as_bytes());
        sorted.iter().for_each(|d| h.update(d));
        h.finalize().into()
    }

    pub fn accepts(&self, token: &str) -> bool {
        let candidate = digest(token);
        self.0
            .iter()
            .fold(false, |found, known| found | constant_time_eq(known, &candidate))
    }
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiTokens({} tokens)", self.0.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case, as RFC 9110 says).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim_start();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware for `/v1/*`. With no tokens configured the API is open; `serve` refuses that unless it
/// binds to a loopback address.
pub async fn require_bearer(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.config.api_tokens.is_empty() {
        return Ok(next.run(req).await);
    }
    match bearer(req.headers()) {
        Some(token) if state.config.api_tokens.accepts(token) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::Unauthorized("invalid bearer token")),
        None => Err(ApiError::Unauthorized("missing Authorization: Bearer <token>")),
    }
}

/// The person behind an API call, from `X-Triage-User` (default `api`): recorded as `human:<user>`.
pub struct Acting(pub Actor);

pub const USER_HEADER: &str = "x-triage-user";

impl<S: Send + Sync> FromRequestParts<S> for Acting {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let user = match parts.headers.get(USER_HEADER) {
            None => "api",
            Some(v) => v
                .to_str()
                .ok()
                .filter(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_graphic()))
                .ok_or_else(|| ApiError::invalid(USER_HEADER, "not a user id"))?,
        };
        Ok(Acting(Actor::Human(user.to_owned())))
    }
}

/// Checks a hex HMAC-SHA256 of `body` (GitHub's `sha256=<hex>` after its prefix, Linear's bare hex).
pub fn verify_hmac_sha256(secret: &Secret, body: &[u8], hex_signature: &str) -> bool {
    let Ok(signature) = hex::decode(hex_signature.trim()) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_documented_example_verifies() {
        let secret = Secret::new("It's a Secret to Everybody");
        let sig = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_hmac_sha256(&secret, b"Hello, World!", sig));
        assert!(!verify_hmac_sha256(&secret, b"Hello, World?", sig));
        assert!(!verify_hmac_sha256(&secret, b"Hello, World!", "zz"));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            bearer(&h).map(str::to_owned)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("BEARER  abc ").as_deref(), Some("abc"));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(with("Bearerabc"), None);
    }

    #[test]
    fn tokens_match_exactly() {
        let tokens = ApiTokens::new(["alpha", "", "beta"]);
        assert!(tokens.accepts("alpha") && tokens.accepts("beta"));
        assert!(!tokens.accepts("") && !tokens.accepts("alph") && !tokens.accepts("alphaa"));
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(***)");
    }
}
