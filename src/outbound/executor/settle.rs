//! The executor's answers: each attempt judged, paused or tried again, and a final
//! answer published for the call and every copy of it; with the metrics they feed.
//!
//! At most once: a call whose attempt may have reached Telegram without an answer is
//! tried again only when it is repeatable (see `Call::repeatable`); otherwise its
//! result says the outcome is unknown, and it is never sent again.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::super::answer::relay_answer;
use super::super::broker::Taken;
use super::super::call::{self, Answered, Outcome, Reply};
use super::super::journal::{Entry, Found, State};
use super::super::limiter::{ChatKey, Scope};
use super::lanes::LaneKey;
use super::take::REUSED_ID;
use super::verdict::{verdict, GiveUp, Verdict};
use super::{Attempt, Attempted, Executor};
use crate::backoff::Backoff;
use crate::telegram::{RawReply, TelegramError};

impl Executor {
    /// An attempt is over: the call is finished, paused or tried again.
    pub(super) fn settle(&mut self, attempted: Attempted) {
        let now = Instant::now();
        let Attempted {
            lane,
            attempt,
            started,
        } = attempted;
        let outcome = match attempt {
            Attempt::Sent(outcome) => outcome,
            Attempt::Claimed => {
                let job = self
                    .lanes
                    .head_mut(&lane)
                    .expect("a claimed call heads its lane");
                job.journaled = true;
                self.lanes.again(&lane, None);
                return self.lanes.ready_first(lane);
            }
            Attempt::Found(found) => return self.found(lane, found, now),
            Attempt::Unjournaled(error) => return self.unjournaled(lane, error, now),
        };
        let job = self
            .lanes
            .head(&lane)
            .expect("an attempted call heads its lane");
        let (method, chat, message, weight) = (
            job.call.method.clone(),
            job.call.chat.clone(),
            job.call.message,
            job.call.weight,
        );
        self.observe(&method, started, &outcome);
        let verdict = verdict(&outcome);
        let answered = !matches!(verdict, Verdict::RetryAfter { .. });
        if let (true, true, Some(chat)) = (message, answered, &chat) {
            // Counted even when it failed: Telegram may have sent it.
            self.limiter.answered_n(chat, now, weight);
            self.saving.mark(now);
        }
        match verdict {
            Verdict::Final {
                body,
                ok,
                relay_error,
            } => {
                let outcome = if ok { Outcome::Ok } else { Outcome::Error };
                let answered = Answered {
                    body,
                    relay_error,
                    outcome,
                };
                self.conclude(&lane, answered, now);
            }
            Verdict::RetryAfter { wait, whole_bot } => {
                self.pause(&lane, chat, whole_bot, wait, now)
            }
            Verdict::Transient {
                reason,
                give_up,
                reached,
            } => self.failed(&lane, reason, give_up, reached, now),
        }
        self.schedule(lane, now);
    }

    /// The journal holds the call already: it gets the answer there (an earlier owner
    /// that stopped while the call was with Telegram left it unknown), or a refusal
    /// when its id was used for another call.
    fn found(&mut self, lane: LaneKey, found: Found, now: Instant) {
        let job = self
            .lanes
            .head(&lane)
            .expect("an attempted call heads its lane");
        let answered = match found.state {
            _ if found.fingerprint != job.fingerprint => Answered::refused(REUSED_ID),
            State::Answered(answered) => answered,
            State::Started => {
                Answered::unknown("its earlier owner stopped while it was with Telegram")
            }
        };
        tracing::debug!(bot = %self.bot.name, outcome = answered.outcome.as_str(), "call answered from the request journal");
        self.conclude(&lane, answered, now);
        self.schedule(lane, now);
    }

    /// The journal could not be written, so the call was not sent: tried again after
    /// a backoff, like a connection that never opened.
    fn unjournaled(&mut self, lane: LaneKey, error: String, now: Instant) {
        let reason = format!("the request journal could not be written: {error}");
        let give_up = GiveUp {
            body: relay_answer(503, &format!("Service Unavailable: {reason}")),
            relay_error: Some(reason.clone()),
        };
        self.failed(&lane, reason, give_up, false, now);
        self.schedule(lane, now);
    }

    /// An attempt failed: tried again when it may be, else its result is a give-up,
    /// or an unknown outcome when any attempt may have reached Telegram.
    fn failed(
        &mut self,
        lane: &LaneKey,
        reason: String,
        give_up: GiveUp,
        reached: bool,
        now: Instant,
    ) {
        let job = self.lanes.head_mut(lane).expect("still there");
        job.failures += 1;
        job.reached |= reached;
        let (failures, method) = (job.failures, job.call.method.clone());
        let stop_here = reached && !job.call.repeatable;
        if stop_here || failures >= self.settings.max_attempts {
            let answered = if job.reached {
                Answered::unknown(&reason)
            } else {
                Answered {
                    body: give_up.body,
                    relay_error: give_up.relay_error,
                    outcome: Outcome::NotSent,
                }
            };
            tracing::warn!(bot = %self.bot.name, %method, failures, %reason, outcome = answered.outcome.as_str(), "no answer for a call; giving it its result");
            return self.conclude(lane, answered, now);
        }
        tracing::debug!(bot = %self.bot.name, %method, failures, %reason, "call failed; trying again");
        self.metrics
            .retries
            .with_label_values(&[&self.bot.name, "transient"])
            .inc();
        let backoff = Backoff::DEFAULT.next_delay(failures - 1);
        self.lanes.again(lane, Some(now + backoff));
    }

    /// A 429: its scope waits `wait`; the call goes again first when it may.
    fn pause(
        &mut self,
        lane: &LaneKey,
        chat: Option<ChatKey>,
        whole_bot: bool,
        wait: Duration,
        now: Instant,
    ) {
        let scope = match chat {
            Some(chat) if !whole_bot => Scope::Chat(chat),
            _ => Scope::Bot,
        };
        let scope_label = if scope == Scope::Bot { "bot" } else { "chat" };
        tracing::info!(bot = %self.bot.name, scope = scope_label, wait_s = wait.as_secs(), "Telegram asked to wait; pausing");
        self.limiter.pause(&scope, now + wait);
        self.saving.mark(now);
        let bot = self.bot.name.as_str();
        self.metrics
            .retry_after_seconds
            .with_label_values(&[bot, scope_label])
            .inc_by(wait.as_secs_f64());
        self.metrics
            .retries
            .with_label_values(&[bot, "retry_after"])
            .inc();
        self.lanes.again(lane, None);
    }

    /// The lane's head call has its result: published for it and every copy of it.
    pub(super) fn conclude(&mut self, lane: &LaneKey, answered: Answered, now: Instant) {
        let job = self
            .lanes
            .finish(lane)
            .expect("a concluded call heads its lane");
        self.in_lanes.remove(&job.key);
        self.count(&job.call.method, answered.outcome.as_str());
        self.recent
            .insert(job.key.clone(), answered.clone(), job.fingerprint, now);
        let chat = job.call.chat.clone();
        for follower in job.followers {
            self.count(&job.call.method, "duplicate");
            self.finish(follower, chat.as_ref(), &answered);
        }
        let entry = job
            .journaled
            .then(|| Entry::after(job.key, job.fingerprint, &answered));
        self.finish_with(job.taken, chat.as_ref(), &answered, entry);
    }

    /// Publishes a call's result, then acknowledges it, in a task of its own.
    pub(super) fn finish(&mut self, taken: Taken, chat: Option<&ChatKey>, answered: &Answered) {
        self.finish_with(taken, chat, answered, None);
    }

    /// As `finish`, writing `entry` to the journal first.
    fn finish_with(
        &mut self,
        taken: Taken,
        chat: Option<&ChatKey>,
        answered: &Answered,
        entry: Option<Entry>,
    ) {
        let request = &taken.request;
        let use_reply_to = call::reply_route(request, &self.settings.replies).is_some();
        let reply = Reply::to(
            request,
            self.bot.id,
            chat,
            &self.settings.results_route,
            use_reply_to,
            answered,
        );
        self.finishing
            .spawn(Arc::clone(&self.finisher).finish(taken, reply, entry));
    }

    /// A finished call is settled with the broker.
    pub(super) fn settled(&mut self) {
        self.held = self.held.saturating_sub(1);
        self.metrics
            .pending
            .with_label_values(&[&self.bot.name])
            .set(self.held as i64);
    }

    pub(super) fn count(&mut self, method: &str, outcome: &str) {
        let method = self.labels.label(method);
        self.metrics
            .calls
            .with_label_values(&[&self.bot.name, method, outcome])
            .inc();
    }

    /// The relay's Bot API metrics, as for its own calls.
    fn observe(
        &mut self,
        method: &str,
        started: Instant,
        outcome: &Result<RawReply, TelegramError>,
    ) {
        let method = self.labels.label(method);
        let error = match outcome {
            Ok(reply) => reply.error.as_ref(),
            Err(error) => Some(error),
        };
        let seconds = started.elapsed().as_secs_f64();
        self.relay_metrics
            .observe_call(&self.bot.name, method, seconds, error);
    }
}
