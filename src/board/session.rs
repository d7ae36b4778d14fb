//! Board sign-in: an API token exchanged once for a signed session cookie (HttpOnly,
//! SameSite=Strict), and the checks every board request makes: a session to read, a session and a
//! same-origin `Origin` (or `Referer`) to write (CSRF).
//!
//! The cookie is `<user>.<expiry unix seconds>.<hex HMAC-SHA256>` under a key derived from the API
//! tokens, so every replica accepts it and changing the tokens signs everyone out. With no API
//! tokens configured (`serve` then binds to loopback only) the board is open like the API, and
//! acts as `human:board`.

use crate::http::{ApiError, AppState};
use crate::store::Actor;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const COOKIE: &str = "triage_session";
/// How long a sign-in lasts.
pub const SESSION_SECONDS: i64 = 12 * 3600;
/// The name acting when nobody signed in with one (and in open mode).
pub const DEFAULT_USER: &str = "board";
const KEY_PURPOSE: &str = "triage board session v1";

/// A user name fit for a cookie and an actor: 1-64 of `[A-Za-z0-9_.@-]`.
pub fn valid_user(user: &str) -> bool {
    (1..=64).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

fn mac(key: &[u8; 32], payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    mac
}

/// The cookie value for `user` until `expires` (unix seconds).
pub fn sign(key: &[u8; 32], user: &str, expires: i64) -> String {
    let payload = format!("{user}.{expires}");
    let tag = hex::encode(mac(key, &payload).finalize().into_bytes());
    format!("{payload}.{tag}")
}

/// The user of a cookie value signed with `key` and not expired at `now`.
pub fn verify(key: &[u8; 32], value: &str, now: i64) -> Option<String> {
    let (payload, tag) = value.rsplit_once('.')?;
    let (user, expires) = payload.rsplit_once('.')?;
    let expires: i64 = expires.parse().ok()?;
    let tag = hex::decode(tag).ok()?;
    mac(key, payload).verify_slice(&tag).ok()?;
    (expires > now && valid_user(user)).then(|| user.to_owned())
}

pub fn key(state: &AppState) -> [u8; 32] {
    state.config.api_tokens.derive_key(KEY_PURPOSE)
}

/// The `Set-Cookie` value signing `user` in; `secure` when the request came over HTTPS.
pub fn set_cookie(state: &AppState, user: &str, secure: bool) -> String {
    let expires = chrono::Utc::now().timestamp() + SESSION_SECONDS;
    format!(
        "{COOKIE}={}; Path=/board; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict{}",
        sign(&key(state), user, expires),
        if secure { "; Secure" } else { "" }
    )
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/board; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// True when the request reached us over HTTPS (directly or through a proxy that says so).
pub fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The signed-in user of a request, if any (anyone in open mode).
pub fn user_of(state: &AppState, headers: &HeaderMap) -> Option<String> {
    if state.config.api_tokens.is_empty() {
        return Some(DEFAULT_USER.to_owned());
    }
    let value = cookie_value(headers, COOKIE)?;
    verify(&key(state), value, chrono::Utc::now().timestamp())
}

/// The origin (`scheme://host[:port]`) of an `Origin` or `Referer` value.
fn origin_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find('/').map_or(url.len(), |i| url.len() - rest.len() + i);
    Some(&url[..end])
}

/// CSRF: a write must come from a page of this server. Browsers send `Origin` with every POST;
/// without it the `Referer` must match; without either the write is refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let claimed = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(origin_of);
    claimed.is_some_and(|origin| {
        origin
            .split_once("://")
            .is_some_and(|(scheme, h)| matches!(scheme, "http" | "https") && h.eq_ignore_ascii_case(host))
    })
}

/// A signed-in reader of the board (401 otherwise).
pub struct Viewer(pub String);

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        user_of(state, &parts.headers)
            .map(Viewer)
            .ok_or(ApiError::Unauthorized("sign in to the board first (GET /board)"))
    }
}

/// A signed-in user making a change from a board page: the session and the origin checked. The
/// actor of every change made through the board is `human:<user>`.
pub struct Editor(pub Actor);

impl FromRequestParts<AppState> for Editor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Viewer(user) = Viewer::from_request_parts(parts, state).await?;
        if parts.method != Method::GET && !same_origin(&parts.headers) {
            return Err(ApiError::Forbidden(
                "cross-origin write refused: board changes must come from the board's own pages",
            ));
        }
        Ok(Editor(Actor::Human(user)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_verify_only_unchanged_and_unexpired() {
        let key = [7u8; 32];
        let value = sign(&key, "alice", 1_000);
        assert_eq!(verify(&key, &value, 999).as_deref(), Some("alice"));
        assert_eq!(verify(&key, &value, 1_000), None, "expired");
        assert_eq!(verify(&[8u8; 32], &value, 0), None, "other key");
        let forged = value.replacen("alice", "mallory", 1);
        assert_eq!(verify(&key, &forged, 0), None, "changed user");
        let extended = value.replacen("1000", "9000", 1);
        assert_eq!(verify(&key, &extended, 0), None, "changed expiry");
        assert_eq!(verify(&key, "garbage", 0), None);
        assert_eq!(verify(&key, "a.b.c", 0), None);
    }

    #[test]
    fn user_names_are_restricted() {
        assert!(valid_user("alice") && valid_user("U024BE7LH") && valid_user("a.b-c_d@x"));
        assert!(!valid_user("") && !valid_user("a b") && !valid_user("a;b") && !valid_user(&"x".repeat(65)));
    }

    #[test]
    fn writes_need_a_same_origin_header() {
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(k.clone(), v.parse().unwrap());
            }
            h
        };
        let host = (header::HOST, "127.0.0.1:8080");
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:8080")
        ])));
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::REFERER, "http://127.0.0.1:8080/board/c/x?y=1")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:8081")
        ])));
        assert!(!same_origin(&headers(&[host.clone(), (header::ORIGIN, "null")])));
        assert!(!same_origin(&headers(&[host])), "neither Origin nor Referer");
    }
}
