//! Listing conversations: filters, full-text search and cursor pagination.

use crate::tickets::helpers::{assert_error, on_both_backends, send, spawn_app, Backend, TestApp};
use serde_json::{json, Value};
use std::collections::HashSet;

on_both_backends!(filters_search_and_pages);

async fn list(app: &TestApp, query: &str) -> Value {
    let (code, body) = send(app.get(&format!("/v1/conversations?{query}"))).await;
    assert_eq!(code, 200, "{body}");
    body
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn filters_search_and_pages(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (code, account) = send(app.post(
        "/v1/accounts",
        &json!({"name": "Acme", "owner": "U9", "channels": ["C3"]}),
    ))
    .await;
    assert_eq!(code, 201, "{account}");

    for i in 0..25u64 {
        let text = if i % 5 == 0 {
            format!("Kubernetes pods crash-looping ({i})")
        } else {
            format!("Billing question number {i}")
        };
        let body = json!({"channel": "C2", "ts": format!("{}.000100", 1_700_000_000 + i * 100), "user": format!("U{i}"), "text": text});
        assert_eq!(app.message(body).await.0, 201);
    }
    let (_, acme) = app
        .message(json!({"channel": "C3", "ts": "1700000000.000100", "user": "UX", "text": "Acme needs help"}))
        .await;
    assert_eq!(acme["conversation"]["owner"], "U9");

    let mut seen = Vec::new();
    let mut query = "channel=C2&limit=10".to_owned();
    let mut pages = 0;
    loop {
        let page = list(&app, &query).await;
        pages += 1;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("channel=C2&limit=10&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 25));
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        25,
        "no conversation twice"
    );
    let first_page = list(&app, "channel=C2&limit=10").await;
    assert_eq!(
        first_page["items"][0]["title"], "Billing question number 24",
        "newest first"
    );

    let found = list(&app, "q=kubernetes").await;
    assert_eq!(found["items"].as_array().unwrap().len(), 5);
    assert!(found["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["title"].as_str().unwrap().starts_with("Kubernetes")));
    assert_eq!(
        list(&app, "q=kubernetes%20billing").await["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Search syntax in user input is taken literally, not as an error.
    assert_eq!(
        list(&app, "q=%22kube*%20OR%20(").await["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Search pages like the list: newest first, each conversation once.
    let mut searched = Vec::new();
    let mut query = "q=billing&limit=7".to_owned();
    while let Some(cursor) = {
        let page = list(&app, &query).await;
        searched.extend(ids(&page));
        page["next_cursor"].as_str().map(str::to_owned)
    } {
        query = format!("q=billing&limit=7&cursor={cursor}");
    }
    assert_eq!(searched.len(), 20);
    assert_eq!(searched.iter().collect::<HashSet<_>>().len(), 20);
    let in_list_order: Vec<String> = seen.iter().filter(|id| searched.contains(id)).cloned().collect();
    assert_eq!(searched, in_list_order);

    // Search follows merges: the words of a merged conversation's messages move with them, and a
    // query matches a conversation whose messages hold its words between them.
    let kube = ids(&found)[0].clone();
    let (code, merged) = send(app.post(
        &format!("/v1/conversations/{}/merge", searched[0]),
        &json!({"into": kube}),
    ))
    .await;
    assert_eq!(code, 200, "{merged}");
    assert_eq!(ids(&list(&app, "q=kubernetes%20billing").await), [kube.clone()]);
    let billing = ids(&list(&app, "q=billing&limit=100").await);
    assert_eq!(billing.len(), 20);
    assert!(billing.contains(&kube) && !billing.contains(&searched[0]));

    assert_eq!(
        ids(&list(&app, "owner=U9").await),
        [acme["conversation"]["id"].as_str().unwrap()]
    );
    let account_id = account["id"].as_str().unwrap();
    assert_eq!(
        list(&app, &format!("account={account_id}")).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        list(&app, "status=new&channel=C2").await["items"]
            .as_array()
            .unwrap()
            .len(),
        24,
        "25 conversations, one merged into another"
    );
    assert_eq!(
        list(&app, "status=closed").await["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    for (query, field) in [
        ("status=open", "status"),
        ("limit=0", "limit"),
        ("limit=500", "limit"),
    ] {
        let (code, body) = send(app.get(&format!("/v1/conversations?{query}"))).await;
        assert_eq!(assert_error(code, &body, 422)["field"], field, "{query}");
    }
    // A cursor not made by this list is a malformed parameter (see tests/integration/hardening).
    let (code, body) = send(app.get("/v1/conversations?cursor=abc")).await;
    assert_eq!(assert_error(code, &body, 400)["field"], "cursor");
}
