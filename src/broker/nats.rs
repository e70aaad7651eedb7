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
    /// Replicas of what the relay creates (see [`replicas`]).
    replicas: usize,
}

impl NatsBroker {
    /// Connects with the configured servers, credentials and TLS.
    pub async fn connect(config: &NatsSinkConfig) -> Result<NatsBroker, NatsSinkError> {
        let client = connection::client(config).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.publish_timeout)
            .max_ack_inflight(config.max_in_flight)
            .build(client.clone());
        let replicas = replicas(config.replicas, &client.server_info());
        tracing::debug!(replicas, "JetStream replicas of what the relay creates");
        Ok(NatsBroker {
            client,
            js,
            config: Arc::new(config.clone()),
            replicas,
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

/// The replicas asked for, or with 0 (automatic) 3 on a cluster of three or more
/// servers and as many as there are on a smaller one: what survives the loss of one
/// node where the cluster can, and a single server's only choice. A server lists
/// every client URL of its cluster, its own included.
fn replicas(configured: usize, server: &async_nats::ServerInfo) -> usize {
    match (configured, &server.cluster) {
        (0, None) => 1,
        (0, Some(_)) => server.connect_urls.len().clamp(1, 3),
        (n, _) => n,
    }
}

#[cfg(test)]
mod tests {
    use super::replicas;

    #[test]
    fn automatic_replicas_follow_the_cluster_up_to_three() {
        let server = |cluster: Option<&str>, urls: usize| async_nats::ServerInfo {
            cluster: cluster.map(str::to_owned),
            connect_urls: (0..urls)
                .map(|i| format!("127.0.0.1:{}", 4222 + i))
                .collect(),
            ..Default::default()
        };
        assert_eq!(replicas(0, &server(None, 0)), 1, "a single server");
        assert_eq!(replicas(0, &server(Some("c"), 2)), 2);
        assert_eq!(replicas(0, &server(Some("c"), 3)), 3);
        assert_eq!(replicas(0, &server(Some("c"), 5)), 3);
        assert_eq!(replicas(5, &server(Some("c"), 5)), 5, "as configured");
        assert_eq!(replicas(1, &server(Some("c"), 3)), 1, "as configured");
    }
}
