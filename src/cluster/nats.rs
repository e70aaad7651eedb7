//! Shared ownership through two NATS JetStream key-value buckets.
//!
//! - `<name>-members`: one key per replica, its heartbeat, put five times per
//!   `lease_ttl`. A successful put extends this replica's [`Lease`]. Every replica
//!   watches the bucket and judges another gone once it has seen no heartbeat from it
//!   for 80 % of `lease_ttl`, by its own monotonic clock: no two clocks are compared,
//!   and the owner itself stops polling at 60 %.
//! - `<name>-owners`: one key per bot naming its owner. A claim writes the key with
//!   the revision last seen (0 when absent), so of two replicas claiming at once one
//!   wins; a release deletes it with the owner's own revision, after the bot stopped
//!   and confirmed. A replica runs a bot only while the key holds the revision it
//!   wrote, and only while its lease lives; after a lapse it rewrites each claim with
//!   its revision before polling again, so a bot taken over meanwhile stays taken.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::{plan, View};
use super::{Bots, Ownership, OwnershipLog};
use crate::config::ClusterConfig;
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::supervisor::Supervisor;

/// How often the loop looks at the cluster between watch events.
const TICK: Duration = Duration::from_millis(250);

/// Errors that stop the coordination from starting.
#[derive(Debug, thiserror::Error)]
#[error("NATS key-value bucket {bucket}: {message}")]
pub struct NatsOwnershipError {
    bucket: String,
    message: String,
}

pub struct NatsOwnership {
    members: kv::Store,
    owners: kv::Store,
    config: ClusterConfig,
    lease: Lease,
    log: OwnershipLog,
}

impl NatsOwnership {
    /// Opens (creating when missing) the two buckets.
    pub async fn connect(
        js: &jetstream::Context,
        config: &ClusterConfig,
        lease: Lease,
        metrics: Arc<Metrics>,
    ) -> Result<NatsOwnership, NatsOwnershipError> {
        let members = bucket(
            js,
            kv::Config {
                bucket: format!("{}-members", config.name),
                history: 1,
                // Tidiness only: a member is judged by its heartbeats, not by expiry.
                max_age: (config.lease_ttl * 6).max(Duration::from_secs(60)),
                ..Default::default()
            },
        )
        .await?;
        let owners = bucket(
            js,
            kv::Config {
                bucket: format!("{}-owners", config.name),
                history: 1,
                ..Default::default()
            },
        )
        .await?;
        Ok(NatsOwnership {
            members,
            owners,
            config: config.clone(),
            lease,
            log: OwnershipLog {
                metrics,
                instance: config.instance.clone(),
            },
        })
    }
}

async fn bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, NatsOwnershipError> {
    let name = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another replica created it meanwhile.
        Err(created) => js
            .get_key_value(&name)
            .await
            .map_err(|_| NatsOwnershipError {
                bucket: name,
                message: created.to_string(),
            }),
    }
}

impl Ownership for NatsOwnership {
    fn run(
        self: Box<Self>,
        bots: Bots,
        supervisor: Supervisor,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut coordinator = Coordinator::new(*self, bots, supervisor);
            coordinator.run(shutdown).await;
        })
    }
}

mod coordinator;
use coordinator::Coordinator;

/// A bot's key in the owners bucket, as last seen.
#[derive(Debug, Clone)]
struct OwnerKey {
    /// The owner, or `None` when the key was deleted (released).
    owner: Option<String>,
    revision: u64,
}

/// What the watches say about the cluster.
#[derive(Default)]
struct ClusterView {
    /// Replica → when its last heartbeat was seen.
    heartbeats: HashMap<String, Instant>,
    owners: HashMap<String, OwnerKey>,
    /// Bot → since when it has had no live owner, as far as this replica saw it go.
    free_since: HashMap<String, (Instant, Option<String>)>,
}

impl ClusterView {
    fn live_members(&self, me: &str, takeover_after: Duration) -> BTreeSet<String> {
        let now = Instant::now();
        self.heartbeats
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) < takeover_after)
            .map(|(m, _)| m.clone())
            .chain([me.to_owned()])
            .collect()
    }

    /// Bot → owner, for owners among `members`.
    fn live_owners(&self, members: &BTreeSet<String>) -> BTreeMap<String, String> {
        self.owners
            .iter()
            .filter_map(|(bot, key)| {
                let owner = key.owner.as_ref()?;
                members
                    .contains(owner)
                    .then(|| (bot.clone(), owner.clone()))
            })
            .collect()
    }

    fn revision(&self, bot: &str) -> u64 {
        self.owners.get(bot).map_or(0, |k| k.revision)
    }

    fn on_member(&mut self, entry: kv::Entry) {
        match entry.operation {
            kv::Operation::Put => {
                self.heartbeats.insert(entry.key, Instant::now());
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.heartbeats.remove(&entry.key);
            }
        }
    }

    fn on_owner(&mut self, entry: kv::Entry) {
        let owner = match entry.operation {
            kv::Operation::Put => Some(String::from_utf8_lossy(&entry.value).into_owned()),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        let previous = self.owners.get(&entry.key).and_then(|k| k.owner.clone());
        if owner.is_none() && entry.seen_current {
            self.free_since
                .insert(entry.key.clone(), (Instant::now(), previous));
        }
        self.owners.insert(
            entry.key,
            OwnerKey {
                owner,
                revision: entry.revision,
            },
        );
    }
}

fn value(instance: &str) -> Bytes {
    Bytes::copy_from_slice(instance.as_bytes())
}

/// A watch of a whole bucket, restarted from scratch when it breaks.
async fn watch(store: &kv::Store) -> Option<kv::Watch> {
    // With history: the current value of every key first, then every change.
    match store.watch_with_history(">").await {
        Ok(watch) => Some(watch),
        Err(e) => {
            tracing::warn!(error = %e, "watching a cluster bucket failed; retrying");
            None
        }
    }
}

async fn next(watch: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    match watch {
        Some(w) => match w.next().await {
            Some(Ok(entry)) => Some(entry),
            _ => {
                *watch = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}
