//! Sinks: where envelopes go. A sink answers for every envelope with an [`Outcome`],
//! and only `Delivered` or `DeadLettered` mean the broker has it.
//!
//! Sources publish whole batches (a getUpdates reply, or one webhook request) and
//! await every outcome before confirming anything; sinks publish a batch's
//! envelopes concurrently, so a batch costs about one broker round trip.

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::ack::Outcome;
use crate::envelope::{BotIdentity, Envelope};

pub mod file;
pub mod kafka;
pub mod memory;
pub mod nats;

/// Bytes that can never be an update of any route (not an object, no `update_id`):
/// they go to the dead-letter route with the reason, so nothing is dropped silently.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub bot: std::sync::Arc<BotIdentity>,
    /// Stable id for the bytes (see `envelope::malformed_id`).
    pub id: String,
    pub reason: String,
    pub payload: Bytes,
    pub received_at: std::time::SystemTime,
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
