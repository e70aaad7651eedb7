//! Updates acknowledged moments ago, so a re-sent one (Telegram retries after a slow
//! answer) gets its 200 without being published again.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// A bounded, time-limited set of update ids.
pub struct RecentIds {
    ids: HashSet<i64>,
    order: VecDeque<(Instant, i64)>,
    capacity: usize,
    ttl: Duration,
}

impl RecentIds {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        RecentIds {
            ids: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
            ttl,
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
}
