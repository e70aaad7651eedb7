//! Replicas sharing polling bots through NATS: several real relay processes, the fake
//! Bot API answering a second concurrent getUpdates with 409 as Telegram does, and an
//! independent consumer of the stream. Each replica owns its share; one killed or
//! frozen loses its bots to the others, and nothing is ever lost.

#[path = "cluster/harness.rs"]
mod harness;
mod support;

use std::time::{Duration, Instant};

use harness::{Cluster, LEASE, POLL};

const SETTLE: Duration = Duration::from_secs(30);
const CONFIRM: Duration = Duration::from_secs(60);

/// The longest a bot may go unpolled when its replica dies: the lease, one long poll
/// and a generous allowance for a loaded machine (a bound, not a benchmark).
fn failover_bound() -> Duration {
    LEASE + POLL + Duration::from_secs(5)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_bots_evenly_and_never_poll_one_twice() {
    let mut cluster = Cluster::new(12, 710_000).await;
    for i in 0..3 {
        cluster.start(i);
    }
    assert!(cluster.balanced(&[], SETTLE).await, "4 bots each");
    cluster.trickle(Duration::from_millis(100));
    let steady = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_loses_its_bots_within_the_lease_and_gets_its_share_back_on_restart() {
    let mut cluster = Cluster::new(9, 720_000).await;
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
    assert!(gap <= failover_bound(), "{gap:?}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_woken_after_its_bots_moved_polls_none_of_them() {
    let mut cluster = Cluster::new(6, 730_000).await;
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
    tokio::time::sleep(LEASE).await;

    support::process::signal(pid, "CONT");
    let woke = Instant::now();
    assert!(
        cluster.balanced(&[], SETTLE).await,
        "back in, with a share of its own"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Polling a bot another replica owns would cut that replica's long poll short.
    assert_eq!(cluster.conflicts_since(woke), 0, "no poll of a bot it lost");
    assert!(cluster.log(0).contains("cluster lease lapsed"));
    deliver_everything(&cluster).await;
}

/// The argument in `ack.rs`, run: two relays polling one bot with no coordination at
/// all fight with 409s and publish some updates twice, and lose none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_unsynchronised_pollers_cause_duplicates_and_409s_never_loss() {
    let mut cluster = Cluster::new(2, 740_000).await;
    cluster.start_as(0, "single");
    cluster.start_as(1, "single");
    cluster.trickle(Duration::from_millis(50));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(cluster.conflicts_since(started) > 0, "they did fight");
    deliver_everything(&cluster).await;
}
