//! Logs (tracing, to stderr) and Prometheus metrics.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Logs go to stderr so stdout stays the command's result (last line: one JSON object).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn seconds() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub path: String,
    pub status: u16,
}

/// What the Slack inbound worker did with a delivery (`ingested`, `ignored:channel_join`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlackEventLabels {
    pub outcome: String,
}

/// Per-phase histograms of the embedding runtime, as text-embeddings-inference exposes them.
#[derive(Clone)]
pub struct EmbedMetrics {
    pub tokenization: Histogram,
    pub queue: Histogram,
    pub inference: Histogram,
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub queue_depth: Gauge<i64, AtomicI64>,
}

impl Default for EmbedMetrics {
    fn default() -> Self {
        Self {
            tokenization: seconds(),
            queue: seconds(),
            inference: seconds(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            batch_tokens: Histogram::new(exponential_buckets(8.0, 2.0, 12)),
            queue_depth: Gauge::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

impl MethodLabels {
    pub fn of(method: &str) -> Self {
        MethodLabels {
            method: method.to_string(),
        }
    }
}

/// The Slack outbox: how much waits, and what sending it cost.
#[derive(Clone, Default)]
pub struct SlackMetrics {
    /// Rows pending or in flight.
    pub outbox_depth: Gauge<i64, AtomicI64>,
    /// Calls Slack accepted, per method.
    pub sent: Family<MethodLabels, Counter>,
    /// Failed attempts scheduled again (transient errors, 429s), per method.
    pub retries: Family<MethodLabels, Counter>,
    /// HTTP 429 answers, per method.
    pub rate_limited: Family<MethodLabels, Counter>,
    /// Rows given up (permanent errors, too many attempts), per method.
    pub failed: Family<MethodLabels, Counter>,
    /// Card posts that may have reached Slack before a failure or crash and were found in the
    /// channel's history instead of being posted again.
    pub cards_recovered: Counter,
}

/// Everything `/metrics` shows.
#[derive(Clone)]
pub struct Metrics {
    pub embed: EmbedMetrics,
    pub slack: SlackMetrics,
    pub requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub slack_events: Family<SlackEventLabels, Counter>,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let embed = EmbedMetrics::default();
        let requests = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(seconds);
        let mut r = Registry::with_prefix("triage");
        r.register(
            "http_request_duration_seconds",
            "HTTP request duration by route and status",
            requests.clone(),
        );
        r.register(
            "embed_tokenization_duration_seconds",
            "Tokenization time per request",
            embed.tokenization.clone(),
        );
        r.register(
            "embed_queue_duration_seconds",
            "Time a request waited for the model thread",
            embed.queue.clone(),
        );
        r.register(
            "embed_inference_duration_seconds",
            "Forward-pass time per batch",
            embed.inference.clone(),
        );
        r.register(
            "embed_batch_size",
            "Sequences per forward batch",
            embed.batch_size.clone(),
        );
        r.register(
            "embed_batch_tokens",
            "Padded tokens per forward batch",
            embed.batch_tokens.clone(),
        );
        r.register(
            "embed_queue_depth",
            "Inputs waiting for the model thread",
            embed.queue_depth.clone(),
        );
        let slack_events = Family::<SlackEventLabels, Counter>::default();
        r.register(
            "slack_events",
            "Slack Events API deliveries processed, by outcome (ignored ones by subtype)",
            slack_events.clone(),
        );
        let slack = SlackMetrics::default();
        r.register(
            "slack_outbox_depth",
            "Slack Web API writes pending or in flight",
            slack.outbox_depth.clone(),
        );
        r.register(
            "slack_calls",
            "Slack Web API calls accepted, by method",
            slack.sent.clone(),
        );
        r.register(
            "slack_retries",
            "Slack Web API attempts scheduled again after a transient error or a 429, by method",
            slack.retries.clone(),
        );
        r.register(
            "slack_rate_limited",
            "Slack Web API HTTP 429 answers, by method",
            slack.rate_limited.clone(),
        );
        r.register(
            "slack_failed",
            "Slack Web API writes given up (permanent error or too many attempts), by method",
            slack.failed.clone(),
        );
        r.register(
            "slack_cards_recovered",
            "Card posts found in the channel's history instead of being posted again",
            slack.cards_recovered.clone(),
        );
        Self {
            embed,
            slack,
            requests,
            slack_events,
            registry: Arc::new(r),
        }
    }
}

impl Metrics {
    /// Counts one processed Slack delivery.
    pub fn slack_event(&self, outcome: &str) {
        // `failed:<why>` carries free text: one label for all failures. Other outcomes may carry
        // a name from the event (its type or subtype): one label for any that is not a plain
        // short identifier, so a sender cannot break the exposition format or grow the label set.
        let plain = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':')
        };
        let outcome = if outcome.starts_with("failed:") {
            "failed"
        } else if plain(outcome) {
            outcome
        } else if outcome.starts_with("ignored:") {
            "ignored:other"
        } else {
            "other"
        };
        self.slack_events
            .get_or_create(&SlackEventLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Peak resident set size of this process in bytes (VmHWM), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn slack_event_labels_stay_plain_identifiers() {
        let m = Metrics::default();
        m.slack_event("ingested");
        m.slack_event("ignored:channel_join");
        m.slack_event("ignored:we\"ird\n} 1\nfake_metric");
        m.slack_event(&format!("ignored:{}", "x".repeat(100)));
        m.slack_event("failed:store unavailable: connection refused");
        let text = m.render();
        let events: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("triage_slack_events_total"))
            .collect();
        assert!(
            events.iter().any(|l| l.contains("outcome=\"ingested\"} 1")),
            "{text}"
        );
        assert!(
            events.iter().any(|l| l.contains("outcome=\"ignored:other\"} 2")),
            "{text}"
        );
        assert!(
            events.iter().any(|l| l.contains("outcome=\"failed\"} 1")),
            "{text}"
        );
        assert!(!text.contains("fake_metric"), "{text}");
    }
}
