//! The channel context the store hands the grouper: the recent window, the thread, and the first
//! and latest messages of the channel's open conversations that the window no longer holds.

use crate::tickets::helpers::{on_both_backends, Backend, KeywordClassifier, TestDb, TestGrouper};
use std::collections::BTreeSet;
use std::sync::Arc;
use triage::domain::MessageEdit;
use triage::domain::{ChannelContext, ReplyLabel, Role, CONTEXT_MESSAGES};
use triage::pipeline::{IncomingMessage, Pipeline, Prediction};
use triage::store::{self, Store};

on_both_backends!(
    open_conversations_beyond_the_window,
    embeddings_cached_and_stored_agree
);

fn msg(secs: u64, user: &str, role: Role, thread: Option<u64>, text: &str) -> IncomingMessage {
    IncomingMessage {
        channel: "C1".into(),
        ts: format!("{}.000100", 1_700_000_000 + secs),
        thread_ts: thread.map(|t| format!("{}.000100", 1_700_000_000 + t)),
        user: user.into(),
        role,
        text: text.into(),
        files: Vec::new(),
        embedding: Some(vec![secs as f32; 4]),
    }
}

/// The context the store would hand the grouper for `incoming` (not stored yet), read in an ingest
/// unit that is then rolled back.
async fn context_for(store: &Arc<dyn Store>, incoming: &IncomingMessage) -> ChannelContext {
    let mut unit = store.begin_ingest(&incoming.channel).await.unwrap();
    let ctx = unit
        .load_context(incoming)
        .await
        .unwrap()
        .expect("not stored yet");
    unit.rollback().await.unwrap();
    ctx
}

async fn open_conversations_beyond_the_window(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let store: Arc<dyn Store> = store::connect(&db.url).await.unwrap();
    let pipeline = Pipeline::new(store.clone(), Arc::new(KeywordClassifier), Arc::new(TestGrouper));
    let ingest = |m: IncomingMessage, p: Option<Prediction>| {
        let pipeline = &pipeline;
        async move { pipeline.ingest_analysed(&m, p).await.unwrap().conversation.id }
    };
    // Ten tickets of two messages each (same customer within a minute), an hour apart.
    let mut tickets = Vec::new();
    for k in 0..10u64 {
        let user = format!("U{k}");
        let id = ingest(msg(k * 3600, &user, Role::Customer, None, "question"), None).await;
        assert_eq!(
            ingest(msg(k * 3600 + 30, &user, Role::Customer, None, "more"), None).await,
            id
        );
        tickets.push(id);
    }
    // Ticket 3 is closed by a team reply in its thread.
    let closed = ingest(
        msg(3 * 3600 + 60, "AGENT", Role::Agent, Some(3 * 3600), "fixed"),
        Some(Prediction {
            label: ReplyLabel::Closed,
            score: 0.9,
        }),
    )
    .await;
    assert_eq!(closed, tickets[3]);
    // Then one chatty customer fills the recent window and more.
    let busy_start = 20 * 3600;
    let busy = ingest(msg(busy_start, "UB", Role::Customer, None, "hello"), None).await;
    let window = CONTEXT_MESSAGES as u64;
    for i in 1..window + 10 {
        assert_eq!(
            ingest(msg(busy_start + i * 10, "UB", Role::Customer, None, "chat"), None).await,
            busy
        );
    }

    let incoming = msg(30 * 3600, "U9", Role::Customer, None, "any update?");
    let ctx = context_for(&store, &incoming).await;

    assert_eq!(ctx.recent.len() as u64, window);
    assert!(ctx.recent.iter().all(|m| m.conversation_id == busy));
    let oldest_recent = ctx.recent.first().unwrap().ts.clone();
    // Exactly the first and latest message of every open ticket, and the busy conversation's first
    // message; nothing the window already holds, nothing of the closed ticket.
    let mut want = BTreeSet::new();
    for (k, id) in tickets.iter().enumerate() {
        if k != 3 {
            want.insert((id.clone(), format!("{}.000100", 1_700_000_000 + k as u64 * 3600)));
            want.insert((
                id.clone(),
                format!("{}.000100", 1_700_000_000 + k as u64 * 3600 + 30),
            ));
        }
    }
    want.insert((busy.clone(), format!("{}.000100", 1_700_000_000 + busy_start)));
    let got: BTreeSet<_> = ctx
        .open
        .iter()
        .map(|m| (m.conversation_id.clone(), m.ts.clone()))
        .collect();
    assert_eq!(got, want);
    assert!(ctx.open.iter().all(|m| m.ts < oldest_recent));
    assert!(ctx.open.windows(2).all(|w| w[0].ts < w[1].ts), "oldest first");
    let first = &ctx.open[0];
    assert_eq!(
        (first.user.as_str(), first.embedding.as_deref()),
        ("U0", Some(&[0.0f32; 4][..]))
    );

    // A message older than the busy stretch sees only what came before it: the window then holds
    // the tickets' messages, so none of them is repeated as open.
    let early = msg(5 * 3600 + 100, "U5", Role::Customer, None, "again");
    let ctx = context_for(&store, &early).await;
    assert_eq!(ctx.recent.len(), 13, "ten tickets' messages before it");
    assert!(ctx.open.is_empty(), "{:?}", ctx.open);
}

/// The context's embeddings: the store keeps the ones it wrote or read in a cache; a second store
/// on the same database (another replica, or this process after a restart) reads them from the
/// rows; both agree, and an edit made through either is seen by both.
async fn embeddings_cached_and_stored_agree(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let a: Arc<dyn Store> = store::connect(&db.url).await.unwrap();
    let pipeline = Pipeline::new(a.clone(), Arc::new(KeywordClassifier), Arc::new(TestGrouper));
    let mut no_embedding = msg(20, "U2", Role::Customer, None, "a file");
    no_embedding.embedding = None;
    for m in [
        msg(0, "U1", Role::Customer, None, "first"),
        msg(10, "U1", Role::Customer, None, "second"),
        no_embedding,
    ] {
        pipeline.ingest_analysed(&m, None).await.unwrap();
    }
    let context = |store: Arc<dyn Store>| async move {
        let incoming = msg(100, "U1", Role::Customer, None, "third");
        context_for(&store, &incoming)
            .await
            .recent
            .into_iter()
            .map(|m| (m.text, m.embedding))
            .collect::<Vec<_>>()
    };
    let want = vec![
        ("first".to_string(), Some(vec![0.0f32; 4])),
        ("second".to_string(), Some(vec![10.0f32; 4])),
        ("a file".to_string(), None),
    ];
    assert_eq!(context(a.clone()).await, want, "the writer's cache");
    let b: Arc<dyn Store> = store::connect(&db.url).await.unwrap();
    assert_eq!(context(b.clone()).await, want, "read from the rows");

    // Another replica edits "second": the first store's cached vector is for the old text.
    let ts = format!("{}.000100", 1_700_000_000 + 10);
    let edit = MessageEdit {
        text: "second, edited".into(),
        embedding: Some(vec![7.0; 4]),
        prediction: None,
    };
    b.edit_message("C1", &ts, edit).await.unwrap();
    let want = vec![
        ("first".to_string(), Some(vec![0.0f32; 4])),
        ("second, edited".to_string(), Some(vec![7.0f32; 4])),
        ("a file".to_string(), None),
    ];
    assert_eq!(
        context(a).await,
        want,
        "the cache saw the new text and read the new vector"
    );
    assert_eq!(context(b).await, want);
}
