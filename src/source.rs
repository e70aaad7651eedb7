//! Sources: where updates come from. Both modes share a [`BotContext`], whose
//! `publish` is the one path from envelopes to a sink, with its metrics.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::ack::Outcome;
use crate::envelope::{BotIdentity, Envelope};
use crate::health::Health;
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::telegram::{BotApi, TelegramError};

pub mod polling;
pub mod webhook;

/// Everything a source of one bot works with.
#[derive(Clone)]
pub struct BotContext {
    pub bot: Arc<BotIdentity>,
    pub api: BotApi,
    pub sink: Arc<dyn Sink>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// How long this replica may still call Telegram for the bot.
    pub lease: Lease,
    /// Cancelled when another replica took the bot over: it stops at once and calls
    /// Telegram no more (no final confirm, which would cut the new owner's long poll).
    pub taken: CancellationToken,
    /// Shared by every bot: how many make their start-up calls at once.
    pub starting: StartGate,
}

/// Bounds how many bots make their start-up calls (getMe, the webhook checks) at once:
/// ten thousand bots starting together would otherwise dial ten thousand connections
/// in the same instant. Later calls (getUpdates) are not bounded.
#[derive(Clone)]
pub struct StartGate(Arc<Semaphore>);

impl StartGate {
    /// Enough to keep Telegram's round trips (~50-100 ms from most places) from
    /// making a large start slow, few enough that a start is no storm.
    pub const AT_ONCE: usize = 256;

    pub fn new(at_once: usize) -> StartGate {
        StartGate(Arc::new(Semaphore::new(at_once)))
    }

    /// Waits for a turn; the next bot starts when the returned permit is dropped.
    pub async fn turn(&self) -> SemaphorePermit<'_> {
        self.0.acquire().await.expect("the gate is never closed")
    }
}

impl Default for StartGate {
    fn default() -> Self {
        StartGate::new(StartGate::AT_ONCE)
    }
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

    /// Makes a Bot API call and counts it, like every call a bot makes: its duration,
    /// its outcome and its error code.
    pub async fn observed<T>(
        &self,
        method: &str,
        call: impl Future<Output = Result<T, TelegramError>>,
    ) -> Result<T, TelegramError> {
        let started = Instant::now();
        let result = call.await;
        self.observe_call(method, started, result.as_ref().err());
        result
    }

    /// Counts a Bot API call and its error, if any.
    fn observe_call(&self, method: &str, started: Instant, error: Option<&TelegramError>) {
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .observe_call(&self.bot.name, method, seconds, error);
    }

    /// Publishes envelopes to the sink and counts what became of them.
    pub async fn publish(&self, envelopes: &[Envelope]) -> Vec<Outcome> {
        if envelopes.is_empty() {
            return Vec::new();
        }
        let bot = self.bot.name.as_str();
        let m = &self.metrics;
        // Counters are bumped once per label set and batch: a label lookup hashes.
        let mut received = Tally::default();
        for e in envelopes {
            received.add([e.kind.as_str(), ""]);
        }
        for ([kind, _], n) in received.0 {
            m.updates_received.with_label_values(&[bot, kind]).inc_by(n);
        }
        let in_flight = m.updates_in_flight.with_label_values(&[bot]);
        in_flight.add(envelopes.len() as i64);
        let started = Instant::now();
        let outcomes = self.sink.publish(envelopes).await;
        m.publish_seconds
            .with_label_values(&[self.sink.name()])
            .observe(started.elapsed().as_secs_f64());
        in_flight.sub(envelopes.len() as i64);
        let mut published = Tally::default();
        let mut failed = Tally::default();
        for (e, outcome) in envelopes.iter().zip(&outcomes) {
            match outcome {
                Outcome::Delivered => published.add([e.kind.as_str(), "delivered"]),
                Outcome::DeadLettered { reason } => {
                    tracing::error!(%bot, update_id = e.update_id, %reason, "update sent to the dead-letter route");
                    published.add([e.kind.as_str(), "dead_lettered"]);
                }
                Outcome::Failed { fatal: true, .. } => failed.add(["fatal", ""]),
                Outcome::Failed { fatal: false, .. } => failed.add(["transient", ""]),
            }
        }
        for ([kind, outcome], n) in published.0 {
            m.updates_published
                .with_label_values(&[bot, kind, outcome])
                .inc_by(n);
        }
        for ([class, _], n) in failed.0 {
            m.publish_failures
                .with_label_values(&[bot, self.sink.name(), class])
                .inc_by(n);
        }
        outcomes
    }
}

/// Counts per label pair, for one batch (a few distinct pairs at most).
#[derive(Default)]
struct Tally<'a>(Vec<([&'a str; 2], u64)>);

impl<'a> Tally<'a> {
    fn add(&mut self, key: [&'a str; 2]) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => self.0.push((key, 1)),
        }
    }
}
