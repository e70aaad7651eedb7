//! Writing owner keys: claims, releases, and confirming claims again after a lapse.
//! Each write names the revision last seen; its outcome goes into the view at once,
//! so the next plan does not act on a key this replica already changed.

use std::collections::BTreeSet;
use std::future::Future;

use super::*;
use crate::cluster::store::Change;

/// Owner writes in flight at once (claims at a cold start, releases on a rebalance).
const CONCURRENT_WRITES: usize = 32;

impl<S: Store> Coordinator<S> {
    /// Claims these free bots; a claim someone else won is left for the next round.
    pub(super) async fn claim_all(&mut self, bots: &[String], members: &BTreeSet<String>) {
        let me = self.me().to_owned();
        let writes = bots.iter().map(|bot| {
            let (store, me, bot) = (Arc::clone(&self.store), me.clone(), bot.clone());
            let revision = self.view.revision(&bot);
            async move {
                let result = store.write_owner(&bot, Some(&me), revision).await;
                (bot, revision, result)
            }
        });
        let results = in_batches(writes.collect()).await;
        for (bot, revision, result) in results {
            match result {
                Ok(new) => self.claimed(&bot, new, members),
                // Usually another replica was faster; the next round sees its claim.
                Err(e) => {
                    self.log.write_failed(&e);
                    tracing::debug!(%bot, revision, error = %e, "claim not taken");
                }
            }
        }
    }

    fn claimed(&mut self, bot: &str, revision: u64, members: &BTreeSet<String>) {
        let previous = self.view.owners.get(bot).and_then(|k| k.owner.clone());
        let dead_owner = previous.filter(|p| !members.contains(p));
        // How long the bot went unpolled: since its owner was last heard of, or since
        // it was released.
        let unowned = match &dead_owner {
            Some(owner) => self
                .view
                .heartbeats
                .get(owner)
                .map(|seen| seen.at.elapsed()),
            None => self.view.free_since.get(bot).map(|at| at.elapsed()),
        };
        self.view.free_since.remove(bot);
        self.wrote(bot, Some(self.me().to_owned()), revision);
        self.mine.insert(bot.to_owned(), revision);
        self.log.acquired(bot, dead_owner.as_deref(), unowned);
    }

    /// Stops these bots (each finishes its batch and confirms), then frees their keys.
    pub(super) async fn release_all(&mut self, bots: &[String]) {
        let releases = bots.iter().map(|bot| {
            let (store, supervisor) = (Arc::clone(&self.store), self.supervisor.clone());
            let (bot, revision) = (bot.clone(), self.mine.get(bot).copied());
            async move {
                supervisor.stop(&bot).await;
                let freed = match revision {
                    Some(revision) => store.write_owner(&bot, None, revision).await.map(Some),
                    None => Ok(None),
                };
                (bot, freed)
            }
        });
        let results = in_batches(releases.collect()).await;
        for (bot, freed) in results {
            self.mine.remove(&bot);
            match freed {
                Ok(Some(revision)) => self.wrote(&bot, None, revision),
                Ok(None) => {}
                Err(e) => {
                    self.log.write_failed(&e);
                    tracing::warn!(%bot, error = %e,
                        "freeing a released bot's key failed; it moves once this replica's heartbeat is seen to stop");
                }
            }
            self.log.released(&bot);
        }
    }

    /// After a lapse: rewrites each claim with its own revision; one that fails was
    /// taken over meanwhile. Then the lease runs again from the last heartbeat.
    pub(super) async fn reconfirm(&mut self) {
        let me = self.me().to_owned();
        for (bot, revision) in std::mem::take(&mut self.mine) {
            match self.store.write_owner(&bot, Some(&me), revision).await {
                Ok(new) => {
                    self.wrote(&bot, Some(me.clone()), new);
                    self.mine.insert(bot, new);
                }
                Err(e) => {
                    self.log.write_failed(&e);
                    self.log.lost(&bot, "lapsed");
                }
            }
        }
        self.lapsed = false;
        self.renewal.resume(&self.lease, self.config.owner_grace());
        tracing::info!(instance = %me, bots = self.mine.len(), "cluster lease renewed");
    }

    /// Keys naming this replica that it did not write in this run (a restart under the
    /// same name): claimed back with their revision.
    pub(super) async fn adopt(&mut self) {
        let me = self.me().to_owned();
        let stale: Vec<(String, u64)> = self
            .view
            .owners
            .iter()
            .filter(|(bot, k)| k.owner.as_deref() == Some(&me) && !self.mine.contains_key(*bot))
            .map(|(bot, k)| (bot.clone(), k.revision))
            .collect();
        for (bot, revision) in stale {
            match self.store.write_owner(&bot, Some(&me), revision).await {
                Ok(new) => {
                    self.wrote(&bot, Some(me.clone()), new);
                    self.mine.insert(bot.clone(), new);
                    self.log.acquired(&bot, None, None);
                }
                Err(e) => self.log.write_failed(&e),
            }
        }
    }

    /// What this replica just wrote, in its own view before the broker's echo.
    fn wrote(&mut self, bot: &str, owner: Option<String>, revision: u64) {
        self.view.apply(Change::Owner {
            bot: bot.to_owned(),
            owner,
            revision,
            live: false,
        });
    }
}

/// Runs the futures `CONCURRENT_WRITES` at a time.
async fn in_batches<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    let mut rest = futures.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<F> = rest.by_ref().take(CONCURRENT_WRITES).collect();
        out.extend(futures::future::join_all(batch).await);
    }
    out
}
