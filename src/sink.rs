//! Sinks: where envelopes go. A sink answers for every envelope with an [`Outcome`],
//! and only `Delivered` or `DeadLettered` mean the broker has it.
//!
//! Sources publish whole batches (a getUpdates reply, or one webhook request) and
//! await every outcome before confirming anything; sinks publish a batch's
//! envelopes concurrently, so a batch costs about one broker round trip.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::ack::Outcome;
use crate::broker::{BotRoutes, Broker, BrokerSettings};
use crate::cloudevent::EnvelopeMode;
use crate::envelope::{DeadLetter, Envelope};

pub use file::FileSinkConfig;
pub use kafka::KafkaSinkConfig;
pub use nats::NatsSinkConfig;

pub mod connecting;
pub mod file;
pub mod kafka;
pub mod memory;
pub mod nats;

/// `[sink]`: which sink, and each one's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Which sink: `file` (default, needs no broker), `nats` or `kafka`.
    pub kind: SinkKind,
    /// `binary`: the body is Telegram's update, attributes in headers. `structured`:
    /// the body is a CloudEvents JSON object whose `data` is the update.
    pub envelope: EnvelopeMode,
    pub file: FileSinkConfig,
    pub nats: NatsSinkConfig,
    pub kafka: KafkaSinkConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    #[default]
    File,
    Nats,
    Kafka,
}

impl SinkKind {
    /// The sink's name in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::File => "file",
            SinkKind::Nats => "nats",
            SinkKind::Kafka => "kafka",
        }
    }
}

/// Connects the configured sink's broker, provisions what `routes` reach, and returns
/// the sink on it (the relay's start does the same in steps; tests use this).
pub async fn connect(
    config: &SinkConfig,
    routes: &[BotRoutes],
) -> anyhow::Result<std::sync::Arc<dyn Sink>> {
    let broker = Broker::connect(config.broker(), routes).await?;
    on(config, &broker)
}

/// The configured sink on a connected broker.
pub fn on(config: &SinkConfig, broker: &Broker) -> anyhow::Result<std::sync::Arc<dyn Sink>> {
    use anyhow::Context as _;
    use std::sync::Arc;
    Ok(match broker {
        Broker::None => {
            let path = &config.file.path;
            let sink = file::FileSink::open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            Arc::new(sink)
        }
        Broker::Nats(nats) => Arc::new(nats::NatsSink::new(nats, config.envelope)),
        Broker::Kafka(kafka) => Arc::new(kafka::KafkaSink::new(kafka, config.envelope)),
    })
}

impl SinkConfig {
    /// The broker this sink's kind names, with its settings.
    pub fn broker(&self) -> BrokerSettings<'_> {
        match self.kind {
            SinkKind::File => BrokerSettings::None,
            SinkKind::Nats => BrokerSettings::Nats(&self.nats),
            SinkKind::Kafka => BrokerSettings::Kafka(&self.kafka),
        }
    }

    /// Every problem of the chosen sink's settings; secret files are read here.
    pub fn validate(&mut self) -> Vec<String> {
        match self.kind {
            SinkKind::File => self.file.validate(),
            SinkKind::Nats => self.nats.validate(),
            SinkKind::Kafka => self.kafka.validate(),
        }
    }
}

/// A destination for envelopes.
pub trait Sink: Send + Sync {
    /// A short name for logs and metric labels (`file`, `nats`, `kafka`, `memory`).
    fn name(&self) -> &'static str;

    /// Publishes a batch; returns one outcome per envelope, in order, once each is settled.
    fn publish<'a>(&'a self, batch: &'a [Envelope]) -> BoxFuture<'a, Vec<Outcome>>;

    /// Publishes bytes that are not an update to the dead-letter route.
    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Outcome>;

    /// Whether the sink can reach its broker now (readiness).
    fn is_ready(&self) -> bool;

    /// Flushes whatever is buffered; called once on shutdown.
    fn close(&self) -> BoxFuture<'_, ()>;
}
