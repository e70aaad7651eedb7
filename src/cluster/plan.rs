//! Which bots this replica should claim or release, from one view of the cluster.
//!
//! With R live replicas and B bots, each replica should own ⌊B/R⌋ or ⌈B/R⌉ bots, and
//! only `B mod R` of them the larger share. Every replica applies the same rules to
//! what it sees, and only ever moves bots it must:
//! - a replica above ⌈B/R⌉ releases the excess;
//! - when no bot is free but someone is below ⌊B/R⌋, the replicas holding ⌈B/R⌉ beyond
//!   the `B mod R` allowed (the last ones by name, so they agree) release one each;
//! - a replica below its share claims free bots: first those its own hash ranks
//!   highest, so replicas claiming at the same moment mostly want different bots.
//!
//! Claims race through the broker's compare-and-set, so a lost race costs one more
//! round, never a second owner.

use std::collections::{BTreeMap, BTreeSet};

/// What one replica sees: every bot, the live replicas and who owns what.
pub struct View<'a> {
    pub me: &'a str,
    pub bots: &'a BTreeSet<String>,
    /// Live replicas, this one included.
    pub members: &'a BTreeSet<String>,
    /// Bot → owner, for owners that are live members.
    pub owners: &'a BTreeMap<String, String>,
}

/// What this replica should do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub claim: Vec<String>,
    pub release: Vec<String>,
}

pub fn plan(view: &View<'_>) -> Plan {
    let replicas = view.members.len().max(1);
    let lo = view.bots.len() / replicas;
    let extra = view.bots.len() % replicas;
    let hi = lo + usize::from(extra > 0);
    let mut counts: BTreeMap<&str, usize> = view.members.iter().map(|m| (m.as_str(), 0)).collect();
    let mut mine = Vec::new();
    let mut free = Vec::new();
    for bot in view.bots {
        match view.owners.get(bot) {
            Some(owner) if view.members.contains(owner) => {
                *counts.entry(owner).or_default() += 1;
                if owner == view.me {
                    mine.push(bot.clone());
                }
            }
            _ => free.push(bot.clone()),
        }
    }
    let at_hi: Vec<&str> = counts
        .iter()
        .filter(|(_, n)| **n == hi)
        .map(|(m, _)| *m)
        .collect();
    let mut out = Plan::default();
    if mine.len() > hi {
        out.release = mine.split_off(hi);
        return out;
    }
    let balanced_above = counts.values().all(|n| *n <= hi);
    if free.is_empty() && extra > 0 && mine.len() == hi && balanced_above {
        let rank = at_hi.iter().position(|m| *m == view.me);
        if at_hi.len() > extra && rank.is_some_and(|r| r >= extra) {
            out.release = mine.split_off(hi - 1);
        }
        return out;
    }
    let want = if mine.len() < lo {
        lo - mine.len()
    } else if mine.len() < hi && at_hi.len() < extra {
        1
    } else {
        0
    };
    free.sort_by_key(|bot| std::cmp::Reverse(rank(view.me, bot)));
    free.truncate(want);
    out.claim = free;
    out
}

/// As `plan`, with the replicas of `members` not in `proven` (heard for less than a
/// takeover window: just started, or crash-looping) counted only for the bots that are
/// free: nobody releases a bot for them, so a pod that dies right after each start
/// takes nothing from the others. At a cold start every replica claims its share of
/// the free bots and none releases any.
pub fn plan_proven(view: &View<'_>, proven: &BTreeSet<String>) -> Plan {
    let claim = plan(view).claim;
    let owners: BTreeMap<String, String> = view
        .owners
        .iter()
        .filter(|(_, owner)| proven.contains(*owner))
        .map(|(bot, owner)| (bot.clone(), owner.clone()))
        .collect();
    let release = plan(&View {
        me: view.me,
        bots: view.bots,
        members: proven,
        owners: &owners,
    })
    .release;
    Plan { claim, release }
}

/// Rendezvous rank of a bot for a replica (FNV-1a: the same on every replica).
fn rank(me: &str, bot: &str) -> u64 {
    me.bytes()
        .chain([0])
        .chain(bot.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests;
