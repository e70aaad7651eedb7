//! `Metrics`: every Prometheus metric of the relay, owned by one struct with its own
//! registry (no globals, so each test and each relay in a process counts apart).
//!
//! Labels stay bounded: bot (configured names), kind (Bot API field names), sink,
//! method, code, outcome. Never a chat or user id. `code` is an HTTP status written as
//! its three digits, so a class is one regex away (`code=~"5.."`); a Bot API call that
//! got no answer at all counts as `transport`, which no such regex matches.
//!
//! The counters an operator alerts on exist at 0 from the start for every bot
//! ([`Metrics::register_bot`]): `increase(...) == 0` and rate panels then work on a
//! quiet bot instead of finding no series at all.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntGauge, Registry, TextEncoder,
};

mod bot;
pub mod compact;
#[cfg(target_os = "linux")]
mod process;

pub use bot::BotSeries;
pub use compact::{CounterVec as IntCounterVec, GaugeVec as IntGaugeVec};

pub struct Metrics {
    registry: Registry,
    /// Updates read from Telegram, by bot and kind.
    pub updates_received: IntCounterVec,
    /// Updates a broker acknowledged, by bot, kind and outcome (`delivered`, `dead_lettered`).
    pub updates_published: IntCounterVec,
    /// Publishes that failed and will be retried, by bot, sink and class (`transient`, `fatal`).
    pub publish_failures: IntCounterVec,
    /// Time from publishing a batch to its last broker acknowledgement.
    pub publish_seconds: HistogramVec,
    /// Updates published but not yet settled, by bot.
    pub updates_in_flight: IntGaugeVec,
    /// The highest update_id confirmed to Telegram, by bot.
    pub last_confirmed_update_id: IntGaugeVec,
    /// Bot API calls, by bot, method and outcome (`ok`, `error`).
    pub telegram_requests: IntCounterVec,
    /// Bot API call duration, by method (not by bot: a histogram per bot and method is
    /// ~20 series each, too many once a relay runs thousands of bots).
    pub telegram_request_seconds: HistogramVec,
    /// Bot API errors, by bot, method and code (`409`, `429`, `502`, `transport`...).
    pub telegram_errors: IntCounterVec,
    /// Seconds spent waiting on Telegram's `retry_after`, by bot.
    pub retry_after_seconds: IntCounterVec,
    /// Bytes in a reply that were not an update (sent to the dead-letter route), by bot.
    pub malformed_updates: IntCounterVec,
    /// 1 while a bot's source is healthy (recent successful poll, or a registered webhook), by bot.
    pub source_up: IntGaugeVec,
    /// Webhook requests answered, by bot and code (the HTTP status).
    pub webhook_requests: IntCounterVec,
    /// Updates re-sent by Telegram after being acked, answered without publishing, by bot.
    pub duplicates_suppressed: IntCounterVec,
    /// getWebhookInfo: updates waiting at Telegram, by bot.
    pub webhook_pending_updates: IntGaugeVec,
    /// getWebhookInfo: unix time of Telegram's last delivery error (0: none), by bot.
    pub webhook_last_error_timestamp: IntGaugeVec,
    /// getWebhookInfo: max_connections, by bot.
    pub webhook_max_connections: IntGaugeVec,
    /// Configuration reloads (SIGHUP, `tokens_dir`), by result (`applied`, `refused`).
    pub config_reloads: IntCounterVec,
    /// Bots added, removed or changed by a reload, by change.
    pub bot_changes: IntCounterVec,
    /// 1 while the last configuration change was applied (or none was tried), 0 once
    /// one was refused: the relay runs an older configuration than the one on disk.
    pub config_last_reload_successful: IntGauge,
    /// Bots in the configuration now.
    pub bots_configured: IntGauge,
    /// Shared cluster: bots this replica runs now.
    pub bots_owned: IntGauge,
    /// Shared cluster: live replicas this one sees, itself included.
    pub cluster_members: IntGauge,
    /// Shared cluster: 1 while another process runs under this replica's
    /// `cluster.instance` and this one yields to it (runs no bot).
    pub cluster_name_conflict: IntGauge,
    /// Shared cluster: times this replica's lease lapsed (no heartbeat stored in time).
    pub cluster_lease_lapses: prometheus::IntCounter,
    /// Shared cluster: when the last heartbeat the broker stored was sent (Unix seconds).
    pub cluster_lease_renewed: prometheus::Gauge,
    /// Shared cluster: owner writes the compare-and-set refused (another replica wrote
    /// the key first).
    pub cluster_owner_conflicts: prometheus::IntCounter,
    /// Shared cluster on Kafka: records of the owners log still to read at start.
    pub cluster_replay_lag: IntGauge,
    /// Shared cluster: 1 while this replica owns the bot, 0 once it released or lost
    /// it, by bot. Summed over replicas, 1 for every bot that has an owner.
    pub bot_owner: IntGaugeVec,
    /// Shared cluster: bots this replica came to own, by bot.
    pub lease_acquisitions: IntCounterVec,
    /// Shared cluster: bots this replica lost, by bot and reason (`lapsed`, `taken`).
    pub lease_losses: IntCounterVec,
    /// Shared cluster: how long a bot went without an owner before this replica took it.
    pub bot_unowned_seconds: Histogram,
    // The webhook listener's connections: what its limits hold off (one block).
    /// Connections open on the webhook listener (at most `webhook.max_open_connections`).
    pub webhook_connections_open: prometheus::IntGauge,
    /// Webhook connections the listener closed for a limit, by reason
    /// (`request_timeout`, `idle_timeout`, `tls_handshake_timeout`).
    pub webhook_connections_closed: IntCounterVec,
    /// Times the webhook listener paused accepting because `max_open_connections` were open.
    pub webhook_connection_limit_reached: prometheus::IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        // No registry-wide prefix: the relay's metrics name themselves `tgrelay_*`, and the
        // process collector keeps the standard `process_*` names dashboards expect.
        let registry = Registry::new();
        let m = Metrics {
            updates_received: counter(
                &registry,
                "updates_received_total",
                "Updates read from Telegram.",
                &["bot", "kind"],
            ),
            updates_published: counter(
                &registry,
                "updates_published_total",
                "Updates a broker acknowledged.",
                &["bot", "kind", "outcome"],
            ),
            publish_failures: counter(
                &registry,
                "publish_failures_total",
                "Publishes that failed and will be retried.",
                &["bot", "sink", "class"],
            ),
            publish_seconds: histogram(
                &registry,
                "publish_ack_seconds",
                "From publishing a batch to its last broker acknowledgement.",
                &["sink"],
            ),
            updates_in_flight: gauge(
                &registry,
                "updates_in_flight",
                "Updates published and not yet settled.",
                &["bot"],
            ),
            last_confirmed_update_id: gauge(
                &registry,
                "last_confirmed_update_id",
                "Highest update_id confirmed to Telegram.",
                &["bot"],
            ),
            telegram_requests: counter(
                &registry,
                "telegram_requests_total",
                "Bot API calls.",
                &["bot", "method", "outcome"],
            ),
            telegram_request_seconds: histogram(
                &registry,
                "telegram_request_duration_seconds",
                "Bot API call duration, by method.",
                &["method"],
            ),
            telegram_errors: counter(
                &registry,
                "telegram_errors_total",
                "Bot API errors by code.",
                &["bot", "method", "code"],
            ),
            retry_after_seconds: counter(
                &registry,
                "telegram_retry_after_seconds_total",
                "Seconds waited on Telegram's retry_after.",
                &["bot"],
            ),
            malformed_updates: counter(
                &registry,
                "malformed_updates_total",
                "Reply items that were not updates (dead-lettered).",
                &["bot"],
            ),
            source_up: gauge(
                &registry,
                "source_up",
                "1 while the bot's source is healthy.",
                &["bot"],
            ),
            webhook_requests: counter(
                &registry,
                "webhook_requests_total",
                "Webhook requests answered, by HTTP status code.",
                &["bot", "code"],
            ),
            duplicates_suppressed: counter(
                &registry,
                "duplicates_suppressed_total",
                "Re-sent updates answered without publishing again.",
                &["bot"],
            ),
            webhook_pending_updates: gauge(
                &registry,
                "webhook_pending_updates",
                "Updates waiting at Telegram (getWebhookInfo).",
                &["bot"],
            ),
            webhook_last_error_timestamp: gauge(
                &registry,
                "webhook_last_error_timestamp_seconds",
                "Unix time of Telegram's last webhook delivery error (getWebhookInfo).",
                &["bot"],
            ),
            webhook_max_connections: gauge(
                &registry,
                "webhook_max_connections",
                "max_connections of the webhook (getWebhookInfo).",
                &["bot"],
            ),
            config_reloads: counter(
                &registry,
                "config_reloads_total",
                "Configuration reloads (SIGHUP, tokens_dir), by result.",
                &["result"],
            ),
            bot_changes: counter(
                &registry,
                "bot_changes_total",
                "Bots added, removed or changed by a reload.",
                &["change"],
            ),
            config_last_reload_successful: plain_gauge(
                &registry,
                "config_last_reload_successful",
                "1 while the last configuration change was applied, 0 once one was refused.",
            ),
            bots_configured: plain_gauge(
                &registry,
                "bots_configured",
                "Bots in the configuration now.",
            ),
            bots_owned: plain_gauge(&registry, "bots_owned", "Bots this replica runs now."),
            cluster_members: plain_gauge(
                &registry,
                "cluster_members",
                "Live replicas this one sees, itself included.",
            ),
            cluster_lease_lapses: plain_counter(
                &registry,
                "cluster_lease_lapses_total",
                "Times this replica's cluster lease lapsed (no heartbeat stored in time).",
            ),
            cluster_lease_renewed: float_gauge(
                &registry,
                "cluster_lease_renewed_timestamp_seconds",
                "When the last heartbeat the broker stored was sent (Unix seconds).",
            ),
            cluster_owner_conflicts: plain_counter(
                &registry,
                "cluster_owner_conflicts_total",
                "Owner writes refused by the compare-and-set: another replica wrote the key first.",
            ),
            cluster_replay_lag: plain_gauge(
                &registry,
                "cluster_replay_lag_records",
                "Kafka: records of the owners log still to read before this replica plans.",
            ),
            cluster_name_conflict: plain_gauge(
                &registry,
                "cluster_name_conflict",
                "1 while another process runs under this cluster.instance and this one yields to it.",
            ),
            bot_owner: gauge(
                &registry,
                "bot_owner",
                "1 while this replica owns the bot (shared cluster).",
                &["bot"],
            ),
            lease_acquisitions: counter(
                &registry,
                "lease_acquisitions_total",
                "Bots this replica came to own.",
                &["bot"],
            ),
            lease_losses: counter(
                &registry,
                "lease_losses_total",
                "Bots this replica lost without releasing them (lapsed, taken).",
                &["bot", "reason"],
            ),
            bot_unowned_seconds: {
                let opts = HistogramOpts::new(
                    "tgrelay_bot_unowned_seconds",
                    "How long a bot went without an owner before this replica took it.",
                )
                .buckets(vec![
                    0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0, 60.0,
                ]);
                let h = Histogram::with_opts(opts).expect("valid metric");
                registry
                    .register(Box::new(h.clone()))
                    .expect("metric registers once");
                h
            },
            webhook_connections_open: plain_gauge(
                &registry,
                "webhook_connections_open",
                "Connections open on the webhook listener.",
            ),
            webhook_connections_closed: counter(
                &registry,
                "webhook_connections_closed_total",
                "Webhook connections the listener closed for a limit, by reason.",
                &["reason"],
            ),
            webhook_connection_limit_reached: plain_counter(
                &registry,
                "webhook_connection_limit_reached_total",
                "Times the webhook listener paused accepting at max_open_connections.",
            ),
            registry,
        };
        for result in ["applied", "refused"] {
            m.config_reloads.with_label_values(&[result]);
        }
        for change in ["added", "removed", "changed"] {
            m.bot_changes.with_label_values(&[change]);
        }
        // The configuration the relay started with was valid, or it would not run.
        m.config_last_reload_successful.set(1);
        let build = gauge(
            &m.registry,
            "build_info",
            "Build information; always 1.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(process::ProcessCollector::new()))
            .expect("process metrics register once");
        m
    }

    /// The registry, for metrics registered by a part of the relay that owns them.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(&format!("tgrelay_{name}"), help, labels);
    registry
        .register(Box::new(c.clone()))
        .expect("metric registers once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(&format!("tgrelay_{name}"), help, labels);
    registry
        .register(Box::new(g.clone()))
        .expect("metric registers once");
    g
}

fn plain_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(format!("tgrelay_{name}"), help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registers once");
    g
}

fn float_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    let g = prometheus::Gauge::new(format!("tgrelay_{name}"), help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registers once");
    g
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> prometheus::IntCounter {
    let c = prometheus::IntCounter::new(format!("tgrelay_{name}"), help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registers once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0,
    ];
    let h = HistogramVec::new(
        HistogramOpts::new(format!("tgrelay_{name}"), help).buckets(buckets),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registers once");
    h
}
