//! Where a call's `tg-reply-to` may send its result. A result is a message the caller
//! wrote the route of, published with the relay's rights: named freely, it could be
//! put where consumers trust what they read (the updates' stream, a dead-letter
//! route, another bot's calls, the limiter's memory, the replicas' coordination).
//!
//! So a route is accepted only inside `outbound.reply_to` (patterns, `_INBOX.>` by
//! default) or the bot's own results route and beneath it, and never inside what the
//! relay itself reads or writes (see [`guarded`]), whatever the patterns say.
//! Patterns use NATS wildcards for subjects and Kafka topics alike: `*` one token,
//! `>` one or more trailing tokens; `{bot}` and `{bot_id}` stand for the bot.

use crate::route::RouteTemplate;
use crate::sink::SinkConfig;

use super::OutboundConfig;

/// Stands for any text inside one token, where a template has a placeholder.
const ANY: char = '\u{1}';

/// Where one bot's results may go.
#[derive(Debug, Clone)]
pub struct ReplyPolicy {
    allowed: Vec<String>,
    guarded: Vec<String>,
}

impl ReplyPolicy {
    /// For bot `name` (`id`): `config.reply_to` and its results route allowed,
    /// `config.guarded` never.
    pub fn new(config: &OutboundConfig, name: &str, id: u64) -> ReplyPolicy {
        let results = match RouteTemplate::parse(&config.results) {
            Ok(template) => template.render_with(name, id, ""),
            Err(_) => config.results.clone(),
        };
        let mut allowed: Vec<String> = config
            .reply_to
            .iter()
            .map(|p| render_pattern(p, name, id))
            .collect();
        allowed.push(format!("{results}.>"));
        allowed.push(results);
        // Every bot's calls, even when the relay's other routes were not given.
        let calls = any_bot(&config.subject);
        let mut guarded = vec![
            format!("{calls}.limits"),
            format!("{calls}.requests"),
            calls,
        ];
        guarded.extend(config.guarded.iter().cloned());
        ReplyPolicy { allowed, guarded }
    }

    /// Why results may not go to `route`, or `None` when they may.
    pub fn refusal(&self, route: &str) -> Option<String> {
        if let Some(p) = self.guarded.iter().find(|p| matches(p, route)) {
            let p = p.replace(ANY, "*");
            return Some(format!(
                "tg-reply-to {route:?} is inside {p:?}, which the relay itself reads or writes"
            ));
        }
        if !self.allowed.iter().any(|p| matches(p, route)) {
            return Some(format!(
                "tg-reply-to {route:?} is not inside outbound.reply_to ({})",
                self.allowed.join(", ")
            ));
        }
        None
    }
}

/// A `reply_to` pattern for one bot: `{bot}` and `{bot_id}` replaced.
pub fn render_pattern(pattern: &str, name: &str, id: u64) -> String {
    pattern
        .replace("{bot}", name)
        .replace("{bot_id}", &id.to_string())
}

/// What the relay reads or writes itself, as patterns: the updates' routes and dead
/// letters, every bot's calls and their memory, and the replicas' coordination.
pub fn guarded(sink: &SinkConfig, cluster_name: &str, outbound: &OutboundConfig) -> Vec<String> {
    let calls = any_bot(&outbound.subject);
    let mut guarded = vec![
        any_bot(&sink.nats.subject),
        any_bot(&sink.nats.dead_letter_subject),
        any_bot(&sink.kafka.topic),
        any_bot(&sink.kafka.dead_letter_topic),
        format!("{calls}.limits"),
        format!("{calls}.requests"),
        format!("{}_LIMITS.>", outbound.stream),
        // JetStream's own subjects: key-value writes (the journal, the cluster's
        // buckets) and the API.
        "$KV.>".into(),
        "$JS.>".into(),
        format!("{cluster_name}.members"),
        format!("{cluster_name}.owners"),
        calls,
    ];
    guarded.extend(sink.nats.stream_subjects.iter().cloned());
    guarded
}

/// A template with each placeholder standing for any text inside its token.
fn any_bot(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push(ANY);
                rest = &rest[open + close + 1..];
            }
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `route` lies inside `pattern`.
fn matches(pattern: &str, route: &str) -> bool {
    let mut route_tokens = route.split('.');
    let mut pattern_tokens = pattern.split('.').peekable();
    while let Some(p) = pattern_tokens.next() {
        if p == ">" && pattern_tokens.peek().is_none() {
            return route_tokens.next().is_some();
        }
        match route_tokens.next() {
            Some(r) if p == "*" || token_matches(p, r) => {}
            _ => return false,
        }
    }
    route_tokens.next().is_none()
}

/// One token against a pattern token whose `ANY`s stand for one or more characters.
fn token_matches(pattern: &str, token: &str) -> bool {
    let Some(at) = pattern.find(ANY) else {
        return pattern == token;
    };
    let (head, tail) = (&pattern[..at], &pattern[at + ANY.len_utf8()..]);
    let Some(rest) = token.strip_prefix(head) else {
        return false;
    };
    (1..=rest.len())
        .filter(|n| rest.is_char_boundary(*n))
        .any(|n| token_matches(tail, &rest[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ReplyPolicy {
        let outbound = OutboundConfig::default();
        let mut config = outbound.clone();
        config.guarded = guarded(&SinkConfig::default(), "tgrelay", &outbound);
        ReplyPolicy::new(&config, "main", 42)
    }

    #[test]
    fn inboxes_and_the_bots_results_are_allowed() {
        let p = policy();
        for route in [
            "_INBOX.abc",
            "_INBOX.abc.def",
            "telegram-out.main.results",
            "telegram-out.main.results.svc",
        ] {
            assert_eq!(p.refusal(route), None, "{route}");
        }
    }

    #[test]
    fn what_the_relay_reads_or_writes_is_refused() {
        let p = policy();
        for route in [
            "telegram.main.message",
            "telegram.other.deadletter",
            "telegram-out.main",
            "telegram-out.other",
            "telegram-out.main.limits",
            "telegram-out.main.requests",
            "TELEGRAM_OUT_LIMITS.main",
            "$KV.TELEGRAM_OUT_REQUESTS.1.abc",
            "tgrelay.owners",
            "telegram-out.other.results",
            "svc.replies",
            "_INBOX",
        ] {
            assert!(p.refusal(route).is_some(), "{route}");
        }
        let mut open = OutboundConfig::default();
        open.reply_to = vec![">".into()];
        open.guarded = guarded(&SinkConfig::default(), "tgrelay", &open);
        let p = ReplyPolicy::new(&open, "main", 42);
        assert_eq!(p.refusal("svc.replies"), None);
        for route in ["telegram.main.message", "$KV.TELEGRAM_OUT_REQUESTS.1.abc"] {
            let why = p.refusal(route).unwrap();
            assert!(why.contains("the relay itself"), "{why}");
        }
    }

    #[test]
    fn placeholders_match_inside_a_token() {
        assert!(!matches(
            &any_bot("out-{bot}-x.{kind}"),
            "out-a.b-x.message"
        ));
        assert!(matches(&any_bot("out-{bot}-x.{kind}"), "out-ab-x.message"));
        assert!(!matches(&any_bot("out-{bot}-x"), "out--x"));
        assert!(matches("a.*.c", "a.b.c") && !matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b.c") && !matches("a.>", "a"));
    }
}
