//! The loop of one shared replica, whatever the broker: heartbeat, watch, plan,
//! claim and release.
//!
//! A replica puts a heartbeat five times per `lease_ttl` and judges another gone once
//! it has heard nothing from it for 80 % of it, by its own monotonic clock: no two
//! clocks are compared, and the owner itself stops polling at 60 %. A bot is claimed
//! by writing its owner key with the revision last seen (0 when never written), so of
//! two replicas claiming at once one wins; it is released, after it stopped and
//! confirmed, by freeing the key with the owner's own revision. A replica runs a bot
//! only while the key holds the revision it wrote, and only while its lease lives;
//! after a lapse it rewrites each claim with its revision before polling again, so a
//! bot taken over meanwhile stays taken.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::{plan, View};
use super::store::{Change, Store};
use super::{Bots, Ownership, OwnershipLog};
use crate::config::ClusterConfig;
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::supervisor::Supervisor;

mod view;

use view::ClusterView;

/// How often the loop looks at the cluster between changes.
const TICK: Duration = Duration::from_millis(250);

/// Shared ownership over a store.
pub struct SharedOwnership<S: Store> {
    store: S,
    config: ClusterConfig,
    lease: Lease,
    log: OwnershipLog,
}

impl<S: Store> SharedOwnership<S> {
    pub fn new(store: S, config: &ClusterConfig, lease: Lease, metrics: Arc<Metrics>) -> Self {
        SharedOwnership {
            store,
            config: config.clone(),
            lease,
            log: OwnershipLog {
                metrics,
                instance: config.instance.clone(),
            },
        }
    }
}

impl<S: Store> Ownership for SharedOwnership<S> {
    fn run(
        self: Box<Self>,
        bots: Bots,
        supervisor: Supervisor,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let changes = self.store.changes();
            let mut coordinator = Coordinator {
                store: self.store,
                config: self.config,
                lease: self.lease,
                log: self.log,
                bots,
                supervisor,
                view: ClusterView::default(),
                mine: BTreeMap::new(),
                lapsed: false,
            };
            coordinator.run(changes, shutdown).await;
        })
    }
}

struct Coordinator<S: Store> {
    store: S,
    config: ClusterConfig,
    lease: Lease,
    log: OwnershipLog,
    bots: Bots,
    supervisor: Supervisor,
    view: ClusterView,
    /// Bot → the revision of the owner key this replica wrote: what it owns.
    mine: BTreeMap<String, u64>,
    /// The lease lapsed since the claims in `mine` were last written.
    lapsed: bool,
}

impl<S: Store> Coordinator<S> {
    fn me(&self) -> &str {
        &self.config.instance
    }

    async fn run(
        &mut self,
        mut changes: mpsc::UnboundedReceiver<Change>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        let mut next_renewal = Instant::now();
        // Heartbeats of replicas starting now have a moment to arrive before the first
        // plan, so a cold start does not give every bot to whoever came first.
        let first_plan = Instant::now() + self.config.renew_every();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(change) = changes.recv() => self.on_change(change).await,
                _ = tick.tick() => {
                    // A lapse is handled before any renewal: a replica woken from a
                    // freeze stops its bots first, then learns whether they are still its.
                    if !self.lease.is_valid() {
                        self.on_lapse().await;
                    }
                    if Instant::now() >= next_renewal {
                        next_renewal = Instant::now() + self.config.renew_every();
                        self.renew().await;
                    }
                    if self.lease.is_valid() && Instant::now() >= first_plan {
                        self.rebalance().await;
                    }
                    self.report();
                }
            }
        }
        self.leave().await;
    }

    /// Puts the heartbeat; a stored one extends the lease from when it was sent.
    async fn renew(&mut self) {
        let sent = Instant::now();
        let put = self.store.heartbeat(&self.config.instance);
        match tokio::time::timeout(self.config.renew_every(), put).await {
            Ok(Ok(())) => self.lease.set_deadline(sent + self.config.owner_grace()),
            Ok(Err(e)) => tracing::warn!(error = %e, "renewing the cluster lease failed"),
            Err(_) => tracing::warn!("renewing the cluster lease timed out"),
        }
    }

    /// The lease lapsed: every bot has stopped polling by itself; forget them until
    /// the claims are confirmed again.
    async fn on_lapse(&mut self) {
        if self.lapsed || self.mine.is_empty() {
            self.lapsed |= !self.mine.is_empty();
            return;
        }
        self.lapsed = true;
        self.log.lapsed(self.mine.len());
        for bot in self.supervisor.running() {
            self.supervisor.stop(&bot).await;
        }
    }

    async fn on_change(&mut self, change: Change) {
        let (bot, revision) = match &change {
            Change::Owner { bot, revision, .. } => (bot.clone(), *revision),
            Change::Member { .. } => return self.view.apply(change),
        };
        self.view.apply(change);
        let Some(written) = self.mine.get(&bot).copied() else {
            return;
        };
        let ours = self.view.owners[&bot].owner.as_deref() == Some(self.me());
        if revision > written && !ours {
            self.mine.remove(&bot);
            self.log.lost(&bot, "taken");
            self.supervisor.stop(&bot).await;
        }
    }

    async fn rebalance(&mut self) {
        if self.lapsed {
            self.reconfirm().await;
        }
        self.adopt().await;
        let bots: BTreeSet<String> = self.bots.borrow().keys().cloned().collect();
        let members = self
            .view
            .live_members(self.me(), self.config.takeover_after());
        let mut owners = self.view.live_owners(&members);
        for bot in self.mine.keys() {
            owners.insert(bot.clone(), self.me().to_owned());
        }
        // Bots dropped from the configuration are released like any other.
        let mut wanted = plan(&View {
            me: self.me(),
            bots: &bots,
            members: &members,
            owners: &owners,
        });
        wanted
            .release
            .extend(self.mine.keys().filter(|b| !bots.contains(*b)).cloned());
        futures::future::join_all(wanted.release.iter().map(|bot| self.release(bot))).await;
        for bot in &wanted.release {
            self.mine.remove(bot);
        }
        for bot in wanted.claim {
            self.claim(&bot, &members).await;
        }
        self.run_what_is_mine().await;
    }

    /// After a lapse: rewrites each claim with its own revision; one that fails was
    /// taken over meanwhile.
    async fn reconfirm(&mut self) {
        let me = self.me().to_owned();
        for (bot, revision) in std::mem::take(&mut self.mine) {
            match self.store.write_owner(&bot, Some(&me), revision).await {
                Ok(new) => {
                    self.mine.insert(bot, new);
                }
                Err(_) => self.log.lost(&bot, "lapsed"),
            }
        }
        self.lapsed = false;
        tracing::info!(instance = %me, bots = self.mine.len(), "cluster lease renewed");
    }

    /// Keys naming this replica that it did not write in this run (a restart under the
    /// same name): claimed back with their revision.
    async fn adopt(&mut self) {
        let me = self.me().to_owned();
        let stale: Vec<(String, u64)> = self
            .view
            .owners
            .iter()
            .filter(|(bot, k)| k.owner.as_deref() == Some(&me) && !self.mine.contains_key(*bot))
            .map(|(bot, k)| (bot.clone(), k.revision))
            .collect();
        for (bot, revision) in stale {
            if let Ok(new) = self.store.write_owner(&bot, Some(&me), revision).await {
                self.mine.insert(bot.clone(), new);
                self.log.acquired(&bot, None, None);
            }
        }
    }

    async fn claim(&mut self, bot: &str, members: &BTreeSet<String>) {
        let me = self.me().to_owned();
        let revision = self.view.revision(bot);
        let new = match self.store.write_owner(bot, Some(&me), revision).await {
            Ok(new) => new,
            Err(e) => {
                // Usually another replica was faster; the next round sees its claim.
                tracing::debug!(%bot, revision, error = %e, "claim not taken");
                return;
            }
        };
        let previous = self.view.owners.get(bot).and_then(|k| k.owner.clone());
        let dead_owner = previous.as_ref().filter(|p| !members.contains(*p));
        // How long the bot went unpolled: since its owner was last heard of, or since
        // it was released.
        let unowned = match dead_owner {
            Some(owner) => self.view.heartbeats.get(owner).map(|seen| seen.elapsed()),
            None => self.view.free_since.get(bot).map(|at| at.elapsed()),
        };
        self.view.free_since.remove(bot);
        self.mine.insert(bot.to_owned(), new);
        self.log
            .acquired(bot, dead_owner.map(String::as_str), unowned);
    }

    /// Stops a bot (it finishes its batch and confirms), then frees its key.
    async fn release(&self, bot: &str) {
        self.supervisor.stop(bot).await;
        if let Some(revision) = self.mine.get(bot) {
            if let Err(e) = self.store.write_owner(bot, None, *revision).await {
                tracing::warn!(%bot, error = %e, "freeing a released bot's key failed; it moves once this replica's heartbeat is seen to stop");
            }
        }
        self.log.released(bot);
    }

    /// Starts the bots this replica owns and stops any other it still runs.
    async fn run_what_is_mine(&self) {
        let configs = Arc::clone(&self.bots.borrow());
        for bot in self.mine.keys() {
            if let Some(config) = configs.get(bot) {
                self.supervisor.start(bot, config);
            }
        }
        for bot in self.supervisor.running() {
            if !self.mine.contains_key(&bot) {
                self.supervisor.stop(&bot).await;
            }
        }
    }

    fn report(&self) {
        let members = self
            .view
            .live_members(self.me(), self.config.takeover_after());
        self.log.owned(&self.supervisor.running(), members.len());
    }

    /// On shutdown, once every bot has stopped and confirmed: frees this replica's
    /// keys and heartbeat, so the others take over now rather than after the lease.
    async fn leave(&mut self) {
        self.supervisor.drained().await;
        for (bot, revision) in std::mem::take(&mut self.mine) {
            let _ = self.store.write_owner(&bot, None, revision).await;
        }
        self.store.leave(&self.config.instance).await;
        tracing::info!(instance = %self.me(), "left the cluster");
    }
}
