//! The real Kafka-protocol broker on this machine, from a consumer's side: each test
//! uses its own topic prefix and reads back with its own consumer on assigned
//! partitions, until end-of-partition (consumer groups are slow to join, and the
//! broker's high watermark can lag the last produced batch).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// `TEST_TGRELAY_KAFKA_BROKERS`, set by scripts/test; the usual local broker otherwise.
pub fn brokers() -> String {
    std::env::var("TEST_TGRELAY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// One record as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
    /// The record's timestamp in ms and whether the broker set it (log append
    /// time) rather than the producer (create time).
    pub timestamp_ms: Option<i64>,
    pub log_append_time: bool,
}

/// TOML for a Kafka sink writing `<prefix>.{bot}.{kind}`, creating topics with 3 partitions.
pub fn sink_toml(prefix: &str, extra: &str) -> String {
    format!(
        "[sink]\nkind = \"kafka\"\n[sink.kafka]\nbrokers = \"{}\"\ntopic = \"{prefix}.{{bot}}.{{kind}}\"\n\
         dead_letter_topic = \"{prefix}.{{bot}}.deadletter\"\ncreate_topics = true\npartitions = 3\n\
         replication_factor = 1\n{extra}",
        brokers()
    )
}

fn consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tgrelay-test-reader")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer")
}

/// Every record of every topic whose name starts with `prefix.`, read to end-of-partition.
pub fn read_prefix(prefix: &str) -> Vec<Record> {
    read_prefix_at(&brokers(), prefix)
}

/// `read_prefix` on the broker at `brokers`.
pub fn read_prefix_at(brokers: &str, prefix: &str) -> Vec<Record> {
    // Metadata from a producer: a consumer with a group id is slow to close on this broker.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("a client");
    let metadata = producer
        .client()
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let mut topics: Vec<(String, Vec<i32>)> = metadata
        .topics()
        .iter()
        .filter(|t| t.name().starts_with(&format!("{prefix}.")))
        .map(|t| {
            (
                t.name().to_owned(),
                t.partitions().iter().map(|p| p.id()).collect(),
            )
        })
        .collect();
    topics.sort();
    topics
        .iter()
        .flat_map(|(topic, partitions)| read_topic(brokers, topic, partitions))
        .collect()
}

/// One topic's records, with one consumer assigned to all its partitions
/// (end-of-partition events name only the partition, so one topic per consumer).
fn read_topic(brokers: &str, topic: &str, partitions: &[i32]) -> Vec<Record> {
    let consumer = consumer(brokers);
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let mut open: BTreeSet<i32> = partitions.iter().copied().collect();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{topic}: partitions {open:?} never reached their end"
        );
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
            Some(Ok(m)) => records.push(record(&m)),
        }
    }
    records
}

fn record(m: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        headers,
        payload: m.payload().unwrap_or_default().to_vec(),
        timestamp_ms: m.timestamp().to_millis(),
        log_append_time: matches!(m.timestamp(), rdkafka::Timestamp::LogAppendTime(_)),
    }
}
