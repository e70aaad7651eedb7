//! What a replica needs of the broker to share bots: heartbeats, and an owner key
//! per bot that is only written with the revision last seen (compare-and-set).
//!
//! NATS keeps both in key-value buckets; Kafka in two topics whose records every
//! replica reads in the same order, so that each decides the same compare-and-set.

use std::future::Future;

use tokio::sync::mpsc;

/// A change every replica sees, in the order the broker holds them.
#[derive(Debug, Clone)]
pub enum Change {
    /// A replica's heartbeat (`alive`), or its leaving.
    Member { instance: String, alive: bool },
    /// A bot's owner key as it stands now (`owner` is `None` once freed).
    Owner {
        bot: String,
        owner: Option<String>,
        revision: u64,
        /// Past the history read at start: a live change.
        live: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key moved on since the revision given: someone else wrote it first.
    #[error("the owner key changed meanwhile")]
    Conflict,
    #[error("{0}")]
    Broker(String),
}

pub trait Store: Send + Sync + 'static {
    /// Every change from the current state on, for as long as the store lives.
    fn changes(&self) -> mpsc::UnboundedReceiver<Change>;

    /// Says this replica is alive; done once the broker stored it.
    fn heartbeat(&self, instance: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Says this replica left (its bots were freed first).
    fn leave(&self, instance: &str) -> impl Future<Output = ()> + Send;

    /// Writes `bot`'s owner (`None` frees it) if its revision is still `revision`
    /// (0: never written); returns the new revision.
    fn write_owner(
        &self,
        bot: &str,
        owner: Option<&str>,
        revision: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
