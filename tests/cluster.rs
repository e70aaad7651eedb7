//! Replicas sharing polling bots through NATS: several real relay processes, the fake
//! Bot API answering a second concurrent getUpdates with 409 as Telegram does, and an
//! independent consumer of the stream. Each replica owns its share; one killed or
//! frozen loses its bots to the others, and nothing is ever lost.

#[path = "cluster/harness.rs"]
#[allow(dead_code)]
mod harness;
mod support;

use std::time::{Duration, Instant};

use harness::{BrokerKind, Cluster, POLL};

const SETTLE: Duration = Duration::from_secs(30);
const CONFIRM: Duration = Duration::from_secs(60);

/// The longest a bot may go unpolled when its replica dies: the lease, one long poll
/// and a generous allowance for a loaded machine (a bound, not a benchmark).
fn failover_bound(cluster: &Cluster) -> Duration {
    cluster.lease() + POLL + Duration::from_secs(5)
}

async fn deliver_everything(cluster: &Cluster) {
    cluster.stop_feeding();
    assert!(
        cluster.all_confirmed(CONFIRM).await,
        "every update confirmed"
    );
    let missing = cluster.missing_from_broker().await;
    assert!(missing.is_empty(), "in the broker: missing {missing:?}");
}

async fn three_replicas_share_the_bots_evenly_and_never_poll_one_twice(broker: BrokerKind) {
    let mut cluster = Cluster::new(broker, 12, 710_000).await;
    for i in 0..3 {
        cluster.start(i);
    }
    assert!(cluster.balanced(&[], SETTLE).await, "4 bots each");
    cluster.trickle(Duration::from_millis(100));
    let steady = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    if cluster.conflicts_since(steady) > 0 {
        cluster.print_logs();
    }
    assert_eq!(cluster.conflicts_since(steady), 0, "no 409 in steady state");
    deliver_everything(&cluster).await;
    for i in 0..3 {
        let log = cluster.log(i);
        assert!(
            !log.contains("AAE-test_token"),
            "no token in the log of r{i}"
        );
    }
}

async fn a_killed_replica_loses_its_bots_within_the_lease_and_gets_its_share_back_on_restart(
    broker: BrokerKind,
) {
    let mut cluster = Cluster::new(broker, 9, 720_000).await;
    for i in 0..3 {
        cluster.start(i);
    }
    assert!(cluster.balanced(&[], SETTLE).await);
    cluster.trickle(Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let orphans: Vec<String> = cluster.owned_by_log(0).into_iter().collect();
    assert_eq!(orphans.len(), 3, "r0 owned its share");

    let killed = Instant::now();
    cluster.kill(0);
    assert!(
        cluster.balanced(&[0], SETTLE).await,
        "the survivors share every bot"
    );
    tokio::time::sleep(POLL).await;
    let gap = cluster.longest_unpolled(&orphans, killed - POLL, Instant::now());
    eprintln!("longest a bot of the killed replica went unpolled: {gap:?}");
    assert!(gap <= failover_bound(&cluster), "{gap:?}");

    cluster.start(0);
    assert!(
        cluster.balanced(&[], SETTLE).await,
        "the restarted replica gets its share"
    );
    let rebalanced = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cluster.conflicts_since(rebalanced), 0, "steady again");
    deliver_everything(&cluster).await;
}

async fn a_frozen_replica_woken_after_its_bots_moved_polls_none_of_them(broker: BrokerKind) {
    let mut cluster = Cluster::new(broker, 6, 730_000).await;
    for i in 0..3 {
        cluster.start(i);
    }
    assert!(cluster.balanced(&[], SETTLE).await);
    cluster.trickle(Duration::from_millis(100));
    let pid = cluster.replica(0).process.pid();
    support::process::signal(pid, "STOP");
    assert!(
        cluster.balanced(&[0], SETTLE).await,
        "its bots moved while it slept"
    );
    tokio::time::sleep(cluster.lease()).await;

    // What the others saw (the frozen one reads, on waking, the 409s its pending long
    // polls got when its bots were taken over).
    let before = cluster.conflicts_seen(&[0]).await;
    support::process::signal(pid, "CONT");
    let back = cluster.balanced(&[], SETTLE).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if !back || cluster.conflicts_seen(&[0]).await != before {
        cluster.print_logs();
    }
    assert!(back, "back in, with a share of its own");
    // Polling a bot another replica owns would cut one of the two long polls short.
    assert_eq!(
        cluster.conflicts_seen(&[0]).await,
        before,
        "no poll of a bot it lost"
    );
    // It learnt on waking that its bots were taken (or found its lease lapsed first).
    assert!(
        cluster.log(0).contains("lost the bot"),
        "{}",
        cluster.log(0)
    );
    deliver_everything(&cluster).await;
}

/// A replica that owns nothing and is frozen past its lease still takes its part once
/// woken: here it is the only one left when the owner of the one bot is killed.
async fn a_frozen_replica_that_owned_nothing_takes_over_once_woken(broker: BrokerKind) {
    let mut cluster = Cluster::new(broker, 1, 760_000).await;
    cluster.start(0);
    assert!(cluster.balanced(&[], SETTLE).await, "r0 owns the bot");
    cluster.start(1);
    assert!(cluster.balanced(&[], SETTLE).await, "r1 joins with nothing");
    cluster.trickle(Duration::from_millis(100));
    let pid = cluster.replica(1).process.pid();
    support::process::signal(pid, "STOP");
    tokio::time::sleep(cluster.lease() + Duration::from_secs(2)).await;
    support::process::signal(pid, "CONT");
    tokio::time::sleep(cluster.lease()).await;

    cluster.kill(0);
    assert!(
        cluster.balanced(&[0], failover_bound(&cluster)).await,
        "the woken replica took the bot over"
    );
    deliver_everything(&cluster).await;
}

/// The argument in `ack.rs`, run: two relays polling one bot with no coordination at
/// all fight with 409s and publish some updates twice, and lose none.
async fn two_unsynchronised_pollers_cause_duplicates_and_409s_never_loss(broker: BrokerKind) {
    let mut cluster = Cluster::new(broker, 2, 740_000).await;
    cluster.start_as(0, "single");
    cluster.start_as(1, "single");
    cluster.trickle(Duration::from_millis(50));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(cluster.conflicts_since(started) > 0, "they did fight");
    deliver_everything(&cluster).await;
}

/// Every replica reads the same token directory (one Secret mounted into every pod): a
/// bot added there gets one owner, a removed one is released and stops, and the share
/// stays even with no 409 between replicas.
async fn bots_added_to_and_removed_from_a_shared_token_directory_get_one_owner(broker: BrokerKind) {
    let mut cluster = Cluster::new(broker, 4, 750_000).await;
    cluster.use_tokens_dir();
    cluster.start(0);
    cluster.start(1);
    assert!(cluster.balanced(&[], SETTLE).await, "2 bots each");
    for name in ["bot00", "bot01", "bot02", "bot03"] {
        cluster.feed(name, 3);
    }

    cluster.add_bot_file("bot04", &support::relay::token(750_004));
    cluster.add_bot_file("bot05", &support::relay::token(750_005));
    assert!(cluster.balanced(&[], SETTLE).await, "3 bots each");
    cluster.feed("bot04", 4);
    cluster.feed("bot05", 4);

    cluster.feed("bot00", 2);
    assert!(
        cluster
            .api
            .wait_for_confirmed(&cluster.bots["bot00"], 5, CONFIRM)
            .await,
        "bot00's updates are confirmed before it goes"
    );
    let removed = cluster.remove_bot_file("bot00");
    assert!(cluster.balanced(&[], SETTLE).await, "5 bots: 2 and 3");
    let gone = Instant::now();
    let steady = Instant::now();
    for name in ["bot01", "bot04"] {
        cluster.feed(name, 2);
    }
    tokio::time::sleep(Duration::from_secs(2 * POLL.as_secs() + 1)).await;
    assert!(
        cluster
            .api
            .calls(&removed)
            .iter()
            .all(|c| c.method != "getUpdates" || c.at < gone),
        "a removed bot is polled by no replica"
    );
    assert_eq!(
        cluster.conflicts_since(steady),
        0,
        "no 409 between replicas"
    );
    deliver_everything(&cluster).await;
}

async fn two_processes_with_one_name_never_poll_one_bot_twice(broker: BrokerKind) {
    let mut cluster = Cluster::new(broker, 12, 770_000).await;
    cluster.start(0);
    cluster.start(1);
    // A second process as r1: two units on one host, a force-deleted pod's twin.
    cluster.start_named(2, "r1", "shared");
    // The later one yields and hands its bots over; then nobody polls twice.
    tokio::time::sleep(SETTLE / 3 + cluster.lease() * 2).await;
    cluster.trickle(Duration::from_millis(100));
    let steady = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    if cluster.conflicts_since(steady) > 0 {
        cluster.print_logs();
    }
    assert_eq!(
        cluster.conflicts_since(steady),
        0,
        "no 409: one poller per bot"
    );
    let yielded = |i: usize| {
        cluster
            .log(i)
            .contains("another process runs as this cluster.instance")
    };
    assert!(
        yielded(1) != yielded(2),
        "exactly one of the two yields, loudly"
    );
    deliver_everything(&cluster).await;
}

/// A fourth replica that dies shortly after each start (a crash-looping pod) never
/// proves alive, so the others give it no bot: none goes unpolled for a lease.
async fn a_crash_looping_replica_takes_no_bot_from_the_others(broker: BrokerKind) {
    let mut cluster = Cluster::new(broker, 6, 780_000).await;
    for i in 0..3 {
        cluster.start(i);
    }
    assert!(cluster.balanced(&[], SETTLE).await);
    cluster.trickle(Duration::from_millis(100));
    let owned: Vec<_> = (0..3).map(|i| cluster.owned_by_log(i)).collect();
    let looping = Instant::now();
    for _ in 0..3 {
        cluster.start(3);
        // Up and heard (it plans after one renewal period), dead within its window.
        tokio::time::sleep(cluster.lease() / 2).await;
        let took = cluster.owned_by_log(3);
        cluster.kill(3);
        assert!(took.is_empty(), "the crash-looping replica took {took:?}");
    }
    let after: Vec<_> = (0..3).map(|i| cluster.owned_by_log(i)).collect();
    if after != owned {
        cluster.print_logs();
    }
    assert_eq!(after, owned, "no bot released to it");
    let bots: Vec<String> = cluster.bots.keys().cloned().collect();
    let gap = cluster.longest_unpolled(&bots, looping, Instant::now());
    eprintln!("longest a bot went unpolled: {gap:?}");
    assert_eq!(cluster.conflicts_since(looping), 0, "no bot polled twice");
    deliver_everything(&cluster).await;
}

/// One scenario at a time: each runs three relays, and leases are about time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serially(scenario: impl std::future::Future<Output = ()>) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario);
}

/// Each scenario on both brokers.
macro_rules! on_both_brokers {
    ($($name:ident),*) => {
        mod nats {
            use super::*;
            $(#[test]
            fn $name() { serially(super::$name(BrokerKind::Nats)) })*
        }
        mod kafka {
            use super::*;
            $(#[test]
            fn $name() { serially(super::$name(BrokerKind::Kafka)) })*
        }
    };
}

on_both_brokers!(
    three_replicas_share_the_bots_evenly_and_never_poll_one_twice,
    a_killed_replica_loses_its_bots_within_the_lease_and_gets_its_share_back_on_restart,
    a_frozen_replica_woken_after_its_bots_moved_polls_none_of_them,
    two_unsynchronised_pollers_cause_duplicates_and_409s_never_loss,
    bots_added_to_and_removed_from_a_shared_token_directory_get_one_owner,
    a_frozen_replica_that_owned_nothing_takes_over_once_woken,
    two_processes_with_one_name_never_poll_one_bot_twice,
    a_crash_looping_replica_takes_no_bot_from_the_others
);
