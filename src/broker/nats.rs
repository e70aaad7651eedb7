//! The NATS side of the broker layer: one connection (see [`connection`]), its
//! JetStream context, and the streams and key-value buckets the relay keeps there
//! (see [`provision`]).

use std::sync::Arc;

use async_nats::jetstream;

mod config;
mod connection;
mod provision;

pub use config::NatsSinkConfig;
pub use provision::StreamState;

/// Errors that keep the relay from using NATS.
#[derive(Debug, thiserror::Error)]
pub enum NatsSinkError {
    #[error("connecting to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("JetStream stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("NATS key-value bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
}

/// A NATS connection with JetStream, shared by everything the relay keeps there.
#[derive(Clone)]
pub struct NatsBroker {
    client: async_nats::Client,
    /// Publishes wait `publish_timeout` for their PubAck, at most `max_in_flight` at once.
    js: jetstream::Context,
    config: Arc<NatsSinkConfig>,
}

impl NatsBroker {
    /// Connects with the configured servers, credentials and TLS.
    pub async fn connect(config: &NatsSinkConfig) -> Result<NatsBroker, NatsSinkError> {
        let client = connection::client(config).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.publish_timeout)
            .max_ack_inflight(config.max_in_flight)
            .build(client.clone());
        Ok(NatsBroker {
            client,
            js,
            config: Arc::new(config.clone()),
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// `[sink.nats]` as connected with.
    pub fn config(&self) -> &NatsSinkConfig {
        &self.config
    }

    /// Whether the connection is up now (readiness).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}
