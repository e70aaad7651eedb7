//! The broker layer: connections to NATS and Kafka, and the streams and topics the
//! relay needs there.

pub mod kafka;
pub mod nats;
