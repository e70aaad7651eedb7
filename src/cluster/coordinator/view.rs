//! What the changes say about the cluster, as this replica saw them arrive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::store::Change;

/// A bot's owner key, as last seen.
#[derive(Debug, Clone)]
pub(super) struct OwnerKey {
    /// The owner, or `None` once freed.
    pub owner: Option<String>,
    pub revision: u64,
}

#[derive(Default)]
pub(super) struct ClusterView {
    /// Replica → when its last heartbeat arrived (by this replica's clock).
    pub heartbeats: HashMap<String, Instant>,
    pub owners: HashMap<String, OwnerKey>,
    /// Bot → since when it has been free, as far as this replica saw it freed.
    pub free_since: HashMap<String, Instant>,
}

impl ClusterView {
    /// Replicas heard from within `takeover_after`, and this one.
    pub fn live_members(&self, me: &str, takeover_after: Duration) -> BTreeSet<String> {
        let now = Instant::now();
        self.heartbeats
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) < takeover_after)
            .map(|(m, _)| m.clone())
            .chain([me.to_owned()])
            .collect()
    }

    /// Bot → owner, for owners among `members`.
    pub fn live_owners(&self, members: &BTreeSet<String>) -> BTreeMap<String, String> {
        self.owners
            .iter()
            .filter_map(|(bot, key)| {
                let owner = key.owner.as_ref()?;
                members
                    .contains(owner)
                    .then(|| (bot.clone(), owner.clone()))
            })
            .collect()
    }

    /// Counts every known replica as heard from now (after this replica itself was
    /// not running, so that its own pause is not taken for theirs).
    pub fn heard_everyone_now(&mut self) {
        let now = Instant::now();
        for seen in self.heartbeats.values_mut() {
            *seen = now;
        }
    }

    pub fn revision(&self, bot: &str) -> u64 {
        self.owners.get(bot).map_or(0, |k| k.revision)
    }

    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Member { instance, alive } => {
                if alive {
                    self.heartbeats.insert(instance, Instant::now());
                } else {
                    self.heartbeats.remove(&instance);
                }
            }
            Change::Owner {
                bot,
                owner,
                revision,
                live,
            } => {
                if owner.is_none() && live {
                    self.free_since.insert(bot.clone(), Instant::now());
                }
                self.owners.insert(bot, OwnerKey { owner, revision });
            }
        }
    }
}
