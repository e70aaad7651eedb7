//! Backoff: how long to wait before trying again. Pure, so it is table-tested.
//!
//! Capped exponential with "equal jitter": the wait is at least half the exponential
//! step, so retries never form a tight loop, and at most the step, so many relays
//! that failed together do not retry together. Telegram's `retry_after` wins over it.

use std::time::Duration;

/// Backoff settings for one kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// For calls to Telegram and publishes to a broker.
    pub const DEFAULT: Backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(30),
    };

    /// The wait before retry number `attempt` (0 for the first retry).
    /// `jitter` is a sample in `[0, 1)`; the wait lies in `[step/2, step)`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let step = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        step / 2 + step.mul_f64(jitter / 2.0)
    }

    /// The wait with a fresh random jitter.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_and_stays_capped() {
        let b = Backoff::DEFAULT;
        let ms = |attempt, jitter| b.delay(attempt, jitter).as_millis();
        let table = [
            // attempt, jitter, expected ms
            (0, 0.0, 250),
            (0, 0.999_999, 499),
            (1, 0.0, 500),
            (2, 0.5, 1500),
            (5, 0.0, 8000),
            (6, 0.0, 15000),
            (7, 0.0, 15000),
            (7, 1.0, 30000),
            (40, 0.0, 15000),
            (u32::MAX, 1.0, 30000),
        ];
        for (attempt, jitter, expected) in table {
            assert_eq!(
                ms(attempt, jitter),
                expected,
                "attempt {attempt}, jitter {jitter}"
            );
        }
    }

    #[test]
    fn never_zero_so_never_a_tight_loop() {
        for attempt in 0..64 {
            assert!(Backoff::DEFAULT.next_delay(attempt) >= Duration::from_millis(250));
        }
    }
}
