//! The board over real HTTP on SQLite and PostgreSQL: sign-in, CSRF, actions recorded with the
//! person as actor, the grouper's reasons stored per message, server-sent events.

use super::{customer, last_status_event, no_redirects, sign_in};
use crate::tickets::helpers::{on_both_backends, send, spawn_app, Backend, TOKEN};
use serde_json::json;
use std::time::Duration;

on_both_backends!(
    signs_in_with_a_token_and_shows_nothing_without,
    writes_need_a_session_and_the_same_origin,
    reasons_are_stored_with_each_message,
    pages_render_conversations_accounts_and_filters,
    open_pages_hear_of_changes,
);

async fn signs_in_with_a_token_and_shows_nothing_without(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let id = customer(
        &app,
        "C1",
        "UCUST",
        1_700_000_000,
        None,
        "Our invoices page is blank",
    )
    .await;
    let http = no_redirects();
    let anonymous = http.get(format!("{}/board", app.address)).send().await.unwrap();
    assert_eq!(anonymous.status(), 200);
    let page = anonymous.text().await.unwrap();
    assert!(
        page.contains("Sign in") && !page.contains("invoices page"),
        "{page}"
    );
    for path in [
        format!("/board/c/{id}"),
        "/board/accounts".into(),
        "/board/events".into(),
    ] {
        let r = http.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let wrong = http
        .get(format!("{}/board?token=nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let good = http
        .get(format!("{}/board?token={TOKEN}&user=alice", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 303);
    assert_eq!(good.headers()["location"], "/board", "the token leaves the URL");
    let set = good.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/board"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap();
    let page = http
        .get(format!("{}/board", app.address))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let page = page.text().await.unwrap();
    assert!(
        page.contains("Our invoices page is blank") && page.contains("alice"),
        "{page}"
    );
    // A tampered cookie is no session.
    let forged = cookie.replace("alice", "mallory");
    let r = http
        .get(format!("{}/board/c/{id}", app.address))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The sign-in form posts the same way, from this origin only.
    let form = [("token", TOKEN), ("user", "bob")];
    let cross = http
        .post(format!("{}/board/sign-in", app.address))
        .form(&form)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let own = http
        .post(format!("{}/board/sign-in", app.address))
        .form(&form)
        .header("origin", &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 303);
}

async fn writes_need_a_session_and_the_same_origin(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let id = customer(&app, "C1", "UCUST", 1_700_000_000, None, "Export is failing").await;
    let cookie = sign_in(&app, "alice").await;
    let url = format!("{}/board/api/conversations/{id}", app.address);
    let body = json!({"status": "closed"});
    let post = |cookie: Option<&str>, origin: Option<&str>| {
        let mut r = app.client.post(&url).json(&body);
        if let Some(c) = cookie {
            r = r.header("cookie", c.to_owned());
        }
        if let Some(o) = origin {
            r = r.header("origin", o.to_owned());
        }
        send(r)
    };
    let (s, v) = post(None, Some(&app.address)).await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = post(Some(&cookie), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, _) = post(Some(&cookie), Some("http://evil.example")).await;
    assert_eq!(s, 403);
    assert_eq!(
        last_status_event(&app, &id).await,
        serde_json::Value::Null,
        "nothing changed yet"
    );
    let (s, v) = post(Some(&cookie), Some(&app.address)).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("closed")), "{v}");
    let e = last_status_event(&app, &id).await;
    assert_eq!(
        (e["actor"].as_str(), e["after"].as_str()),
        (Some("human:alice"), Some("closed")),
        "{e}"
    );
    // On Hold without an issue is refused with the API's error, naming the field.
    let reopen = app
        .client
        .post(&url)
        .header("cookie", &cookie)
        .header("origin", &app.address);
    let (s, v) = send(reopen.json(&json!({"status": "on_hold"}))).await;
    assert!((400..500).contains(&s), "{v}");
    // A malformed body is a JSON 4xx naming the field.
    let bad = app
        .client
        .post(&url)
        .header("cookie", &cookie)
        .header("origin", &app.address);
    let (s, v) = send(bad.json(&json!({"status": "sideways"}))).await;
    assert_eq!(s, 422, "{v}");
}

async fn reasons_are_stored_with_each_message(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let root = customer(&app, "C1", "UCUST", 1_700_000_000, None, "Login fails").await;
    let reply = customer(
        &app,
        "C1",
        "UCUST",
        1_700_000_100,
        Some(1_700_000_000),
        "Still failing",
    )
    .await;
    assert_eq!(root, reply);
    let store = triage::store::connect(&app.db.url).await.unwrap();
    let reasons = store.message_reasons(&root).await.unwrap();
    assert_eq!(reasons.len(), 2);
    assert_eq!(reasons[0].reasons[0]["signal"], "time");
    assert_eq!(reasons[1].reasons[0]["signal"], "thread");
    assert_eq!(reasons[1].reasons[0]["detail"], "same thread");
    assert!((reasons[1].confidence - 1.0).abs() < 1e-6);
    // A message moved elsewhere keeps its reasons; a merged conversation brings them along.
    let other = customer(&app, "C1", "UOTHER", 1_700_000_500, None, "Different topic").await;
    let cookie = sign_in(&app, "alice").await;
    let merge = app
        .client
        .post(format!("{}/board/api/conversations/{other}/merge", app.address));
    let (s, v) = send(
        merge
            .header("cookie", &cookie)
            .header("origin", &app.address)
            .json(&json!({"into": root})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(store.message_reasons(&root).await.unwrap().len(), 3);
    let details = store.card_details(&[root.clone()]).await.unwrap();
    assert_eq!(details[0].customer.as_deref(), Some("UCUST"));
    assert!(details[0].last_customer_at.is_some());
}

async fn pages_render_conversations_accounts_and_filters(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (s, acct) = send(app.post(
        "/v1/accounts",
        &json!({"name": "Acme", "owner": "UOWNER", "channels": ["C1"]}),
    ))
    .await;
    assert_eq!(s, 201, "{acct}");
    let a = customer(
        &app,
        "C1",
        "UCUST",
        1_700_000_000,
        None,
        "Webhooks stopped <script>alert(1)</script>",
    )
    .await;
    let b = customer(
        &app,
        "C2",
        "UCUST2",
        1_700_000_100,
        None,
        "Password reset mail never arrives",
    )
    .await;
    let cookie = sign_in(&app, "alice").await;
    let get = |path: String| {
        let r = app
            .client
            .get(format!("{}{path}", app.address))
            .header("cookie", &cookie);
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, page) = get("/board".into()).await;
    assert_eq!(s, 200);
    assert!(!page.contains("<script>alert(1)"), "text is escaped");
    assert!(page.contains("&lt;script&gt;") && page.contains("Acme") && page.contains("UOWNER"));
    let (_, page) = get("/board?account=".to_owned() + acct["id"].as_str().unwrap()).await;
    assert!(page.contains(&a) && !page.contains(&b), "account filter");
    let (_, page) = get("/board?q=password".into()).await;
    assert!(
        page.contains(&b) && !page.contains(&format!("data-id=\"{a}\"")),
        "search"
    );
    let (_, page) = get("/board?channel=C2&priority=none".into()).await;
    assert!(
        page.contains(&b) && !page.contains(&format!("data-id=\"{a}\"")),
        "channel filter"
    );
    let (s, _) = get("/board?priority=whenever".into()).await;
    assert_eq!(s, 422);
    let (s, page) = get(format!("/board/c/{a}")).await;
    assert_eq!(s, 200);
    assert!(
        page.contains("Why it joined") && page.contains("nothing related"),
        "{page}"
    );
    // An internal note from the board: by the signed-in person, shown in the timeline as a note.
    let add = app
        .client
        .post(format!("{}/board/api/conversations/{a}/notes", app.address));
    let (s, v) = send(
        add.header("cookie", &cookie)
            .header("origin", &app.address)
            .json(&json!({"text": "Called them, waiting on logs"})),
    )
    .await;
    assert_eq!((s, v["author"].as_str()), (201, Some("alice")), "{v}");
    let (_, page) = get(format!("/board/c/{a}")).await;
    assert!(
        page.contains("internal note") && page.contains("Called them, waiting on logs"),
        "{page}"
    );
    let (s, _) = get("/board/c/nope".into()).await;
    assert_eq!(s, 404);
    let (s, page) = get("/board/accounts".into()).await;
    assert!(
        s == 200 && page.contains("Acme") && page.contains("1 open"),
        "{page}"
    );
    let owner = app.client.post(format!(
        "{}/board/api/accounts/{}",
        app.address,
        acct["id"].as_str().unwrap()
    ));
    let (s, v) = send(
        owner
            .header("cookie", &cookie)
            .header("origin", &app.address)
            .json(&json!({"owner": "UNEW"})),
    )
    .await;
    assert_eq!((s, v["owner"].as_str()), (200, Some("UNEW")), "{v}");
}

async fn open_pages_hear_of_changes(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let cookie = sign_in(&app, "alice").await;
    let mut stream = app
        .client
        .get(format!("{}/board/events", app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&first));
    assert!(seen.contains("event: hello"), "{seen}");
    let id = customer(&app, "C1", "UCUST", 1_700_000_000, None, "Hello?").await;
    while !seen.contains("\"type\":\"message\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(&id), "{seen}");
}
