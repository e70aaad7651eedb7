//! `Executor`: runs one bot's calls, from the moment its owner starts it until it is
//! stopped (a handover, shutdown).
//!
//! Calls are taken from the broker into per-chat lanes (see `lanes`); a lane whose
//! chat's limits allow it waits for the bot's turn, first come first served, and
//! for a free slot (`concurrency`). Each answer is judged (see `verdict`): a final
//! one is published and the call acknowledged (see `finish`), a 429 pauses its scope
//! and the call goes again first, a failure is tried again after a backoff.
//!
//! Before a call is first sent its key is claimed in the request journal (see
//! `journal`); a key found there is answered from it instead, never sent again.
//!
//! Stopping gives back every call not yet sent, in the order taken, lets the calls
//! with Telegram finish (up to the drain deadline), and saves the limiter's memory
//! for the next owner.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::broker::{LimitsStore, Results, Taken};
use super::journal::{Found, Journal};
use super::limiter::{Limiter, Limits};
use super::metrics::{MethodLabels, OutboundMetrics};
use super::recent::Recent;
use super::reply_to::ReplyPolicy;
use crate::backoff::Backoff;
use crate::envelope::BotIdentity;
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::telegram::{BotApi, RawReply, TelegramError};

mod dispatch;
mod drain;
mod finish;
pub mod lanes;
mod saving;
mod settle;
mod take;
mod verdict;

use finish::Finisher;
use lanes::{LaneKey, Lanes};
use saving::Saving;

/// How often the limiter's memory is saved (while it changes) and tidied.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How soon to look again when sending is held (lease lapsed, memory unsaved).
const HELD_RECHECK: Duration = Duration::from_millis(100);

/// One bot's settings, from `[outbound]` and the bot.
#[derive(Debug, Clone)]
pub struct Settings {
    pub allow: Vec<String>,
    pub limits: Limits,
    /// Where results may go when a call names a route.
    pub replies: ReplyPolicy,
    /// Where results go without `tg-reply-to`.
    pub results_route: String,
    pub concurrency: usize,
    pub max_pending: usize,
    /// Calls of one lane taken and not yet answered; more are answered at once.
    pub max_pending_per_chat: usize,
    pub call_timeout: Duration,
    pub max_attempts: u32,
    /// A call whose scope Telegram paused for longer is answered at once.
    pub max_retry_after: Duration,
    pub dedup_window: Duration,
    pub drain_timeout: Duration,
}

/// What an executor works with.
pub struct Parts {
    pub bot: Arc<BotIdentity>,
    pub api: BotApi,
    pub settings: Settings,
    pub results: Arc<dyn Results>,
    pub store: Arc<dyn LimitsStore>,
    pub journal: Arc<dyn Journal>,
    pub metrics: Arc<OutboundMetrics>,
    pub relay_metrics: Arc<Metrics>,
    pub lease: Lease,
}

/// One attempt's outcome, back from its task.
struct Attempted {
    lane: LaneKey,
    attempt: Attempt,
    started: Instant,
}

/// What an attempt (or the journal claim before the first one) came to.
enum Attempt {
    /// Sent: Telegram's answer, or why there is none.
    Sent(Result<RawReply, TelegramError>),
    /// The call's key is claimed in the journal: it may be sent.
    Claimed,
    /// Not sent: the journal holds the call already, from an earlier owner or a repeat.
    Found(Found),
    /// Not sent: the journal could not be written.
    Unjournaled(String),
}

pub struct Executor {
    bot: Arc<BotIdentity>,
    api: BotApi,
    settings: Settings,
    limiter: Limiter,
    lanes: Lanes,
    /// Calls in lanes, by what they are remembered by.
    in_lanes: HashMap<String, LaneKey>,
    recent: Recent,
    journal: Arc<dyn Journal>,
    attempts: JoinSet<Attempted>,
    finishing: JoinSet<()>,
    finisher: Arc<Finisher>,
    saving: Saving,
    metrics: Arc<OutboundMetrics>,
    relay_metrics: Arc<Metrics>,
    labels: MethodLabels,
    lease: Lease,
    seq: u64,
    /// Calls taken and not yet settled with the broker.
    held: usize,
}

impl Executor {
    pub fn new(parts: Parts) -> Executor {
        let Parts {
            bot,
            api,
            settings,
            results,
            store,
            journal,
            metrics,
            relay_metrics,
            lease,
        } = parts;
        Executor {
            finisher: Arc::new(Finisher {
                bot: bot.name.clone(),
                results,
                default_route: settings.results_route.clone(),
                journal: Arc::clone(&journal),
                metrics: Arc::clone(&metrics),
            }),
            saving: Saving::new(&bot.name, store),
            limiter: Limiter::new(settings.limits),
            recent: Recent::new(settings.dedup_window),
            journal,
            bot,
            api,
            settings,
            lanes: Lanes::default(),
            in_lanes: HashMap::new(),
            attempts: JoinSet::new(),
            finishing: JoinSet::new(),
            metrics,
            relay_metrics,
            labels: MethodLabels::default(),
            lease,
            seq: 0,
            held: 0,
        }
    }

    /// Runs the calls that come through `intake` until `stop`, then drains.
    pub async fn run(mut self, mut intake: mpsc::Receiver<Taken>, stop: CancellationToken) {
        if !self.load(&stop).await {
            return self.drain(intake).await;
        }
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = Instant::now();
            for lane in self.lanes.due(now) {
                self.schedule(lane, now);
            }
            let held_until = self.dispatch(now);
            let wake = held_until.into_iter().chain(self.lanes.next_timer()).min();
            let idle = now + Duration::from_secs(3600);
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(done) = self.attempts.join_next() => {
                    self.settle(done.expect("an attempt does not panic"));
                }
                Some(_) = self.finishing.join_next() => self.settled(),
                taken = intake.recv(), if self.held < self.settings.max_pending => match taken {
                    Some(taken) => self.take(taken, Instant::now()),
                    None => break,
                },
                _ = tick.tick() => {
                    self.saving.start(&self.limiter);
                    self.limiter.forget_idle(Instant::now());
                }
                _ = self.saving.finished(), if self.saving.is_saving() => {}
                _ = tokio::time::sleep_until(wake.unwrap_or(idle)) => {}
            }
        }
        self.drain(intake).await;
    }

    /// Reads the last owner's limiter memory and the request journal, retrying while
    /// the broker is away.
    async fn load(&mut self, stop: &CancellationToken) -> bool {
        let mut failures = 0;
        loop {
            let loaded = match self.journal.load().await {
                Ok(()) => self.saving.load(self.settings.limits).await,
                Err(e) => Err(format!("the request journal: {e}")),
            };
            match loaded {
                Ok(limiter) => {
                    self.limiter = limiter;
                    return true;
                }
                Err(error) => {
                    if failures == 0 {
                        tracing::warn!(bot = %self.bot.name, %error, "cannot read the flood-limit memory or the request journal; retrying");
                    }
                    let wait = Backoff::DEFAULT.next_delay(failures);
                    failures += 1;
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
