//! What the executor needs from a broker, whichever it is: calls taken with a way to
//! settle each, a place for results, and a place for the limiter's memory. The NATS
//! and Kafka adapters implement these; the tests use memory.

use futures::future::BoxFuture;

use super::call::{Reply, Request};

/// A call taken from the broker, and how to settle it there.
pub struct Taken {
    pub request: Request,
    pub delivery: Box<dyn Delivery>,
}

/// Settles one taken call with the broker. Dropping it without settling leaves the
/// call to the broker's redelivery.
pub trait Delivery: Send + 'static {
    /// The call's result is published: the broker may forget the call.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), String>>;
    /// The call was not run: the broker hands it to whoever runs the bot next,
    /// before the calls taken after it.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Why a result could not be published.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The route can never take it (no such topic, a subject the account may not use).
    #[error("the route refuses it: {0}")]
    Refused(String),
    /// Anything else: try again.
    #[error("{0}")]
    Transient(String),
}

/// Where results go.
pub trait Results: Send + Sync + 'static {
    /// Publishes a result; resolves once the broker has it.
    fn publish<'a>(&'a self, reply: &'a Reply) -> BoxFuture<'a, Result<(), PublishError>>;
}

/// Where the limiter's memory of one bot is kept between owners.
pub trait LimitsStore: Send + Sync + 'static {
    /// The last saved snapshot (JSON), if any.
    fn load(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>>;
    fn save(&self, snapshot: Vec<u8>) -> BoxFuture<'_, Result<(), String>>;
}
