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

use super::plan::{plan_proven, View};
use super::store::{Change, Heartbeat, Store};
use super::{Bots, Ownership, OwnershipLog};
use crate::config::ClusterConfig;
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::supervisor::Supervisor;

mod claims;
mod renewal;
mod view;

use renewal::Renewal;
use view::ClusterView;

/// How often the loop looks at the cluster between changes.
const TICK: Duration = Duration::from_millis(250);

/// Shared ownership over a store.
pub struct SharedOwnership<S: Store> {
    store: Arc<S>,
    config: ClusterConfig,
    lease: Lease,
    log: OwnershipLog,
}

impl<S: Store> SharedOwnership<S> {
    pub fn new(store: S, config: &ClusterConfig, lease: Lease, metrics: Arc<Metrics>) -> Self {
        SharedOwnership {
            store: Arc::new(store),
            config: config.clone(),
            lease,
            log: OwnershipLog::new(metrics, config.instance.clone()),
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
            let renewal = Arc::new(Renewal::default());
            let renewing = CancellationToken::new();
            let incarnation = rand::random::<u64>().max(1);
            let beat = Heartbeat {
                incarnation,
                lease_ttl: Some(self.config.lease_ttl),
            };
            tokio::spawn(renewal::run(
                Arc::clone(&self.store),
                self.config.clone(),
                self.lease.clone(),
                Arc::clone(&renewal),
                renewing.clone(),
                beat,
                Arc::clone(&self.log.metrics),
            ));
            let view = ClusterView::new(&self.config.instance, incarnation, self.config.lease_ttl);
            let mut coordinator = Coordinator {
                store: self.store,
                config: self.config,
                lease: self.lease,
                log: self.log,
                bots,
                supervisor,
                view,
                mine: BTreeMap::new(),
                lapsed: false,
                yielding: false,
                renewal,
                cut_off_since: None,
            };
            coordinator.run(changes, shutdown).await;
            renewing.cancel();
            coordinator.leave().await;
        })
    }
}

struct Coordinator<S: Store> {
    store: Arc<S>,
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
    /// Another live process runs under this replica's name and started first: this
    /// one runs nothing and sends no heartbeat until that one is gone.
    yielding: bool,
    /// The heartbeats, renewed apart from this loop (claims must not delay them).
    renewal: Arc<Renewal>,
    /// Since when the broker has stored no heartbeat of this replica, while it does not.
    cut_off_since: Option<Instant>,
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
        // Heartbeats of replicas starting now have a moment to arrive before the first
        // plan, so a cold start does not give every bot to whoever came first.
        let first_plan = Instant::now() + self.config.renew_every();
        let mut last_tick = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(change) = changes.recv() => self.on_change(change).await,
                _ = tick.tick() => {
                    self.heard_through(&mut last_tick);
                    self.after_outage();
                    self.view.prune();
                    // Plan on the latest news: everything that arrived meanwhile first.
                    while let Ok(change) = changes.try_recv() {
                        self.on_change(change).await;
                    }
                    if self.yield_to_twin().await {
                        continue;
                    }
                    if self.renewal.lapsed() || !self.lease.is_valid() {
                        self.on_lapse().await;
                    }
                    if self.lapsed && self.renewal.renewed_within(self.config.owner_grace()) {
                        self.reconfirm().await;
                    }
                    // Stopping bots above may have waited long (for a broker that was
                    // away): what went unheard meanwhile is a stall too.
                    self.heard_through(&mut last_tick);
                    if self.lease.is_valid()
                        && !self.lapsed
                        && Instant::now() >= first_plan
                        && self.store.caught_up()
                    {
                        self.rebalance().await;
                    }
                    self.report();
                }
            }
        }
    }

    /// This loop did not run since `last` for longer than a few ticks (the process was
    /// frozen or starved, or a step waited): the others' silence meanwhile was not
    /// heard, only missed, so their stamps move on by it.
    fn heard_through(&mut self, last: &mut Instant) {
        let stall = last.elapsed();
        if stall > TICK * 4 {
            self.view.shift_after_stall(stall - TICK);
        }
        *last = Instant::now();
    }

    /// While the broker stored no heartbeat of this replica it heard nobody either:
    /// when it answers again, the others' silence meanwhile counts as a stall, so that
    /// the first replica back after an outage longer than the lease does not judge
    /// every other one dead and take its bots.
    fn after_outage(&mut self) {
        if self.yielding {
            // No heartbeats by choice: nothing was missed.
            self.cut_off_since = None;
            return;
        }
        // Slow heartbeats are no outage: only a silence that could outlast a takeover
        // window is made up for.
        let window = self.config.lease_ttl * 4 / 5;
        let answering = self.renewal.renewed_within(window);
        match (answering, self.cut_off_since) {
            (false, None) => self.cut_off_since = Some(Instant::now()),
            (true, Some(since)) => {
                self.cut_off_since = None;
                self.view
                    .shift_members_after_outage(since.elapsed() + window);
            }
            _ => {}
        }
    }

    /// Whether this replica yields to a process under its own name that started
    /// first (two units on one host, a pod force-deleted on a partitioned node): it
    /// stops its bots, frees their keys and goes quiet, loudly, until that one is gone.
    async fn yield_to_twin(&mut self) -> bool {
        let senior = self.view.senior_twin();
        if senior.is_some() == self.yielding {
            return self.yielding;
        }
        self.yielding = senior.is_some();
        self.renewal.pause(self.yielding);
        self.log.twin(self.yielding);
        if self.yielding {
            let mine: Vec<String> = self.mine.keys().cloned().collect();
            self.release_all(&mine).await;
            for bot in self.supervisor.running() {
                self.supervisor.stop(&bot).await;
            }
        }
        self.yielding
    }

    /// The lease lapsed: every bot has stopped polling by itself; forget them until
    /// the claims are confirmed again.
    async fn on_lapse(&mut self) {
        if self.mine.is_empty() {
            // Nothing to confirm again: the lease runs from the last heartbeat. (Only
            // clearing the flag would leave a lease that lapsed while heartbeats were
            // slow unrenewed for good: each renewal would find it lapsed again, and this
            // replica would never claim a bot.)
            self.renewal.resume(&self.lease, self.config.owner_grace());
            return;
        }
        if self.lapsed {
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
        // Written after this replica's own write, by someone else: even a key that
        // names this replica was written by another process under the same name.
        if revision > written {
            self.mine.remove(&bot);
            self.log.lost(&bot, "taken");
            self.supervisor.stop_taken(&bot).await;
        }
    }

    async fn rebalance(&mut self) {
        self.adopt().await;
        let bots: BTreeSet<String> = self.bots.borrow().keys().cloned().collect();
        let members = self.view.live_members();
        let proven = self.view.proven_members();
        let mut owners = self.view.live_owners(&members);
        for bot in self.mine.keys() {
            owners.insert(bot.clone(), self.me().to_owned());
        }
        let view = View {
            me: self.me(),
            bots: &bots,
            members: &members,
            owners: &owners,
        };
        let mut wanted = plan_proven(&view, &proven);
        // Bots dropped from the configuration are released like any other.
        wanted
            .release
            .extend(self.mine.keys().filter(|b| !bots.contains(*b)).cloned());
        self.release_all(&wanted.release).await;
        self.claim_all(&wanted.claim, &members).await;
        self.run_what_is_mine().await;
    }

    /// Starts the bots this replica owns and stops any other it still runs.
    async fn run_what_is_mine(&self) {
        let configs = Arc::clone(&self.bots.borrow());
        for bot in self.mine.keys() {
            // A bot no longer configured is not started (and released above).
            self.supervisor.start(&configs, bot);
        }
        for bot in self.supervisor.running() {
            if !self.mine.contains_key(&bot) {
                self.supervisor.stop(&bot).await;
            }
        }
    }

    fn report(&self) {
        let members = self.view.live_members();
        self.log.owned(&self.supervisor.running(), members.len());
        self.log.configured(&self.bots.borrow());
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
