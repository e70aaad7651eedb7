//! A hung Kafka broker (SIGSTOP for 30 s, then SIGCONT) in the middle of a stream:
//! nothing is confirmed that the broker does not have, nothing is lost, and the relay
//! recovers by itself. Alone in its test binary because it freezes the shared broker.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use support::corpus::Corpus;
use support::fake_bot_api::FakeBotApi;
use support::kafka::{self as ksupport, read_prefix};
use support::nats::unique;
use support::relay::{allow_future_kinds, config, eventually, token};
use tgrelay::app::Relay;
use tokio_util::sync::CancellationToken;

/// The broker's process: `TEST_TGRELAY_KAFKA_PID` (scripts/test), else the running `tansu broker`.
fn broker_pid() -> String {
    if let Ok(pid) = std::env::var("TEST_TGRELAY_KAFKA_PID") {
        return pid;
    }
    let out = Command::new("pgrep")
        .args(["-n", "-f", "tansu broker"])
        .output()
        .unwrap();
    let pid = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        !pid.is_empty(),
        "no Kafka broker process found (run the tests with scripts/test)"
    );
    pid
}

/// Sends SIGCONT when dropped, so a failing test never leaves the broker frozen.
struct Frozen(String);

impl Frozen {
    fn new(pid: String) -> Frozen {
        assert!(Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success());
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_loses_nothing_and_the_relay_recovers_by_itself() {
    // The relay's log lines show up when this test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tgrelay=info")
        .with_test_writer()
        .try_init();
    let prefix = unique("outage");
    let api = FakeBotApi::start().await;
    let token = token(888001);
    api.add_bot(&token);
    let updates = Corpus::load().mixed(1, 600, 17);
    api.push_updates(&token, updates[..300].to_vec());
    let toml = format!(
        "poll_limit = 20\n{}{}",
        allow_future_kinds(),
        ksupport::sink_toml(&prefix, "")
    );
    let relay = Relay::new(config(&api.base_url(), &[("main", &token)], &toml));
    let metrics = relay.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    assert!(
        api.wait_for_confirmed(&token, 100, Duration::from_secs(60))
            .await
    );

    let frozen = Frozen::new(broker_pid());
    api.push_updates(&token, updates[300..].to_vec());
    let failed = || {
        metrics
            .render()
            .lines()
            .any(|l| l.starts_with("tgrelay_publish_failures_total{") && !l.ends_with(" 0"))
    };
    assert!(
        eventually(60, failed).await,
        "publishes fail while the broker hangs"
    );
    // The fetch after the failed batch confirms that batch's acknowledged front (sent
    // before the freeze); from then on nothing may be confirmed until the broker is back.
    let fetches = || api.calls(&token).len();
    let after_failure = fetches();
    assert!(eventually(10, || fetches() > after_failure).await);
    let confirmed_during = api.confirmed(&token).len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        api.confirmed(&token).len(),
        confirmed_during,
        "nothing is confirmed while the broker hangs"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    drop(frozen);

    assert!(
        api.wait_for_confirmed(&token, 600, Duration::from_secs(120))
            .await,
        "recovered by itself"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();

    let records = tokio::task::spawn_blocking(move || read_prefix(&prefix))
        .await
        .unwrap();
    let mut seen: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for r in records {
        seen.insert(r.headers["ce_id"].clone(), r.payload);
    }
    assert_eq!(seen.len(), 600, "every update arrived");
    for (i, raw) in updates.iter().enumerate() {
        assert_eq!(&seen[&format!("888001:{}", i + 1)], raw);
    }
}
