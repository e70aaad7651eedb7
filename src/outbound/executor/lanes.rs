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
        let Some(lane) = self.lanes.get_mut(&key) else {
            return;
        };
        self.next_ticket += 1;
        lane.scheduled = true;
        lane.ticket = self.next_ticket;
        if at <= now {
            let class = match lane.jobs.front() {
                Some(job) if job.call.interactive => 0,
                _ => 1,
            };
            self.ready[class].push_back((key, lane.ticket));
        } else {
            self.timers.push(Reverse((at, key, lane.ticket)));
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

    /// Takes the first ready lane and marks it busy; its head job is the call to send.
    pub fn start(&mut self) -> Option<(LaneKey, &mut Job)> {
        let class = self.first_ready()?;
        let (key, _) = self.ready[class].pop_front()?;
        let lane = self.lanes.get_mut(&key).expect("a ready lane exists");
        lane.scheduled = false;
        lane.busy = true;
        lane.not_before = None;
        let job = lane.jobs.front_mut().expect("a ready lane has a job");
        job.attempts += 1;
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
mod tests {
    use super::*;
    use crate::outbound::call::Request;
    use futures::future::BoxFuture;

    struct Nothing;
    impl crate::outbound::broker::Delivery for Nothing {
        fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
            Box::pin(async {})
        }
    }

    fn job(seq: u64, chat: Option<i64>) -> Job {
        let request = Request {
            method: Some("sendMessage".into()),
            request_id: None,
            reply_to: None,
            broker_id: seq.to_string(),
            body: bytes::Bytes::new(),
            published: None,
            options: Default::default(),
        };
        Job {
            seq,
            taken: Taken {
                request,
                delivery: Box::new(Nothing),
            },
            call: Call {
                method: "sendMessage".into(),
                chat: chat.map(ChatKey::Id),
                message: true,
                inline_message: None,
                business_connection: None,
                weight: 1,
                paid: false,
                interactive: false,
                repeatable: false,
                deadline: None,
            },
            ce_id: format!("1:{seq}"),
            key: format!("1:{seq}"),
            fingerprint: 0,
            taken_at: Instant::now(),
            attempts: 0,
            failures: 0,
            reached: false,
            journaled: false,
            deadline: None,
            followers: Vec::new(),
        }
    }

    #[test]
    fn a_chat_runs_one_call_at_a_time_in_order() {
        let mut lanes = Lanes::default();
        let now = Instant::now();
        let a = lanes.push(job(1, Some(5)));
        assert_eq!(lanes.push(job(2, Some(5))), a);
        let b = lanes.push(job(3, Some(6)));
        for key in [&a, &b] {
            assert_eq!(lanes.needs_schedule(key), Some(None));
            lanes.schedule(key.clone(), now, now);
        }
        let (first, job) = lanes.start().unwrap();
        assert_eq!((first.clone(), job.seq), (a.clone(), 1));
        assert_eq!(lanes.start().unwrap().1.seq, 3);
        assert!(lanes.start().is_none(), "chat 5 is busy");
        assert_eq!(lanes.needs_schedule(&a), None);
        assert_eq!(lanes.finish(&a).unwrap().seq, 1);
        lanes.schedule(a.clone(), now, now);
        assert_eq!(lanes.start().unwrap().1.seq, 2);
    }

    #[test]
    fn inline_messages_and_business_chats_have_lanes_of_their_own() {
        let mut lanes = Lanes::default();
        let mut inline = job(1, None);
        inline.call.inline_message = Some("m1".into());
        let a = lanes.push(inline);
        let mut again = job(2, None);
        again.call.inline_message = Some("m1".into());
        assert_eq!(
            lanes.push(again),
            a,
            "edits of one inline message, in order"
        );
        let mut business = job(3, Some(5));
        business.call.business_connection = Some("b".into());
        let b = lanes.push(business);
        assert_ne!(
            b,
            lanes.push(job(4, Some(5))),
            "the bot's own chat 5 is another"
        );
        assert_ne!(lanes.push(job(5, None)), lanes.push(job(6, None)));
    }

    #[test]
    fn an_interactive_call_goes_before_every_bulk_one() {
        let mut lanes = Lanes::default();
        let now = Instant::now();
        for seq in 1..=3 {
            let key = lanes.push(job(seq, Some(seq as i64)));
            lanes.schedule(key, now, now);
        }
        let mut answer = job(4, None);
        answer.call.interactive = true;
        let key = lanes.push(answer);
        lanes.schedule(key, now, now);
        let order: Vec<u64> = std::iter::from_fn(|| lanes.start().map(|(_, j)| j.seq)).collect();
        assert_eq!(order, [4, 1, 2, 3]);
    }

    #[test]
    fn a_stale_timer_never_schedules_a_lane_twice() {
        let mut lanes = Lanes::default();
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(1);
        let a = lanes.push(job(1, Some(5)));
        lanes.schedule(a.clone(), later, now);
        // The lane is rescheduled for now (say its pause was lifted): the timer is stale.
        assert!(lanes.due(now).is_empty());
        lanes.finish(&a);
        let a = lanes.push(job(2, Some(5)));
        lanes.schedule(a.clone(), now, now);
        assert!(lanes.due(later).is_empty(), "the old lane's timer");
        assert!(lanes.start().is_some());
        assert!(lanes.start().is_none());
    }

    #[test]
    fn unstarted_jobs_are_given_back_in_taken_order() {
        let mut lanes = Lanes::default();
        let now = Instant::now();
        for (seq, chat) in [(1, 5), (2, 6), (3, 5), (4, 6), (5, 7)] {
            let key = lanes.push(job(seq, Some(chat)));
            if lanes.needs_schedule(&key).is_some() {
                lanes.schedule(key, now, now);
            }
        }
        assert_eq!(lanes.start().unwrap().1.seq, 1);
        let back: Vec<u64> = lanes.drain_unstarted().iter().map(|j| j.seq).collect();
        assert_eq!(back, vec![2, 3, 4, 5]);
        assert!(lanes.start().is_none());
    }
}
