//! `Executor`: runs one bot's calls, from the moment its owner starts it until it is
//! stopped (a handover, shutdown).
//!
//! Calls are taken from the broker into per-chat lanes (see `lanes`); a lane whose
//! chat's limits allow it waits for the bot's turn, first come first served, and
//! for a free slot (`concurrency`). Each answer is judged (see `verdict`): a final
//! one is published and the call acknowledged (see `finish`), a 429 pauses its scope
//! and the call goes again first, a failure is tried again after a backoff.
//!
//! Stopping gives back every call not yet sent, in the order taken, lets the calls
//! with Telegram finish (up to the drain deadline), and saves the limiter's memory
//! for the next owner.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::broker::{LimitsStore, Results, Taken};
use super::call;
use super::call::Answered;
use super::limiter::{Limiter, Limits};
use super::metrics::{MethodLabels, OutboundMetrics};
use super::recent::{fingerprint, Recent};
use super::reply_to::ReplyPolicy;
use crate::backoff::Backoff;
use crate::envelope::BotIdentity;
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::telegram::{BotApi, RawReply, TelegramError};

mod drain;
mod finish;
pub mod lanes;
mod saving;
mod settle;
mod verdict;

use finish::Finisher;
use lanes::{Job, LaneKey, Lanes};
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
    pub metrics: Arc<OutboundMetrics>,
    pub relay_metrics: Arc<Metrics>,
    pub lease: Lease,
}

/// One attempt's outcome, back from its task.
struct Attempted {
    lane: LaneKey,
    outcome: Result<RawReply, TelegramError>,
    started: Instant,
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
            metrics,
            relay_metrics,
            lease,
        } = parts;
        Executor {
            finisher: Arc::new(Finisher {
                bot: bot.name.clone(),
                results,
                default_route: settings.results_route.clone(),
                metrics: Arc::clone(&metrics),
            }),
            saving: Saving::new(&bot.name, store),
            limiter: Limiter::new(settings.limits),
            recent: Recent::new(settings.dedup_window),
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

    /// Reads the last owner's limiter memory, retrying while the broker is away.
    async fn load(&mut self, stop: &CancellationToken) -> bool {
        let mut failures = 0;
        loop {
            match self.saving.load(self.settings.limits).await {
                Ok(limiter) => {
                    self.limiter = limiter;
                    return true;
                }
                Err(error) => {
                    if failures == 0 {
                        tracing::warn!(bot = %self.bot.name, %error, "cannot read the flood-limit memory; retrying");
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

    /// A call from the broker: answered from memory, joined to the same call in a
    /// lane, refused, or queued in its chat's lane.
    fn take(&mut self, taken: Taken, now: Instant) {
        self.held += 1;
        self.metrics
            .pending
            .with_label_values(&[&self.bot.name])
            .set(self.held as i64);
        let request = &taken.request;
        let ce_id = format!("{}:{}", self.bot.id, request.broker_id);
        let key = match &request.request_id {
            Some(id) => format!("id:{id}"),
            None => format!("ce:{ce_id}"),
        };
        let method = request.method.as_deref().unwrap_or("");
        let print = fingerprint(method, &request.body);
        let Some(taken) = self.unless_repeated(&key, print, taken, now) else {
            return;
        };
        let request = &taken.request;
        match call::check(request, &self.settings.allow, &self.settings.replies) {
            Err(why) => self.refuse(taken, &why),
            Ok(call) if call.paid && self.settings.limits.paid_interval.is_none() => {
                let why = "allow_paid_broadcast: this bot has no paid broadcast budget (outbound.paid_broadcast_rates)";
                self.refuse(taken, why);
            }
            Ok(call) if self.lane_is_full(&call) => {
                self.count(&call.method, "not_sent");
                let answered = Answered::lane_full(self.settings.max_pending_per_chat);
                self.finish(taken, call.chat.as_ref(), &answered);
            }
            Ok(call) if call.deadline.is_some_and(|d| d <= SystemTime::now()) => {
                self.count(&call.method, "expired");
                self.finish(taken, call.chat.as_ref(), &Answered::expired());
            }
            Ok(call) => {
                self.seq += 1;
                let deadline = call.deadline.map(|d| {
                    now + d
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO)
                });
                let job = Job {
                    seq: self.seq,
                    taken,
                    call,
                    ce_id,
                    key: key.clone(),
                    fingerprint: print,
                    taken_at: now,
                    attempts: 0,
                    failures: 0,
                    reached: false,
                    deadline,
                    followers: Vec::new(),
                };
                let lane = self.lanes.push(job);
                self.in_lanes.insert(key, lane.clone());
                self.schedule(lane, now);
            }
        }
    }

    /// Answers a call taken before under the same id: with the first answer (or the
    /// answer of the same call in a lane), or a refusal when the id now names a
    /// different call. Gives the call back when it is new.
    fn unless_repeated(
        &mut self,
        key: &str,
        print: u64,
        taken: Taken,
        now: Instant,
    ) -> Option<Taken> {
        let earlier = match self.recent.get(key, now) {
            Some((answered, first)) => Some((Some(answered.clone()), first)),
            None => self
                .in_lanes
                .get(key)
                .and_then(|lane| self.lanes.find_mut(lane, key))
                .map(|job| (None, job.fingerprint)),
        };
        let Some((answered, first)) = earlier else {
            return Some(taken);
        };
        let method = taken.request.method.clone().unwrap_or_default();
        if first != print {
            let why = "tg-request-id was used for a different call (another method or body) inside the dedup window; use a new id";
            self.refuse(taken, why);
            return None;
        }
        self.count(&method, "duplicate");
        match answered {
            Some(answered) => self.finish(taken, None, &answered),
            None => {
                let lane = self.in_lanes.get(key).expect("found above").clone();
                let job = self.lanes.find_mut(&lane, key).expect("found above");
                job.followers.push(taken);
            }
        }
        None
    }

    /// Whether the lane of `call` holds as many calls as one chat may.
    fn lane_is_full(&self, call: &call::Call) -> bool {
        Lanes::key_of(call)
            .is_some_and(|key| self.lanes.len(&key) >= self.settings.max_pending_per_chat)
    }

    /// Refuses a call: it never reaches Telegram, and a repeat of it is judged afresh.
    fn refuse(&mut self, taken: Taken, why: &str) {
        let request = &taken.request;
        tracing::debug!(bot = %self.bot.name, broker_id = %request.broker_id, reason = %why, "call refused");
        let method = request.method.clone().unwrap_or_default();
        self.count(&method, "refused");
        self.finish(taken, None, &Answered::refused(why));
    }

    /// Puts a lane with a call to make in line: ready now, or at the time its chat's
    /// limits (or its backoff) allow. A head that cannot wait that long (its deadline,
    /// a 429 pause beyond `max_retry_after`) is answered now, and the next one looked at.
    fn schedule(&mut self, lane: LaneKey, now: Instant) {
        while let Some(not_before) = self.lanes.needs_schedule(&lane) {
            let head = self
                .lanes
                .head(&lane)
                .expect("a lane to schedule has a call");
            let mut at = match &head.call.chat {
                Some(chat) => self.limiter.chat_ready_at(chat, head.call.message, now),
                None => now,
            };
            if let Some(not_before) = not_before {
                at = at.max(not_before);
            }
            match self.cannot_wait(head, at, now) {
                Some(answered) => self.conclude(&lane, answered, now),
                None => return self.lanes.schedule(lane, at, now),
            }
        }
    }

    /// The answer for a call that would have to wait until `at` and cannot.
    fn cannot_wait(&self, job: &Job, at: Instant, now: Instant) -> Option<Answered> {
        if job.deadline.is_some_and(|d| at > d) {
            return Some(Answered::expired());
        }
        let paused = self.limiter.paused_until(job.call.chat.as_ref())?;
        (at >= paused && paused > now + self.settings.max_retry_after)
            .then(|| Answered::flood_wait(paused - now))
    }

    /// Sends what may go now; returns when to look again if the bot's turn, the lease
    /// or unsaved memory holds the rest.
    fn dispatch(&mut self, now: Instant) -> Option<Instant> {
        while self.attempts.len() < self.settings.concurrency && self.lanes.has_ready() {
            if !self.lease.is_valid() || !self.saving.may_send(now) {
                return Some(now + HELD_RECHECK);
            }
            let ready = self.lanes.peek_ready();
            let head = ready.as_ref().and_then(|l| self.lanes.head(l));
            let turn = match head {
                Some(head) if head.call.paid => self.limiter.paid_ready_at(now),
                _ => self.limiter.bot_ready_at(now),
            };
            let (lane, job) = match head {
                Some(head) if turn > now => match self.cannot_wait(head, turn, now) {
                    Some(answered) => {
                        let lane = self.lanes.start().expect("a lane is ready").0;
                        self.conclude(&lane, answered, now);
                        self.schedule(lane, now);
                        continue;
                    }
                    None => return Some(turn),
                },
                _ => self.lanes.start().expect("a lane is ready"),
            };
            if job.deadline.is_some_and(|d| now > d) {
                self.conclude(&lane, Answered::expired(), now);
                self.schedule(lane, now);
                continue;
            }
            self.limiter.take_n(now, job.call.weight, job.call.paid);
            if job.attempts == 1 {
                let bot = [self.bot.name.as_str()];
                let waited = now.duration_since(job.taken_at).as_secs_f64();
                self.metrics
                    .wait_seconds
                    .with_label_values(&bot)
                    .observe(waited);
                if let Some(age) = job
                    .taken
                    .request
                    .published
                    .and_then(|p| SystemTime::now().duration_since(p).ok())
                {
                    self.metrics
                        .queue_seconds
                        .with_label_values(&bot)
                        .observe(age.as_secs_f64());
                }
            }
            let api = self.api.clone();
            let method = job.call.method.clone();
            let body = job.taken.request.body.clone();
            let timeout = self.settings.call_timeout;
            self.attempts.spawn(async move {
                let started = Instant::now();
                let outcome = api.call_raw(&method, body, timeout).await;
                Attempted {
                    lane,
                    outcome,
                    started,
                }
            });
        }
        None
    }
}

#[cfg(test)]
mod tests;
