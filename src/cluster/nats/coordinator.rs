//! The loop of one replica: heartbeat, watch, plan, claim and release.

use super::*;

pub(super) struct Coordinator {
    members: kv::Store,
    owners: kv::Store,
    config: ClusterConfig,
    lease: Lease,
    log: OwnershipLog,
    bots: Bots,
    supervisor: Supervisor,
    view: ClusterView,
    /// Bot → the revision of the owners key this replica wrote: what it owns.
    mine: BTreeMap<String, u64>,
    /// The lease lapsed since the claims in `mine` were last written.
    lapsed: bool,
}

impl Coordinator {
    pub(super) fn new(nats: NatsOwnership, bots: Bots, supervisor: Supervisor) -> Self {
        Coordinator {
            members: nats.members,
            owners: nats.owners,
            config: nats.config,
            lease: nats.lease,
            log: nats.log,
            bots,
            supervisor,
            view: ClusterView::default(),
            mine: BTreeMap::new(),
            lapsed: false,
        }
    }

    fn me(&self) -> &str {
        &self.config.instance
    }

    pub(super) async fn run(&mut self, shutdown: CancellationToken) {
        let mut heartbeats = watch(&self.members).await;
        let mut keys = watch(&self.owners).await;
        let mut tick = tokio::time::interval(TICK);
        let mut next_renewal = Instant::now();
        // Heartbeats of replicas starting now have a moment to arrive before the first
        // plan, so a cold start does not give every bot to whoever came first.
        let first_plan = Instant::now() + self.config.renew_every();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(entry) = next(&mut heartbeats) => self.view.on_member(entry),
                Some(entry) = next(&mut keys) => self.on_owner(entry).await,
                _ = tick.tick() => {
                    if heartbeats.is_none() { heartbeats = watch(&self.members).await; }
                    if keys.is_none() { keys = watch(&self.owners).await; }
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
        let me = self.me().to_owned();
        let put = self.members.put(me.as_str(), value(&me));
        match tokio::time::timeout(self.config.renew_every(), put).await {
            Ok(Ok(_)) => self.lease.set_deadline(sent + self.config.owner_grace()),
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

    async fn on_owner(&mut self, entry: kv::Entry) {
        let bot = entry.key.clone();
        let revision = entry.revision;
        self.view.on_owner(entry);
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
            match self.owners.update(bot.as_str(), value(&me), revision).await {
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
            if let Ok(new) = self.owners.update(bot.as_str(), value(&me), revision).await {
                self.mine.insert(bot.clone(), new);
                self.log.acquired(&bot, None, None);
            }
        }
    }

    async fn claim(&mut self, bot: &str, members: &BTreeSet<String>) {
        let me = self.me().to_owned();
        let revision = self.view.revision(bot);
        let new = match self.owners.update(bot, value(&me), revision).await {
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
            None => self.view.free_since.get(bot).map(|(at, _)| at.elapsed()),
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
            if let Err(e) = self
                .owners
                .delete_expect_revision(bot, Some(*revision))
                .await
            {
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
            let _ = self
                .owners
                .delete_expect_revision(bot.as_str(), Some(revision))
                .await;
        }
        let _ = self.members.delete(self.me()).await;
        tracing::info!(instance = %self.me(), "left the cluster");
    }
}
