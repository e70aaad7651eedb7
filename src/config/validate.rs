//! Validation: every problem of a configuration, each naming its key and env variable.

use std::collections::BTreeMap;

use super::keys::setting;
use super::{BotConfig, Config, Mode};
use crate::secret::Secret;

/// The bot id of a token (`<digits>:<secret>`), if the token has that shape.
pub(super) fn bot_id(token: &str) -> Option<u64> {
    let (id, secret) = token.split_once(':')?;
    let secret_ok = !secret.is_empty()
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if secret_ok && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        id.parse().ok()
    } else {
        None
    }
}

/// 1-64 of a-z, 0-9, _ and -: a name that fits in subjects and topics as it is.
fn is_bot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Far above any core count a relay pod gets; a larger number is a typo.
const MAX_WORKER_THREADS: usize = 256;

/// Resolves token files in place and returns every problem found. `bots_named`: the
/// configuration names bots, even if none of them could be read (already reported).
pub(super) fn validate(config: &mut Config, bots_named: bool) -> Vec<String> {
    let mut errors = Vec::new();
    // With a token directory, bots may come later: adding a file adds one.
    if !bots_named && config.tokens_dir.is_none() {
        errors.push(
            "no bots configured: add [bots.<name>] with a token (or TGRELAY_BOTS__<NAME>__TOKEN), or set tokens_dir"
                .to_owned(),
        );
    }
    // The defaults are checked once; a bot with the same settings (every bot known by
    // its token file alone) is not told the same problem again.
    validate_settings("bot_defaults", &config.bot_defaults, &mut errors);
    for (name, bot) in &mut config.bots {
        validate_bot(name, bot, &config.bot_defaults, &mut errors);
    }
    validate_distinct_bots(config, &mut errors);
    errors.extend(config.sink.validate());
    config.cluster.resolve_instance();
    errors.extend(config.cluster.validate());
    if config.cluster.mode == super::ClusterMode::Shared
        && config.sink.kind == crate::sink::SinkKind::File
    {
        errors.push(
            "cluster.mode = \"shared\" needs a broker to coordinate through: set sink.kind to nats or kafka (the file sink is one process, one file)"
                .into(),
        );
    }
    errors.extend(config.telegram.validate());
    errors.extend(config.outbound.validate(config.bots.keys()));
    if config.outbound.enabled && config.sink.kind == crate::sink::SinkKind::File {
        errors.push(
            "outbound.enabled needs a broker services publish calls to: set sink.kind to nats or kafka"
                .into(),
        );
    }
    validate_webhook_server(config, &mut errors);
    if config.worker_threads > MAX_WORKER_THREADS {
        errors.push(format!(
            "worker_threads ({}) must be at most {MAX_WORKER_THREADS} (0 picks them)",
            config.worker_threads
        ));
    }
    if config.drain_timeout.is_zero() {
        errors.push("drain_timeout must be above zero".into());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        errors.push(format!("log.level {:?}: {e}", config.log.level));
    }
    if !config.admin.listen.is_empty()
        && config.admin.listen.parse::<std::net::SocketAddr>().is_err()
    {
        errors.push(format!(
            "admin.listen {:?} is not an address like 0.0.0.0:9090",
            config.admin.listen
        ));
    }
    errors
}

fn validate_bot(name: &str, bot: &mut BotConfig, defaults: &BotConfig, errors: &mut Vec<String>) {
    let key = |field: &str| setting(&format!("bots.{name}.{field}"));
    if !is_bot_name(name) {
        let hint = match &bot.token_file {
            Some(file) if bot.token.is_none() => format!(" (from the file {})", file.display()),
            _ => String::new(),
        };
        errors.push(format!(
            "bots.{name}{hint}: a bot name is 1-64 of a-z, 0-9, _ and - (it becomes part of subjects and topics)"
        ));
    }
    resolve_token(bot, &key, errors);
    if let Some(token) = &bot.token {
        if bot_id(token.expose()).is_none() {
            // Never echo the token: it may be a real one with a typo.
            errors.push(format!(
                "{}: not a bot token (expected <bot id>:<secret>, as @BotFather gives it)",
                key("token")
            ));
        }
    }
    if bot.mode == Mode::Webhook {
        validate_webhook(name, bot, errors);
    }
    let same_as_defaults = bot.api_url == defaults.api_url
        && bot.poll_timeout == defaults.poll_timeout
        && bot.poll_limit == defaults.poll_limit
        && bot.allowed_updates == defaults.allowed_updates;
    if !same_as_defaults {
        validate_settings(&format!("bots.{name}"), bot, errors);
    }
}

/// The settings a bot may take from `[bot_defaults]`; `prefix` is where they were set.
fn validate_settings(prefix: &str, bot: &BotConfig, errors: &mut Vec<String>) {
    let key = |field: &str| setting(&format!("{prefix}.{field}"));
    match reqwest::Url::parse(&bot.api_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => errors.push(format!(
            "{}: {:?} is not an http(s) URL",
            key("api_url"),
            bot.api_url
        )),
    }
    let timeout = bot.poll_timeout;
    if timeout.as_secs() > 50 || timeout.subsec_nanos() != 0 {
        errors.push(format!(
            "{}: {} must be whole seconds from 0s to 50s",
            key("poll_timeout"),
            humantime::format_duration(timeout)
        ));
    }
    if !(1..=100).contains(&bot.poll_limit) {
        errors.push(format!("{}: must be 1 to 100", key("poll_limit")));
    }
    for kind in &bot.allowed_updates {
        if crate::envelope::UpdateKind::from_field(kind) == crate::envelope::UpdateKind::Unknown {
            errors.push(format!(
                "{}: {kind:?} is not an update field name",
                key("allowed_updates")
            ));
        }
    }
    if bot.allowed_updates.is_empty() {
        errors.push(format!(
            "{}: must name at least one kind (an empty list means Telegram's default, which leaves out chat_member and reactions)",
            key("allowed_updates")
        ));
    }
}

/// A bot in webhook mode: URL, path, secret (resolved or generated), limits.
fn validate_webhook(name: &str, bot: &mut BotConfig, errors: &mut Vec<String>) {
    let key = |field: &str| setting(&format!("bots.{name}.webhook.{field}"));
    let hook = &mut bot.webhook;
    match &hook.url {
        Some(url) => match reqwest::Url::parse(url) {
            Ok(u)
                if u.scheme() == "https"
                    || (u.scheme() == "http"
                        && bot.api_url != crate::telegram::DEFAULT_BASE_URL) => {}
            _ => errors.push(format!(
                "{}: {url:?} must be an https URL (Telegram only calls https)",
                key("url")
            )),
        },
        None if hook.register => errors.push(format!(
            "{}: required to register the webhook (or set register = false)",
            key("url")
        )),
        None => {}
    }
    if !hook.path_for(name).starts_with('/') {
        errors.push(format!("{}: must start with /", key("path")));
    }
    if hook.secret_token.as_ref().is_none_or(Secret::is_empty) {
        if let Some(path) = &hook.secret_token_file {
            match std::fs::read_to_string(path) {
                Ok(text) => hook.secret_token = Some(Secret::new(text.trim())),
                Err(e) => errors.push(format!(
                    "{}: cannot read {}: {e}",
                    key("secret_token_file"),
                    path.display()
                )),
            }
        } else {
            hook.secret_token = Some(crate::source::webhook::random_secret());
            bot.webhook_secret_generated = true;
        }
    }
    let secret_ok = hook.secret_token.as_ref().is_some_and(|s| {
        (1..=256).contains(&s.expose().len())
            && s.expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !secret_ok && !errors.iter().any(|e| e.contains("secret_token_file")) {
        errors.push(format!(
            "{}: 1-256 of A-Z a-z 0-9 _ - (Telegram's rule)",
            key("secret_token")
        ));
    }
    let local_server = bot.api_url != crate::telegram::DEFAULT_BASE_URL;
    let max = if local_server { 100_000 } else { 100 };
    if !(1..=max).contains(&hook.max_connections) {
        errors.push(format!("{}: must be 1 to {max}", key("max_connections")));
    }
    if hook.info_interval.is_zero() {
        errors.push(format!("{}: must be above zero", key("info_interval")));
    }
}

fn resolve_token(bot: &mut BotConfig, key: &dyn Fn(&str) -> String, errors: &mut Vec<String>) {
    match (&bot.token, &bot.token_file) {
        (Some(token), _) if !token.is_empty() => {}
        (_, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => bot.token = Some(Secret::new(text.trim())),
            Err(e) => errors.push(format!(
                "{}: cannot read {}: {e}",
                key("token_file"),
                path.display()
            )),
        },
        _ => errors.push(format!("{}: required (or token_file)", key("token"))),
    }
}

/// One bot configured twice (the same token, or two tokens of one bot) would have two
/// pollers, each getting 409 Conflict for the other, or two webhook registrations.
fn validate_distinct_bots(config: &Config, errors: &mut Vec<String>) {
    let mut by_id: BTreeMap<u64, (&str, &Secret)> = BTreeMap::new();
    for (name, bot) in &config.bots {
        let Some(token) = &bot.token else { continue };
        let Some(id) = bot_id(token.expose()) else {
            continue;
        };
        let Some((other, other_token)) = by_id.insert(id, (name, token)) else {
            continue;
        };
        // The id is public (the bot's user id); the token is never shown.
        let what = if other_token.expose() == token.expose() {
            "the same token"
        } else {
            "tokens of the same bot"
        };
        errors.push(format!(
            "bots.{other} and bots.{name} use {what} (bot id {id}): Telegram allows one \
             getUpdates caller or webhook per bot, so they would fight with 409 Conflict; \
             configure the bot once"
        ));
    }
}

fn validate_webhook_server(config: &Config, errors: &mut Vec<String>) {
    let webhook = &config.webhook;
    let mut paths = std::collections::BTreeMap::new();
    for (name, bot) in config.bots.iter().filter(|(_, b)| b.mode == Mode::Webhook) {
        if let Some(other) = paths.insert(bot.webhook.path_for(name), name) {
            errors.push(format!(
                "bots.{name} and bots.{other} share the webhook path {}",
                bot.webhook.path_for(name)
            ));
        }
    }
    if !config.may_have_webhook_bots() {
        return;
    }
    if webhook.listen.parse::<std::net::SocketAddr>().is_err() {
        errors.push(format!(
            "webhook.listen {:?} is not an address like 0.0.0.0:8080",
            webhook.listen
        ));
    }
    if webhook.max_concurrency == 0 || webhook.max_body_bytes == 0 {
        errors.push("webhook.max_concurrency and webhook.max_body_bytes must be above zero".into());
    }
    if webhook.publish_timeout.is_zero()
        || webhook.publish_timeout > std::time::Duration::from_secs(55)
    {
        errors.push(
            "webhook.publish_timeout must be above zero and at most 55s (Telegram waits 60 s)"
                .into(),
        );
    }
    let hooks = config.bots.values().filter(|b| b.mode == Mode::Webhook);
    errors.extend(webhook.validate(hooks.map(|b| &b.webhook)));
    if webhook.tls_cert.is_some() != webhook.tls_key.is_some() {
        errors.push("webhook.tls_cert and webhook.tls_key go together".into());
    }
    for proxy in &webhook.trusted_proxies {
        if let Err(e) = crate::source::webhook::Cidr::parse(proxy) {
            errors.push(format!("webhook.trusted_proxies: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        assert_eq!(bot_id("123456:AAE-x_y"), Some(123456));
        for bad in [
            "", "123456", ":abc", "12a:abc", "123:", "123:a b", "123:a/b",
        ] {
            assert_eq!(bot_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn runtime_threads_follow_the_modes_unless_set() {
        let mut config = Config::default();
        config.bots.insert("a".into(), BotConfig::default());
        config.bots.insert("b".into(), BotConfig::default());
        assert_eq!(config.runtime_threads(), 1, "polling only: one thread");

        config.bots.get_mut("b").unwrap().mode = Mode::Webhook;
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(config.runtime_threads(), cpus, "a webhook bot: every CPU");

        config.worker_threads = 3;
        assert_eq!(config.runtime_threads(), 3, "a setting wins");
    }
}
