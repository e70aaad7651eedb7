//! The shared cluster's owners log on Kafka decides each compare-and-set by reading
//! the topic whole, so a topic that would lose records (compacted, or with a time or
//! size limit, as a platform's defaults may have pre-created it) could let two
//! replicas own one bot. Such a topic is refused at start with an error that says
//! how to fix it; the topic the relay creates itself is accepted.

mod support;

use std::sync::Arc;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use tgrelay::broker::kafka::{KafkaBroker, KafkaSinkConfig};
use tgrelay::cluster::kafka::KafkaStore;
use tgrelay::config::ClusterConfig;
use tgrelay::metrics::Metrics;

async fn store(name: &str) -> Result<KafkaStore, String> {
    let sink = KafkaSinkConfig {
        brokers: support::kafka::brokers(),
        replication_factor: 1,
        ..Default::default()
    };
    let broker = KafkaBroker::connect(&sink).await.expect("Kafka");
    let config = ClusterConfig {
        name: name.to_owned(),
        instance: "r0".into(),
        ..Default::default()
    };
    KafkaStore::connect(&broker, &config, &Arc::new(Metrics::new()))
        .await
        .map_err(|e| e.to_string())
}

async fn pre_create(topic: &str, setting: (&str, &str)) {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", support::kafka::brokers())
        .create()
        .expect("an admin client");
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set(setting.0, setting.1);
    let created = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .expect("created");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

#[tokio::test]
async fn an_owners_topic_that_would_lose_records_is_refused_with_the_fix() {
    for (setting, named) in [
        (("cleanup.policy", "compact"), "cleanup.policy is compact"),
        (("retention.ms", "3600000"), "retention.ms is 3600000"),
    ] {
        let name = support::nats::unique("owl");
        pre_create(&format!("{name}.owners"), setting).await;
        let error = store(&name).await.err().expect("refused");
        assert!(error.contains(&format!("{name}.owners")), "{error}");
        assert!(error.contains(named), "{error}");
        assert!(
            error.contains("retention.ms=-1"),
            "says how to fix it: {error}"
        );
    }
    let fresh = support::nats::unique("owl");
    assert!(store(&fresh).await.is_ok(), "the relay's own topic");
}
