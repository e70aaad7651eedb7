//! The chaos suite's shared-cluster scenarios: three relay processes sharing six
//! polling bots through NATS or Kafka, updates flowing to every bot, while replicas
//! are SIGKILLed and restarted or frozen (SIGSTOP past their lease) and woken.
//!
//! Judged from outside: no update lost, none confirmed to Telegram before the broker
//! stored it (for NATS by the stream's own clock; Kafka's memory store keeps only the
//! producer's time, so there the check is skipped and says so), every bot back in a
//! balanced share at the end, and how long any bot went unpolled.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;

use super::cluster_harness::{BrokerKind, Cluster};

pub struct ClusterVerdict {
    pub name: String,
    pub fed: usize,
    pub lost: usize,
    /// `None` where the broker's store time is not known.
    pub confirmed_before_stored: Option<usize>,
    pub kills: usize,
    pub freezes: usize,
    pub longest_unpolled: Duration,
    pub balanced: bool,
    pub all_confirmed: bool,
}

impl ClusterVerdict {
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.lost > 0 {
            failures.push(format!("{} updates lost", self.lost));
        }
        if self.confirmed_before_stored.unwrap_or(0) > 0 {
            failures.push("updates confirmed before the broker stored them".into());
        }
        if !self.all_confirmed {
            failures.push("not every update was confirmed".into());
        }
        if !self.balanced {
            failures.push("the replicas did not end in a balanced share".into());
        }
        failures
    }

    pub fn row(&self) -> String {
        let verdict = if self.failures().is_empty() {
            "pass"
        } else {
            "**FAIL**"
        };
        let before = self
            .confirmed_before_stored
            .map_or("n/a (no store time)".to_owned(), |n| n.to_string());
        format!(
            "| {} | {} | {} | {} | {} / {} | {:.1} s | {} |",
            self.name,
            self.fed,
            self.lost,
            before,
            self.kills,
            self.freezes,
            self.longest_unpolled.as_secs_f64(),
            verdict
        )
    }
}

pub const HEADER: &str = "| scenario | updates fed | lost | confirmed before stored | kills / freezes | longest a bot went unpolled | verdict |\n|---|---:|---:|---:|---:|---:|---|";

/// Runs `cycles` faults, each on a random replica: a SIGKILL and a restart, or a
/// freeze past the lease and a wake.
pub async fn run(broker: BrokerKind, cycles: usize) -> ClusterVerdict {
    let mut cluster = Cluster::new(broker, 6, 950_000 + 1000 * broker as u64).await;
    for i in 0..3 {
        cluster.start(i);
    }
    assert!(
        cluster.balanced(&[], Duration::from_secs(60)).await,
        "a balanced start"
    );
    cluster.trickle(Duration::from_millis(20));
    let started = Instant::now();
    let (mut kills, mut freezes) = (0, 0);
    for _ in 0..cycles {
        let victim = rand::rng().random_range(0..3);
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(500..2500))).await;
        if rand::rng().random_bool(0.5) {
            cluster.kill(victim);
            kills += 1;
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..2000))).await;
            cluster.start(victim);
        } else {
            let pid = cluster.replica(victim).process.pid();
            super::support::process::signal(pid, "STOP");
            freezes += 1;
            tokio::time::sleep(cluster.lease() + Duration::from_secs(1)).await;
            super::support::process::signal(pid, "CONT");
        }
    }
    let balanced = cluster.balanced(&[], Duration::from_secs(90)).await;
    let bots: Vec<String> = cluster.bots.keys().cloned().collect();
    let longest_unpolled = cluster.longest_unpolled(&bots, started, Instant::now());
    cluster.stop_feeding();
    let all_confirmed = cluster.all_confirmed(Duration::from_secs(120)).await;
    let missing = cluster.missing_from_broker().await;
    let confirmed_before_stored = match broker {
        BrokerKind::Nats => Some(confirmed_before_stored(&cluster).await),
        BrokerKind::Kafka => None,
    };
    ClusterVerdict {
        name: format!("shared cluster → {}: kills and freezes", broker.name()),
        fed: cluster.fed_total(),
        lost: missing.len(),
        confirmed_before_stored,
        kills,
        freezes,
        longest_unpolled,
        balanced,
        all_confirmed,
    }
}

/// Updates Telegram was told to forget before the stream stored their first copy.
async fn confirmed_before_stored(cluster: &Cluster) -> usize {
    let stored: HashMap<String, SystemTime> = cluster.stored_times().await;
    let mut early = 0;
    for token in cluster.bots.values() {
        let bot_id = token.split(':').next().unwrap();
        for (update_id, confirmed) in cluster.api.confirmation_times(token) {
            match stored.get(&format!("{bot_id}:{update_id}")) {
                Some(at) if *at <= confirmed => {}
                _ => early += 1,
            }
        }
    }
    early
}
