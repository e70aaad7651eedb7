//! Support code shared by the integration tests: a fake Telegram Bot API server, a
//! generator of realistic updates, a relay running in the test, the real NATS
//! JetStream and Kafka broker seen from a consumer, brokers of a test's own, an egress
//! proxy, and TLS certificates. Each test binary uses only part of it, hence `dead_code`
//! is allowed here rather than sprinkled over every helper.
#![allow(dead_code)]

pub mod corpus;
pub mod fake_bot_api;
pub mod gateway;
pub mod kafka;
pub mod nats;
pub mod nats_cluster;
pub mod private_broker;
pub mod process;
pub mod proxy;
pub mod relay;
pub mod tls;
