//! The web board: sign-in, CSRF, actions and reasons over real HTTP on both backends
//! ([`http`]), and end to end in headless Chromium ([`browser`]).

mod browser;
mod http;
mod webdriver;

use crate::tickets::helpers::{TestApp, TOKEN};
use reqwest::redirect::Policy;
use serde_json::{json, Value};

/// A client that shows redirects instead of following them (to read `Set-Cookie`).
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// Signs in as `user` with the API token; returns the `Cookie` header value.
pub async fn sign_in(app: &TestApp, user: &str) -> String {
    let resp = no_redirects()
        .get(format!("{}/board?token={TOKEN}&user={user}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

/// A customer message in `channel` at second `t` (optionally in `thread`); returns its
/// conversation id.
pub async fn customer(
    app: &TestApp,
    channel: &str,
    user: &str,
    t: u64,
    thread: Option<u64>,
    text: &str,
) -> String {
    let mut body = json!({"channel": channel, "ts": format!("{t}.000100"), "user": user, "text": text});
    if let Some(root) = thread {
        body["thread_ts"] = json!(format!("{root}.000100"));
    }
    let (status, v) = app.message(body).await;
    assert_eq!(status, 201, "{v}");
    v["conversation"]["id"].as_str().unwrap().to_owned()
}

/// The last status event of a conversation, through the API.
pub async fn last_status_event(app: &TestApp, id: &str) -> Value {
    let (status, v) =
        crate::tickets::helpers::send(app.get(&format!("/v1/conversations/{id}/events?limit=200"))).await;
    assert_eq!(status, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["kind"] == "status")
        .cloned()
        .unwrap_or(Value::Null)
}
