//! The gateway on Kafka: each bot's calls on a topic of their own, read by the bot's
//! owner alone, its offsets kept under a consumer group of the bot's own; results
//! produced like updates (idempotent, `acks=all`, awaited); the limiter's memory and
//! the partitions' progress in a record on `<calls topic>.limits` (see `memory`);
//! each call's request id on `<calls topic>.requests` (see `journal`).
//!
//! Offsets are committed only up to the oldest call not yet done (rdkafka's
//! at-least-once pattern), so a crash runs again what was not finished; what was
//! finished above that point is in the memory record, and the next owner skips it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::broker::{PublishError, Results};
use super::call::Reply;
use super::OutboundConfig;
use crate::broker::kafka::{KafkaBroker, KafkaSinkError};
use crate::route::RouteTemplate;

mod intake;
mod journal;
mod memory;
pub mod offsets;

pub use intake::KafkaIntake;
pub use journal::KafkaJournal;
pub use memory::KafkaMemory;

/// How long a result may wait in the producer before it counts as failed (and is tried again).
const RESULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway's Kafka side, shared by every bot.
pub struct KafkaOutbound {
    producer: FutureProducer,
    client_config: ClientConfig,
    /// For the topics of bots added while the relay runs.
    broker: KafkaBroker,
    calls: RouteTemplate,
    results: RouteTemplate,
    /// How long the request journal keeps an entry.
    dedup_window: Duration,
    /// Bots whose topics are known to be there.
    ready: std::sync::Mutex<BTreeSet<String>>,
}

impl KafkaOutbound {
    /// Creates the producer and checks (or creates) every bot's calls, results and
    /// memory topics.
    pub async fn connect(
        broker: &KafkaBroker,
        config: &OutboundConfig,
        bots: &[(String, u64)],
    ) -> Result<KafkaOutbound, KafkaSinkError> {
        let client_config = broker.producer_config();
        let producer: FutureProducer = client_config.create().map_err(KafkaSinkError::Producer)?;
        let calls = RouteTemplate::parse(&config.subject).expect("validated template");
        let results = RouteTemplate::parse(&config.results).expect("validated template");
        let outbound = KafkaOutbound {
            producer,
            client_config,
            broker: broker.clone(),
            calls,
            results,
            dedup_window: config.dedup_window,
            ready: Default::default(),
        };
        outbound.ensure_topics(bots).await?;
        Ok(outbound)
    }

    /// Checks (or creates) these bots' calls, results and memory topics.
    pub async fn ensure_topics(&self, bots: &[(String, u64)]) -> Result<(), KafkaSinkError> {
        let mut names = BTreeSet::new();
        let ready = self.ready.lock().unwrap().clone();
        for (name, id) in bots.iter().filter(|(name, _)| !ready.contains(name)) {
            let topic = self.calls.render_with(name, *id, "");
            names.insert(memory::topic(&topic));
            names.insert(topic);
            names.insert(self.results.render_with(name, *id, ""));
        }
        if names.is_empty() {
            return Ok(());
        }
        self.broker.ensure_topics(&names).await?;
        let retention_ms = self.dedup_window.as_millis().max(1).to_string();
        for (name, id) in bots.iter().filter(|(name, _)| !ready.contains(name)) {
            let topic = journal::topic(&self.calls.render_with(name, *id, ""));
            self.broker
                .ensure_compacted_log_topic(&topic, &retention_ms)
                .await
                .map_err(|message| KafkaSinkError::Topics {
                    brokers: self.broker.config().brokers.clone(),
                    message: format!("topic {topic}: {message}"),
                })?;
        }
        let mut ready = self.ready.lock().unwrap();
        ready.extend(bots.iter().map(|(name, _)| name.clone()));
        Ok(())
    }

    pub fn results(&self) -> Arc<dyn Results> {
        Arc::new(KafkaResults {
            producer: self.producer.clone(),
        })
    }

    /// One bot's request journal, beside its calls topic `topic`.
    pub fn journal(&self, topic: &str) -> Arc<KafkaJournal> {
        Arc::new(KafkaJournal::new(
            self.producer.clone(),
            self.consumer_config("tgrelay-journal-reader"),
            topic,
            self.dedup_window,
        ))
    }

    /// One bot's intake and memory: its group `group` reading `topic`.
    pub fn bot(
        &self,
        bot: &str,
        group: String,
        topic: String,
    ) -> Result<(KafkaIntake, Arc<KafkaMemory>), KafkaError> {
        let memory = Arc::new(KafkaMemory::new(
            self.producer.clone(),
            self.consumer_config("tgrelay-memory-reader"),
            bot,
            &topic,
        ));
        let intake = KafkaIntake::new(
            self.consumer_config(&group),
            bot,
            topic,
            Arc::clone(&memory),
        )?;
        Ok((intake, memory))
    }

    /// A consumer's configuration: the sink's connection settings without the producer's.
    fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.client_config.clone();
        for producer_only in [
            "enable.idempotence",
            "acks",
            "message.timeout.ms",
            "linger.ms",
        ] {
            config.remove(producer_only);
        }
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", "8192");
        config
    }
}

struct KafkaResults {
    producer: FutureProducer,
}

impl Results for KafkaResults {
    fn publish<'a>(&'a self, reply: &'a Reply) -> BoxFuture<'a, Result<(), PublishError>> {
        async move {
            let mut headers = OwnedHeaders::new_with_capacity(2 * reply.headers.len());
            for (name, value) in &reply.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_str()),
                });
                if let Some(attribute) = name.strip_prefix("ce-") {
                    // The CloudEvents Kafka binding's spelling, as updates carry it.
                    headers = headers.insert(Header {
                        key: &format!("ce_{attribute}"),
                        value: Some(value.as_str()),
                    });
                }
            }
            let record = FutureRecord::to(&reply.route)
                .key(&reply.key)
                .payload(&reply.body[..])
                .headers(headers);
            match self.producer.send(record, RESULT_TIMEOUT).await {
                Ok(_) => Ok(()),
                Err((error, _)) => Err(classify(error)),
            }
        }
        .boxed()
    }
}

fn classify(error: KafkaError) -> PublishError {
    use RDKafkaErrorCode::*;
    match error.rdkafka_error_code() {
        Some(
            UnknownTopicOrPartition
            | UnknownTopic
            | InvalidTopic
            | TopicAuthorizationFailed
            | MessageSizeTooLarge
            | InvalidMessageSize,
        ) => PublishError::Refused(error.to_string()),
        _ => PublishError::Transient(error.to_string()),
    }
}
