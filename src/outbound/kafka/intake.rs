//! One bot's calls from its topic, through the bot's consumer group: taken only as
//! far as the executor has room, each partition's offset committed up to its oldest
//! call not yet done, and the progress above it written to the bot's memory record.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::memory::KafkaMemory;
use crate::outbound::broker::{Delivery, Taken};
use crate::outbound::call::{Request, METHOD, REPLY_TO, REQUEST_ID};

/// How often offsets are committed and progress written, while it changes.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

pub struct KafkaIntake {
    consumer: Arc<StreamConsumer>,
    bot: String,
    topic: String,
    memory: Arc<KafkaMemory>,
    /// Commit points last committed, by partition.
    committed: Mutex<BTreeMap<i32, i64>>,
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
        })
    }

    /// Takes calls into `tx` until `stop`. Joining the group waits for the last
    /// owner's memory, so that what it finished is skipped.
    pub async fn run(self: Arc<Self>, tx: mpsc::Sender<Taken>, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = self.memory.loaded() => {}
        }
        if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
            tracing::error!(bot = %self.bot, topic = %self.topic, error = %e, "cannot subscribe to the outbound calls");
            return;
        }
        let mut tick = tokio::time::interval(COMMIT_EVERY);
        loop {
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
                        tokio::time::sleep(COMMIT_EVERY).await;
                    }
                },
            }
        }
    }

    /// After the executor stopped: commits what is done and leaves the group.
    pub async fn close(&self) {
        self.commit(true).await;
        self.consumer.unsubscribe();
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
        };
        let delivery = Box::new(KafkaDelivery {
            partition,
            offset,
            memory: Arc::clone(&self.memory),
        });
        Some(Taken { request, delivery })
    }

    /// Commits each partition's commit point that moved, and writes the progress.
    async fn commit(&self, last: bool) {
        let points = self.memory.offsets.lock().unwrap().commit_points();
        let moved: BTreeMap<i32, i64> = {
            let committed = self.committed.lock().unwrap();
            points
                .into_iter()
                .filter(|(p, o)| committed.get(p) != Some(o))
                .collect()
        };
        if moved.is_empty() && !last {
            return;
        }
        if let Err(e) = self.memory.write().await {
            tracing::warn!(bot = %self.bot, error = %e, "writing the outbound progress failed");
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
