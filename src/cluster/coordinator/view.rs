//! What the changes say about the cluster, as this replica saw them arrive.
//!
//! Each replica is judged by the `lease_ttl` its own heartbeats carry (80 % of it
//! without a heartbeat and it is gone), so replicas mid-rollout of a new `lease_ttl`
//! never take bots whose lease is still valid. Another process heard under this
//! replica's own name is a twin, kept apart: of two processes with one name only the
//! one that started with the lower incarnation runs bots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::store::{Change, Heartbeat};

/// A replica forgotten after this many of its takeover windows without a heartbeat
/// (pods replaced under new names would otherwise pile up for good).
const FORGET_AFTER_WINDOWS: u32 = 3;

/// A bot's owner key, as last seen.
#[derive(Debug, Clone)]
pub(super) struct OwnerKey {
    /// The owner, or `None` once freed.
    pub owner: Option<String>,
    pub revision: u64,
}

/// When a replica was last heard from (by this replica's clock), and its lease.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    pub at: Instant,
    pub lease_ttl: Option<Duration>,
    /// Since when this process (`incarnation`) has been heard without a gap past its
    /// takeover window.
    pub since: Instant,
    pub incarnation: u64,
}

pub(super) struct ClusterView {
    me: String,
    incarnation: u64,
    /// Judges replicas whose heartbeats do not say their lease (older versions).
    own_ttl: Duration,
    pub heartbeats: HashMap<String, Seen>,
    /// Other processes heard under this replica's name, by incarnation.
    twins: HashMap<u64, Seen>,
    pub owners: HashMap<String, OwnerKey>,
    /// Bot → since when it has been free, as far as this replica saw it freed.
    pub free_since: HashMap<String, Instant>,
}

impl ClusterView {
    pub fn new(me: &str, incarnation: u64, own_ttl: Duration) -> ClusterView {
        ClusterView {
            me: me.to_owned(),
            incarnation,
            own_ttl,
            heartbeats: HashMap::new(),
            twins: HashMap::new(),
            owners: HashMap::new(),
            free_since: HashMap::new(),
        }
    }

    /// How long a replica's silence must last before its bots are taken: 80 % of the
    /// lease it announced.
    fn takeover_after(&self, seen: &Seen) -> Duration {
        seen.lease_ttl.unwrap_or(self.own_ttl) * 4 / 5
    }

    fn is_live(&self, seen: &Seen) -> bool {
        seen.at.elapsed() < self.takeover_after(seen)
    }

    /// Replicas heard from within their takeover window, and this one.
    pub fn live_members(&self) -> BTreeSet<String> {
        self.heartbeats
            .iter()
            .filter(|(_, seen)| self.is_live(seen))
            .map(|(m, _)| m.clone())
            .chain([self.me.clone()])
            .collect()
    }

    /// Live replicas heard for a whole takeover window without a gap, and this one:
    /// only those are given bots by the others, so a pod that dies right after each
    /// start (crash-looping) takes nothing from them.
    pub fn proven_members(&self) -> BTreeSet<String> {
        self.heartbeats
            .iter()
            .filter(|(_, seen)| {
                self.is_live(seen) && seen.since.elapsed() >= self.takeover_after(seen)
            })
            .map(|(m, _)| m.clone())
            .chain([self.me.clone()])
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

    /// A live process under this replica's name that started first (the lower
    /// incarnation), to which this one must yield.
    pub fn senior_twin(&self) -> Option<u64> {
        self.twins
            .iter()
            .filter(|(inc, seen)| **inc < self.incarnation && self.is_live(seen))
            .map(|(inc, _)| *inc)
            .min()
    }

    /// This process was not running for `stall` (frozen, starved): the others'
    /// silence meanwhile was not heard, only missed, so each stamp moves on by the
    /// stall. A replica dead before the stall stays as dead as it was.
    pub fn shift_after_stall(&mut self, stall: Duration) {
        let now = Instant::now();
        for seen in self.heartbeats.values_mut().chain(self.twins.values_mut()) {
            seen.at = (seen.at + stall).min(now);
        }
    }

    /// The broker stored nothing of this replica for `outage`: the other replicas'
    /// silence meanwhile was not heard (as in a stall). Twins are left as they were: a
    /// process under this name that went silent before is not brought back.
    pub fn shift_members_after_outage(&mut self, outage: Duration) {
        let now = Instant::now();
        for seen in self.heartbeats.values_mut() {
            seen.at = (seen.at + outage).min(now);
        }
    }

    /// Forgets replicas silent for several of their takeover windows.
    pub fn prune(&mut self) {
        let own_ttl = self.own_ttl;
        let keep = |seen: &Seen| {
            seen.at.elapsed() < seen.lease_ttl.unwrap_or(own_ttl) * 4 / 5 * FORGET_AFTER_WINDOWS
        };
        self.heartbeats.retain(|_, seen| keep(seen));
        self.twins.retain(|_, seen| keep(seen));
    }

    pub fn revision(&self, bot: &str) -> u64 {
        self.owners.get(bot).map_or(0, |k| k.revision)
    }

    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Member {
                instance,
                alive,
                beat,
            } => self.member(instance, alive, beat),
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

    fn member(&mut self, instance: String, alive: bool, beat: Heartbeat) {
        let now = Instant::now();
        // A process restarted under the same name (a crash loop) starts over.
        let since = match self.heartbeats.get(&instance) {
            Some(earlier) if self.is_live(earlier) && earlier.incarnation == beat.incarnation => {
                earlier.since
            }
            _ => now,
        };
        let seen = Seen {
            at: now,
            lease_ttl: beat.lease_ttl,
            since,
            incarnation: beat.incarnation,
        };
        if instance != self.me {
            match alive {
                true => self.heartbeats.insert(instance, seen),
                false => self.heartbeats.remove(&instance),
            };
        } else if !alive {
            // A process under this name left; a leave does not say which.
            self.twins.clear();
        } else if beat.incarnation != self.incarnation {
            self.twins.insert(beat.incarnation, seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(incarnation: u64, ttl_secs: u64) -> Change {
        Change::Member {
            instance: "r1".into(),
            alive: true,
            beat: Heartbeat {
                incarnation,
                lease_ttl: Some(Duration::from_secs(ttl_secs)),
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_replica_is_judged_by_its_own_lease() {
        let mut view = ClusterView::new("r0", 7, Duration::from_secs(5));
        view.apply(beat(1, 30));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(view.live_members().contains("r1"), "30 s lease: still live");
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(!view.live_members().contains("r1"), "silent for 80 % of it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_is_proven_once_heard_for_a_whole_window_without_a_gap() {
        let mut view = ClusterView::new("r0", 7, Duration::from_secs(10));
        view.apply(beat(1, 10));
        assert!(view.live_members().contains("r1"));
        assert!(!view.proven_members().contains("r1"), "just started");
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(2)).await;
            view.apply(beat(1, 10));
        }
        assert!(view.proven_members().contains("r1"), "heard for 8 s");
        // It dies and comes back at once (a crash loop): a new process starts over.
        tokio::time::advance(Duration::from_secs(1)).await;
        view.apply(beat(2, 10));
        assert!(!view.proven_members().contains("r1"), "restarted");
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(2)).await;
            view.apply(beat(2, 10));
        }
        assert!(view.proven_members().contains("r1"), "heard for a window");
        tokio::time::advance(Duration::from_secs(9)).await;
        view.apply(beat(2, 10));
        assert!(!view.proven_members().contains("r1"), "back after a gap");
        assert!(
            view.proven_members().contains("r0"),
            "this replica always counts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_shifts_stamps_and_the_long_dead_are_forgotten() {
        let mut view = ClusterView::new("r0", 7, Duration::from_secs(10));
        view.apply(beat(1, 10));
        tokio::time::advance(Duration::from_secs(60)).await;
        view.shift_after_stall(Duration::from_secs(3));
        assert!(!view.live_members().contains("r1"), "dead before the stall");
        view.prune();
        assert!(view.heartbeats.is_empty(), "forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn of_two_processes_with_one_name_the_later_one_yields() {
        let mut later = ClusterView::new("r1", 9, Duration::from_secs(10));
        let mut earlier = ClusterView::new("r1", 3, Duration::from_secs(10));
        later.apply(beat(3, 10));
        earlier.apply(beat(9, 10));
        later.apply(beat(9, 10));
        assert_eq!(later.senior_twin(), Some(3));
        assert_eq!(earlier.senior_twin(), None, "its own heartbeat is no twin");
        assert!(!later.live_members().is_empty());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(later.senior_twin(), None, "the earlier one went silent");
    }
}
