//! The request journal on Kafka: a compacted one-partition topic per bot,
//! `<calls topic>.requests` (`retention.ms` = `outbound.dedup_window`), keyed by the
//! call's storage key, a tombstone for a call forgotten. The owner replays it when it
//! takes the bot (entries older than the window are skipped) and answers claims from
//! memory after that: only the bot's owner runs its calls, so nobody else writes it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::outbound::answer::Answered;
use crate::outbound::journal::{now_ms, storage_key, Found, Journal, Record, State};

/// A replay gives up after this long without a record.
const READ_IDLE: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The journal topic of a bot's calls topic.
pub fn topic(calls: &str) -> String {
    format!("{calls}.requests")
}

pub struct KafkaJournal {
    producer: FutureProducer,
    reader: ClientConfig,
    topic: String,
    window: Duration,
    /// What the topic holds, by storage key, with when it was written (ms).
    entries: Mutex<HashMap<String, (Found, u64)>>,
}

impl KafkaJournal {
    pub fn new(
        producer: FutureProducer,
        reader: ClientConfig,
        calls: &str,
        window: Duration,
    ) -> KafkaJournal {
        KafkaJournal {
            producer,
            reader,
            topic: topic(calls),
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn fresh_since(&self) -> u64 {
        now_ms().saturating_sub(self.window.as_millis() as u64)
    }

    async fn write(&self, key: &str, payload: Option<Vec<u8>>) -> Result<(), String> {
        let mut record = FutureRecord::to(&self.topic).partition(0).key(key);
        if let Some(payload) = &payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, WRITE_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| format!("writing {}: {e}", self.topic))
    }
}

impl Journal for KafkaJournal {
    fn load(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let reader = self.reader.clone();
            let topic = self.topic.clone();
            let records = tokio::task::spawn_blocking(move || read_all(&reader, &topic))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("reading {}: {e}", self.topic))?;
            let since = self.fresh_since();
            let mut entries = HashMap::new();
            for (key, payload) in records {
                match payload {
                    None => {
                        entries.remove(&key);
                    }
                    Some(bytes) => match Record::decode_at(&bytes) {
                        Ok((found, at)) if at >= since => {
                            entries.insert(key, (found, at));
                        }
                        _ => {
                            entries.remove(&key);
                        }
                    },
                }
            }
            *self.entries.lock().unwrap() = entries;
            Ok(())
        }
        .boxed()
    }

    fn begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
    ) -> BoxFuture<'a, Result<Option<Found>, String>> {
        async move {
            let key = storage_key(key);
            let record = Record::started(fingerprint);
            {
                let since = self.fresh_since();
                let mut entries = self.entries.lock().unwrap();
                if entries.len() % 1024 == 0 {
                    entries.retain(|_, (_, at)| *at >= since);
                }
                match entries.get(&key) {
                    Some((found, at)) if *at >= since => return Ok(Some(found.clone())),
                    _ => {}
                }
                let found = Found {
                    fingerprint,
                    state: State::Started,
                };
                entries.insert(key.clone(), (found, record.at_ms));
            }
            let written = self.write(&key, Some(record.encode())).await;
            if written.is_err() {
                self.entries.lock().unwrap().remove(&key);
            }
            written.map(|()| None)
        }
        .boxed()
    }

    fn answer<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u64,
        answered: &'a Answered,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let key = storage_key(key);
            let record = Record::answered(fingerprint, answered);
            self.write(&key, Some(record.encode())).await?;
            let found = Found {
                fingerprint,
                state: State::Answered(answered.clone()),
            };
            self.entries
                .lock()
                .unwrap()
                .insert(key, (found, record.at_ms));
            Ok(())
        }
        .boxed()
    }

    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let key = storage_key(key);
            self.write(&key, None).await?;
            self.entries.lock().unwrap().remove(&key);
            Ok(())
        }
        .boxed()
    }
}

/// A record's key and payload (`None`: a tombstone).
type Stored = (String, Option<Vec<u8>>);

/// Every record of partition 0, oldest first.
fn read_all(config: &ClientConfig, topic: &str) -> Result<Vec<Stored>, KafkaError> {
    let mut config = config.clone();
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let mut idle_since = std::time::Instant::now();
    while idle_since.elapsed() < READ_IDLE {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(records),
            Some(Err(e)) => return Err(e),
            Some(Ok(m)) => {
                idle_since = std::time::Instant::now();
                if let Some(key) = m.key() {
                    let key = String::from_utf8_lossy(key).into_owned();
                    records.push((key, m.payload().map(<[u8]>::to_vec)));
                }
            }
        }
    }
    Err(KafkaError::MessageConsumption(
        RDKafkaErrorCode::OperationTimedOut,
    ))
}
