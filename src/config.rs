//! Configuration, in one order for every command: defaults, then a TOML file (`--config FILE`),
//! then `TRIAGE_*` environment variables, then command-line flags ([`Overrides`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A value that never prints (tokens, signing secrets).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(***)"
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub bind: String,
    pub database_url: String,
    pub api_tokens: Vec<Secret>,
    pub model_dir: Option<PathBuf>,
    /// The trained status head (`triage train status --out`), loaded by `serve` and `classify`.
    pub status_model_dir: PathBuf,
    /// Folder of the grouping model (`model.json`).
    pub group_model_dir: PathBuf,
    pub team_users: Vec<String>,
    /// Checks GitHub's `X-Hub-Signature-256` on `/v1/webhooks/issues` (unset: GitHub refused).
    pub github_webhook_secret: Secret,
    /// Checks Linear's `Linear-Signature` on `/v1/webhooks/issues` (unset: Linear refused).
    pub linear_webhook_secret: Secret,
    /// Base URL of Slack's Web API (`TRIAGE_SLACK_API_URL`; tests point it at a local fake).
    pub slack_api_url: String,
    /// The bot token (`xoxb-...`) every Web API call carries (`TRIAGE_SLACK_BOT_TOKEN`).
    pub slack_bot_token: Secret,
    /// Checks the signature of Slack's requests (`TRIAGE_SLACK_SIGNING_SECRET`).
    pub slack_signing_secret: Secret,
    /// Where cards of conversations without an owner (or whose owner has no triage channel) go.
    pub slack_triage_channel: Option<String>,
    /// Milliseconds between two `chat.postMessage` calls to one channel
    /// (`TRIAGE_SLACK_POST_INTERVAL_MS`; Slack allows about one message per second per channel).
    pub slack_post_interval_ms: u64,
    /// `TRIAGE_CORE_URL`: this process is a Slack edge forwarding to the core `triage serve` at
    /// this base URL (no models, no core database); unset: one process does everything.
    pub core_url: Option<String>,
    /// `TRIAGE_CORE_TOKEN`: the edge's bearer token for the core (one of its `TRIAGE_API_TOKENS`).
    pub core_token: Secret,
    /// `TRIAGE_EDGE_DATABASE_URL`: an edge's own database (Slack inbox, outbox, cards); a local
    /// SQLite file by default. `TRIAGE_DATABASE_URL` is not read in edge mode.
    pub edge_database_url: String,
    /// Our bot's Slack user id (`TRIAGE_SLACK_BOT_USER`); unset, it is learned with `auth.test`.
    pub slack_bot_user: Option<String>,
    /// Hours a cached Slack user or channel name is trusted before it is fetched again
    /// (`TRIAGE_SLACK_NAMES_TTL_HOURS`).
    pub slack_names_ttl_hours: u64,
    /// Hours a sent outbox row is kept before it is deleted (`TRIAGE_SLACK_OUTBOX_RETENTION_HOURS`).
    pub slack_outbox_retention_hours: u64,
    /// Milliseconds after which a Slack call still marked in flight is taken to belong to a dead
    /// process and sent again (`TRIAGE_SLACK_OUTBOX_LEASE_MS`); a call's timeout is at most half.
    pub slack_outbox_lease_ms: u64,
    pub embed: EmbedSettings,
    pub http: HttpSettings,
}

/// The HTTP server's time limits, in seconds (`[http]`, `TRIAGE_HTTP_*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// A request taking longer is answered 503 (`TRIAGE_HTTP_REQUEST_TIMEOUT`).
    pub request_timeout_secs: f64,
    /// A connection sending no request for this long is closed (`TRIAGE_HTTP_IDLE_TIMEOUT`).
    pub idle_timeout_secs: f64,
    /// A request head must be complete this long after its first byte (`TRIAGE_HTTP_HEADER_READ_TIMEOUT`).
    pub header_read_timeout_secs: f64,
    /// A request body must arrive this long after its head, else 408 (`TRIAGE_HTTP_BODY_READ_TIMEOUT`).
    pub body_read_timeout_secs: f64,
    /// On SIGTERM, connections still open this long later are closed (`TRIAGE_HTTP_DRAIN_TIMEOUT`).
    pub drain_timeout_secs: f64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let d = crate::http::HttpConfig::default();
        Self {
            request_timeout_secs: d.request_timeout.as_secs_f64(),
            idle_timeout_secs: d.idle_timeout.as_secs_f64(),
            header_read_timeout_secs: d.header_read_timeout.as_secs_f64(),
            body_read_timeout_secs: d.body_read_timeout.as_secs_f64(),
            drain_timeout_secs: d.drain_timeout.as_secs_f64(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedSettings {
    /// Compute threads for inference (0: one per core).
    pub threads: usize,
    /// Padded tokens per forward batch (bounds activation memory).
    pub max_batch_tokens: usize,
    pub max_batch_size: usize,
    /// Ingest-lane inputs waiting or running before ingestion gets 429.
    pub max_queued_inputs: usize,
    /// Bulk-lane inputs (`/v1/embed`, batch `/v1/classify`) waiting or running before bulk
    /// requests get 429 (`TRIAGE_EMBED_MAX_QUEUED_BULK_INPUTS`).
    pub max_queued_bulk_inputs: usize,
    /// Inputs accepted in one request.
    pub max_client_batch: usize,
    /// Encoder precision: "f32" (exact, default) or "int8" (`TRIAGE_EMBED_PRECISION`).
    pub precision: crate::embed::Precision,
}

impl Default for EmbedSettings {
    fn default() -> Self {
        let limits = crate::embed::BatchLimits::default();
        let queue = crate::queue::QueueConfig::default();
        Self {
            threads: 0,
            max_batch_tokens: limits.max_batch_tokens,
            max_batch_size: limits.max_batch_size,
            max_queued_inputs: queue.max_queued_inputs,
            max_queued_bulk_inputs: queue.max_queued_bulk_inputs,
            max_client_batch: queue.max_client_batch,
            precision: limits.precision,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            database_url: "sqlite://triage.db".into(),
            api_tokens: Vec::new(),
            model_dir: None,
            status_model_dir: PathBuf::from("models/status"),
            group_model_dir: PathBuf::from("models/grouping"),
            team_users: Vec::new(),
            github_webhook_secret: Secret::default(),
            linear_webhook_secret: Secret::default(),
            slack_api_url: crate::slack::api::DEFAULT_API_URL.into(),
            slack_bot_token: Secret::default(),
            slack_signing_secret: Secret::default(),
            slack_triage_channel: None,
            slack_post_interval_ms: 1000,
            core_url: None,
            core_token: Secret::default(),
            edge_database_url: "sqlite://triage-edge.db".into(),
            slack_bot_user: None,
            slack_names_ttl_hours: 24,
            slack_outbox_retention_hours: 72,
            slack_outbox_lease_ms: 60_000,
            embed: EmbedSettings::default(),
            http: HttpSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
}

/// Command-line flags: applied after the file and the environment, each only when given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub bind: Option<String>,
    pub model_dir: Option<PathBuf>,
    pub status_model_dir: Option<PathBuf>,
    pub max_batch_tokens: Option<usize>,
    pub max_batch_size: Option<usize>,
}

impl Overrides {
    pub fn apply(self, s: &mut Settings) {
        if let Some(v) = self.bind {
            s.bind = v;
        }
        if let Some(v) = self.model_dir {
            s.model_dir = Some(v);
        }
        if let Some(v) = self.status_model_dir {
            s.status_model_dir = v;
        }
        if let Some(v) = self.max_batch_tokens {
            s.embed.max_batch_tokens = v.max(1);
        }
        if let Some(v) = self.max_batch_size {
            s.embed.max_batch_size = v.max(1);
        }
    }
}

impl Settings {
    /// Defaults, then `file` if given, then the process environment, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut s = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.into(),
                    message: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::File {
                    path: path.into(),
                    message: e.to_string(),
                })?
            }
            None => Settings::default(),
        };
        s.apply_env(|k| std::env::var(k).ok())?;
        overrides.apply(&mut s);
        Ok(s)
    }

    /// Applies `TRIAGE_*` variables read through `get` (a function so tests need not touch the
    /// process environment).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let num = |name: &str, v: String| -> Result<usize, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                name: name.into(),
                message: format!("{v:?} is not a non-negative integer"),
            })
        };
        if let Some(v) = get("TRIAGE_BIND") {
            self.bind = v;
        }
        if let Some(v) = get("TRIAGE_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("TRIAGE_API_TOKENS") {
            self.api_tokens = list(v).into_iter().map(Secret::new).collect();
        }
        if let Some(v) = get("TRIAGE_MODEL_DIR").filter(|v| !v.is_empty()) {
            self.model_dir = Some(v.into());
        }
        if let Some(v) = get("TRIAGE_STATUS_MODEL_DIR").filter(|v| !v.is_empty()) {
            self.status_model_dir = v.into();
        }
        if let Some(v) = get("TRIAGE_GROUP_MODEL_DIR").filter(|v| !v.is_empty()) {
            self.group_model_dir = v.into();
        }
        if let Some(v) = get("TRIAGE_TEAM_USERS") {
            self.team_users = list(v);
        }
        if let Some(v) = get("TRIAGE_GITHUB_WEBHOOK_SECRET") {
            self.github_webhook_secret = Secret::new(v);
        }
        if let Some(v) = get("TRIAGE_LINEAR_WEBHOOK_SECRET") {
            self.linear_webhook_secret = Secret::new(v);
        }
        if let Some(v) = get("TRIAGE_SLACK_API_URL").filter(|v| !v.is_empty()) {
            self.slack_api_url = v;
        }
        if let Some(v) = get("TRIAGE_SLACK_BOT_TOKEN") {
            self.slack_bot_token = Secret::new(v);
        }
        if let Some(v) = get("TRIAGE_SLACK_SIGNING_SECRET") {
            self.slack_signing_secret = Secret::new(v);
        }
        if let Some(v) = get("TRIAGE_SLACK_TRIAGE_CHANNEL") {
            self.slack_triage_channel = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = get("TRIAGE_SLACK_POST_INTERVAL_MS") {
            self.slack_post_interval_ms = num("TRIAGE_SLACK_POST_INTERVAL_MS", v)? as u64;
        }
        if let Some(v) = get("TRIAGE_CORE_URL") {
            self.core_url = Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        }
        if let Some(v) = get("TRIAGE_CORE_TOKEN") {
            self.core_token = Secret::new(v);
        }
        if let Some(v) = get("TRIAGE_EDGE_DATABASE_URL").filter(|v| !v.is_empty()) {
            self.edge_database_url = v;
        }
        if let Some(v) = get("TRIAGE_SLACK_BOT_USER") {
            self.slack_bot_user = Some(v.trim().to_string()).filter(|v| !v.is_empty());
        }
        if let Some(v) = get("TRIAGE_SLACK_NAMES_TTL_HOURS") {
            self.slack_names_ttl_hours = num("TRIAGE_SLACK_NAMES_TTL_HOURS", v)? as u64;
        }
        if let Some(v) = get("TRIAGE_SLACK_OUTBOX_RETENTION_HOURS") {
            self.slack_outbox_retention_hours = num("TRIAGE_SLACK_OUTBOX_RETENTION_HOURS", v)? as u64;
        }
        if let Some(v) = get("TRIAGE_SLACK_OUTBOX_LEASE_MS") {
            self.slack_outbox_lease_ms = num("TRIAGE_SLACK_OUTBOX_LEASE_MS", v)? as u64;
        }
        if let Some(v) = get("TRIAGE_EMBED_THREADS") {
            self.embed.threads = num("TRIAGE_EMBED_THREADS", v)?;
        }
        if let Some(v) = get("TRIAGE_EMBED_PRECISION") {
            self.embed.precision = v.parse().map_err(|message| ConfigError::Env {
                name: "TRIAGE_EMBED_PRECISION".into(),
                message,
            })?;
        }
        if let Some(v) = get("TRIAGE_EMBED_MAX_BATCH_TOKENS") {
            self.embed.max_batch_tokens = num("TRIAGE_EMBED_MAX_BATCH_TOKENS", v)?.max(1);
        }
        let secs = |name: &str, v: String| -> Result<f64, ConfigError> {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| ConfigError::Env {
                    name: name.into(),
                    message: format!("{v:?} is not a positive number of seconds"),
                })
        };
        for (name, field) in [
            ("TRIAGE_HTTP_REQUEST_TIMEOUT", &mut self.http.request_timeout_secs),
            ("TRIAGE_HTTP_IDLE_TIMEOUT", &mut self.http.idle_timeout_secs),
            (
                "TRIAGE_HTTP_HEADER_READ_TIMEOUT",
                &mut self.http.header_read_timeout_secs,
            ),
            (
                "TRIAGE_HTTP_BODY_READ_TIMEOUT",
                &mut self.http.body_read_timeout_secs,
            ),
            ("TRIAGE_HTTP_DRAIN_TIMEOUT", &mut self.http.drain_timeout_secs),
        ] {
            if let Some(v) = get(name) {
                *field = secs(name, v)?;
            }
        }
        if let Some(v) = get("TRIAGE_EMBED_MAX_QUEUED_INPUTS") {
            self.embed.max_queued_inputs = num("TRIAGE_EMBED_MAX_QUEUED_INPUTS", v)?.max(1);
        }
        if let Some(v) = get("TRIAGE_EMBED_MAX_QUEUED_BULK_INPUTS") {
            self.embed.max_queued_bulk_inputs = num("TRIAGE_EMBED_MAX_QUEUED_BULK_INPUTS", v)?.max(1);
        }
        Ok(())
    }

    pub fn batch_limits(&self) -> crate::embed::BatchLimits {
        crate::embed::BatchLimits {
            max_batch_tokens: self.embed.max_batch_tokens,
            max_batch_size: self.embed.max_batch_size.max(1),
            precision: self.embed.precision,
        }
    }

    /// The server's time limits (a non-positive or non-finite value in the file is refused).
    pub fn http_limits(&self) -> Result<[std::time::Duration; 5], ConfigError> {
        let h = &self.http;
        let mut out = [std::time::Duration::ZERO; 5];
        for (slot, (name, v)) in out.iter_mut().zip([
            ("request_timeout_secs", h.request_timeout_secs),
            ("idle_timeout_secs", h.idle_timeout_secs),
            ("header_read_timeout_secs", h.header_read_timeout_secs),
            ("body_read_timeout_secs", h.body_read_timeout_secs),
            ("drain_timeout_secs", h.drain_timeout_secs),
        ]) {
            *slot = std::time::Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ConfigError::File {
                    path: "[http]".into(),
                    message: format!("{name} must be a positive number of seconds, not {v}"),
                })?;
        }
        Ok(out)
    }

    pub fn queue_config(&self) -> crate::queue::QueueConfig {
        crate::queue::QueueConfig {
            max_queued_inputs: self.embed.max_queued_inputs,
            max_queued_bulk_inputs: self.embed.max_queued_bulk_inputs.max(1),
            bulk_batch_tokens: crate::queue::QueueConfig::default().bulk_batch_tokens,
            max_client_batch: self.embed.max_client_batch.max(1),
        }
    }
}

/// Sets the compute thread count once, before any inference: candle's matmul asks rayon how many
/// threads to use, so both the global pool and `RAYON_NUM_THREADS` must agree. An explicit count
/// avoids over-subscription when several pools would otherwise each take every core. The pool's
/// threads are named `compute-N` (per-thread CPU figures, profiles).
pub fn init_compute_threads(requested: usize) -> usize {
    let n = if requested > 0 {
        requested
    } else if let Some(n) = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        n
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    };
    // Called from main before other threads exist (single-threaded), so setting the variable is sound.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("compute-{i}"))
        .build_global();
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn environment_wins_over_file() {
        let mut s: Settings = toml::from_str(
            "bind = \"0.0.0.0:9000\"\nteam_users = [\"U1\"]\n[embed]\nmax_batch_tokens = 1024\n",
        )
        .unwrap();
        let env: HashMap<&str, &str> = [
            ("TRIAGE_BIND", "127.0.0.1:7000"),
            ("TRIAGE_API_TOKENS", "a, b,,"),
            ("TRIAGE_TEAM_USERS", "U2,U3"),
        ]
        .into();
        s.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.bind, "127.0.0.1:7000");
        assert_eq!(s.api_tokens, vec![Secret::new("a"), Secret::new("b")]);
        assert_eq!(s.team_users, vec!["U2", "U3"]);
        assert_eq!(s.embed.max_batch_tokens, 1024);
        assert_eq!(s.database_url, "sqlite://triage.db");
    }

    #[test]
    fn unknown_keys_and_bad_numbers_are_errors() {
        assert!(toml::from_str::<Settings>("bnd = \"x\"").is_err());
        let mut s = Settings::default();
        let err = s
            .apply_env(|k| (k == "TRIAGE_EMBED_THREADS").then(|| "many".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("TRIAGE_EMBED_THREADS"));
        let err = s
            .apply_env(|k| (k == "TRIAGE_HTTP_DRAIN_TIMEOUT").then(|| "0".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("TRIAGE_HTTP_DRAIN_TIMEOUT"));
    }

    #[test]
    fn an_edge_is_configured_by_the_core_url_token_and_its_own_database() {
        let mut s = Settings::default();
        assert_eq!(
            (s.core_url.as_deref(), s.edge_database_url.as_str()),
            (None, "sqlite://triage-edge.db")
        );
        let env = |k: &str| match k {
            "TRIAGE_CORE_URL" => Some(" http://core:8080 ".to_string()),
            "TRIAGE_CORE_TOKEN" => Some("t0k".to_string()),
            "TRIAGE_EDGE_DATABASE_URL" => Some("sqlite:///var/lib/edge.db".to_string()),
            _ => None,
        };
        s.apply_env(env).unwrap();
        assert_eq!(s.core_url.as_deref(), Some("http://core:8080"));
        assert_eq!(s.core_token.expose(), "t0k");
        assert_eq!(s.edge_database_url, "sqlite:///var/lib/edge.db");
        // Set but empty: one process does everything.
        s.apply_env(|k| (k == "TRIAGE_CORE_URL").then(String::new))
            .unwrap();
        assert_eq!(s.core_url, None);
        let file: Settings = toml::from_str("core_url = \"http://core\"\ncore_token = \"x\"\n").unwrap();
        assert_eq!(file.core_url.as_deref(), Some("http://core"));
    }

    #[test]
    fn http_limits_default_to_a_30_s_drain_and_read_the_environment() {
        let mut s: Settings = toml::from_str("[http]\nidle_timeout_secs = 5\n").unwrap();
        assert_eq!(s.http_limits().unwrap()[4].as_secs(), 30);
        assert_eq!(s.http_limits().unwrap()[1].as_secs(), 5);
        s.apply_env(|k| (k == "TRIAGE_HTTP_DRAIN_TIMEOUT").then(|| "2.5".to_string()))
            .unwrap();
        assert_eq!(s.http_limits().unwrap()[4].as_millis(), 2500);
        s.http.body_read_timeout_secs = -1.0;
        assert!(s.http_limits().is_err());
    }

    #[test]
    fn slack_bot_user_names_ttl_and_outbox_retention_read_the_environment() {
        let mut s = Settings::default();
        assert_eq!(
            (
                s.slack_bot_user.as_deref(),
                s.slack_names_ttl_hours,
                s.slack_outbox_retention_hours
            ),
            (None, 24, 72)
        );
        let env: HashMap<&str, &str> = [
            ("TRIAGE_SLACK_BOT_USER", " U0BOT "),
            ("TRIAGE_SLACK_NAMES_TTL_HOURS", "6"),
            ("TRIAGE_SLACK_OUTBOX_RETENTION_HOURS", "1"),
        ]
        .into();
        s.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(
            (
                s.slack_bot_user.as_deref(),
                s.slack_names_ttl_hours,
                s.slack_outbox_retention_hours
            ),
            (Some("U0BOT"), 6, 1)
        );
        let err = s
            .apply_env(|k| (k == "TRIAGE_SLACK_OUTBOX_RETENTION_HOURS").then(|| "-1".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("TRIAGE_SLACK_OUTBOX_RETENTION_HOURS"));
    }

    #[test]
    fn flags_win_over_the_environment() {
        let mut s = Settings::default();
        s.apply_env(|k| (k == "TRIAGE_BIND").then(|| "127.0.0.1:7000".to_string()))
            .unwrap();
        Overrides {
            bind: Some("127.0.0.1:9".into()),
            max_batch_tokens: Some(0),
            ..Overrides::default()
        }
        .apply(&mut s);
        assert_eq!(s.bind, "127.0.0.1:9");
        assert_eq!(s.embed.max_batch_tokens, 1);
        assert_eq!(s.model_dir, None);
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("xoxb-123")), "Secret(***)");
    }
}
