//! The shared cluster's store on Kafka: two single-partition topics that every replica
//! reads whole, in the same order.
//!
//! `<name>.members` carries heartbeats, keyed by replica. `<name>.owners` carries owner
//! writes, keyed by bot, each naming the revision it expects. A write counts only if
//! the bot's revision is still that one when the record is read; every replica reads
//! the same records in the same order, so each counts the same writes and refuses the
//! same ones: a compare-and-set decided by the log's order. A bot's revision is the
//! offset of its last counted record, plus one.
//!
//! Why not a consumer group over a topic with a partition per bot: on the Kafka broker
//! this project tests against, each rebalance took 2.4-3 s and held membership commits
//! back meanwhile, so a replica could not tell a live group from a lost one, and
//! members kept being dealt empty assignments; a log read in order has no such phase.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::store::{Change, Heartbeat, Store, StoreError};
use crate::broker::kafka::KafkaBroker;
use crate::config::ClusterConfig;
use crate::metrics::Metrics;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Outcomes of owner writes kept for a writer that learns its offset late.
const KEPT_OUTCOMES: usize = 10_000;

/// Errors that stop the coordination from starting.
#[derive(Debug, thiserror::Error)]
#[error("Kafka coordination topic {topic}: {message}")]
pub struct KafkaStoreError {
    topic: String,
    message: String,
}

pub struct KafkaStore {
    producer: FutureProducer,
    members: String,
    owners: String,
    log: Arc<Mutex<OwnersLog>>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    /// The owners log was read up to where it stood at start.
    caught_up: Arc<AtomicBool>,
}

/// The owners log's replay at start: where it ends, and how far is left.
struct Replay {
    high: i64,
    lag: prometheus::IntGauge,
    caught_up: Arc<AtomicBool>,
}

/// The owner writes read so far, and writers waiting to learn whether theirs counted.
#[derive(Default)]
struct OwnersLog {
    revisions: HashMap<String, u64>,
    /// Every offset below this has been read.
    read_up_to: i64,
    /// Offset → the revision its write made, or `None` if it was refused.
    outcomes: BTreeMap<i64, Option<u64>>,
    waiters: HashMap<i64, oneshot::Sender<Option<u64>>>,
}

impl KafkaStore {
    /// Creates the two topics when missing and starts reading them.
    pub async fn connect(
        broker: &KafkaBroker,
        config: &ClusterConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<KafkaStore, KafkaStoreError> {
        let client = &broker.connection_config();
        let members = format!("{}.members", config.name);
        let owners = format!("{}.owners", config.name);
        // Heartbeats matter for seconds; owner writes are the state, kept for good.
        for (topic, retention_ms) in [(&members, "3600000"), (&owners, "-1")] {
            broker
                .ensure_log_topic(topic, retention_ms)
                .await
                .map_err(|message| KafkaStoreError {
                    topic: topic.clone(),
                    message,
                })?;
        }
        // The compare-and-set reads the owners log whole: refuse one that lost records.
        let high = broker
            .check_log_intact(&owners)
            .await
            .map_err(|message| KafkaStoreError {
                topic: owners.clone(),
                message,
            })?;
        let lag = metrics.cluster_replay_lag.clone();
        lag.set(high);
        let caught_up = Arc::new(AtomicBool::new(high == 0));
        let error = |topic: &str, e: KafkaError| KafkaStoreError {
            topic: topic.to_owned(),
            message: e.to_string(),
        };
        let mut producer = client.clone();
        producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0");
        let producer: FutureProducer = producer.create().map_err(|e| error(&owners, e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(OwnersLog::default()));
        let reader = |topic: &str| reader(client, config, topic).map_err(|e| error(topic, e));
        tokio::spawn(read_members(reader(&members)?, tx.clone()));
        let replay = Replay {
            high,
            lag,
            caught_up: Arc::clone(&caught_up),
        };
        tokio::spawn(read_owners(reader(&owners)?, Arc::clone(&log), tx, replay));
        Ok(KafkaStore {
            producer,
            members,
            owners,
            log,
            caught_up,
            changes: Mutex::new(Some(rx)),
        })
    }

    async fn produce(&self, topic: &str, key: &str, value: &str) -> Result<i64, StoreError> {
        let record = FutureRecord::to(topic).key(key).payload(value).partition(0);
        self.producer
            .send(record, TIMEOUT)
            .await
            .map(|delivery| delivery.offset)
            .map_err(|(e, _)| StoreError::Broker(e.to_string()))
    }
}

/// The readers' client context: reaching the end of the partition is how a reader
/// learns it has read the history, not an error to log.
struct Reader;

impl ClientContext for Reader {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(%error, reason, "Kafka client error (cluster coordination)");
        }
    }
}

impl ConsumerContext for Reader {}

/// A consumer of the topic's one partition from its beginning, outside any group.
fn reader(
    client: &ClientConfig,
    config: &ClusterConfig,
    topic: &str,
) -> Result<StreamConsumer<Reader>, KafkaError> {
    let mut reader = client.clone();
    reader
        .set("group.id", format!("{}-{}", config.name, config.instance))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: StreamConsumer<Reader> = reader.create_with_context(Reader)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

async fn read_members(consumer: StreamConsumer<Reader>, tx: mpsc::UnboundedSender<Change>) {
    while !tx.is_closed() {
        match consumer.recv().await {
            Ok(record) => {
                let Some(Ok(instance)) = record.key_view::<str>() else {
                    continue;
                };
                let value = record.payload_view::<str>().and_then(Result::ok);
                let alive = value.is_some_and(|v| !v.is_empty());
                let change = Change::Member {
                    instance: instance.to_owned(),
                    alive,
                    beat: Heartbeat::decode(value.unwrap_or("")),
                };
                if tx.send(change).is_err() {
                    return;
                }
            }
            Err(KafkaError::PartitionEOF(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the cluster's heartbeats failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn read_owners(
    consumer: StreamConsumer<Reader>,
    log: Arc<Mutex<OwnersLog>>,
    tx: mpsc::UnboundedSender<Change>,
    replay: Replay,
) {
    let mut live = false;
    while !tx.is_closed() {
        match consumer.recv().await {
            Ok(record) => {
                if !live {
                    replay.lag.set((replay.high - record.offset() - 1).max(0));
                    if record.offset() + 1 >= replay.high {
                        replay.caught_up.store(true, Ordering::SeqCst);
                    }
                }
                let key = record.key_view::<str>().and_then(Result::ok);
                let value = record.payload_view::<str>().and_then(Result::ok);
                let change =
                    log.lock()
                        .unwrap()
                        .read(record.offset(), key, value.unwrap_or(""), live);
                if let Some(change) = change {
                    if tx.send(change).is_err() {
                        return;
                    }
                }
            }
            // The history is read: what follows happens now.
            Err(KafkaError::PartitionEOF(_)) => {
                live = true;
                replay.lag.set(0);
                replay.caught_up.store(true, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the cluster's owners failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

impl OwnersLog {
    /// Reads one owner write: `<expected revision> [<owner>]`, keyed by bot. Counts it
    /// when the bot's revision is the one it expects.
    fn read(&mut self, offset: i64, bot: Option<&str>, value: &str, live: bool) -> Option<Change> {
        let (expected, owner) = match value.split_once(' ') {
            Some((rev, owner)) => (rev, Some(owner.to_owned())),
            None => (value, None),
        };
        let counted = match (bot, expected.parse::<u64>()) {
            (Some(bot), Ok(expected))
                if self.revisions.get(bot).copied().unwrap_or(0) == expected =>
            {
                let revision = offset as u64 + 1;
                self.revisions.insert(bot.to_owned(), revision);
                Some(revision)
            }
            _ => None,
        };
        self.read_up_to = offset + 1;
        match self.waiters.remove(&offset) {
            Some(waiter) => {
                let _ = waiter.send(counted);
            }
            None => {
                self.outcomes.insert(offset, counted);
                while self.outcomes.len() > KEPT_OUTCOMES {
                    self.outcomes.pop_first();
                }
            }
        }
        Some(Change::Owner {
            bot: bot?.to_owned(),
            owner,
            revision: counted?,
            live,
        })
    }

    /// The outcome of the write at `offset`: known already, or a receiver for it.
    fn outcome(&mut self, offset: i64) -> Result<Option<u64>, oneshot::Receiver<Option<u64>>> {
        if offset < self.read_up_to {
            return Ok(self.outcomes.remove(&offset).flatten());
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(offset, tx);
        Err(rx)
    }
}

impl Store for KafkaStore {
    fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::SeqCst)
    }

    fn changes(&self) -> mpsc::UnboundedReceiver<Change> {
        self.changes
            .lock()
            .unwrap()
            .take()
            .expect("one coordinator per store")
    }

    async fn heartbeat(&self, instance: &str, beat: Heartbeat) -> Result<(), StoreError> {
        self.produce(&self.members, instance, &beat.encode())
            .await
            .map(|_| ())
    }

    async fn leave(&self, instance: &str) {
        let _ = self.produce(&self.members, instance, "").await;
    }

    async fn write_owner(
        &self,
        bot: &str,
        owner: Option<&str>,
        revision: u64,
    ) -> Result<u64, StoreError> {
        let value = match owner {
            Some(owner) => format!("{revision} {owner}"),
            None => revision.to_string(),
        };
        let offset = self.produce(&self.owners, bot, &value).await?;
        let outcome = self.log.lock().unwrap().outcome(offset);
        let counted = match outcome {
            Ok(known) => known,
            Err(waiting) => {
                // Read back in order, so this waits for the writes before it too.
                return match tokio::time::timeout(TIMEOUT, waiting).await {
                    Ok(Ok(Some(new))) => Ok(new),
                    Ok(Ok(None)) => Err(StoreError::Conflict),
                    _ => Err(StoreError::Broker(
                        "the owner write was not read back in time".into(),
                    )),
                };
            }
        };
        counted.ok_or(StoreError::Conflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_counts_only_against_the_revision_it_expects() {
        let mut log = OwnersLog::default();
        // Two replicas claim a bot nobody owned; the first record read wins.
        let first = log.read(10, Some("bot"), "0 r1", true);
        let second = log.read(11, Some("bot"), "0 r2", true);
        assert!(matches!(first, Some(Change::Owner { revision: 11, .. })));
        assert!(second.is_none(), "refused: the revision moved on");
        assert!(matches!(log.outcome(10), Ok(Some(11))));
        assert!(matches!(log.outcome(11), Ok(None)));
        // The owner frees it with its revision; then anyone may claim it again.
        assert!(log.read(12, Some("bot"), "11", true).is_some());
        assert!(log.read(13, Some("bot"), "13 r2", true).is_some());
        // A writer that asks before its record is read waits for it.
        let Err(mut waiting) = log.outcome(20) else {
            panic!("not read yet")
        };
        assert!(waiting.try_recv().is_err());
        log.read(20, Some("bot"), "14 r1", true);
        assert_eq!(waiting.try_recv(), Ok(Some(21)));
    }
}
