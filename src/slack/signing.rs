//! Slack request signatures: `X-Slack-Signature: v0=<hex HMAC-SHA256>` of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` keyed by the app's signing secret, compared in
//! constant time; a timestamp more than five minutes from now is refused (a captured request cannot
//! be replayed later). The clock is injected ([`Clock`]) so that tests use Slack's documented
//! example from 2018 without depending on today's date.

use crate::config::Secret;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
pub const SIGNATURE_HEADER: &str = "x-slack-signature";

/// How far a request's timestamp may be from now, either way (Slack's guidance: five minutes).
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// Seconds since the Unix epoch, as the verifier sees them.
pub trait Clock: Send + Sync {
    fn now_unix(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        chrono::Utc::now().timestamp()
    }
}

/// A clock stopped at one instant (tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_unix(&self) -> i64 {
        self.0
    }
}

/// Why a request's signature was refused. Each answers 401; the message names the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Request-Timestamp")]
    MissingTimestamp,
    #[error("X-Slack-Request-Timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("X-Slack-Request-Timestamp is more than 5 minutes from now")]
    Stale,
    #[error("missing X-Slack-Signature")]
    MissingSignature,
    #[error("X-Slack-Signature is not v0=<hex>")]
    Malformed,
    #[error("X-Slack-Signature does not match the body")]
    Mismatch,
    #[error("Slack requests are not configured (TRIAGE_SLACK_SIGNING_SECRET is unset)")]
    NotConfigured,
}

impl SignatureError {
    /// The message as a static string (for `ApiError::Unauthorized`).
    pub fn message(self) -> &'static str {
        match self {
            SignatureError::MissingTimestamp => "missing X-Slack-Request-Timestamp",
            SignatureError::BadTimestamp => "X-Slack-Request-Timestamp is not a Unix time in seconds",
            SignatureError::Stale => "X-Slack-Request-Timestamp is more than 5 minutes from now",
            SignatureError::MissingSignature => "missing X-Slack-Signature",
            SignatureError::Malformed => "X-Slack-Signature is not v0=<hex>",
            SignatureError::Mismatch => "X-Slack-Signature does not match the body",
            SignatureError::NotConfigured => {
                "Slack requests are not configured (TRIAGE_SLACK_SIGNING_SECRET is unset)"
            }
        }
    }
}

/// Checks Slack's signature on requests (events, interactivity). Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    secret: Secret,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(secret: Secret, clock: Arc<dyn Clock>) -> Self {
        Verifier { secret, clock }
    }

    /// With the system clock.
    pub fn system(secret: Secret) -> Self {
        Verifier::new(secret, Arc::new(SystemClock))
    }

    /// Verifies a request from its headers and raw body (before the body is parsed).
    pub fn verify_request(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
        self.verify(header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER), body)
    }

    /// Verifies `signature` (`v0=<hex>`) over `v0:{timestamp}:{body}`, the timestamp within
    /// [`MAX_SKEW_SECS`] of the clock.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        if self.secret.is_empty() {
            return Err(SignatureError::NotConfigured);
        }
        let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?.trim();
        let seconds: i64 = timestamp
            .parse()
            .ok()
            .filter(|_| !timestamp.is_empty() && timestamp.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(SignatureError::BadTimestamp)?;
        if (self.clock.now_unix() - seconds).abs() > MAX_SKEW_SECS {
            return Err(SignatureError::Stale);
        }
        let signature = signature.ok_or(SignatureError::MissingSignature)?.trim();
        let expected = signature
            .strip_prefix("v0=")
            .and_then(|h| hex::decode(h).ok())
            .filter(|bytes| bytes.len() == 32)
            .ok_or(SignatureError::Malformed)?;
        // `verify_slice` compares in constant time.
        mac(&self.secret, timestamp, body)
            .verify_slice(&expected)
            .map_err(|_| SignatureError::Mismatch)
    }
}

fn mac(secret: &Secret, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// The `X-Slack-Signature` value Slack would send for `body` at `timestamp` (the test suites'
/// fake Slack signs its deliveries with it).
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's documented example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

    fn verifier_at(now: i64) -> Verifier {
        Verifier::new(Secret::new(SECRET), Arc::new(FixedClock(now)))
    }

    #[test]
    fn slacks_documented_example_verifies() {
        let v = verifier_at(1_531_420_618);
        assert_eq!(
            v.verify(Some(TIMESTAMP), Some(SIGNATURE), BODY.as_bytes()),
            Ok(())
        );
        assert_eq!(sign(&Secret::new(SECRET), TIMESTAMP, BODY.as_bytes()), SIGNATURE);
        // Through headers, as the routes call it.
        let mut headers = HeaderMap::new();
        headers.insert(TIMESTAMP_HEADER, TIMESTAMP.parse().unwrap());
        headers.insert(SIGNATURE_HEADER, SIGNATURE.parse().unwrap());
        assert_eq!(v.verify_request(&headers, BODY.as_bytes()), Ok(()));
    }

    #[test]
    fn bad_missing_and_stale_signatures_are_refused() {
        let v = verifier_at(1_531_420_618);
        let body = BODY.as_bytes();
        let flipped = format!("{}{}", &SIGNATURE[..SIGNATURE.len() - 1], "a");
        let table: [(Option<&str>, Option<&str>, &[u8], SignatureError); 10] = [
            (Some(TIMESTAMP), Some(&flipped), body, SignatureError::Mismatch),
            (
                Some(TIMESTAMP),
                Some(SIGNATURE),
                b"token=xyzz0WbapA4vBCDEFasx0q6G",
                SignatureError::Mismatch,
            ),
            // The timestamp is signed: changing it breaks the signature.
            (
                Some("1531420619"),
                Some(SIGNATURE),
                body,
                SignatureError::Mismatch,
            ),
            (Some(TIMESTAMP), None, body, SignatureError::MissingSignature),
            (None, Some(SIGNATURE), body, SignatureError::MissingTimestamp),
            (
                Some(TIMESTAMP),
                Some(&SIGNATURE[3..]),
                body,
                SignatureError::Malformed,
            ),
            (Some(TIMESTAMP), Some("v0=zz"), body, SignatureError::Malformed),
            (
                Some(TIMESTAMP),
                Some("v1=a2114d57"),
                body,
                SignatureError::Malformed,
            ),
            (
                Some("15314206l8"),
                Some(SIGNATURE),
                body,
                SignatureError::BadTimestamp,
            ),
            (
                Some("-1531420618"),
                Some(SIGNATURE),
                body,
                SignatureError::BadTimestamp,
            ),
        ];
        for (ts, sig, body, want) in table {
            assert_eq!(v.verify(ts, sig, body), Err(want), "{ts:?} {sig:?}");
        }
        // Five minutes either way is accepted; one second more is stale, even when signed right.
        for (now, ok) in [
            (1_531_420_918, true),
            (1_531_420_318, true),
            (1_531_420_919, false),
            (1_531_420_317, false),
        ] {
            let want = if ok { Ok(()) } else { Err(SignatureError::Stale) };
            assert_eq!(
                verifier_at(now).verify(Some(TIMESTAMP), Some(SIGNATURE), body),
                want,
                "now {now}"
            );
        }
        // No secret configured: nothing verifies.
        let unset = Verifier::new(Secret::default(), Arc::new(FixedClock(1_531_420_618)));
        assert_eq!(
            unset.verify(Some(TIMESTAMP), Some(SIGNATURE), body),
            Err(SignatureError::NotConfigured)
        );
        for e in [
            SignatureError::Stale,
            SignatureError::Mismatch,
            SignatureError::NotConfigured,
        ] {
            assert_eq!(e.message(), e.to_string());
        }
    }

    #[test]
    fn the_system_clock_accepts_a_fresh_signature() {
        let secret = Secret::new("s3cret");
        let now = chrono::Utc::now().timestamp().to_string();
        let sig = sign(&secret, &now, b"{}");
        assert_eq!(
            Verifier::system(secret).verify(Some(&now), Some(&sig), b"{}"),
            Ok(())
        );
    }
}
