//! The broker layer: the one place that connects to NATS or Kafka, provisions what the
//! relay keeps there (the updates' stream or topics, the cluster's buckets or topics,
//! the gateway's streams or topics) and tells whether the broker answers.
//!
//! The sink, the cluster's ownership, the gateway and `check-config --connect` are
//! handed a connected [`Broker`] and ask it for what they need; none of them opens a
//! connection or creates a stream or topic itself. Provisioning knows the current bot
//! set: what a bot added at runtime publishes to is provisioned through
//! [`Broker::provision`] like the bots of the start.

pub mod kafka;
pub mod nats;

use kafka::{KafkaBroker, KafkaSinkConfig, KafkaSinkError};
use nats::{NatsBroker, NatsSinkConfig, NatsSinkError};

/// What one bot can publish to: its name, id and the kinds it asks Telegram for.
#[derive(Debug, Clone)]
pub struct BotRoutes {
    pub name: String,
    pub id: u64,
    pub kinds: Vec<String>,
}

/// Which broker, and its settings (`[sink]`'s kind and section).
#[derive(Clone, Copy)]
pub enum BrokerSettings<'a> {
    /// No broker: updates go to a file.
    None,
    Nats(&'a NatsSinkConfig),
    Kafka(&'a KafkaSinkConfig),
}

/// A connected broker, cheap to clone: every clone shares the connection.
#[derive(Clone)]
pub enum Broker {
    /// The file sink has no broker: nothing to share or coordinate through.
    None,
    Nats(Box<NatsBroker>),
    Kafka(KafkaBroker),
}

/// Why the broker cannot be used (yet).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Nats(#[from] NatsSinkError),
    #[error(transparent)]
    Kafka(#[from] KafkaSinkError),
}

impl Broker {
    /// Connects, and provisions what `bots` publish to: the updates' stream (NATS) or
    /// every topic their routes reach (Kafka), created when configured to.
    pub async fn connect(
        settings: BrokerSettings<'_>,
        bots: &[BotRoutes],
    ) -> Result<Broker, BrokerError> {
        let broker = match settings {
            BrokerSettings::None => Broker::None,
            BrokerSettings::Nats(config) => {
                Broker::Nats(Box::new(NatsBroker::connect(config).await?))
            }
            BrokerSettings::Kafka(config) => Broker::Kafka(KafkaBroker::connect(config).await?),
        };
        broker.provision(bots).await?;
        Ok(broker)
    }

    /// Makes sure what `bots` publish to exists (a stream captures every subject; a
    /// topic per route): at start, and for bots added while running.
    pub async fn provision(&self, bots: &[BotRoutes]) -> Result<(), BrokerError> {
        match self {
            Broker::None => Ok(()),
            Broker::Nats(nats) => Ok(nats.ensure_updates_stream().await?),
            Broker::Kafka(kafka) => Ok(kafka.ensure_update_topics(bots).await?),
        }
    }

    /// Whether the broker answers now (readiness).
    pub fn is_ready(&self) -> bool {
        match self {
            Broker::None => true,
            Broker::Nats(nats) => nats.is_connected(),
            Broker::Kafka(kafka) => kafka.is_reachable(),
        }
    }
}
