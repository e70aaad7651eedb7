//! Sources: where updates come from. Both modes share a [`BotContext`], whose
//! `publish` is the one path from envelopes to a sink, with its metrics.

use std::sync::Arc;
use std::time::Instant;

use crate::ack::Outcome;
use crate::envelope::{BotIdentity, Envelope};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::telegram::{BotApi, TelegramError};

pub mod polling;

/// Everything a source of one bot works with.
#[derive(Clone)]
pub struct BotContext {
    pub bot: Arc<BotIdentity>,
    pub api: BotApi,
    pub sink: Arc<dyn Sink>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl BotContext {
    /// Records whether this bot's source is healthy (readiness and `source_up`).
    pub fn set_up(&self, up: bool) {
        self.health.set_source(&self.bot.name, up);
        self.metrics
            .source_up
            .with_label_values(&[&self.bot.name])
            .set(i64::from(up));
    }

    /// Counts a Bot API call and its error, if any.
    pub fn observe_call(&self, method: &str, started: Instant, error: Option<&TelegramError>) {
        let bot = self.bot.name.as_str();
        let m = &self.metrics;
        m.telegram_request_seconds
            .with_label_values(&[bot, method])
            .observe(started.elapsed().as_secs_f64());
        let outcome = if error.is_some() { "error" } else { "ok" };
        m.telegram_requests
            .with_label_values(&[bot, method, outcome])
            .inc();
        if let Some(error) = error {
            m.telegram_errors
                .with_label_values(&[bot, method, &error.code_label()])
                .inc();
        }
    }

    /// Publishes envelopes to the sink and counts what became of them.
    pub async fn publish(&self, envelopes: &[Envelope]) -> Vec<Outcome> {
        if envelopes.is_empty() {
            return Vec::new();
        }
        let bot = self.bot.name.as_str();
        let m = &self.metrics;
        for e in envelopes {
            m.updates_received
                .with_label_values(&[bot, e.kind.as_str()])
                .inc();
        }
        let in_flight = m.updates_in_flight.with_label_values(&[bot]);
        in_flight.add(envelopes.len() as i64);
        let started = Instant::now();
        let outcomes = self.sink.publish(envelopes).await;
        m.publish_seconds
            .with_label_values(&[self.sink.name()])
            .observe(started.elapsed().as_secs_f64());
        in_flight.sub(envelopes.len() as i64);
        for (e, outcome) in envelopes.iter().zip(&outcomes) {
            let kind = e.kind.as_str();
            match outcome {
                Outcome::Delivered => m
                    .updates_published
                    .with_label_values(&[bot, kind, "delivered"])
                    .inc(),
                Outcome::DeadLettered { reason } => {
                    tracing::error!(%bot, update_id = e.update_id, %reason, "update sent to the dead-letter route");
                    m.updates_published
                        .with_label_values(&[bot, kind, "dead_lettered"])
                        .inc()
                }
                Outcome::Failed { fatal, .. } => {
                    let class = if *fatal { "fatal" } else { "transient" };
                    m.publish_failures
                        .with_label_values(&[bot, self.sink.name(), class])
                        .inc()
                }
            }
        }
        outcomes
    }
}
