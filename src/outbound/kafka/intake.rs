//! One bot's calls from its topic: the owner reads every partition itself, from the
//! offsets committed under the bot's consumer group, and only while the executor
//! has room; each partition's offset is committed up to its oldest call not yet
//! done, and the progress above it written to the bot's memory record.
//!
//! The group keeps offsets only; nobody joins it. Ownership already says who reads
//! (see `cluster`), and a group would make a new owner wait for the old member's
//! session to time out, or longer (a broker keeping a dead member as its leader).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::memory::KafkaMemory;
use crate::backoff::Backoff;
use crate::outbound::broker::{Delivery, Taken};
use crate::outbound::call::{Options, Request, METHOD, REPLY_TO, REQUEST_ID};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How often offsets are committed and progress written, while it changes: what a
/// crash makes the next owner send again is what finished since.
const COMMIT_EVERY: Duration = Duration::from_millis(250);

pub struct KafkaIntake {
    consumer: Arc<StreamConsumer>,
    bot: String,
    topic: String,
    memory: Arc<KafkaMemory>,
    /// Commit points last committed, by partition.
    committed: Mutex<BTreeMap<i32, i64>>,
    /// `Offsets::changes` when the progress was last written.
    written: Mutex<u64>,
}

impl KafkaIntake {
    pub(super) fn new(
        config: ClientConfig,
        bot: &str,
        topic: String,
        memory: Arc<KafkaMemory>,
    ) -> Result<KafkaIntake, KafkaError> {
        Ok(KafkaIntake {
            consumer: Arc::new(config.create()?),
            bot: bot.to_owned(),
            topic,
            memory,
            committed: Mutex::new(BTreeMap::new()),
            written: Mutex::new(0),
        })
    }

    /// Takes calls into `tx` until `stop`. Joining the group waits for the last
    /// owner's memory, so that what it finished is skipped.
    pub async fn run(self: Arc<Self>, tx: mpsc::Sender<Taken>, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = self.memory.loaded() => {}
        }
        let mut failures = 0;
        while let Err(e) = self.assign().await {
            if failures % 10 == 0 {
                tracing::warn!(bot = %self.bot, topic = %self.topic, error = %e, "cannot read the outbound calls' partitions; retrying");
            }
            let wait = Backoff::DEFAULT.next_delay(failures.min(6));
            failures += 1;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let mut tick = tokio::time::interval(COMMIT_EVERY);
        loop {
            // With no room, nothing is read: librdkafka fetches ahead up to its queue
            // limit, then waits. (Pausing the partitions instead makes it fetch again
            // from a position of its own: calls came twice, or never.)
            if tx.capacity() == 0 {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => self.commit(false).await,
                    permit = tx.reserve() => match permit {
                        Ok(permit) => drop(permit),
                        Err(_) => break,
                    },
                }
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.commit(false).await,
                message = self.consumer.recv() => match message {
                    Ok(message) => {
                        if let Some(taken) = self.taken(&message) {
                            let _ = tx.try_send(taken);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(bot = %self.bot, error = %e, "reading outbound calls failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        }
    }

    /// After the executor stopped: commits what is done.
    pub async fn close(&self) {
        self.commit(true).await;
        let _ = self.consumer.unassign();
    }

    /// Reads every partition of the topic from its committed offset (the first one
    /// when none is).
    async fn assign(&self) -> Result<(), KafkaError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&topic), METADATA_TIMEOUT)?;
            let mut partitions = TopicPartitionList::new();
            for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
                partitions.add_partition(&topic, p.id());
            }
            if partitions.count() == 0 {
                return Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::UnknownTopicOrPartition,
                ));
            }
            let mut committed = consumer.committed_offsets(partitions, METADATA_TIMEOUT)?;
            let positions: Vec<(i32, Offset)> = committed
                .elements()
                .iter()
                .map(|e| (e.partition(), e.offset()))
                .collect();
            for (partition, offset) in positions {
                if !matches!(offset, Offset::Offset(_)) {
                    committed.set_partition_offset(&topic, partition, Offset::Beginning)?;
                }
            }
            consumer.assign(&committed)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }

    fn taken(&self, message: &BorrowedMessage<'_>) -> Option<Taken> {
        let (partition, offset) = (message.partition(), message.offset());
        if !self.memory.offsets.lock().unwrap().taken(partition, offset) {
            tracing::debug!(bot = %self.bot, partition, offset, "call done by the last owner; skipped");
            return None;
        }
        let header = |name: &str| {
            let headers = message.headers()?;
            headers
                .iter()
                .find(|h| h.key.eq_ignore_ascii_case(name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let published = message
            .timestamp()
            .to_millis()
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        let request = Request {
            method: header(METHOD),
            request_id: header(REQUEST_ID),
            reply_to: header(REPLY_TO),
            broker_id: format!("{partition}.{offset}"),
            body: bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default()),
            published,
            options: Options::read(header),
        };
        let delivery = Box::new(KafkaDelivery {
            partition,
            offset,
            memory: Arc::clone(&self.memory),
        });
        Some(Taken { request, delivery })
    }

    /// Writes the progress when it changed (calls done above a commit point too), and
    /// commits each partition's commit point that moved.
    async fn commit(&self, last: bool) {
        let (points, changes) = {
            let offsets = self.memory.offsets.lock().unwrap();
            (offsets.commit_points(), offsets.changes())
        };
        let moved: BTreeMap<i32, i64> = {
            let committed = self.committed.lock().unwrap();
            points
                .into_iter()
                .filter(|(p, o)| committed.get(p) != Some(o))
                .collect()
        };
        let news = *self.written.lock().unwrap() != changes;
        if news || last {
            match self.memory.write().await {
                Ok(()) => *self.written.lock().unwrap() = changes,
                Err(e) => {
                    tracing::warn!(bot = %self.bot, error = %e, "writing the outbound progress failed")
                }
            }
        }
        if moved.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &moved {
            let _ = list.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset));
        }
        let mode = if last {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        let consumer = Arc::clone(&self.consumer);
        let committed = tokio::task::spawn_blocking(move || consumer.commit(&list, mode)).await;
        match committed {
            Ok(Ok(())) => self.committed.lock().unwrap().extend(moved),
            Ok(Err(e)) => {
                tracing::warn!(bot = %self.bot, error = %e, "committing outbound offsets failed")
            }
            Err(e) => {
                tracing::warn!(bot = %self.bot, error = %e, "committing outbound offsets failed")
            }
        }
    }
}

struct KafkaDelivery {
    partition: i32,
    offset: i64,
    memory: Arc<KafkaMemory>,
}

impl Delivery for KafkaDelivery {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), String>> {
        self.memory
            .offsets
            .lock()
            .unwrap()
            .done(self.partition, self.offset);
        futures::future::ready(Ok(())).boxed()
    }

    /// Not committed: whoever reads the partition next reads it again.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        futures::future::ready(()).boxed()
    }
}
