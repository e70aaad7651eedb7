//! Webhook settings: the one listener every webhook bot shares (`[webhook]`), and each
//! bot's own registration (`[bots.<name>.webhook]`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// `[webhook]`: the listener Telegram POSTs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookServerConfig {
    /// Address to listen on (plain HTTP behind an ingress, or HTTPS with `tls_cert`).
    pub listen: String,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Requests handled at once across all bots; more get 503 with Retry-After.
    pub max_concurrency: usize,
    /// How long a request may wait for the broker's ack before it answers 503
    /// (Telegram waits 60 s, then retries).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// `Retry-After` seconds sent with a 503 (Telegram honours it; keep it small).
    pub retry_after_secs: u64,
    /// PEM certificate chain and key: serve HTTPS directly (setups without an ingress).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Accept requests only from Telegram's networks (149.154.160.0/20, 91.108.4.0/22).
    pub telegram_networks_only: bool,
    /// Proxies (CIDRs) whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<String>,
}

impl Default for WebhookServerConfig {
    fn default() -> Self {
        WebhookServerConfig {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 1 << 20,
            max_concurrency: 1024,
            publish_timeout: Duration::from_secs(10),
            retry_after_secs: 1,
            tls_cert: None,
            tls_key: None,
            telegram_networks_only: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[bots.<name>.webhook]`: where Telegram reaches this bot and how it is registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotWebhookConfig {
    /// Public HTTPS URL Telegram POSTs to; required to register.
    pub url: Option<String>,
    /// Path served on the listener; default `/telegram/<bot>`.
    pub path: Option<String>,
    /// The `X-Telegram-Bot-Api-Secret-Token` Telegram must send. Unset: a strong random
    /// one is generated at each start, which only works with a single replica.
    pub secret_token: Option<Secret>,
    /// A file holding the secret token (a mounted Kubernetes secret).
    pub secret_token_file: Option<PathBuf>,
    /// Call setWebhook at start (skipped when Telegram already has the same settings).
    pub register: bool,
    /// Concurrent connections Telegram may open, 1-100 (up to 100,000 on a local Bot API server).
    pub max_connections: u32,
    /// Fixed IP address Telegram sends to, instead of resolving the URL's host.
    pub ip_address: Option<String>,
    /// Public certificate (PEM) to upload, for a self-signed certificate.
    pub certificate: Option<PathBuf>,
    /// Drop the updates waiting at Telegram when registering. Never sent unless true.
    pub drop_pending_updates: bool,
    /// How often getWebhookInfo is read for metrics and error logs.
    #[serde(with = "humantime_serde")]
    pub info_interval: Duration,
}

impl Default for BotWebhookConfig {
    fn default() -> Self {
        BotWebhookConfig {
            url: None,
            path: None,
            secret_token: None,
            secret_token_file: None,
            register: true,
            max_connections: 40,
            ip_address: None,
            certificate: None,
            drop_pending_updates: false,
            info_interval: Duration::from_secs(60),
        }
    }
}

impl BotWebhookConfig {
    /// The path this bot is served on.
    pub fn path_for(&self, bot: &str) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("/telegram/{bot}"))
    }
}
