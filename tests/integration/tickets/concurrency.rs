//! Eight clients, two replicas, the same 1,000 messages in random orders: each is stored once and
//! every thread ends up in exactly one conversation.

use crate::tickets::helpers::{on_both_backends, spawn_app, spawn_replica, Backend, AGENT};
use rand::seq::SliceRandom;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

on_both_backends!(ingests_each_message_once);

const CHANNELS: usize = 10;
const THREADS: usize = 10;
const PER_THREAD: usize = 10;

fn messages() -> Vec<Value> {
    let mut out = Vec::new();
    for c in 0..CHANNELS {
        for t in 0..THREADS {
            let root = format!("{}.000000", 1_700_000_000 + t * 1000);
            for i in 0..PER_THREAD {
                let ts = format!("{}.{:06}", 1_700_000_000 + t * 1000, i);
                let user = if i % 3 == 1 {
                    AGENT.to_owned()
                } else {
                    format!("U{c}{t}")
                };
                let thread_ts = (i > 0).then(|| root.clone());
                out.push(json!({"channel": format!("C{c}"), "ts": ts, "thread_ts": thread_ts, "user": user, "text": format!("message {i} of thread {t}")}));
            }
        }
    }
    out
}

async fn ingests_each_message_once(backend: Backend) {
    let Some(first) = spawn_app(backend).await else {
        return;
    };
    let second = spawn_replica(&first.db).await;
    let replicas = Arc::new([first, second]);
    let all = Arc::new(messages());
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let replicas = replicas.clone();
            let all = all.clone();
            tokio::spawn(async move {
                let mut order: Vec<usize> = (0..all.len()).collect();
                order.shuffle(&mut rand::rng());
                let app = &replicas[task % 2];
                let mut created = 0;
                for i in order {
                    let (code, body) = app.message(all[i].clone()).await;
                    assert!(code == 200 || code == 201, "{code} {body}");
                    created += usize::from(code == 201);
                }
                created
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        created += task.await.unwrap();
    }
    assert_eq!(created, all.len(), "each message is created exactly once");

    let app = &replicas[0];
    let mut per_conversation: HashMap<String, i64> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/conversations?limit=200&cursor={c}"),
            None => "/v1/conversations?limit=200".to_owned(),
        };
        let (_, page) = crate::tickets::helpers::send(app.get(&path)).await;
        for c in page["items"].as_array().unwrap() {
            per_conversation.insert(
                c["id"].as_str().unwrap().into(),
                c["message_count"].as_i64().unwrap(),
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        per_conversation.len(),
        CHANNELS * THREADS,
        "one conversation per thread"
    );
    assert!(
        per_conversation.values().all(|&n| n == PER_THREAD as i64),
        "{per_conversation:?}"
    );
}
