//! Taking a call from the broker: answered from memory (a repeat), refused, answered
//! at once (its deadline passed, its chat's lane full), or queued in its lane.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::super::broker::Taken;
use super::super::call::{self, Answered};
use super::super::recent::fingerprint;
use super::lanes::{Job, Lanes};
use super::Executor;

/// Why a call is refused whose request id named another call lately.
pub(super) const REUSED_ID: &str = "tg-request-id was used for a different call (another method or body) inside the dedup window; use a new id";

impl Executor {
    /// A call from the broker: answered from memory, joined to the same call in a
    /// lane, refused, or queued in its chat's lane.
    pub(super) fn take(&mut self, taken: Taken, now: Instant) {
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
                    journaled: false,
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
            self.refuse(taken, REUSED_ID);
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
}
