//! The executor's answers: each attempt judged, paused or tried again, and a final
//! answer published for the call and every copy of it; with the metrics they feed.

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::super::broker::Taken;
use super::super::call::{self, Reply};
use super::super::limiter::{ChatKey, Scope};
use super::super::recent::Answered;
use super::lanes::LaneKey;
use super::verdict::{verdict, Verdict};
use super::{Attempted, Executor};
use crate::backoff::Backoff;
use crate::telegram::{RawReply, TelegramError};

impl Executor {
    /// An attempt is over: the call is finished, paused or tried again.
    pub(super) fn settle(&mut self, attempted: Attempted) {
        let now = Instant::now();
        let Attempted {
            lane,
            outcome,
            started,
        } = attempted;
        let job = self
            .lanes
            .head(&lane)
            .expect("an attempted call heads its lane");
        let (method, chat, message) = (
            job.call.method.clone(),
            job.call.chat.clone(),
            job.call.message,
        );
        self.observe(&method, started, &outcome);
        let verdict = verdict(&outcome);
        let answered = !matches!(verdict, Verdict::RetryAfter { .. });
        if let (true, true, Some(chat)) = (message, answered, &chat) {
            // Counted even when it failed: Telegram may have sent it.
            self.limiter.answered(chat, now);
            self.saving.mark(now);
        }
        match verdict {
            Verdict::Final {
                body,
                ok,
                relay_error,
            } => {
                let outcome = if ok { "ok" } else { "error" };
                self.conclude(&lane, body, outcome, relay_error, now);
            }
            Verdict::RetryAfter { wait, whole_bot } => {
                self.pause(&lane, chat, whole_bot, wait, now)
            }
            Verdict::Transient { reason, give_up } => {
                let job = self.lanes.head_mut(&lane).expect("still there");
                job.failures += 1;
                let failures = job.failures;
                if failures >= self.settings.max_attempts {
                    tracing::warn!(bot = %self.bot.name, %method, failures, %reason, "giving up on a call");
                    self.conclude(&lane, give_up.body, "gave_up", give_up.relay_error, now);
                } else {
                    tracing::debug!(bot = %self.bot.name, %method, failures, %reason, "call failed; trying again");
                    self.metrics
                        .retries
                        .with_label_values(&[&self.bot.name, "transient"])
                        .inc();
                    let backoff = Backoff::DEFAULT.next_delay(failures - 1);
                    self.lanes.again(&lane, Some(now + backoff));
                }
            }
        }
        self.schedule(lane, now);
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
    fn conclude(
        &mut self,
        lane: &LaneKey,
        body: Bytes,
        outcome: &str,
        relay_error: Option<String>,
        now: Instant,
    ) {
        let job = self
            .lanes
            .finish(lane)
            .expect("a concluded call heads its lane");
        self.in_lanes.remove(&job.key);
        self.count(&job.call.method, outcome);
        let answered = Answered {
            body: body.clone(),
            relay_error: relay_error.clone(),
        };
        self.recent.insert(job.key.clone(), answered, now);
        let chat = job.call.chat.clone();
        for follower in job.followers {
            self.count(&job.call.method, "duplicate");
            self.finish(
                follower,
                chat.as_ref(),
                body.clone(),
                relay_error.as_deref(),
            );
        }
        self.finish(job.taken, chat.as_ref(), body, relay_error.as_deref());
    }

    /// Publishes a call's result, then acknowledges it, in a task of its own.
    pub(super) fn finish(
        &mut self,
        taken: Taken,
        chat: Option<&ChatKey>,
        body: Bytes,
        relay_error: Option<&str>,
    ) {
        let request = &taken.request;
        let ce_id = format!("{}:{}", self.bot.id, request.broker_id);
        let use_reply_to = call::reply_route(request, &self.settings.own_route).is_some();
        let reply = Reply::to(
            request,
            &ce_id,
            chat,
            &self.settings.results_route,
            use_reply_to,
            body,
            relay_error,
        );
        self.finishing
            .spawn(Arc::clone(&self.finisher).finish(taken, reply));
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
