//! Lanes: one queue per chat (per business connection and chat, for calls through a
//! business account; per inline message, for edits of one), each run one call at a
//! time in the order taken, so that their calls reach Telegram in order; a call
//! naming none of them gets a lane of its own.
//! A lane with calls is, at any time, waiting for a time (its chat's limits, a
//! retry's backoff), ready (waiting for the bot's turn, first come first served
//! within its class: a lane whose head call is interactive goes before every bulk
//! one), or busy (its head call is with Telegram).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use tokio::time::Instant;

use super::super::broker::Taken;
use super::super::call::Call;
use super::super::limiter::ChatKey;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LaneKey {
    Chat(ChatKey),
    /// A business connection, and the chat when the call names one.
    Business(String, Option<ChatKey>),
    Inline(String),
    Solo(u64),
}

/// One call in a lane.
pub struct Job {
    /// Taken order, so that calls given back are given back in order.
    pub seq: u64,
    pub taken: Taken,
    pub call: Call,
    pub ce_id: String,
    /// What the call is remembered by: its request id, else its `ce_id`.
    pub key: String,
    /// Its method and body, to tell a repeat from another call under the same id.
    pub fingerprint: u64,
    pub taken_at: Instant,
    /// Attempts sent, and of them those that failed with a 5xx or no answer.
    pub attempts: u32,
    pub failures: u32,
    /// An attempt may have reached Telegram.
    pub reached: bool,
    /// Its key is claimed in the request journal (its first attempt was sent).
    pub journaled: bool,
    /// Not sent after this (`tg-deadline`).
    pub deadline: Option<Instant>,
    /// The same call taken again while this one ran: they get its answer.
    pub followers: Vec<Taken>,
}

#[derive(Default)]
struct Lane {
    jobs: VecDeque<Job>,
    busy: bool,
    /// In `ready` or `timers`.
    scheduled: bool,
    /// Which entry of `ready` or `timers` is this lane's live one (older ones are stale).
    ticket: u64,
    not_before: Option<Instant>,
}

#[derive(Default)]
pub struct Lanes {
    lanes: HashMap<LaneKey, Lane>,
    /// Ready lanes, interactive ones first (`[interactive, bulk]`).
    ready: [VecDeque<(LaneKey, u64)>; 2],
    timers: BinaryHeap<Reverse<(Instant, LaneKey, u64)>>,
    next_solo: u64,
    next_ticket: u64,
}

impl Lanes {
    /// The lane a call goes to, when it has one to share with others.
    pub fn key_of(call: &Call) -> Option<LaneKey> {
        match (&call.business_connection, &call.chat, &call.inline_message) {
            (Some(b), chat, _) => Some(LaneKey::Business(b.clone(), chat.clone())),
            (None, Some(chat), _) => Some(LaneKey::Chat(chat.clone())),
            (None, None, Some(inline)) => Some(LaneKey::Inline(inline.clone())),
            (None, None, None) => None,
        }
    }

    /// Calls waiting or running in a lane.
    pub fn len(&self, key: &LaneKey) -> usize {
        self.lanes.get(key).map_or(0, |lane| lane.jobs.len())
    }

    /// Queues a job at the back of its chat's lane (or a lane of its own).
    pub fn push(&mut self, job: Job) -> LaneKey {
        let call = &job.call;
        let key = match (&call.business_connection, &call.chat, &call.inline_message) {
            (Some(b), chat, _) => LaneKey::Business(b.clone(), chat.clone()),
            (None, Some(chat), _) => LaneKey::Chat(chat.clone()),
            (None, None, Some(inline)) => LaneKey::Inline(inline.clone()),
            (None, None, None) => {
                self.next_solo += 1;
                LaneKey::Solo(self.next_solo)
            }
        };
        self.lanes
            .entry(key.clone())
            .or_default()
            .jobs
            .push_back(job);
        key
    }

    pub fn head(&self, key: &LaneKey) -> Option<&Job> {
        self.lanes.get(key)?.jobs.front()
    }

    pub fn head_mut(&mut self, key: &LaneKey) -> Option<&mut Job> {
        self.lanes.get_mut(key)?.jobs.front_mut()
    }

    pub fn find_mut(&mut self, key: &LaneKey, job_key: &str) -> Option<&mut Job> {
        self.lanes
            .get_mut(key)?
            .jobs
            .iter_mut()
            .find(|j| j.key == job_key)
    }

    /// The earliest its head may go by its own backoff, if it needs scheduling at all.
    pub fn needs_schedule(&self, key: &LaneKey) -> Option<Option<Instant>> {
        let lane = self.lanes.get(key)?;
        (!lane.busy && !lane.scheduled && !lane.jobs.is_empty()).then_some(lane.not_before)
    }

    /// Makes the lane ready at `at`: now, or by a timer.
    pub fn schedule(&mut self, key: LaneKey, at: Instant, now: Instant) {
        self.put(key, (at > now).then_some(at), false);
    }

    /// Makes the lane ready ahead of every other of its class: its call was claimed
    /// at its turn and goes next.
    pub fn ready_first(&mut self, key: LaneKey) {
        self.put(key, None, true);
    }

    /// Puts the lane in its ready queue (at the `front`, or the back), or on a timer.
    fn put(&mut self, key: LaneKey, timer: Option<Instant>, front: bool) {
        let Some(lane) = self.lanes.get_mut(&key) else {
            return;
        };
        self.next_ticket += 1;
        lane.scheduled = true;
        lane.ticket = self.next_ticket;
        let class = match lane.jobs.front() {
            Some(job) if job.call.interactive => 0,
            _ => 1,
        };
        match (timer, front) {
            (Some(at), _) => self.timers.push(Reverse((at, key, lane.ticket))),
            (None, true) => self.ready[class].push_front((key, lane.ticket)),
            (None, false) => self.ready[class].push_back((key, lane.ticket)),
        }
    }

    /// Lanes whose timer is due; they need scheduling again (a limit may have moved).
    pub fn due(&mut self, now: Instant) -> Vec<LaneKey> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, key, ticket)) = self.timers.pop().expect("peeked");
            if let Some(lane) = self.live(&key, ticket) {
                lane.scheduled = false;
                due.push(key);
            }
        }
        due
    }

    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Whether a lane is ready (dropping stale entries at the front).
    pub fn has_ready(&mut self) -> bool {
        self.first_ready().is_some()
    }

    /// Which ready queue holds the next lane to go, if any (dropping stale entries).
    fn first_ready(&mut self) -> Option<usize> {
        for class in 0..self.ready.len() {
            while let Some((key, ticket)) = self.ready[class].front() {
                let (key, ticket) = (key.clone(), *ticket);
                if self.live(&key, ticket).is_some() {
                    return Some(class);
                }
                self.ready[class].pop_front();
            }
        }
        None
    }

    /// The lane an entry of `ready` or `timers` stands for, unless the entry is stale.
    fn live(&mut self, key: &LaneKey, ticket: u64) -> Option<&mut Lane> {
        self.lanes
            .get_mut(key)
            .filter(|lane| lane.scheduled && lane.ticket == ticket)
    }

    /// The first ready lane, left ready.
    pub fn peek_ready(&mut self) -> Option<LaneKey> {
        let class = self.first_ready()?;
        self.ready[class].front().map(|(key, _)| key.clone())
    }

    /// Takes the first ready lane and marks it busy; its head job is the call to send
    /// (or to claim in the journal, or to answer without sending).
    pub fn start(&mut self) -> Option<(LaneKey, &mut Job)> {
        let class = self.first_ready()?;
        let (key, _) = self.ready[class].pop_front()?;
        let lane = self.lanes.get_mut(&key).expect("a ready lane exists");
        lane.scheduled = false;
        lane.busy = true;
        lane.not_before = None;
        let job = lane.jobs.front_mut().expect("a ready lane has a job");
        Some((key, job))
    }

    /// The head's attempt is over and it stays: it goes again at `not_before` at the earliest.
    pub fn again(&mut self, key: &LaneKey, not_before: Option<Instant>) {
        if let Some(lane) = self.lanes.get_mut(key) {
            lane.busy = false;
            lane.not_before = not_before;
        }
    }

    /// The head is done: removes it (and the lane, when that was its last job).
    pub fn finish(&mut self, key: &LaneKey) -> Option<Job> {
        let lane = self.lanes.get_mut(key)?;
        lane.busy = false;
        let job = lane.jobs.pop_front();
        if lane.jobs.is_empty() {
            self.lanes.remove(key);
        }
        job
    }

    /// Every job not with Telegram now, in the order they were taken (for giving back).
    pub fn drain_unstarted(&mut self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for lane in self.lanes.values_mut() {
            let keep = usize::from(lane.busy);
            while lane.jobs.len() > keep {
                jobs.push(lane.jobs.pop_back().expect("longer than keep"));
            }
            lane.scheduled = false;
        }
        self.ready.iter_mut().for_each(VecDeque::clear);
        self.timers.clear();
        jobs.sort_by_key(|j| j.seq);
        jobs
    }
}

#[cfg(test)]
mod tests;
