//! A broker outage longer than the lease moves no bot: three replicas share six bots
//! through a private NATS server, which is stopped for twice the lease and started
//! again (its JetStream store kept). Every replica finds its lease lapsed and stops
//! polling; the first one back must not judge the others dead for the silence it
//! could not hear, and take their bots. Each replica ends with the bots it had, no
//! bot is polled by two, nothing is lost.

#[path = "cluster/harness.rs"]
#[allow(dead_code)]
mod harness;
mod support;

use std::time::{Duration, Instant};

use harness::{BrokerKind, Cluster};
use support::private_broker::PrivateBroker;
use support::process::scrape;

const SETTLE: Duration = Duration::from_secs(30);

#[test]
fn a_broker_outage_longer_than_the_lease_moves_no_bot() {
    let mut broker = PrivateBroker::start(BrokerKind::Nats);
    // This file's one test: everything it starts talks to the private server.
    std::env::set_var("TEST_TGRELAY_NATS_URL", broker.address());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut cluster = Cluster::new(BrokerKind::Nats, 6, 790_000).await;
        for i in 0..3 {
            cluster.start(i);
        }
        assert!(cluster.balanced(&[], SETTLE).await);
        cluster.trickle(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before: Vec<_> = (0..3).map(|i| cluster.owned_by_log(i)).collect();

        broker.begin_outage();
        tokio::time::sleep(cluster.lease() * 2 + Duration::from_secs(1)).await;
        broker.end_outage();
        let back = Instant::now();
        let balanced = cluster.balanced(&[], SETTLE).await;
        // Whatever would move has moved by now.
        tokio::time::sleep(cluster.lease() * 2).await;
        let after: Vec<_> = (0..3).map(|i| cluster.owned_by_log(i)).collect();
        if !balanced || after != before {
            cluster.print_logs();
        }
        assert!(balanced, "every bot polled again, evenly");
        assert_eq!(after, before, "every replica kept its bots");
        assert_eq!(cluster.conflicts_since(back), 0, "no bot polled twice");
        for i in 0..3 {
            let admin = &cluster.replica(i).admin;
            let lapses = scrape(admin, "tgrelay_cluster_lease_lapses_total").await;
            assert_eq!(lapses, 1.0, "r{i} counted its lapse");
            let renewed = scrape(admin, "tgrelay_cluster_lease_renewed_timestamp_seconds").await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(
                (now - renewed).abs() < 10.0,
                "r{i} renewed lately: {renewed}"
            );
        }
        cluster.stop_feeding();
        assert!(
            cluster.all_confirmed(Duration::from_secs(60)).await,
            "every update confirmed"
        );
        let missing = cluster.missing_from_broker().await;
        assert!(missing.is_empty(), "in the broker: missing {missing:?}");
    });
}
