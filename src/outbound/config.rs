//! `[outbound]`: the Bot API gateway's settings, every one checked at load.
//!
//! Services publish Bot API calls to the broker; the owner replica of each bot
//! executes them within Telegram's flood limits and publishes the answers. Off by
//! default: turning it on is a decision to let every service that can publish to the
//! request subject (or topic) call the Bot API with the bot's token.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::methods;
use crate::route::RouteTemplate;

/// `[outbound]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Execute the calls services publish (needs sink.kind = "nats" or "kafka").
    pub enabled: bool,
    /// Where services publish calls: NATS subject and Kafka topic; placeholders `{bot}`
    /// and `{bot_id}`. Not under `telegram.`, which the updates' stream captures.
    pub subject: String,
    /// Where a result goes when its call names no `tg-reply-to`.
    pub results: String,
    /// Where a call's `tg-reply-to` may send its result, besides the bot's `results`
    /// route and beneath it: NATS subject patterns, for Kafka topics too (`*` one
    /// token, `>` the rest; `{bot}`, `{bot_id}`). Never inside the updates' routes, a
    /// dead-letter route, any bot's calls or the relay's own state, whatever it says.
    pub reply_to: Vec<String>,
    /// What the relay reads or writes itself (see `reply_to::guarded`): filled in at
    /// start from the other sections, never configured.
    #[serde(skip)]
    pub guarded: Vec<String>,
    /// NATS: the stream holding calls (work-queue retention: a call leaves it once its
    /// result is published) and the default results.
    pub stream: String,
    /// NATS: the subjects of the stream when the relay creates it.
    pub stream_subjects: Vec<String>,
    /// NATS: create the stream at start when it is missing (file storage).
    pub create_stream: bool,
    /// NATS: duplicate window of a stream the relay creates: a call re-published with
    /// the same `Nats-Msg-Id` inside it is dropped by the server.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// NATS: how long a stream the relay creates keeps a message nobody consumed (a
    /// result no service reads, a call no relay ran); 0 keeps it forever.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// NATS: the durable consumer of each bot's calls, shared by the replicas (only the
    /// bot's owner pulls from it); placeholders `{bot}`, `{bot_id}`.
    pub consumer: String,
    /// NATS: how long a pulled call may go unacknowledged before the server hands it to
    /// another puller. The owner keeps calls it holds alive; after a crash its calls
    /// come back this long after it last touched them.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Kafka: the consumer group of each bot's calls (only the bot's owner joins it);
    /// placeholders `{bot}`, `{bot_id}`.
    pub group: String,
    /// Calls per second for each bot, every method counted (Telegram: about 30
    /// messages per second). Raise it for a bot with paid broadcasts.
    pub bot_rate: f64,
    /// Per-bot `bot_rate`, by bot name: `[outbound.bot_rates] news = 1000`.
    pub bot_rates: BTreeMap<String, f64>,
    /// Paid broadcasts (`allow_paid_broadcast: true`) per second, by bot name, up to
    /// 1000: their own budget beside `bot_rate`, and Telegram charges Stars for them.
    /// A bot without one has such calls refused.
    pub paid_broadcast_rates: BTreeMap<String, f64>,
    /// Messages per second in one chat, any chat (Telegram: one), each counted from
    /// the answer to the chat's previous message.
    pub chat_rate: f64,
    /// Messages per minute in one group, supergroup or channel (Telegram: 20), on top
    /// of `chat_rate`.
    pub group_chat_rate: f64,
    /// Methods executed: names or families (`send*`), matched case-insensitively as
    /// Telegram does. getUpdates, setWebhook, deleteWebhook, logOut and close are
    /// always refused: they would break the relay's own updates.
    pub allow: Vec<String>,
    /// Calls of one bot in flight to Telegram at once (one chat has one at a time).
    pub concurrency: usize,
    /// Calls of one bot taken from the broker and not yet answered; more wait in the
    /// broker (back-pressure).
    pub max_pending: usize,
    /// Calls of one chat (or inline message, or business chat) taken and not yet
    /// answered: a call beyond it is answered at once (429, not sent), so that one
    /// busy chat cannot fill `max_pending` and hold every other chat's calls up.
    pub max_pending_per_chat: usize,
    /// How long one Bot API call may take before it counts as failed (its outcome
    /// unknown: Telegram may have done it). A stop waits this long for calls with
    /// Telegram.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Attempts of a call before its result is the relay's: a connection that never
    /// opened, or, for a call safe to repeat (or allowed with `tg-allow-retry`), a 5xx
    /// or no answer. A 429 waits and is not counted; other 4xx are final at once.
    pub max_attempts: u32,
    /// Longest wait a 429 may impose on a call: a call whose chat (or bot) Telegram
    /// paused for longer is answered at once with the 429 and its `retry_after`.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// How long the owner remembers a call's request id (and its result): a call
    /// published again with that id inside it gets the first answer, not a second send.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            enabled: false,
            subject: "telegram-out.{bot}".into(),
            results: "telegram-out.{bot}.results".into(),
            reply_to: vec!["_INBOX.>".into()],
            guarded: Vec::new(),
            stream: "TELEGRAM_OUT".into(),
            stream_subjects: vec!["telegram-out.>".into()],
            create_stream: true,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(24 * 3600),
            consumer: "tgrelay-out-{bot}".into(),
            ack_wait: Duration::from_secs(30),
            group: "tgrelay-out.{bot}".into(),
            bot_rate: 30.0,
            bot_rates: BTreeMap::new(),
            paid_broadcast_rates: BTreeMap::new(),
            chat_rate: 1.0,
            group_chat_rate: 20.0,
            allow: methods::DEFAULT_ALLOW
                .iter()
                .map(|m| m.to_string())
                .collect(),
            concurrency: 32,
            max_pending: 10_000,
            max_pending_per_chat: 1_000,
            call_timeout: Duration::from_secs(20),
            max_attempts: 5,
            max_retry_after: Duration::from_secs(300),
            dedup_window: Duration::from_secs(600),
        }
    }
}

/// Beyond `call_timeout`, how long an attempt may take to report on a stop (it is
/// cut at `call_timeout` itself; this covers a busy runtime).
pub const ATTEMPT_MARGIN: Duration = Duration::from_secs(1);
/// On a stop, after the last attempt ended, how long its result may take to publish.
pub const RESULT_GRACE: Duration = Duration::from_secs(5);

impl OutboundConfig {
    /// How long a stop may take: `drain_timeout`, or longer with the gateway on, so
    /// that every call with Telegram gets its answer (up to `call_timeout`) and its
    /// result is published; a call handed over while it may still reach Telegram
    /// could be sent twice.
    pub fn stop_deadline(&self, drain_timeout: Duration) -> Duration {
        if !self.enabled {
            return drain_timeout;
        }
        drain_timeout.max(self.call_timeout + ATTEMPT_MARGIN + RESULT_GRACE)
    }

    /// The calls per second of bot `name`.
    pub fn rate_of(&self, name: &str) -> f64 {
        self.bot_rates.get(name).copied().unwrap_or(self.bot_rate)
    }

    /// Every problem of this section; `bots` are the configured bot names.
    pub fn validate<'a>(&self, bots: impl Iterator<Item = &'a String> + Clone) -> Vec<String> {
        if !self.enabled {
            return Vec::new();
        }
        let mut errors = Vec::new();
        self.check_routes(&mut errors);
        self.check_rates(bots, &mut errors);
        errors.extend(
            methods::check_allow_list(&self.allow)
                .into_iter()
                .map(|e| problem("allow", e)),
        );
        for (key, value) in [
            ("concurrency", self.concurrency),
            ("max_pending", self.max_pending),
            ("max_pending_per_chat", self.max_pending_per_chat),
        ] {
            if value == 0 {
                errors.push(problem(key, "must be at least 1".into()));
            }
        }
        if self.max_attempts == 0 {
            errors.push(problem("max_attempts", "must be at least 1".into()));
        }
        for (key, d) in [
            ("call_timeout", self.call_timeout),
            ("ack_wait", self.ack_wait),
            ("max_retry_after", self.max_retry_after),
        ] {
            if d < Duration::from_secs(1) {
                errors.push(problem(key, "must be at least 1s".into()));
            }
        }
        errors
    }

    fn check_routes(&self, errors: &mut Vec<String>) {
        let templates = [
            ("subject", &self.subject),
            ("results", &self.results),
            ("consumer", &self.consumer),
            ("group", &self.group),
        ];
        for (key, template) in templates {
            if let Err(e) = check_template(template, key == "consumer") {
                errors.push(problem(key, e));
            }
        }
        for pattern in &self.reply_to {
            if let Err(e) = check_pattern(pattern) {
                errors.push(problem("reply_to", e));
            }
        }
        if self.subject == self.results {
            errors.push(problem(
                "results",
                "must differ from outbound.subject".into(),
            ));
        }
        if self.stream.is_empty() || self.stream.contains(['.', '*', '>', ' ']) {
            errors.push(problem(
                "stream",
                "a stream name without . * > or spaces".into(),
            ));
        }
    }

    fn check_rates<'a>(
        &self,
        bots: impl Iterator<Item = &'a String> + Clone,
        errors: &mut Vec<String>,
    ) {
        let rates = [
            ("bot_rate".to_owned(), self.bot_rate),
            ("chat_rate".to_owned(), self.chat_rate),
            ("group_chat_rate".to_owned(), self.group_chat_rate),
        ];
        let per_bot = self
            .bot_rates
            .iter()
            .map(|(name, rate)| (format!("bot_rates.{name}"), *rate));
        let paid = self
            .paid_broadcast_rates
            .iter()
            .map(|(name, rate)| (format!("paid_broadcast_rates.{name}"), *rate));
        for (key, rate) in rates.into_iter().chain(per_bot).chain(paid) {
            let name = key
                .strip_prefix("bot_rates.")
                .or(key.strip_prefix("paid_broadcast_rates."));
            if key.starts_with("paid_") && !(rate > 0.0 && rate <= 1000.0) {
                errors.push(problem(
                    &key,
                    format!("{rate} must be above 0 and at most 1000"),
                ));
                continue;
            }
            if let Some(name) = name {
                if !bots.clone().any(|b| b == name) {
                    errors.push(problem(&key, "no bot has this name".into()));
                    continue;
                }
            }
            if !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0) {
                errors.push(problem(
                    &key,
                    format!("{rate} must be above 0 and at most 100000"),
                ));
            }
        }
    }
}

/// A problem of setting `key`, naming it and its environment variable.
fn problem(key: &str, what: String) -> String {
    let var = key.replace('.', "__").to_uppercase();
    format!("outbound.{key} (TGRELAY_OUTBOUND__{var}): {what}")
}

/// A `reply_to` pattern: tokens of route characters or placeholders, `*`, and `>` last.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let rendered = super::reply_to::render_pattern(pattern, "bot", 1);
    let tokens: Vec<&str> = rendered.split('.').collect();
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    let fine = tokens.iter().enumerate().all(|(i, t)| {
        *t == "*" || (*t == ">" && i == tokens.len() - 1) || (!t.is_empty() && t.chars().all(legal))
    });
    if !fine {
        return Err(format!(
            "{pattern:?}: tokens of a-z A-Z 0-9 _ - separated by dots, * for one token, > last"
        ));
    }
    Ok(())
}

/// A template renders a subject, a topic and (for the consumer) a NATS name alike:
/// `{kind}` means nothing here, and only Kafka's topic characters are safe for all.
fn check_template(template: &str, is_name: bool) -> Result<(), String> {
    if template.contains("{kind}") {
        return Err(format!(
            "{template:?}: use {{bot}} or {{bot_id}}; there is no {{kind}} here"
        ));
    }
    let rendered = RouteTemplate::parse(template)?.render_with("bot", 1, "");
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !rendered.chars().all(legal) || (is_name && rendered.contains('.')) {
        let chars = if is_name {
            "a-z A-Z 0-9 _ -"
        } else {
            "a-z A-Z 0-9 . _ -"
        };
        return Err(format!("{template:?}: use only {chars}"));
    }
    if rendered.starts_with("telegram.") {
        return Err(format!(
            "{template:?}: under telegram., which the updates' stream captures"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> OutboundConfig {
        OutboundConfig {
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn the_defaults_are_valid_and_off() {
        assert!(!OutboundConfig::default().enabled);
        let bots = ["main".to_owned()];
        assert!(enabled().validate(bots.iter()).is_empty());
    }

    #[test]
    fn every_problem_names_its_setting() {
        let mut c = enabled();
        c.subject = "telegram.{bot}.out".into();
        c.consumer = "out.{bot}".into();
        c.bot_rate = 0.0;
        c.bot_rates.insert("ghost".into(), 5.0);
        c.allow = vec!["getUpdates".into(), "send*".into(), "se nd".into()];
        c.concurrency = 0;
        c.reply_to = vec!["_INBOX.>".into(), "a.>.b".into()];
        let bots = ["main".to_owned()];
        let errors = c.validate(bots.iter());
        let expect = [
            "outbound.subject (TGRELAY_OUTBOUND__SUBJECT)",
            "outbound.consumer (TGRELAY_OUTBOUND__CONSUMER)",
            "outbound.reply_to (TGRELAY_OUTBOUND__REPLY_TO): \"a.>.b\"",
            "outbound.bot_rate (TGRELAY_OUTBOUND__BOT_RATE)",
            "outbound.bot_rates.ghost (TGRELAY_OUTBOUND__BOT_RATES__GHOST): no bot",
            "outbound.allow (TGRELAY_OUTBOUND__ALLOW): \"getUpdates\" is always refused",
            "outbound.allow (TGRELAY_OUTBOUND__ALLOW): \"se nd\"",
            "outbound.concurrency (TGRELAY_OUTBOUND__CONCURRENCY)",
        ];
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        for (error, start) in errors.iter().zip(expect) {
            assert!(error.starts_with(start), "{error} / {start}");
        }
    }

    #[test]
    fn a_bot_may_have_a_rate_of_its_own() {
        let mut c = enabled();
        c.bot_rates.insert("news".into(), 1000.0);
        assert_eq!(c.rate_of("news"), 1000.0);
        assert_eq!(c.rate_of("main"), 30.0);
        let bots = ["news".to_owned()];
        assert!(c.validate(bots.iter()).is_empty());
    }
}
