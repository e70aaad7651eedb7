//! The Kafka side of the broker layer: how to reach the brokers, and the topics the
//! routes can reach.

use rdkafka::error::KafkaError;

mod config;
pub mod topics;

pub use config::KafkaSinkConfig;

/// Errors that stop the sink from starting.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error("creating the Kafka producer: {0}")]
    Producer(KafkaError),
    #[error("Kafka brokers {brokers}: {message}")]
    Topics { brokers: String, message: String },
}
