//! Configuration: built-in defaults, then `config.toml`, then `TGRELAY_*` environment.
//!
//! Nested keys use `__` in the environment (`TGRELAY_BOTS__MAIN__TOKEN`,
//! `TGRELAY_SINK__KIND=nats`). Every struct denies unknown fields, so a typo is an
//! error instead of a silently ignored setting; [`Config::load`] lists every problem
//! at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::Env;
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::envelope::UpdateKind;
use crate::outbound::OutboundConfig;
use crate::secret::Secret;
use crate::sink::SinkConfig;
use crate::source::webhook::{BotWebhookConfig, WebhookServerConfig};
use crate::telegram::TelegramConfig;

mod bots;
mod cluster;
pub mod keys;
mod sources;
mod validate;

pub use bots::BOT_PLACEHOLDER;
pub use cluster::{ClusterConfig, ClusterMode};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The bots to relay, by name. The name is `{bot}` in routing templates.
    pub bots: BTreeMap<String, BotConfig>,
    /// Settings every bot starts from: a `[bots.<name>]` table overrides them key by key,
    /// and a bot known only by its token file has exactly these. `{bot}` in a value
    /// becomes the bot's name. Never a token.
    pub bot_defaults: BotConfig,
    /// A directory of token files, one per bot, named as the bot: read at start, on
    /// SIGHUP and whenever it changes (a Kubernetes Secret mounted as a directory).
    pub tokens_dir: Option<PathBuf>,
    /// Where updates go.
    pub sink: SinkConfig,
    pub log: LogConfig,
    /// Metrics, health and readiness endpoints.
    pub admin: AdminConfig,
    /// The listener webhook bots share.
    pub webhook: WebhookServerConfig,
    /// One relay owning every bot, or replicas sharing them through the broker.
    pub cluster: ClusterConfig,
    /// The Bot API client every bot shares: the CAs it trusts.
    pub telegram: TelegramConfig,
    /// Bot API calls that services publish to the broker, executed by each bot's owner.
    pub outbound: OutboundConfig,
    /// On shutdown, how long in-flight publishes may take before the relay exits anyway
    /// (whatever is not confirmed by then is fetched again next time: duplicates, no loss).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Threads running the relay's async work; 0 picks them (see [`Config::runtime_threads`]).
    pub worker_threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bots: BTreeMap::new(),
            bot_defaults: BotConfig::default(),
            tokens_dir: None,
            sink: SinkConfig::default(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            webhook: WebhookServerConfig::default(),
            cluster: ClusterConfig::default(),
            telegram: TelegramConfig::default(),
            outbound: OutboundConfig::default(),
            drain_timeout: Duration::from_secs(20),
            worker_threads: 0,
        }
    }
}

/// One bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotConfig {
    /// The bot token from @BotFather.
    pub token: Option<Secret>,
    /// A file holding the token (a mounted Kubernetes secret); used when `token` is unset.
    pub token_file: Option<PathBuf>,
    /// Bot API base URL; point it at a local Bot API server to use one.
    pub api_url: String,
    pub mode: Mode,
    /// Update kinds to ask Telegram for. Always sent, because Telegram otherwise keeps
    /// the last value any client sent, and its default leaves out chat_member,
    /// message_reaction and message_reaction_count. Default: every kind this
    /// build knows (`UpdateKind::KNOWN`, Bot API 10.3's).
    pub allowed_updates: Vec<String>,
    /// Long-poll timeout sent to getUpdates (whole seconds, at most 50).
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// Updates per getUpdates call, 1 to 100.
    pub poll_limit: u32,
    /// In polling mode, call deleteWebhook at start if a webhook is set (pending updates
    /// are kept), so switching a bot from webhook to polling just works.
    pub delete_webhook: bool,
    /// Webhook mode: URL, path, secret and registration.
    pub webhook: BotWebhookConfig,
    /// Set when the webhook secret was generated at load (not configured).
    #[serde(skip)]
    pub webhook_secret_generated: bool,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            token: None,
            token_file: None,
            api_url: crate::telegram::DEFAULT_BASE_URL.to_owned(),
            mode: Mode::Polling,
            allowed_updates: UpdateKind::KNOWN
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            poll_timeout: Duration::from_secs(30),
            poll_limit: 100,
            delete_webhook: true,
            webhook: BotWebhookConfig::default(),
            webhook_secret_generated: false,
        }
    }
}

impl BotConfig {
    /// The token, once [`Config::load`] has resolved `token_file`.
    pub fn token(&self) -> &Secret {
        self.token.as_ref().expect("validated config has a token")
    }

    /// What this bot, named `name`, publishes to (for provisioning and checks).
    pub fn routes(&self, name: &str) -> crate::broker::BotRoutes {
        crate::broker::BotRoutes {
            name: name.to_owned(),
            id: self.bot_id(),
            kinds: self.allowed_updates.clone(),
        }
    }

    /// Telegram's bot id: the number before `:` in the token.
    pub fn bot_id(&self) -> u64 {
        validate::bot_id(self.token().expose()).expect("validated token has a bot id")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// getUpdates long polling.
    Polling,
    /// Telegram POSTs updates to the relay.
    Webhook,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Level or `tracing` filter (`info`, `tgrelay=debug`); `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the metrics/health server; empty to turn it off.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "0.0.0.0:9090".into(),
        }
    }
}

/// Kubernetes injects `TGRELAY_SERVICE_HOST`, `TGRELAY_PORT_9090_TCP`... into pods when a
/// Service is named `tgrelay`; they are not settings.
fn is_kubernetes_service_link(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.starts_with("service_") || key == "port" || key.starts_with("port_")
}

/// Every problem found in a configuration, one per line (a long one indented below).
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration:")?;
        for error in &self.0 {
            write!(f, "\n  - {}", error.replace('\n', "\n    "))?;
        }
        Ok(())
    }
}

/// A duration written as humantime text (`20s`), for a value extracted on its own.
#[derive(Deserialize)]
struct Humantime(#[serde(with = "humantime_serde")] Duration);

impl Config {
    /// Loads defaults → `path` (when it exists, or must exist if `required`) → environment,
    /// resolves token files, and validates.
    ///
    /// The file is read from exactly `path` (a relative one from the current directory,
    /// never a parent's). A file that is not TOML is the only problem reported.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigErrors> {
        let mut figment = Figment::new();
        if let Some(file) = sources::toml_file(path, required).map_err(|e| ConfigErrors(vec![e]))? {
            figment = figment.merge(file);
        }
        Self::from_figment(
            figment.merge(
                Env::prefixed(keys::ENV_PREFIX)
                    .filter(|key| !is_kubernetes_service_link(key.as_str()))
                    .split("__")
                    .ignore(&["config"]),
            ),
        )
    }

    /// Extracts and validates a configuration from any figment (tests use this).
    ///
    /// Each section is extracted on its own, so one mistyped value does not hide the
    /// problems of the other sections.
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut config = Config::default();
        macro_rules! extract {
            ($field:ident, $key:literal) => {
                match figment.extract_inner($key) {
                    Ok(value) => config.$field = value,
                    Err(e) if e.missing() => {}
                    Err(e) => errors.extend(keys::describe(e, $key)),
                }
            };
        }
        extract!(sink, "sink");
        extract!(log, "log");
        extract!(admin, "admin");
        extract!(webhook, "webhook");
        extract!(cluster, "cluster");
        extract!(telegram, "telegram");
        extract!(outbound, "outbound");
        extract!(worker_threads, "worker_threads");
        extract!(tokens_dir, "tokens_dir");
        match figment.extract_inner::<Humantime>("drain_timeout") {
            Ok(Humantime(d)) => config.drain_timeout = d,
            Err(e) if e.missing() => {}
            Err(e) => errors.extend(keys::describe(e, "drain_timeout")),
        }
        // Merged once: every bot is read from this tree (see `bots`).
        let top: BTreeMap<String, figment::value::Value> = figment.extract().unwrap_or_default();
        let bots = bots::read(&figment, &top, config.tokens_dir.as_deref(), &mut errors);
        config.bots = bots.bots;
        config.bot_defaults = bots.defaults;
        let known = [
            "bots",
            "bot_defaults",
            "sink",
            "log",
            "admin",
            "webhook",
            "cluster",
            "telegram",
            "outbound",
            "drain_timeout",
            "worker_threads",
            "tokens_dir",
        ];
        for (key, value) in top.iter().filter(|(k, _)| !known.contains(&k.as_str())) {
            let md = figment.get_metadata(value.tag());
            let problem = format!("unknown setting; expected one of {}", known.join(", "));
            errors.push(keys::retell(key, md, &problem));
        }
        errors.extend(validate::validate(&mut config, bots.named));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// How many runtime threads to run: `worker_threads` when set; otherwise one when every
    /// bot polls, else one per CPU the process may use.
    ///
    /// A polling bot is one sequential loop (fetch, publish, await acks, confirm), so a
    /// second thread finds little to take and mostly adds cross-thread wakeups between
    /// the loop and the broker connection: in the polling benchmark one thread used 7-8.5 µs
    /// of CPU per update where two used 10-14, and went faster. Webhook requests arrive in
    /// parallel and do gain from every core.
    pub fn runtime_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        if !self.may_have_webhook_bots() {
            return 1;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Whether a webhook bot runs now or may come: a token file added to `tokens_dir`
    /// is a bot with the defaults' mode.
    pub fn may_have_webhook_bots(&self) -> bool {
        self.bots.values().any(|bot| bot.mode == Mode::Webhook)
            || (self.tokens_dir.is_some() && self.bot_defaults.mode == Mode::Webhook)
    }

    /// The effective configuration as TOML, every secret redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes to TOML")
    }
}
