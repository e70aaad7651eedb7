//! `Lease`: how long this replica may still call Telegram for the bots it owns.
//!
//! In a shared cluster a replica owns bots only while its membership lease lives in
//! the broker. The coordinator extends the lease after each successful renewal; a
//! polling bot checks it before every getUpdates and gives up its long poll the
//! moment it lapses, so a replica cut off from the broker (or frozen, and woken
//! after others took over) stops polling before anyone else can start. The deadline
//! is a monotonic instant: it keeps running while the process is stopped.
//!
//! The lease is for efficiency only (no 409s, no duplicate pollers); no update can be
//! lost without it, see `ack`.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

/// A shared deadline; clones see the same lease.
#[derive(Clone, Debug)]
pub struct Lease {
    /// `None`: never lapses (a single relay owns every bot).
    deadline: Arc<watch::Sender<Option<Instant>>>,
}

impl Lease {
    /// A lease that never lapses.
    pub fn unbounded() -> Lease {
        Lease {
            deadline: Arc::new(watch::Sender::new(None)),
        }
    }

    /// A lease that has already lapsed until it is first extended.
    pub fn lapsed_until_renewed() -> Lease {
        Lease {
            deadline: Arc::new(watch::Sender::new(Some(Instant::now()))),
        }
    }

    /// Moves the deadline (forwards after a renewal; to now to give everything up).
    pub fn set_deadline(&self, deadline: Instant) {
        self.deadline.send_replace(Some(deadline));
    }

    pub fn is_valid(&self) -> bool {
        self.deadline.borrow().is_none_or(|d| Instant::now() < d)
    }

    /// Resolves once the lease has lapsed (never, for an unbounded one).
    pub async fn lapsed(&self) {
        let mut deadline = self.deadline.subscribe();
        loop {
            let Some(at) = *deadline.borrow_and_update() else {
                // Unbounded now; wait for that to change.
                if deadline.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                continue;
            };
            if Instant::now() >= at {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                changed = deadline.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn lapses_at_its_deadline_unless_extended() {
        let lease = Lease::lapsed_until_renewed();
        assert!(!lease.is_valid());
        lease.set_deadline(Instant::now() + Duration::from_secs(5));
        assert!(lease.is_valid());

        let watcher = lease.clone();
        let lapsed = tokio::spawn(async move { watcher.lapsed().await });
        tokio::time::sleep(Duration::from_secs(4)).await;
        lease.set_deadline(Instant::now() + Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!lapsed.is_finished(), "extended before it lapsed");
        tokio::time::sleep(Duration::from_secs(2)).await;
        lapsed.await.unwrap();
        assert!(!lease.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unbounded_lease_never_lapses() {
        let lease = Lease::unbounded();
        assert!(lease.is_valid());
        let waited = tokio::time::timeout(Duration::from_secs(3600), lease.lapsed()).await;
        assert!(waited.is_err());
    }
}
