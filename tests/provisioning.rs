//! What a bot added at runtime publishes to is provisioned, and a failure is retried:
//! a bot whose Kafka topics could not be created when it was added (the broker hung)
//! gets them once the broker answers again, and every update it received meanwhile
//! is relayed, none confirmed before it was stored.

mod support;

use std::time::Duration;

use support::corpus::Corpus;
use support::fake_bot_api::FakeBotApi;
use support::kafka::read_prefix_at;
use support::nats::unique;
use support::private_broker::{BrokerKind, PrivateBroker};
use support::process::RelayProcess;
use support::relay::token;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_added_while_its_topics_cannot_be_created_gets_them_once_the_broker_answers() {
    let mut broker = PrivateBroker::start(BrokerKind::Kafka);
    let api = FakeBotApi::start().await;
    let (a, b) = (token(779_001), token(779_002));
    api.add_bot(&a);
    api.add_bot(&b);
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    std::fs::write(tokens.join("a"), format!("{a}\n")).unwrap();
    let prefix = unique("prov");
    let config = format!(
        "drain_timeout = \"10s\"\ntokens_dir = \"{}\"\n[admin]\nlisten = \"\"\n\
         [bot_defaults]\napi_url = \"{}\"\npoll_timeout = \"1s\"\n\
         [sink]\nkind = \"kafka\"\n[sink.kafka]\nbrokers = \"{}\"\n\
         topic = \"{prefix}.{{bot}}\"\ndead_letter_topic = \"{prefix}.{{bot}}.dead\"\n\
         create_topics = true\npartitions = 1\nreplication_factor = 1\n",
        tokens.display(),
        api.base_url(),
        broker.address()
    );
    let relay = RelayProcess::spawn(dir.path(), "relay", &config, &[]);
    let corpus = Corpus::load();
    api.push_updates(&a, corpus.mixed(1, 2, 1));
    assert!(api.wait_for_confirmed(&a, 2, WAIT).await, "a relays");

    // The broker hangs while bot b is added: creating its topic times out.
    broker.begin_outage();
    std::fs::write(tokens.join("b"), format!("{b}\n")).unwrap();
    api.push_updates(&b, corpus.mixed(1, 3, 2));
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(api.confirmed(&b).is_empty(), "nothing confirmed unstored");
    broker.end_outage();

    let confirmed = api.wait_for_confirmed(&b, 3, WAIT).await;
    let log = relay.log_text();
    assert!(
        confirmed,
        "b's updates relayed once its topic exists:\n{log}"
    );
    let topic = format!("{prefix}.b");
    let ids: std::collections::BTreeSet<String> = read_prefix_at(&broker.address(), &prefix)
        .into_iter()
        .filter(|r| r.topic == topic)
        .map(|r| r.headers["ce_id"].clone())
        .collect();
    assert_eq!(ids.len(), 3, "b's three updates in its topic: {ids:?}");
    assert!(!log.contains("AAE-test_token"), "no token in the log");
}
