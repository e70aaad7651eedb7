//! Sinks: where envelopes go. A sink answers for every envelope with an [`Outcome`],
//! and only `Delivered` or `DeadLettered` mean the broker has it.
//!
//! Sources publish whole batches (a getUpdates reply, or one webhook request) and
//! await every outcome before confirming anything; sinks publish a batch's
//! envelopes concurrently, so a batch costs about one broker round trip.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::ack::Outcome;
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

/// A sink connected to its broker, and the broker connection for whatever else the
/// relay keeps there (a shared cluster's coordination).
pub struct Connected {
    pub sink: std::sync::Arc<dyn Sink>,
    pub nats: Option<async_nats::jetstream::Context>,
}

/// Connects the configured sink: the broker answers, and the stream or topics that
/// `routes` can reach exist (or were created, when configured to).
pub async fn connect(
    config: &SinkConfig,
    routes: &[kafka::topics::BotRoutes],
) -> anyhow::Result<Connected> {
    use anyhow::Context as _;
    use std::sync::Arc;
    Ok(match config.kind {
        SinkKind::File => {
            let path = &config.file.path;
            let sink = file::FileSink::open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            Connected {
                sink: Arc::new(sink),
                nats: None,
            }
        }
        SinkKind::Nats => {
            let sink = nats::NatsSink::connect(&config.nats, config.envelope).await?;
            Connected {
                nats: Some(sink.jetstream()),
                sink: Arc::new(sink),
            }
        }
        SinkKind::Kafka => Connected {
            sink: Arc::new(
                kafka::KafkaSink::connect(&config.kafka, config.envelope, routes).await?,
            ),
            nats: None,
        },
    })
}

impl SinkConfig {
    /// Every problem of the chosen sink's settings.
    pub fn validate(&self) -> Vec<String> {
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
