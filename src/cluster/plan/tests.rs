use super::*;

fn names(prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

/// Runs every replica's plan in turn, claims and releases applied at once (a claim of
/// a bot someone took meanwhile fails, as a compare-and-set would), until nothing
/// changes. Returns the owners and how many times a bot changed hands.
fn settle(
    bots: &BTreeSet<String>,
    members: &BTreeSet<String>,
    mut owners: BTreeMap<String, String>,
) -> (BTreeMap<String, String>, usize) {
    owners.retain(|_, owner| members.contains(owner));
    let mut moves = 0;
    for _round in 0..100 {
        let mut changed = false;
        for me in members {
            let p = plan(&View {
                me,
                bots,
                members,
                owners: &owners,
            });
            for bot in p.release {
                assert_eq!(owners.remove(&bot).as_deref(), Some(me.as_str()));
                changed = true;
            }
            for bot in p.claim {
                if let std::collections::btree_map::Entry::Vacant(free) = owners.entry(bot) {
                    free.insert(me.clone());
                    moves += 1;
                    changed = true;
                }
            }
        }
        if !changed {
            return (owners, moves);
        }
    }
    panic!("no stable assignment after 100 rounds");
}

fn counts(members: &BTreeSet<String>, owners: &BTreeMap<String, String>) -> Vec<usize> {
    members
        .iter()
        .map(|m| owners.values().filter(|o| *o == m).count())
        .collect()
}

fn assert_balanced(bots: usize, members: &BTreeSet<String>, owners: &BTreeMap<String, String>) {
    let r = members.len();
    let c = counts(members, owners);
    assert_eq!(owners.len(), bots, "every bot owned: {c:?}");
    assert!(
        c.iter().all(|n| *n == bots / r || *n == bots.div_ceil(r)),
        "{c:?}"
    );
}

#[test]
fn every_replica_gets_its_share_from_a_cold_start() {
    for (b, r) in [(30, 3), (7, 3), (2, 5), (100, 7), (1, 1), (0, 2), (31, 4)] {
        let (bots, members) = (names("bot", b), names("replica", r));
        let (owners, moves) = settle(&bots, &members, BTreeMap::new());
        assert_balanced(b, &members, &owners);
        assert_eq!(moves, b, "{b} bots, {r} replicas: each claimed once");
    }
}

#[test]
fn a_replica_that_dies_leaves_only_its_own_bots_to_move() {
    let (bots, mut members) = (names("bot", 30), names("replica", 3));
    let (owners, _) = settle(&bots, &members, BTreeMap::new());
    members.remove("replica001");
    let orphans = owners.values().filter(|o| *o == "replica001").count();
    let (after, moves) = settle(&bots, &members, owners.clone());
    assert_balanced(30, &members, &after);
    assert_eq!(moves, orphans);
    for (bot, owner) in &owners {
        if owner != "replica001" {
            assert_eq!(&after[bot], owner, "a survivor's bot stays put");
        }
    }
}

#[test]
fn a_replica_that_joins_takes_only_what_balance_needs() {
    for (b, before, after) in [(30, 2, 3), (30, 1, 3), (31, 3, 4), (10, 3, 4), (5, 5, 6)] {
        let bots = names("bot", b);
        let old = names("replica", before);
        let (owners, _) = settle(&bots, &old, BTreeMap::new());
        let all = names("replica", after);
        let (settled, moves) = settle(&bots, &all, owners.clone());
        assert_balanced(b, &all, &settled);
        // The fewest moves any balanced assignment needs: each newcomer's share.
        let newcomers = after - before;
        let least = counts(&all, &settled)
            .iter()
            .rev()
            .take(newcomers)
            .sum::<usize>();
        assert_eq!(moves, least, "{b} bots, {before} → {after} replicas");
    }
}

#[test]
fn a_balanced_cluster_stays_still() {
    let (bots, members) = (names("bot", 31), names("replica", 4));
    let (owners, _) = settle(&bots, &members, BTreeMap::new());
    for me in &members {
        let p = plan(&View {
            me,
            bots: &bots,
            members: &members,
            owners: &owners,
        });
        assert_eq!(p, Plan::default(), "{me}");
    }
}

#[test]
fn a_replica_above_its_share_releases_the_excess() {
    let bots = names("bot", 6);
    let members = names("replica", 2);
    let owners: BTreeMap<String, String> = bots
        .iter()
        .map(|b| (b.clone(), "replica000".to_owned()))
        .collect();
    let p = plan(&View {
        me: "replica000",
        bots: &bots,
        members: &members,
        owners: &owners,
    });
    assert_eq!(p.release.len(), 3);
    assert!(p.claim.is_empty());
}

#[test]
fn a_replica_not_yet_proven_gets_no_bot_released_for_it_but_shares_the_free_ones() {
    let bots = names("b", 6);
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    let members = set(&["r0", "r1", "r2"]);
    // r0 and r1 own three bots each; r2 has just started.
    let owners: BTreeMap<String, String> = bots
        .iter()
        .enumerate()
        .map(|(i, bot)| (bot.clone(), if i < 3 { "r0" } else { "r1" }.to_string()))
        .collect();
    let view = View {
        me: "r0",
        bots: &bots,
        members: &members,
        owners: &owners,
    };
    assert_eq!(plan_proven(&view, &set(&["r0", "r1"])), Plan::default());
    let proven = plan_proven(&view, &members);
    assert_eq!(
        (proven.claim.len(), proven.release.len()),
        (0, 1),
        "once proven"
    );

    // A cold start: nobody owns a bot and nobody was heard for long yet.
    let none = BTreeMap::new();
    let cold = View {
        me: "r0",
        bots: &bots,
        members: &members,
        owners: &none,
    };
    let p = plan_proven(&cold, &set(&["r0"]));
    assert_eq!(
        (p.claim.len(), p.release.len()),
        (2, 0),
        "its share of the free bots"
    );
}
