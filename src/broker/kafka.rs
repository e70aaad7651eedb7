//! The Kafka side of the broker layer: how to reach the brokers (see [`config`]), the
//! topics the relay produces to and keeps its state in (see [`topics`]), and a probe
//! that tells whether the brokers answer.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use crate::broker::BotRoutes;

mod config;
pub mod topics;

pub use config::KafkaSinkConfig;

/// Errors that keep the relay from using Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error("creating the Kafka producer: {0}")]
    Producer(KafkaError),
    #[error("Kafka brokers {brokers}: {message}")]
    Topics { brokers: String, message: String },
}

/// The Kafka brokers as configured, shared by every client the relay makes.
#[derive(Clone)]
pub struct KafkaBroker {
    config: Arc<KafkaSinkConfig>,
    /// The updates' producer, made first: its connection attempts are the first sign
    /// of brokers that are away.
    producer: FutureProducer,
    /// The brokers answered the last metadata probe, or the last delivery.
    reachable: Arc<AtomicBool>,
}

impl KafkaBroker {
    /// Creates the producer and starts probing the brokers; provisioning is what
    /// first needs them to answer.
    pub async fn connect(config: &KafkaSinkConfig) -> Result<KafkaBroker, KafkaSinkError> {
        let producer = config
            .client_config()
            .create()
            .map_err(KafkaSinkError::Producer)?;
        let reachable = Arc::new(AtomicBool::new(true));
        tokio::spawn(topics::probe(
            config.client_config(),
            Arc::downgrade(&reachable),
        ));
        Ok(KafkaBroker {
            config: Arc::new(config.clone()),
            producer,
            reachable,
        })
    }

    /// `[sink.kafka]` as connected with.
    pub fn config(&self) -> &KafkaSinkConfig {
        &self.config
    }

    /// The updates' producer (acks=all, idempotence).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// The producer's librdkafka configuration (acks=all, idempotence).
    pub fn producer_config(&self) -> ClientConfig {
        self.config.client_config()
    }

    /// How to reach the brokers, for clients other than a producer.
    pub fn connection_config(&self) -> ClientConfig {
        self.config.connection_config()
    }

    /// Shared with the sink, whose deliveries say so too.
    pub fn reachability(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reachable)
    }

    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Every topic the routes of `bots` reach, created when `create_topics` is set.
    pub async fn ensure_update_topics(&self, bots: &[BotRoutes]) -> Result<(), KafkaSinkError> {
        topics::ensure(&self.config, bots).await
    }

    /// Topics of the relay's own (the gateway's), created when `create_topics` is set.
    pub async fn ensure_topics(&self, names: &BTreeSet<String>) -> Result<(), KafkaSinkError> {
        topics::ensure_named(&self.config, names).await
    }

    /// The update topics of `bots` that are missing; asking only.
    pub async fn missing_update_topics(
        &self,
        bots: &[BotRoutes],
    ) -> Result<Vec<String>, KafkaSinkError> {
        topics::missing(&self.config, bots).await
    }

    /// A one-partition topic the cluster keeps its state in, created unless it exists,
    /// with the sink's replication factor and `min.insync.replicas`.
    pub async fn ensure_log_topic(&self, topic: &str, retention_ms: &str) -> Result<(), String> {
        topics::ensure_log(&self.config, topic, retention_ms, "delete").await
    }

    /// Whether a log topic still holds (and will keep) every record from offset 0;
    /// its high watermark when it does (see `topics::check_log_intact`).
    pub async fn check_log_intact(&self, topic: &str) -> Result<i64, String> {
        topics::check_log_intact(&self.config, topic).await
    }

    /// As `ensure_log_topic`, compacted too: only the last record of each key is kept
    /// (and none past `retention_ms`).
    pub async fn ensure_compacted_log_topic(
        &self,
        topic: &str,
        retention_ms: &str,
    ) -> Result<(), String> {
        topics::ensure_log(&self.config, topic, retention_ms, "compact,delete").await
    }
}
