//! Updates acknowledged moments ago, so a re-sent one (Telegram retries after a slow
//! answer) gets its 200 without being published again; and updates being published
//! right now, so a re-sent one waits for that publish instead of adding a copy.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// What to do with an update that just arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// Acknowledged moments ago: answer 200 at once.
    Acked,
    /// An earlier request's publish has not finished: Telegram should try again later.
    InFlight,
    /// Publish it; call `finish` when the publish ends, however it ends.
    Publish,
}

/// A bounded, time-limited set of acknowledged update ids, and the ids in flight.
pub struct RecentIds {
    in_flight: HashSet<i64>,
    ids: HashSet<i64>,
    order: VecDeque<(Instant, i64)>,
    capacity: usize,
    ttl: Duration,
}

impl RecentIds {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        RecentIds {
            in_flight: HashSet::new(),
            ids: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
            ttl,
        }
    }

    pub fn begin(&mut self, id: i64, now: Instant) -> Begin {
        if self.contains(id, now) {
            Begin::Acked
        } else if self.in_flight.insert(id) {
            Begin::Publish
        } else {
            Begin::InFlight
        }
    }

    /// Ends a publish `begin` allowed; an acknowledged id is remembered.
    pub fn finish(&mut self, id: i64, acked: bool, now: Instant) {
        self.in_flight.remove(&id);
        if acked {
            self.insert(id, now);
        }
    }

    pub fn contains(&mut self, id: i64, now: Instant) -> bool {
        self.expire(now);
        self.ids.contains(&id)
    }

    pub fn insert(&mut self, id: i64, now: Instant) {
        self.expire(now);
        if self.ids.insert(id) {
            self.order.push_back((now, id));
        }
        while self.order.len() > self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, id)) = self.order.front().copied() {
            if now.duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_its_window_and_bounds() {
        let t0 = Instant::now();
        let mut recent = RecentIds::new(2, Duration::from_secs(60));
        recent.insert(1, t0);
        assert!(recent.contains(1, t0 + Duration::from_secs(59)));
        assert!(!recent.contains(1, t0 + Duration::from_secs(60)), "expired");
        recent.insert(2, t0);
        recent.insert(3, t0);
        recent.insert(4, t0);
        assert!(!recent.contains(2, t0), "evicted beyond capacity");
        assert!(recent.contains(3, t0) && recent.contains(4, t0));
    }

    #[test]
    fn one_publish_per_update_at_a_time() {
        let t0 = Instant::now();
        let mut recent = RecentIds::new(10, Duration::from_secs(60));
        assert_eq!(recent.begin(7, t0), Begin::Publish);
        assert_eq!(recent.begin(7, t0), Begin::InFlight, "a re-send waits");
        assert_eq!(recent.begin(8, t0), Begin::Publish, "other updates go on");
        recent.finish(7, false, t0);
        assert_eq!(
            recent.begin(7, t0),
            Begin::Publish,
            "a failed publish is retried"
        );
        recent.finish(7, true, t0);
        assert_eq!(recent.begin(7, t0), Begin::Acked);
    }
}
