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
    /// How long a request may take to arrive whole, header and body, from its first
    /// byte. Telegram writes each request at once, so only a stalled client waits this out.
    #[serde(with = "humantime_serde")]
    pub request_read_timeout: Duration,
    /// How long a connection may wait for its next request (or, new, for its first).
    /// Telegram closes its own idle connections after 60 s and may open one before it has
    /// an update to send, so keep this above 60 s: then Telegram, not the relay, closes.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a TLS handshake may take (with `tls_cert`).
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// Connections open at once; at this many the listener stops accepting (new ones wait
    /// in the kernel's backlog) until one closes. At least twice the sum of the webhook
    /// bots' `max_connections`, and below the process's open-file limit.
    pub max_open_connections: usize,
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
            request_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            tls_handshake_timeout: Duration::from_secs(10),
            max_open_connections: 4096,
        }
    }
}

impl WebhookServerConfig {
    /// Problems with the listener's connection limits, given the webhook bots it serves.
    pub fn validate<'a>(
        &self,
        bots: impl IntoIterator<Item = &'a BotWebhookConfig>,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for (key, timeout) in [
            ("request_read_timeout", self.request_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
        ] {
            if timeout.is_zero() {
                errors.push(format!(
                    "webhook.{key} (TGRELAY_WEBHOOK__{}) must be above zero",
                    key.to_uppercase()
                ));
            }
        }
        // What Telegram may keep open at once must always find a place; the cap leaves
        // as many again for the rest: connections still closing, other clients, and
        // stalled ones until their timeouts.
        let telegram_connections: u64 =
            bots.into_iter().map(|b| u64::from(b.max_connections)).sum();
        let needed = telegram_connections.saturating_mul(2).max(1);
        if (self.max_open_connections as u64) < needed {
            errors.push(format!(
                "webhook.max_open_connections (TGRELAY_WEBHOOK__MAX_OPEN_CONNECTIONS) is {} but \
                 must be at least {needed}: twice the {telegram_connections} connections the \
                 webhook bots' max_connections let Telegram open",
                self.max_open_connections
            ));
        }
        errors
    }
}

/// `[bots.<name>.webhook]`: where Telegram reaches this bot and how it is registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_telegram_twice_its_connections() {
        let bot = |max_connections| BotWebhookConfig {
            max_connections,
            ..BotWebhookConfig::default()
        };
        let config = WebhookServerConfig::default();
        assert!(config.validate([&bot(100), &bot(40)]).is_empty());
        let many = vec![bot(100); 21];
        let errors = config.validate(&many);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("at least 4200"), "{errors:?}");
        let local = bot(100_000);
        let raised = WebhookServerConfig {
            max_open_connections: 200_000,
            ..WebhookServerConfig::default()
        };
        assert!(raised.validate([&local]).is_empty());
    }

    #[test]
    fn every_timeout_must_be_above_zero() {
        let config = WebhookServerConfig {
            request_read_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            tls_handshake_timeout: Duration::ZERO,
            max_open_connections: 0,
            ..WebhookServerConfig::default()
        };
        let errors = config.validate([]);
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains("TGRELAY_WEBHOOK__REQUEST_READ_TIMEOUT"));
    }
}
