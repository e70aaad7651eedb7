//! `KafkaSink`: an idempotent `acks=all` producer; an update is safe when its delivery
//! report says so.
//!
//! A batch is enqueued in order (librdkafka keeps a partition's messages in enqueue
//! order, and idempotence keeps them so across retries), keyed by chat, then every
//! delivery report is awaited together. A full local queue is back-pressure: the
//! enqueue waits and tries again. Broker errors are sorted three ways: too large
//! (dead-letter topic), configuration (unknown topic, authorization: held, loud,
//! not ready), and transient (held, retried).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{join_all, BoxFuture};
use futures::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use super::Sink;
use crate::ack::Outcome;
use crate::cloudevent::{self, Attributes, EnvelopeMode};
use crate::envelope::{DeadLetter, Envelope};
use crate::route::RouteTemplate;

use crate::broker::kafka::KafkaBroker;
pub use crate::broker::kafka::{topics, KafkaSinkConfig, KafkaSinkError};

/// How long a full producer queue is waited on before the enqueue is tried again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

pub struct KafkaSink {
    /// Replaced when librdkafka reports a fatal error (an idempotent producer fenced
    /// after a broker outage cannot be used again).
    producer: RwLock<FutureProducer>,
    client_config: ClientConfig,
    topic: RouteTemplate,
    dead_letter_topic: RouteTemplate,
    mode: EnvelopeMode,
    /// The brokers answer (metadata probe, delivery reports).
    reachable: Arc<AtomicBool>,
    /// The brokers refuse our messages for a configuration reason (unknown topic, ACLs).
    refusing: AtomicBool,
    /// A delivery failed on the producer's idempotence state; the producer must be replaced.
    fenced: AtomicBool,
}

/// How a broker error bears on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorClass {
    TooLarge,
    Configuration,
    Transient,
}

impl KafkaSink {
    /// The sink on a connected broker whose update topics are provisioned.
    pub fn new(broker: &KafkaBroker, mode: EnvelopeMode) -> KafkaSink {
        let config = broker.config();
        KafkaSink {
            producer: RwLock::new(broker.producer().clone()),
            client_config: broker.producer_config(),
            topic: RouteTemplate::parse(&config.topic).expect("validated template"),
            dead_letter_topic: RouteTemplate::parse(&config.dead_letter_topic)
                .expect("validated template"),
            mode,
            reachable: broker.reachability(),
            refusing: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
        }
    }

    fn producer(&self) -> FutureProducer {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces the producer if librdkafka declared it unusable, or the broker refused
    /// its idempotence state (fenced, unknown producer id) so it cannot produce again.
    fn renew_if_fatal(&self, used: &FutureProducer) {
        let fenced = self.fenced.swap(false, Ordering::Relaxed);
        let (code, reason) = match used.client().fatal_error() {
            Some((code, reason)) => (code, reason),
            None if fenced => (
                RDKafkaErrorCode::ProducerFenced,
                "fenced by the broker".to_owned(),
            ),
            None => return,
        };
        let mut current = self.producer.write().expect("producer lock");
        if current.client().fatal_error().is_none() && !fenced {
            return; // another batch already replaced it
        }
        match self.client_config.create() {
            Ok(fresh) => {
                *current = fresh;
                tracing::warn!(%code, %reason, "the Kafka producer hit a fatal error; replaced it");
            }
            Err(e) => tracing::error!(error = %e, "could not replace the failed Kafka producer"),
        }
    }

    /// Enqueues one record, waiting while the local queue is full.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        topic: &str,
        key: &str,
        body: &[u8],
        headers: OwnedHeaders,
    ) -> Result<DeliveryFuture, KafkaError> {
        let mut record = FutureRecord::to(topic)
            .key(key)
            .payload(body)
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Produces one record and awaits its delivery report.
    async fn send(
        &self,
        topic: &str,
        key: &str,
        body: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let producer = self.producer();
        let delivery = self.enqueue(&producer, topic, key, body, headers).await?;
        let delivered = report(delivery.await);
        if delivered.is_err() {
            self.renew_if_fatal(&producer);
        }
        delivered
    }

    fn body(&self, envelope: &Envelope, attrs: &Attributes) -> (OwnedHeaders, Bytes) {
        match self.mode {
            EnvelopeMode::Binary => (binary_headers(attrs, None), envelope.payload.clone()),
            EnvelopeMode::Structured => (
                OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some(cloudevent::STRUCTURED_CONTENT_TYPE),
                }),
                Bytes::from(attrs.structured_json(&envelope.payload, None)),
            ),
        }
    }

    async fn settle(
        &self,
        envelope: &Envelope,
        attrs: Attributes,
        enqueued: Result<DeliveryFuture, KafkaError>,
    ) -> Outcome {
        let delivered = match enqueued {
            Ok(delivery) => report(delivery.await),
            Err(e) => Err(e),
        };
        let error = match delivered {
            Ok(()) => {
                self.reachable.store(true, Ordering::Relaxed);
                self.refusing.store(false, Ordering::Relaxed);
                return Outcome::Delivered;
            }
            Err(e) => e,
        };
        match classify(&error) {
            ErrorClass::TooLarge => {
                let reason = format!("too large for the broker: {error}");
                let topic = self.dead_letter_topic.render(envelope);
                self.send_dead_letter(
                    &topic,
                    &envelope.partition_key(),
                    &attrs,
                    &envelope.payload,
                    reason,
                )
                .await
            }
            class => self.failed(&error, class),
        }
    }

    /// Produces to the dead-letter topic; when even that is too large, produces the
    /// attributes and reason without the body, so the loss is recorded, never silent.
    async fn send_dead_letter(
        &self,
        topic: &str,
        key: &str,
        attrs: &Attributes,
        body: &[u8],
        reason: String,
    ) -> Outcome {
        match self
            .send(topic, key, body, binary_headers(attrs, Some(&reason)))
            .await
        {
            Ok(()) => Outcome::DeadLettered { reason },
            Err(e) if classify(&e) == ErrorClass::TooLarge => {
                let reason = format!("{reason}; body of {} bytes omitted", body.len());
                match self
                    .send(topic, key, &[], binary_headers(attrs, Some(&reason)))
                    .await
                {
                    Ok(()) => Outcome::DeadLettered { reason },
                    Err(e) => self.failed(&e, classify(&e)),
                }
            }
            Err(e) => self.failed(&e, classify(&e)),
        }
    }

    fn failed(&self, error: &KafkaError, class: ErrorClass) -> Outcome {
        use RDKafkaErrorCode::*;
        if let Some(
            ProducerFenced | InvalidProducerEpoch | UnknownProducerId | OutOfOrderSequenceNumber,
        ) = error.rdkafka_error_code()
        {
            self.fenced.store(true, Ordering::Relaxed);
        }
        let fatal = class == ErrorClass::Configuration;
        if fatal {
            self.refusing.store(true, Ordering::Relaxed);
        } else {
            self.reachable.store(false, Ordering::Relaxed);
        }
        Outcome::Failed {
            reason: error.to_string(),
            fatal,
        }
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn publish<'a>(&'a self, batch: &'a [Envelope]) -> BoxFuture<'a, Vec<Outcome>> {
        async move {
            let producer = self.producer();
            let mut enqueued = Vec::with_capacity(batch.len());
            for envelope in batch {
                let attrs = Attributes::of(envelope);
                let (headers, body) = self.body(envelope, &attrs);
                let topic = self.topic.render(envelope);
                let key = envelope.partition_key();
                let delivery = self.enqueue(&producer, &topic, &key, &body, headers).await;
                enqueued.push((attrs, delivery));
            }
            let settled = batch
                .iter()
                .zip(enqueued)
                .map(|(e, (attrs, d))| self.settle(e, attrs, d));
            let outcomes = join_all(settled).await;
            if outcomes.iter().any(|o| !o.is_safe()) {
                self.renew_if_fatal(&producer);
            }
            outcomes
        }
        .boxed()
    }

    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Outcome> {
        async move {
            let attrs = Attributes::of_dead_letter(letter);
            let topic =
                self.dead_letter_topic
                    .render_with(&letter.bot.name, letter.bot.id, "unknown");
            let reason = letter.reason.clone();
            self.send_dead_letter(&topic, &attrs.id, &attrs, &letter.payload, reason)
                .await
        }
        .boxed()
    }

    fn is_ready(&self) -> bool {
        self.reachable.load(Ordering::Relaxed) && !self.refusing.load(Ordering::Relaxed)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        let producer = self.producer();
        async move {
            // Every confirmed update was already delivered; this only drains stragglers.
            let flushed = tokio::task::spawn_blocking(move || {
                producer.flush(Timeout::After(Duration::from_secs(5)))
            })
            .await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "flushing the Kafka producer on shutdown");
            }
        }
        .boxed()
    }
}

fn report(
    delivery: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> Result<(), KafkaError> {
    match delivery {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _message))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

fn classify(error: &KafkaError) -> ErrorClass {
    use RDKafkaErrorCode::*;
    match error.rdkafka_error_code() {
        Some(MessageSizeTooLarge | InvalidMessageSize | MessageBatchTooLarge | InvalidRecord) => {
            ErrorClass::TooLarge
        }
        Some(
            UnknownTopicOrPartition
            | UnknownTopic
            | UnknownPartition
            | InvalidTopic
            | TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | SaslAuthenticationFailed
            | InvalidRequiredAcks
            | PolicyViolation,
        ) => ErrorClass::Configuration,
        _ => ErrorClass::Transient,
    }
}

/// Contract headers (`ce_*` per the CloudEvents Kafka binding); `error` adds `tgrelay-error`.
fn binary_headers(attrs: &Attributes, error: Option<&str>) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(8);
    for (attr, value) in attrs.pairs() {
        headers = headers.insert(Header {
            key: attr.kafka_header(),
            value: Some(value),
        });
    }
    headers = headers.insert(Header {
        key: "content-type",
        value: Some(cloudevent::DATA_CONTENT_TYPE),
    });
    if let Some(error) = error {
        headers = headers.insert(Header {
            key: "tgrelay-error",
            value: Some(error),
        });
    }
    headers
}
