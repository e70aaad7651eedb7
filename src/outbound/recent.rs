//! The calls a bot's owner finished lately, by request id (or, for a call without
//! one, the broker's id of it), with the answer each got: a call that comes again
//! inside the window (a service re-publishing it, the broker re-delivering it) is
//! answered with the first answer instead of being sent to Telegram twice.
//!
//! Memory, so per owner: a new owner (after a handover or a crash) starts empty.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// At most this many calls are remembered per bot (the oldest go first).
const CAPACITY: usize = 50_000;

/// The answer a finished call got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub body: Bytes,
    /// Set when the relay made the answer (a refusal, a give-up).
    pub relay_error: Option<String>,
}

pub struct Recent {
    window: Duration,
    capacity: usize,
    answers: HashMap<String, Answered>,
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

    pub fn get(&mut self, key: &str, now: Instant) -> Option<&Answered> {
        self.expire(now);
        self.answers.get(key)
    }

    pub fn insert(&mut self, key: String, answered: Answered, now: Instant) {
        self.expire(now);
        if self.answers.insert(key.clone(), answered).is_none() {
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

    fn answered(text: &'static str) -> Answered {
        Answered {
            body: Bytes::from_static(text.as_bytes()),
            relay_error: None,
        }
    }

    #[test]
    fn remembers_for_the_window_then_forgets() {
        let t0 = Instant::now();
        let mut recent = Recent::new(Duration::from_secs(60));
        recent.insert("a".into(), answered("1"), t0);
        recent.insert("b".into(), answered("2"), t0 + Duration::from_secs(30));
        assert_eq!(
            recent.get("a", t0 + Duration::from_secs(59)),
            Some(&answered("1"))
        );
        assert_eq!(recent.get("a", t0 + Duration::from_secs(60)), None);
        assert_eq!(
            recent.get("b", t0 + Duration::from_secs(60)),
            Some(&answered("2"))
        );
    }

    #[test]
    fn keeps_at_most_its_capacity() {
        let t0 = Instant::now();
        let mut recent = Recent::with_capacity(Duration::from_secs(60), 2);
        for key in ["a", "b", "c"] {
            recent.insert(key.into(), answered("x"), t0);
        }
        assert_eq!(recent.get("a", t0), None);
        assert!(recent.get("b", t0).is_some() && recent.get("c", t0).is_some());
    }
}
