//! A bot's memory on Kafka: one record on `<calls topic>.limits`, partition 0, holding
//! the limiter's snapshot and each partition's progress (see `offsets`). Written when
//! the limiter's memory is saved and each second while calls finish; the next owner
//! reads the last one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::offsets::{Offsets, Progress};
use crate::outbound::broker::LimitsStore;

const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The last records are read, not only the very last: a broker's high watermark may
/// lag the last write (the newest one read wins).
const READ_LAST: i64 = 8;

/// The memory topic of a bot's calls topic.
pub fn topic(calls: &str) -> String {
    format!("{calls}.limits")
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    limits: Option<serde_json::Value>,
    offsets: BTreeMap<i32, Progress>,
}

pub struct KafkaMemory {
    producer: FutureProducer,
    reader: ClientConfig,
    topic: String,
    key: String,
    pub(super) offsets: Mutex<Offsets>,
    limits: Mutex<Option<serde_json::Value>>,
    loaded: watch::Sender<bool>,
    /// One write at a time, so the newest state is written last.
    writing: tokio::sync::Mutex<()>,
}

impl KafkaMemory {
    pub(super) fn new(
        producer: FutureProducer,
        reader: ClientConfig,
        bot: &str,
        calls: &str,
    ) -> KafkaMemory {
        KafkaMemory {
            producer,
            reader,
            topic: topic(calls),
            key: bot.to_owned(),
            offsets: Mutex::new(Offsets::default()),
            limits: Mutex::new(None),
            loaded: watch::Sender::new(false),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Resolves once the last owner's record has been read (calls wait for it).
    pub async fn loaded(&self) {
        let _ = self.loaded.subscribe().wait_for(|loaded| *loaded).await;
    }

    /// Writes the current state; resolves once the broker has it.
    pub async fn write(&self) -> Result<(), String> {
        let _turn = self.writing.lock().await;
        let record = Record {
            limits: self.limits.lock().unwrap().clone(),
            offsets: self.offsets.lock().unwrap().progress(),
        };
        let bytes = serde_json::to_vec(&record).expect("a record serializes");
        let send = FutureRecord::to(&self.topic)
            .partition(0)
            .key(&self.key)
            .payload(&bytes);
        self.producer
            .send(send, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| format!("writing {}: {e}", self.topic))
    }

    async fn read_last(&self) -> Result<Option<Record>, String> {
        let reader = self.reader.clone();
        let topic = self.topic.clone();
        let key = self.key.clone();
        let last = tokio::task::spawn_blocking(move || read_last(&reader, &topic, &key))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading {}: {e}", self.topic))?;
        Ok(last.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }
}

/// The newest record of `key` among the last few of partition 0.
fn read_last(config: &ClientConfig, topic: &str, key: &str) -> Result<Option<Vec<u8>>, KafkaError> {
    let mut config = config.clone();
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::OffsetTail(READ_LAST))?;
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(last),
            Some(Err(e)) => return Err(e),
            Some(Ok(m)) if m.key() == Some(key.as_bytes()) => {
                last = m.payload().map(<[u8]>::to_vec)
            }
            Some(Ok(_)) => {}
        }
    }
    Err(KafkaError::MessageConsumption(
        RDKafkaErrorCode::OperationTimedOut,
    ))
}

impl LimitsStore for KafkaMemory {
    fn load(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        async move {
            let record = self.read_last().await?.unwrap_or_default();
            self.offsets.lock().unwrap().resume(&record.offsets);
            *self.limits.lock().unwrap() = record.limits.clone();
            self.loaded.send_replace(true);
            Ok(record.limits.map(|v| v.to_string().into_bytes()))
        }
        .boxed()
    }

    fn save(&self, snapshot: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let value = serde_json::from_slice(&snapshot).map_err(|e| e.to_string())?;
            *self.limits.lock().unwrap() = Some(value);
            self.write().await
        }
        .boxed()
    }
}
