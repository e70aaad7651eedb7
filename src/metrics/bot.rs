//! What one bot counts: its Bot API calls, and the series that exist at 0 from its
//! start so that alerts and panels work on a quiet bot.

use super::Metrics;

/// Bot API error codes each bot's methods start with at 0: the ones the relay treats
/// apart (a refused token, a second poller, flood control) and no answer at all.
const ZEROED_TELEGRAM_CODES: [&str; 4] = ["401", "409", "429", "transport"];
/// Every status the webhook listener answers a bot's POST with.
const WEBHOOK_CODES: [&str; 6] = ["200", "400", "401", "403", "413", "503"];

/// What one bot's zeroed series depend on.
#[derive(Debug, Clone)]
pub struct BotSeries<'a> {
    pub name: &'a str,
    /// The sink's name (`publish_failures_total`'s `sink` label).
    pub sink: &'a str,
    /// The Bot API methods this bot may call.
    pub methods: &'a [&'a str],
    /// Whether Telegram POSTs this bot's updates to the webhook listener.
    pub webhook: bool,
}

impl Metrics {
    /// Counts one Bot API call of `bot` (the relay's own, or one made for a service):
    /// its duration, its outcome and its error, if any.
    pub fn observe_call(
        &self,
        bot: &str,
        method: &str,
        seconds: f64,
        error: Option<&crate::telegram::TelegramError>,
    ) {
        self.telegram_request_seconds
            .with_label_values(&[method])
            .observe(seconds);
        let outcome = if error.is_some() { "error" } else { "ok" };
        self.telegram_requests
            .with_label_values(&[bot, method, outcome])
            .inc();
        if let Some(error) = error {
            self.telegram_errors
                .with_label_values(&[bot, method, &error.code_label()])
                .inc();
        }
    }

    /// Creates a bot's alerting counters at 0 (calling it again changes nothing). They
    /// stay when the bot is stopped: counters only go up while the process lives, and a
    /// series that vanished and came back would read as a reset.
    pub fn register_bot(&self, bot: &BotSeries) {
        let name = bot.name;
        for method in bot.methods {
            for outcome in ["ok", "error"] {
                self.telegram_requests
                    .with_label_values(&[name, method, outcome]);
            }
            for code in ZEROED_TELEGRAM_CODES {
                self.telegram_errors
                    .with_label_values(&[name, method, code]);
            }
        }
        for class in ["transient", "fatal"] {
            self.publish_failures
                .with_label_values(&[name, bot.sink, class]);
        }
        // The sink's latency histogram too: one created by its first batch would make
        // a rate over that batch read nothing.
        self.publish_seconds.with_label_values(&[bot.sink]);
        self.retry_after_seconds.with_label_values(&[name]);
        self.malformed_updates.with_label_values(&[name]);
        if bot.webhook {
            for code in WEBHOOK_CODES {
                self.webhook_requests.with_label_values(&[name, code]);
            }
            self.duplicates_suppressed.with_label_values(&[name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_a_bot_again_keeps_its_counts() {
        let m = Metrics::new();
        let bot = BotSeries {
            name: "main",
            sink: "nats",
            methods: &["getUpdates"],
            webhook: false,
        };
        m.register_bot(&bot);
        let errors = m
            .telegram_errors
            .with_label_values(&["main", "getUpdates", "409"]);
        assert_eq!(errors.get(), 0);
        errors.inc();
        // A bot started again (after a stop, or its token refused) registers again.
        m.register_bot(&bot);
        assert_eq!(errors.get(), 1);
        let text = m.render();
        assert!(text.contains(
            "tgrelay_publish_failures_total{bot=\"main\",class=\"fatal\",sink=\"nats\"} 0"
        ));
        assert!(text.contains("tgrelay_publish_ack_seconds_count{sink=\"nats\"} 0"));
        assert!(!text.contains("tgrelay_webhook_requests_total{bot=\"main\""));
    }
}
