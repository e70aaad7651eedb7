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

impl SinkConfig {
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
