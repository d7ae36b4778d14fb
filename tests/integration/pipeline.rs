//! `triage serve` with everything wired: the tickets API over a real database, grouping with the
//! trained grouper and team replies read by the committed status model.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{self, spawn_app_with, TOKEN};
use crate::tickets::helpers::{Backend, TestDb};

pub(crate) const AGENT: &str = "UTEAM1";

fn settings() -> triage::config::Settings {
    let mut s = helpers::settings();
    s.team_users = vec![AGENT.into()];
    s
}

async fn ingest(client: &reqwest::Client, addr: &str, body: Value) -> (u16, Value) {
    let r = client
        .post(format!("{addr}/v1/messages"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let r = client.get(url).bearer_auth(TOKEN).send().await.expect("request");
    assert_eq!(r.status(), 200, "GET {url}");
    r.json().await.expect("json body")
}

fn msg(ts: &str, user: &str, text: &str, thread_ts: Option<&str>) -> Value {
    json!({"channel": "CSUPPORT", "ts": ts, "user": user, "text": text, "thread_ts": thread_ts})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_moves_through_the_pipeline_with_the_real_models() {
    let app = spawn_app_with(settings()).await;
    let (c, addr) = (&app.client, app.addr.as_str());

    let (status, first) = ingest(
        c,
        addr,
        msg(
            "1700000000.000100",
            "UCUST1",
            "Our nightly exports to S3 have been failing with AccessDenied since this morning",
            None,
        ),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let conv = first["conversation"]["id"].as_str().unwrap().to_string();
    assert_eq!(first["conversation"]["status"], "new");
    assert_eq!(first["message"]["role"], "customer");
    assert!(
        first["message"]["label"].is_null(),
        "customer messages are not classified"
    );

    // The team member (TRIAGE_TEAM_USERS) answers in the thread without concluding.
    let (status, reply) = ingest(
        c,
        addr,
        msg(
            "1700000300.000100",
            AGENT,
            "Taking a look. Can you send me the request id from one of the failed runs?",
            Some("1700000000.000100"),
        ),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["conversation"]["id"], conv.as_str());
    assert_eq!(reply["message"]["role"], "agent");
    assert_eq!(reply["message"]["label"], "in_progress", "{reply}");
    assert_eq!(reply["conversation"]["status"], "in_progress");
    assert!(reply["conversation"]["first_response_at"].is_string());
    assert_eq!(reply["reasons"][0]["signal"], "thread");

    // The customer follows up: the team must act.
    let (_, follow) = ingest(
        c,
        addr,
        msg(
            "1700000600.000100",
            "UCUST1",
            "Sure, it is 7f3a-22b1",
            Some("1700000000.000100"),
        ),
    )
    .await;
    assert_eq!(follow["conversation"]["status"], "on_you", "{follow}");

    let closer = msg(
        "1700000900.000100",
        AGENT,
        "I just confirmed with the team, this is fixed in 1.4 which went out an hour ago.",
        Some("1700000000.000100"),
    );
    let (_, done) = ingest(c, addr, closer.clone()).await;
    assert_eq!(done["message"]["label"], "closed", "{done}");
    assert_eq!(done["conversation"]["status"], "closed");
    let score = done["message"]["score"].as_f64().unwrap();
    assert!(score > 0.5 && score <= 1.0, "{score}");

    // Hours later, an unrelated question outside any thread starts a new conversation.
    let (status, other) = ingest(
        c,
        addr,
        msg(
            "1700020000.000100",
            "UCUST2",
            "How do I add a second admin to our workspace?",
            None,
        ),
    )
    .await;
    assert_eq!(status, 201);
    assert_ne!(other["conversation"]["id"], conv.as_str());
    assert_eq!(other["conversation"]["status"], "new");
    assert!(
        other["reasons"].as_array().is_some_and(|r| !r.is_empty()),
        "{other}"
    );

    // A replay is idempotent: 200 with the stored message.
    let (status, again) = ingest(c, addr, closer).await;
    assert_eq!(status, 200);
    assert_eq!(again["message"]["id"], done["message"]["id"]);

    let list = get_json(c, &format!("{addr}/v1/conversations?channel=CSUPPORT")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let events = get_json(c, &format!("{addr}/v1/conversations/{conv}/events")).await;
    let model_events = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "model")
        .count();
    assert_eq!(
        model_events, 2,
        "in_progress and closed come from the model: {events}"
    );

    // Inference and tickets share one server: the spec's error shape on bad input.
    let (status, bad) = ingest(
        c,
        addr,
        json!({"channel": "C", "ts": "soon", "user": "U", "text": "x"}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(bad["error"]["field"], "ts");
    app.stop().await.unwrap();
}

/// A stream of one channel: two customers' questions interleaved, with team replies at the top
/// level (no threads), so grouping depends on the model, not on Slack threads.
fn channel_stream() -> Vec<(String, &'static str, &'static str)> {
    let lines: [(&str, &str); 14] = [
        (
            "UANA",
            "Hi! Our webhook deliveries to https://hooks.example.com started timing out yesterday",
        ),
        ("UBEN", "hello, is there a way to export all tickets as CSV?"),
        ("UANA", "we see 504s on every retry, nothing changed on our side"),
        (
            AGENT,
            "@UANA thanks, checking the delivery logs for your workspace now",
        ),
        ("UBEN", "we need it for our quarterly audit"),
        (
            AGENT,
            "@UBEN yes: Settings > Data > Export, pick CSV and the date range",
        ),
        ("UANA", "any news on the webhook timeouts?"),
        ("UBEN", "found it, thanks a lot!"),
        (
            AGENT,
            "@UANA the proxy in front of your endpoint is dropping our IPs, please allowlist 203.0.113.0/24",
        ),
        ("UANA", "allowlisted, deliveries are going through again"),
        (
            "UCAT",
            "Good morning, our SSO login loops back to the sign-in page",
        ),
        (AGENT, "@UCAT which identity provider do you use?"),
        ("UCAT", "Okta, with SAML"),
        (AGENT, "@UCAT thanks, I'll reproduce it with an Okta test tenant"),
    ];
    lines
        .iter()
        .enumerate()
        .map(|(i, (user, text))| (format!("{}.000000", 1_700_100_000 + 40 * i), *user, *text))
        .collect()
}

/// The partition of the stream: for each message ts, the ts of the first message of its
/// conversation (names differ between databases; the grouping must not).
async fn partition(client: &reqwest::Client, addrs: &[String]) -> BTreeMap<String, String> {
    let mut first_of: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (i, (ts, user, text)) in channel_stream().into_iter().enumerate() {
        let addr = &addrs[i % addrs.len()];
        let (status, body) = ingest(
            client,
            addr,
            json!({"channel": "CSHARED", "ts": ts, "user": user, "text": text}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let conv = body["conversation"]["id"].as_str().unwrap().to_string();
        let root = first_of.entry(conv).or_insert_with(|| ts.clone()).clone();
        out.insert(ts, root);
    }
    out
}

/// A `triage serve` process on port 0 over `database_url`; its address is read from its log.
pub(crate) struct ServerProcess {
    pub child: Child,
    pub addr: String,
}

impl ServerProcess {
    fn start(database_url: &str) -> ServerProcess {
        Self::start_with(database_url, &[])
    }

    /// Also with `env` set (`TRIAGE_*` overrides).
    pub fn start_with(database_url: &str, env: &[(&str, &str)]) -> ServerProcess {
        let s = settings();
        let mut child = Command::new(env!("CARGO_BIN_EXE_triage"))
            .arg("serve")
            .envs(env.iter().copied())
            .env("TRIAGE_BIND", "127.0.0.1:0")
            .env("TRIAGE_DATABASE_URL", database_url)
            .env("TRIAGE_API_TOKENS", TOKEN)
            .env("TRIAGE_TEAM_USERS", AGENT)
            .env("TRIAGE_MODEL_DIR", s.model_dir.unwrap())
            .env("TRIAGE_STATUS_MODEL_DIR", &s.status_model_dir)
            .env("TRIAGE_GROUP_MODEL_DIR", &s.group_model_dir)
            .env("TRIAGE_EMBED_THREADS", "1")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start triage serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.split("addr=").nth(1).filter(|_| line.contains("serving")) {
                        let addr = addr.split_whitespace().next().unwrap_or("").to_string();
                        sent = tx.send(addr).is_ok();
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("triage serve logged its address");
        ServerProcess {
            child,
            addr: format!("http://{addr}"),
        }
    }

    pub async fn wait_ready(&self, client: &reqwest::Client) {
        for _ in 0..600 {
            if let Ok(r) = client.get(format!("{}/readyz", self.addr)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} not ready within 60 s", self.addr);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_on_one_postgres_group_like_one() {
    let Some(shared) = TestDb::create(Backend::Postgres).await else {
        return; // TestDb printed why (and fails instead under CI).
    };
    let Some(single) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let client = reqwest::Client::new();
    let (a, b) = (
        ServerProcess::start(&shared.url),
        ServerProcess::start(&shared.url),
    );
    let one = ServerProcess::start(&single.url);
    for p in [&a, &b, &one] {
        p.wait_ready(&client).await;
    }
    let replicas = partition(&client, &[a.addr.clone(), b.addr.clone()]).await;
    let alone = partition(&client, &[one.addr.clone()]).await;
    eprintln!("grouping: {alone:?}");
    assert_eq!(replicas, alone);
    // The stream holds three customers' questions; the grouping must not be all-in-one or
    // all-apart, or the comparison above would say little.
    let conversations = alone.values().collect::<std::collections::BTreeSet<_>>().len();
    assert!((2..alone.len()).contains(&conversations), "{alone:?}");
}

/// `/openapi.json` documents the API, and every documented operation is served by this server
/// (a route the router lacks answers with the fallback's 404 "no such route" or with 405).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let app = spawn_app_with(settings()).await;
    let doc = get_json(&app.client, &format!("{}/openapi.json", app.addr)).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path.replace("{id}", "nope").replace("{slack_user_id}", "UNOPE");
        for method in item.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .client
                .request(method.clone(), format!("{}{concrete}", app.addr))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(
                !(status == 404 && text.contains("no such route")),
                "{method} {path} is documented but not routed: {text}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked}");
    app.stop().await.unwrap();
}
