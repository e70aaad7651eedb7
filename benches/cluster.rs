//! A shared cluster measured: three relay processes sharing 30 polling bots through
//! NATS and through Kafka, with the default 10 s lease and 30 s long polls, against
//! the fake Bot API, which answers a second concurrent getUpdates with 409 as Telegram
//! does.
//!
//! - steady state: 409 Conflicts over two minutes (what the replicas received, and
//!   what the fake answered), next to three `single`-mode relays on the same bots (each
//!   polls every bot: what running replicas without a cluster costs);
//! - failover: a replica is SIGKILLed; for each of its bots, the time until another
//!   replica's getUpdates reaches the fake; then it is restarted and the share is
//!   balanced again. Three kills per broker.
//!
//! `cargo bench --bench cluster`; `TEST_TGRELAY_BENCH_SINKS=nats` for one broker,
//! `TEST_TGRELAY_BENCH_KILLS` for the number of kills, `TEST_TGRELAY_BENCH_STEADY_SECS`
//! for the steady window. Prints a markdown table and figures between
//! `<!-- tgrelay-bench:... -->` markers for scripts/bench.

use std::time::{Duration, Instant};

#[path = "../tests/cluster/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../tests/support/mod.rs"]
mod support;

use harness::{BrokerKind, Cluster};

const BOTS: usize = 30;
const REPLICAS: usize = 3;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    broker: BrokerKind,
    steady: Duration,
    conflicts_seen: f64,
    conflicts_answered: usize,
    single_conflicts_answered: usize,
    /// Per kill: the time until each orphaned bot was polled again.
    failovers: Vec<Vec<Duration>>,
    rebalanced: Vec<Duration>,
}

async fn cluster(broker: BrokerKind, first_id: u64) -> Cluster {
    let mut cluster = Cluster::new(broker, BOTS, first_id).await;
    cluster.lease = Duration::from_secs(10);
    cluster.poll = Duration::from_secs(30);
    cluster
}

async fn measure(broker: BrokerKind, first_id: u64) -> Run {
    let steady = Duration::from_secs(env_or("TEST_TGRELAY_BENCH_STEADY_SECS", 120));
    let kills = env_or("TEST_TGRELAY_BENCH_KILLS", 3) as usize;

    // What replicas without a cluster do to each other.
    let mut single = cluster(broker, first_id + 500).await;
    for i in 0..REPLICAS {
        single.start_as(i, "single");
    }
    single.trickle(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let single_conflicts_answered = single.conflicts_since(from);
    single.stop_feeding();
    drop(single);

    let mut cluster = cluster(broker, first_id).await;
    for i in 0..REPLICAS {
        cluster.start(i);
    }
    assert!(cluster.balanced(&[], Duration::from_secs(60)).await);
    cluster.trickle(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (from, seen_before) = (Instant::now(), cluster.conflicts_seen(&[]).await);
    tokio::time::sleep(steady).await;
    let conflicts_answered = cluster.conflicts_since(from);
    let conflicts_seen = cluster.conflicts_seen(&[]).await - seen_before;

    let mut failovers = Vec::new();
    let mut rebalanced = Vec::new();
    for k in 0..kills {
        let victim = k % REPLICAS;
        let orphans: Vec<String> = cluster.owned_by_log(victim).into_iter().collect();
        let killed = Instant::now();
        cluster.kill(victim);
        assert!(cluster.balanced(&[victim], Duration::from_secs(90)).await);
        let mut waits = Vec::new();
        for bot in &orphans {
            if let Some(at) = cluster.first_poll_after(bot, killed) {
                waits.push(at - killed);
            }
        }
        failovers.push(waits);
        let restarted = Instant::now();
        cluster.start(victim);
        assert!(cluster.balanced(&[], Duration::from_secs(90)).await);
        rebalanced.push(restarted.elapsed());
        // Let the last moves settle before the next kill.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    cluster.stop_feeding();
    assert!(
        cluster.all_confirmed(Duration::from_secs(120)).await,
        "every update confirmed"
    );
    let missing = cluster.missing_from_broker().await;
    assert!(missing.is_empty(), "lost: {missing:?}");
    Run {
        broker,
        steady,
        conflicts_seen,
        conflicts_answered,
        single_conflicts_answered,
        failovers,
        rebalanced,
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn report(runs: &[Run]) {
    println!("<!-- tgrelay-bench:cluster begin -->");
    println!(
        "{REPLICAS} relay processes, {BOTS} polling bots, `lease_ttl` 10 s, 30 s long polls, one update per bot per second. \
         Failover: from SIGKILL to the first getUpdates of each of the killed replica's bots by another replica."
    );
    println!();
    println!("| broker | 409s per minute, 3 `single` relays | 409s in steady state, shared (received / answered by the fake) | failover per bot: median / max | back in balance after a restart |");
    println!("|---|---:|---:|---:|---:|");
    for run in runs {
        let mut all: Vec<Duration> = run.failovers.iter().flatten().copied().collect();
        all.sort();
        let median = all.get(all.len() / 2).copied().unwrap_or_default();
        let max = all.last().copied().unwrap_or_default();
        let back = run.rebalanced.iter().max().copied().unwrap_or_default();
        println!(
            "| {} | {} | {} / {} over {} s | {} / {} ({} bots, {} kills) | ≤ {} |",
            run.broker.name(),
            run.single_conflicts_answered,
            run.conflicts_seen,
            run.conflicts_answered,
            run.steady.as_secs(),
            seconds(median),
            seconds(max),
            all.len(),
            run.failovers.len(),
            seconds(back)
        );
    }
    println!("<!-- tgrelay-bench:cluster end -->");
    println!("<!-- tgrelay-bench:figures begin -->");
    for run in runs {
        let name = run.broker.name();
        let max = run
            .failovers
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or_default();
        println!("cluster_{name}_failover_max_s={:.1}", max.as_secs_f64());
        println!("cluster_{name}_steady_409={}", run.conflicts_seen);
        println!(
            "cluster_{name}_single_409_per_min={}",
            run.single_conflicts_answered
        );
    }
    println!("<!-- tgrelay-bench:figures end -->");
}

fn main() {
    let sinks = std::env::var("TEST_TGRELAY_BENCH_SINKS").unwrap_or_else(|_| "nats,kafka".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runs = Vec::new();
    for (i, sink) in sinks.split(',').enumerate() {
        let broker = match sink.trim() {
            "nats" => BrokerKind::Nats,
            "kafka" => BrokerKind::Kafka,
            other => panic!("unknown sink {other:?}"),
        };
        eprintln!("cluster bench on {sink}");
        runs.push(runtime.block_on(measure(broker, 900_000 + 10_000 * i as u64)));
    }
    report(&runs);
}
