//! Renewing this replica's lease, apart from the coordinator's loop so that slow
//! claims never hold a heartbeat back.
//!
//! A stored heartbeat extends the lease from the moment it was sent. If the lease had
//! lapsed meanwhile (a broker outage, or the process was frozen), a new heartbeat does
//! not revive it: the bots stopped, and some may have been taken over; the
//! coordinator first confirms each claim again, then resumes the lease.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::store::{Heartbeat, Store};
use crate::config::ClusterConfig;
use crate::lease::Lease;
use crate::metrics::Metrics;

#[derive(Default)]
pub(super) struct Renewal {
    /// When the last stored heartbeat was sent.
    last: Mutex<Option<Instant>>,
    /// The lease lapsed after it had been held; cleared by the coordinator.
    lapsed: AtomicBool,
    /// No heartbeats: another process runs under this replica's name.
    paused: AtomicBool,
}

impl Renewal {
    /// Stops (or resumes) heartbeats, so that the others see one process per name.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    pub fn lapsed(&self) -> bool {
        self.lapsed.load(Ordering::SeqCst)
    }

    /// A heartbeat was stored within `grace` of now.
    pub fn renewed_within(&self, grace: Duration) -> bool {
        self.last
            .lock()
            .unwrap()
            .is_some_and(|sent| sent + grace > Instant::now())
    }

    /// The claims are confirmed: the lease runs again from the last heartbeat.
    pub fn resume(&self, lease: &Lease, grace: Duration) {
        self.lapsed.store(false, Ordering::SeqCst);
        if let Some(sent) = *self.last.lock().unwrap() {
            lease.set_deadline(sent + grace);
        }
    }
}

pub(super) async fn run<S: Store>(
    store: Arc<S>,
    config: ClusterConfig,
    lease: Lease,
    state: Arc<Renewal>,
    stop: CancellationToken,
    beat: Heartbeat,
    metrics: Arc<Metrics>,
) {
    let mut every = tokio::time::interval(config.renew_every());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if state.paused.load(Ordering::SeqCst) {
            continue;
        }
        let held_before = state.last.lock().unwrap().is_some();
        if held_before && !lease.is_valid() && !state.lapsed.swap(true, Ordering::SeqCst) {
            metrics.cluster_lease_lapses.inc();
        }
        let sent = Instant::now();
        let put = store.heartbeat(&config.instance, beat);
        // A slow broker that stores the heartbeat within the grace still renews the
        // lease from when it was sent; only one later than that is no renewal.
        match tokio::time::timeout(config.owner_grace(), put).await {
            Ok(Ok(())) => {
                *state.last.lock().unwrap() = Some(sent);
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                metrics
                    .cluster_lease_renewed
                    .set(unix - sent.elapsed().as_secs_f64());
                if !state.lapsed() {
                    lease.set_deadline(sent + config.owner_grace());
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "renewing the cluster lease failed"),
            Err(_) => tracing::warn!("renewing the cluster lease timed out"),
        }
    }
}
