//! Which calls of each partition are done, for commits and for the next owner.
//!
//! A partition's committed offset can only move up to its oldest call not yet done,
//! and one chat waiting out its limits holds it there while the partition's other
//! chats go on. So the calls done above it are saved too (in the bot's memory record,
//! see `memory`), and a new owner skips them instead of sending them again. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// At most this many done offsets are kept above a partition's commit point (the
/// oldest go first: a new owner would run those again).
const MAX_DONE: usize = 100_000;

#[derive(Debug, Default)]
struct Partition {
    /// Taken and not done.
    outstanding: BTreeSet<i64>,
    /// Done, above the commit point.
    done: BTreeSet<i64>,
    /// The offset after the newest taken.
    next: i64,
    /// Done by a previous owner above its commit point: skipped when they come.
    skip: BTreeSet<i64>,
}

impl Partition {
    fn commit_point(&self) -> i64 {
        self.outstanding.first().copied().unwrap_or(self.next)
    }
}

/// One partition's progress as saved: its commit point and what is done above it,
/// as inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub from: i64,
    pub done: Vec<(i64, i64)>,
}

#[derive(Debug, Default)]
pub struct Offsets {
    partitions: BTreeMap<i32, Partition>,
    /// Bumped by every change, so a writer knows whether there is news to write.
    changes: u64,
}

impl Offsets {
    /// A call was taken; false when a previous owner already did it (skip it).
    pub fn taken(&mut self, partition: i32, offset: i64) -> bool {
        self.changes += 1;
        let p = self.partitions.entry(partition).or_default();
        p.next = p.next.max(offset + 1);
        if p.skip.remove(&offset) {
            p.done.insert(offset);
            p.tidy();
            return false;
        }
        p.outstanding.insert(offset);
        true
    }

    /// A taken call is done (its result published).
    pub fn done(&mut self, partition: i32, offset: i64) {
        self.changes += 1;
        if let Some(p) = self.partitions.get_mut(&partition) {
            if p.outstanding.remove(&offset) {
                p.done.insert(offset);
                p.tidy();
            }
        }
    }

    /// A count that moves whenever anything here changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// What Kafka may be told: each partition's commit point.
    pub fn commit_points(&self) -> BTreeMap<i32, i64> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.next > 0)
            .map(|(id, p)| (*id, p.commit_point()))
            .collect()
    }

    /// What a next owner needs to skip.
    pub fn progress(&self) -> BTreeMap<i32, Progress> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.next > 0)
            .map(|(id, p)| {
                (
                    *id,
                    Progress {
                        from: p.commit_point(),
                        done: ranges(&p.done),
                    },
                )
            })
            .collect()
    }

    /// Takes over what a previous owner saved.
    pub fn resume(&mut self, saved: &BTreeMap<i32, Progress>) {
        for (id, progress) in saved {
            let p = self.partitions.entry(*id).or_default();
            for (first, last) in &progress.done {
                let room = MAX_DONE.saturating_sub(p.skip.len()) as i64;
                let last = (*last).min(first.saturating_add(room - 1));
                p.skip.extend((*first).max(progress.from)..=last);
            }
        }
    }
}

impl Partition {
    /// Keeps `done` to what lies above the commit point, and bounded.
    fn tidy(&mut self) {
        let point = self.commit_point();
        self.done = self.done.split_off(&point);
        while self.done.len() > MAX_DONE {
            self.done.pop_first();
        }
    }
}

fn ranges(offsets: &BTreeSet<i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &o in offsets {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == o => *last = o,
            _ => out.push((o, o)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_point_waits_for_the_oldest_call_not_done() {
        let mut offsets = Offsets::default();
        for o in 10..20 {
            assert!(offsets.taken(0, o));
        }
        for o in [10, 11, 13, 14, 15, 18] {
            offsets.done(0, o);
        }
        assert_eq!(offsets.commit_points()[&0], 12);
        assert_eq!(
            offsets.progress()[&0],
            Progress {
                from: 12,
                done: vec![(13, 15), (18, 18)]
            }
        );
        offsets.done(0, 12);
        assert_eq!(offsets.commit_points()[&0], 16);
        for o in [16, 17, 19] {
            offsets.done(0, o);
        }
        assert_eq!(
            offsets.progress()[&0],
            Progress {
                from: 20,
                done: vec![]
            }
        );
    }

    #[test]
    fn a_new_owner_skips_what_the_last_one_did() {
        let mut old = Offsets::default();
        for o in 0..10 {
            old.taken(3, o);
        }
        for o in [0, 1, 4, 5, 7] {
            old.done(3, o);
        }
        let saved = old.progress();
        let text = serde_json::to_string(&saved).unwrap();
        let mut new = Offsets::default();
        new.resume(&serde_json::from_str(&text).unwrap());
        // The new owner reads from the commit point, 2.
        let run: Vec<i64> = (2..10).filter(|o| new.taken(3, *o)).collect();
        assert_eq!(run, vec![2, 3, 6, 8, 9]);
        for o in run {
            new.done(3, o);
        }
        assert_eq!(new.commit_points()[&3], 10);
    }
}
