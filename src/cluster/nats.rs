//! The shared cluster's store on NATS: two JetStream key-value buckets.
//!
//! `<name>-members` holds one key per replica, its heartbeat; `<name>-owners` one key
//! per bot naming its owner, written with the bucket's own compare-and-set (an update
//! that names the revision last seen) and freed by a delete that names it too.

use std::time::Duration;

use async_nats::jetstream::kv::{self, UpdateErrorKind};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::store::{Change, Heartbeat, Store, StoreError};
use crate::broker::nats::{NatsBroker, NatsSinkError};
use crate::config::ClusterConfig;

pub struct NatsStore {
    members: kv::Store,
    owners: kv::Store,
}

impl NatsStore {
    /// Opens (creating when missing) the two buckets.
    pub async fn connect(
        broker: &NatsBroker,
        config: &ClusterConfig,
    ) -> Result<NatsStore, NatsSinkError> {
        let members = broker
            .key_value(kv::Config {
                bucket: format!("{}-members", config.name),
                history: 1,
                // Tidiness only: a member is judged by its heartbeats, not by expiry.
                max_age: (config.lease_ttl * 6).max(Duration::from_secs(60)),
                ..Default::default()
            })
            .await?;
        let owners = broker
            .key_value(kv::Config {
                bucket: format!("{}-owners", config.name),
                history: 1,
                ..Default::default()
            })
            .await?;
        Ok(NatsStore { members, owners })
    }
}

impl Store for NatsStore {
    fn changes(&self) -> mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(follow(self.members.clone(), tx.clone(), member));
        tokio::spawn(follow(self.owners.clone(), tx, owner));
        rx
    }

    async fn heartbeat(&self, instance: &str, beat: Heartbeat) -> Result<(), StoreError> {
        self.members
            .put(instance, Bytes::from(beat.encode()))
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Broker(e.to_string()))
    }

    async fn leave(&self, instance: &str) {
        let _ = self.members.delete(instance).await;
    }

    async fn write_owner(
        &self,
        bot: &str,
        owner: Option<&str>,
        revision: u64,
    ) -> Result<u64, StoreError> {
        match owner {
            Some(owner) => self
                .owners
                .update(bot, Bytes::copy_from_slice(owner.as_bytes()), revision)
                .await
                .map_err(|e| match e.kind() {
                    UpdateErrorKind::WrongLastRevision => StoreError::Conflict,
                    _ => StoreError::Broker(e.to_string()),
                }),
            None => self
                .owners
                .delete_expect_revision(bot, Some(revision))
                .await
                .map(|_| revision)
                .map_err(|e| StoreError::Broker(e.to_string())),
        }
    }
}

fn member(entry: kv::Entry) -> Change {
    Change::Member {
        alive: entry.operation == kv::Operation::Put,
        beat: Heartbeat::decode(&String::from_utf8_lossy(&entry.value)),
        instance: entry.key,
    }
}

fn owner(entry: kv::Entry) -> Change {
    Change::Owner {
        owner: (entry.operation == kv::Operation::Put)
            .then(|| String::from_utf8_lossy(&entry.value).into_owned()),
        bot: entry.key,
        revision: entry.revision,
        live: entry.seen_current,
    }
}

/// Forwards a bucket's changes: the current value of every key first, then each
/// change; a broken watch is opened again (and replays the current values).
async fn follow(
    store: kv::Store,
    tx: mpsc::UnboundedSender<Change>,
    change: fn(kv::Entry) -> Change,
) {
    while !tx.is_closed() {
        match store.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(Ok(entry)) = watch.next().await {
                    if tx.send(change(entry)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching a cluster bucket failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
