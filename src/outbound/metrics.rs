//! The gateway's metrics, registered in the relay's registry beside the others.
//! Labels stay bounded: bot, a method label capped per bot, outcome, scope, reason.

use std::collections::HashSet;

use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// At most this many method labels per bot; the rest count as `other`.
const MAX_METHOD_LABELS: usize = 64;

pub struct OutboundMetrics {
    /// Calls finished, by bot, method and outcome: each `tg-outcome` (`ok`, `error`,
    /// `refused`, `not_sent`, `unknown`, `expired`), and `duplicate` (answered from
    /// memory).
    pub calls: IntCounterVec,
    /// From the broker storing a call to the relay sending it to Telegram.
    pub queue_seconds: HistogramVec,
    /// From the relay taking a call to sending it: its waits on the limits and on the
    /// chat's earlier calls.
    pub wait_seconds: HistogramVec,
    /// Seconds of pause 429s asked for, by bot and scope (`chat`, `bot`).
    pub retry_after_seconds: CounterVec,
    /// Attempts made again, by bot and reason (`retry_after`, `transient`).
    pub retries: IntCounterVec,
    /// Calls taken from the broker and not yet settled there, by bot.
    pub pending: IntGaugeVec,
    /// Results the broker did not take (yet), by bot.
    pub result_failures: IntCounterVec,
}

impl OutboundMetrics {
    pub fn new(registry: &Registry) -> OutboundMetrics {
        let register = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric registers once");
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(Box::new(c.clone()));
            c
        };
        let histogram = |name: &str, help: &str| {
            let buckets = vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ];
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["bot"])
                .expect("valid metric");
            register(Box::new(h.clone()));
            h
        };
        let retry_after_seconds = CounterVec::new(
            Opts::new(
                "tgrelay_outbound_retry_after_seconds_total",
                "Seconds of pause 429s asked for.",
            ),
            &["bot", "scope"],
        )
        .expect("valid metric");
        register(Box::new(retry_after_seconds.clone()));
        let pending = IntGaugeVec::new(
            Opts::new(
                "tgrelay_outbound_pending_calls",
                "Calls taken from the broker and not yet settled.",
            ),
            &["bot"],
        )
        .expect("valid metric");
        register(Box::new(pending.clone()));
        OutboundMetrics {
            calls: counter(
                "tgrelay_outbound_calls_total",
                "Calls finished, by outcome.",
                &["bot", "method", "outcome"],
            ),
            queue_seconds: histogram(
                "tgrelay_outbound_queue_seconds",
                "From the broker storing a call to sending it to Telegram.",
            ),
            wait_seconds: histogram(
                "tgrelay_outbound_wait_seconds",
                "From taking a call to sending it (limits, earlier calls of its chat).",
            ),
            retry_after_seconds,
            retries: counter(
                "tgrelay_outbound_retries_total",
                "Attempts made again, by reason.",
                &["bot", "reason"],
            ),
            pending,
            result_failures: counter(
                "tgrelay_outbound_result_failures_total",
                "Results the broker did not take (yet).",
                &["bot"],
            ),
        }
    }
}

/// Method labels of one bot: a service may name any method, a label set may not grow
/// without bound.
#[derive(Default)]
pub struct MethodLabels(HashSet<String>);

impl MethodLabels {
    pub fn label<'a>(&mut self, method: &'a str) -> &'a str {
        if self.0.contains(method) {
            return method;
        }
        if self.0.len() < MAX_METHOD_LABELS {
            self.0.insert(method.to_owned());
            return method;
        }
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_capped() {
        let mut labels = MethodLabels::default();
        for i in 0..MAX_METHOD_LABELS {
            let name = format!("send{i}");
            assert_eq!(labels.label(&name), name);
        }
        assert_eq!(labels.label("sendMore"), "other");
        assert_eq!(labels.label("send0"), "send0");
    }
}
