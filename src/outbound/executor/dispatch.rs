//! Scheduling and sending: a lane is put in line when its chat's limits allow, a
//! call that cannot wait that long is answered instead, and ready lanes are sent as
//! the bot's turns, the lease and the saved memory allow.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::super::call::Answered;
use super::super::journal::{Journal, State};
use super::lanes::{Job, LaneKey};
use super::{Attempt, Attempted, Executor, HELD_RECHECK};

impl Executor {
    /// Puts a lane with a call to make in line: ready now, or at the time its chat's
    /// limits (or its backoff) allow. A head that cannot wait that long (its deadline,
    /// a 429 pause beyond `max_retry_after`) is answered now, and the next one looked at.
    pub(super) fn schedule(&mut self, lane: LaneKey, now: Instant) {
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
    pub(super) fn dispatch(&mut self, now: Instant) -> Option<Instant> {
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
            if turn <= now && head.is_some_and(|h| !h.journaled) {
                // Its turn: claimed in the journal first, and sent once claimed, its
                // turn taken then (a claim's own time would bunch up sends the limiter
                // had spaced out).
                self.claim();
                continue;
            }
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
            job.attempts += 1;
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
                    attempt: Attempt::Sent(outcome),
                    started,
                }
            });
        }
        None
    }

    /// Claims the ready lane's head call in the journal, in a task of its own (it
    /// counts as one of the calls in flight).
    fn claim(&mut self) {
        let (lane, job) = self.lanes.start().expect("a lane is ready");
        let claim = Claim {
            journal: Arc::clone(&self.journal),
            key: job.key.clone(),
            fingerprint: job.fingerprint,
            repeatable: job.call.repeatable,
        };
        self.attempts.spawn(async move {
            let attempt = match claim.make().await {
                Ok(()) => Attempt::Claimed,
                Err(attempt) => attempt,
            };
            Attempted {
                lane,
                attempt,
                started: Instant::now(),
            }
        });
    }
}

/// A call's key to claim in the journal before its first attempt.
struct Claim {
    journal: Arc<dyn Journal>,
    key: String,
    fingerprint: u64,
    repeatable: bool,
}

impl Claim {
    /// Claims the key; what the attempt comes to instead when the call must not be sent.
    /// A call the caller allowed to be repeated is sent again when an earlier owner
    /// left it started (its claim is taken over).
    async fn make(self) -> Result<(), Attempt> {
        match self.journal.begin(&self.key, self.fingerprint).await {
            Ok(None) => Ok(()),
            Ok(Some(found))
                if found.state == State::Started
                    && found.fingerprint == self.fingerprint
                    && self.repeatable =>
            {
                Ok(())
            }
            Ok(Some(found)) => Err(Attempt::Found(found)),
            Err(error) => Err(Attempt::Unjournaled(error)),
        }
    }
}
