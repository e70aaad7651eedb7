//! Ownership: which replica runs which bot.
//!
//! `single` (the default): this process owns every configured bot. `shared`: every
//! replica loads the same bots and each bot is run by one live replica at a time,
//! coordinated through the broker the relay already talks to (NATS key-value buckets,
//! or a Kafka consumer group). An [`Ownership`] starts and stops bots on the
//! [`Supervisor`] as ownership moves, and keeps this replica's [`Lease`] alive.
//!
//! Safety never depends on it: two replicas polling one bot only cause duplicates and
//! 409s, because each confirms only what it published itself (see `ack`). Ownership is
//! there so that, normally, nobody polls twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::BotConfig;
use crate::supervisor::Supervisor;

pub mod plan;

/// The configured bots, by name; a watch so that the set may change while running.
pub type Bots = watch::Receiver<Arc<BTreeMap<String, BotConfig>>>;

/// Decides which bots this replica runs.
pub trait Ownership: Send {
    /// Runs until `shutdown`, starting and stopping bots on `supervisor` as this
    /// replica gains and loses them.
    fn run(
        self: Box<Self>,
        bots: Bots,
        supervisor: Supervisor,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()>;
}

/// `single`: this process owns every bot there is.
pub struct Single;

impl Ownership for Single {
    fn run(
        self: Box<Self>,
        mut bots: Bots,
        supervisor: Supervisor,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                let wanted = Arc::clone(&bots.borrow_and_update());
                for (name, bot) in wanted.iter() {
                    supervisor.start(name, bot);
                }
                for name in supervisor.running() {
                    if !wanted.contains_key(&name) {
                        supervisor.stop(&name).await;
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = bots.changed() => if changed.is_err() { return },
                }
            }
        })
    }
}
