//! `triage serve`: binds, answers health checks at once, loads and warms the model in the
//! background (readiness follows the warm-up), and shuts down gracefully.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use super::ConfigArgs;
use crate::classify::StatusModel;
use crate::config::{Overrides, Secret, Settings};
use crate::embed::Embedder;
use crate::http::{self, ApiTokens, AppState, HttpConfig, Models};
use crate::model_files;
use crate::queue::EmbedHandle;

/// Conversations whose cards are checked at start-up (the most recently created).
const RECONCILE_CONVERSATIONS: usize = 1000;

/// `triage serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The listen address (overrides TRIAGE_BIND).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Start on a fresh SQLite database seeded, through the real pipeline and models, with the
    /// demo workspace (examples/demo/workspace.json), then open /board.
    #[arg(long)]
    pub demo: bool,
}

/// Serves until ctrl-c or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let s = args.config.settings(Overrides {
        bind: args.bind,
        ..Overrides::default()
    })?;
    let mut s = s;
    let demo = if args.demo {
        let w = crate::board::demo::workspace()?;
        let dir = std::env::temp_dir().join(format!("triage-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let db = dir.join("triage.db");
        let _ = std::fs::remove_file(&db);
        s.database_url = format!("sqlite://{}", db.display());
        s.team_users.extend(crate::board::demo::team_ids(&w));
        tracing::info!(database = %db.display(), "demo: fresh database");
        Some(w)
    } else {
        None
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let app = Application::build(s).await?;
        if let Some(w) = demo {
            let state = app.state().clone();
            let url = format!("http://{}/board", app.local_addr());
            tokio::spawn(async move {
                match crate::board::demo::seed(&state, &w).await {
                    Ok(n) => tracing::info!(messages = n, "demo: seeded; open {url}"),
                    Err(e) => tracing::error!(error = %e, "demo: seeding failed"),
                }
            });
        }
        app.run_until_stopped(shutdown_signal()).await
    })
}

/// What the HTTP stack needs from the configuration.
pub fn http_config(s: &Settings) -> anyhow::Result<HttpConfig> {
    let secret = |s: &Secret| (!s.is_empty()).then(|| s.clone());
    let [request_timeout, idle_timeout, header_read_timeout, body_read_timeout, drain_timeout] =
        s.http_limits()?;
    Ok(HttpConfig {
        api_tokens: ApiTokens::new(s.api_tokens.iter().map(Secret::expose)),
        team_users: s.team_users.iter().cloned().collect(),
        github_webhook_secret: secret(&s.github_webhook_secret),
        linear_webhook_secret: secret(&s.linear_webhook_secret),
        slack_verifier: secret(&s.slack_signing_secret).map(crate::slack::signing::Verifier::system),
        request_timeout,
        idle_timeout,
        header_read_timeout,
        body_read_timeout,
        drain_timeout,
        ..Default::default()
    })
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
}

impl Application {
    /// Binds `settings.bind` (port 0 picks a free port, as tests do) and validates what can be
    /// validated before serving.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.bind).await?;
        let addr = listener.local_addr()?;
        if settings.api_tokens.is_empty() {
            anyhow::ensure!(
                addr.ip().is_loopback(),
                "refusing to serve on {addr} without API tokens: set TRIAGE_API_TOKENS or bind to 127.0.0.1"
            );
            tracing::warn!("TRIAGE_API_TOKENS is empty: /v1 is open to anyone who can reach {addr}");
        }
        // The database before serving: a wrong URL or a failed migration stops start-up.
        let store = crate::store::connect(&settings.database_url)
            .await
            .with_context(|| format!("opening the database {}", redact(&settings.database_url)))?;
        let mut state = AppState::serving(Models::default(), store, http_config(&settings)?);
        state.slack = crate::slack::Slack::from_settings(
            &settings,
            state.pipeline.clone(),
            state.metrics.slack.clone(),
        );
        if state.slack.is_none() {
            tracing::info!("TRIAGE_SLACK_BOT_TOKEN is not set: no triage cards are posted");
        }
        Ok(Self {
            listener,
            state,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown`; the model loads on a blocking thread meanwhile. A model that fails
    /// to load (missing, bad checksum) stops the server with that error.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            settings,
        } = self;
        let slot = state.models.embed.clone();
        let status_slot = state.models.status.clone();
        let group_slot = state.models.grouper.clone();
        let metrics = state.metrics.embed.clone();
        let loader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let files = model_files::resolve(settings.model_dir.as_deref())?;
            tracing::info!(dir = %files.dir.display(), "model files verified");
            let embedder = Embedder::load(&files, settings.batch_limits())?;
            let mut status = StatusModel::load(&settings.status_model_dir)?;
            // A fine-tuned model's top layers run inside the embedder, branching from its forward.
            status.install_tail(&embedder)?;
            tracing::info!(model = %status.id(), dir = %settings.status_model_dir.display(), "status model loaded");
            // Before the embedder: readiness (the embedder's warm-up) then implies both are there.
            status_slot.fill(status);
            let group_model = crate::group::GroupModel::load(&settings.group_model_dir.join("model.json"))?;
            tracing::info!(dir = %settings.group_model_dir.display(), "grouping model loaded");
            group_slot.fill(group_model);
            slot.fill(EmbedHandle::start(embedder, settings.queue_config(), metrics));
            Ok(())
        });
        // The Slack outbox worker and the card service (subscribed before the first request).
        let (slack_stop, slack_stopped) = tokio::sync::watch::channel(false);
        let mut slack_tasks = Vec::new();
        if let Some(slack) = &state.slack {
            let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let cards = slack.cards(state.pipeline.clone());
            let until = stopped(slack_stopped.clone());
            slack_tasks.push(tokio::spawn(async move {
                // Card work a previous process committed but did not queue (it died first).
                match cards.reconcile(RECONCILE_CONVERSATIONS).await {
                    Ok(n) => tracing::info!(conversations = n, "triage cards reconciled"),
                    Err(e) => tracing::warn!(error = %e, "triage cards not reconciled"),
                }
                cards.run(until).await
            }));
            slack_tasks.push(tokio::spawn(
                slack.outbox.clone().run(stopped(slack_stopped.clone())),
            ));
        }
        tracing::info!(addr = %listener.local_addr()?, "serving");
        // Slack deliveries: replays what was acknowledged but not processed, then follows the inbox.
        let mut inbound =
            crate::slack::inbound::Inbound::new(state.config.team_users.clone(), state.metrics.clone());
        if let Some(slack) = &state.slack {
            inbound = inbound.with_slack(slack.names.clone(), slack.bot.clone());
        }
        let slack_worker =
            crate::slack::inbound::spawn_worker(state.pipeline.clone(), inbound, state.slack_inbox.clone());
        let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
        tokio::spawn(async move {
            match loader.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let _ = fail_tx.send(e);
                }
                Err(e) => {
                    let _ = fail_tx.send(anyhow::anyhow!("model loader panicked: {e}"));
                }
            }
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let failure = tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => { let _ = stop_tx.send(()); None }
                Ok(e) = fail_rx => { let _ = stop_tx.send(()); Some(e) }
            }
        });
        http::run(listener, state.clone(), async move {
            let _ = stop_rx.await;
        })
        .await?;
        slack_worker.abort();
        // In-flight requests are done: the Slack calls in flight finish, the rest stays queued.
        let _ = slack_stop.send(true);
        for t in slack_tasks {
            let _ = t.await;
        }
        // Let the model thread finish and exit.
        if let Some(h) = state.models.embed.get() {
            let h = h.clone();
            tokio::task::spawn_blocking(move || h.shutdown()).await?;
        }
        match failure.await? {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let user = url[scheme + 3..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_stay_out_of_messages() {
        assert_eq!(
            super::redact("postgres://app:hunter2@db:5432/triage"),
            "postgres://app:***@db:5432/triage"
        );
        assert_eq!(
            super::redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(super::redact("sqlite://triage.db"), "sqlite://triage.db");
    }
}
