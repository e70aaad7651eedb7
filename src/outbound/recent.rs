//! The calls a bot's owner finished lately, by request id (or, for a call without
//! one, the broker's id of it), with the answer each got: a call that comes again
//! inside the window (a service re-publishing it, the broker re-delivering it) is
//! answered with the first answer instead of being sent to Telegram twice.
//!
//! Only final answers are kept (see `Outcome::is_final`): a call refused or given up
//! on runs when it comes again. Each entry keeps a fingerprint of the call (method and
//! body), so an id reused for a different call is told apart from a repeat.
//!
//! Memory, so per owner: in front of the broker's journal (see `journal`), which a
//! new owner (after a handover or a crash) reads instead.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

pub use super::call::Answered;

/// At most this many calls are remembered per bot (the oldest go first).
const CAPACITY: usize = 50_000;

/// What tells two calls under one id apart: the method (as Telegram reads it) and the
/// body. Kept in the broker's journal, so the same in every version and process
/// (SHA-256, not the standard library's hasher, which may change between releases).
pub fn fingerprint(method: &str, body: &[u8]) -> u64 {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(method.to_ascii_lowercase().as_bytes());
    context.update(&[0]);
    context.update(body);
    let digest = context.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

pub struct Recent {
    window: Duration,
    capacity: usize,
    /// Each answer with the fingerprint of the call it answered.
    answers: HashMap<String, (Answered, u64)>,
    /// Keys in the order they finished, with when.
    order: VecDeque<(Instant, String)>,
}

impl Recent {
    pub fn new(window: Duration) -> Recent {
        Recent::with_capacity(window, CAPACITY)
    }

    fn with_capacity(window: Duration, capacity: usize) -> Recent {
        Recent {
            window,
            capacity,
            answers: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The answer remembered under `key`, with its call's fingerprint.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<(&Answered, u64)> {
        self.expire(now);
        self.answers.get(key).map(|(a, f)| (a, *f))
    }

    /// Remembers a final answer; others are not kept.
    pub fn insert(&mut self, key: String, answered: Answered, fingerprint: u64, now: Instant) {
        if !answered.outcome.is_final() {
            return;
        }
        self.expire(now);
        if self
            .answers
            .insert(key.clone(), (answered, fingerprint))
            .is_none()
        {
            self.order.push_back((now, key));
        }
        while self.order.len() > self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at + self.window > now {
                break;
            }
            let (_, key) = self.order.pop_front().expect("front exists");
            self.answers.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::call::Outcome;
    use bytes::Bytes;

    fn answered(text: &'static str) -> Answered {
        Answered {
            body: Bytes::from_static(text.as_bytes()),
            relay_error: None,
            outcome: Outcome::Ok,
        }
    }

    #[test]
    fn only_final_answers_are_remembered() {
        let t0 = Instant::now();
        let mut recent = Recent::new(Duration::from_secs(60));
        recent.insert("r".into(), Answered::refused("no"), 1, t0);
        let mut gave_up = answered("x");
        gave_up.outcome = Outcome::NotSent;
        recent.insert("g".into(), gave_up, 1, t0);
        recent.insert("u".into(), Answered::unknown("timed out"), 1, t0);
        assert!(recent.get("r", t0).is_none() && recent.get("g", t0).is_none());
        assert_eq!(recent.get("u", t0).map(|(_, f)| f), Some(1));
        assert_ne!(
            fingerprint("sendMessage", b"{}"),
            fingerprint("sendMessage", b"{ }")
        );
        assert_eq!(
            fingerprint("sendMessage", b"{}"),
            fingerprint("SENDMESSAGE", b"{}")
        );
    }

    #[test]
    fn remembers_for_the_window_then_forgets() {
        let t0 = Instant::now();
        let mut recent = Recent::new(Duration::from_secs(60));
        recent.insert("a".into(), answered("1"), 7, t0);
        recent.insert("b".into(), answered("2"), 7, t0 + Duration::from_secs(30));
        assert_eq!(
            recent.get("a", t0 + Duration::from_secs(59)),
            Some((&answered("1"), 7))
        );
        assert_eq!(recent.get("a", t0 + Duration::from_secs(60)), None);
        assert_eq!(
            recent.get("b", t0 + Duration::from_secs(60)),
            Some((&answered("2"), 7))
        );
    }

    #[test]
    fn keeps_at_most_its_capacity() {
        let t0 = Instant::now();
        let mut recent = Recent::with_capacity(Duration::from_secs(60), 2);
        for key in ["a", "b", "c"] {
            recent.insert(key.into(), answered("x"), 0, t0);
        }
        assert_eq!(recent.get("a", t0), None);
        assert!(recent.get("b", t0).is_some() && recent.get("c", t0).is_some());
    }
}
