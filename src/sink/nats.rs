//! `NatsSink`: JetStream publishes, acknowledged by the stream's PubAck.
//!
//! A JetStream publish has two awaits: the first hands the message to the
//! connection, the second is the PubAck that says the stream stored it. Only the
//! second makes an update safe. Every message carries `Nats-Msg-Id: <bot_id>:<update_id>`,
//! so the stream itself drops our retries inside its duplicate window.
//!
//! Errors are sorted: too large for the server or the stream never succeeds for that
//! message (dead-letter route); no stream for the subject is a configuration fault
//! (held, loud); everything else is transient (held, retried).

use std::sync::OnceLock;

use async_nats::header::{HeaderMap, HeaderName, IntoHeaderName, NATS_MESSAGE_ID};
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;
use futures::future::{join_all, BoxFuture};
use futures::FutureExt;

use super::Sink;
use crate::ack::Outcome;
use crate::cloudevent::{self, Attr, Attributes, EnvelopeMode};
use crate::envelope::{DeadLetter, Envelope};
use crate::route::RouteTemplate;

use crate::broker::nats::NatsBroker;
pub use crate::broker::nats::{NatsSinkConfig, NatsSinkError};

pub struct NatsSink {
    client: async_nats::Client,
    js: jetstream::Context,
    subject: RouteTemplate,
    dead_letter_subject: RouteTemplate,
    mode: EnvelopeMode,
}

impl NatsSink {
    /// The sink on a connected broker whose updates' stream is provisioned.
    pub fn new(broker: &NatsBroker, mode: EnvelopeMode) -> NatsSink {
        let config = broker.config();
        NatsSink {
            client: broker.client().clone(),
            js: broker.jetstream().clone(),
            subject: RouteTemplate::parse(&config.subject).expect("validated template"),
            dead_letter_subject: RouteTemplate::parse(&config.dead_letter_subject)
                .expect("validated template"),
            mode,
        }
    }

    /// Publishes one message and awaits its PubAck.
    async fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(), PublishError> {
        self.js
            .publish_with_headers(subject, headers, body)
            .await?
            .await
            .map(|_ack| ())
    }

    /// The subject, headers and body of an envelope in the configured content mode.
    fn message(&self, envelope: &Envelope, attrs: &Attributes) -> (String, HeaderMap, Bytes) {
        let (headers, body) = match self.mode {
            EnvelopeMode::Binary => (binary_headers(attrs, None), envelope.payload.clone()),
            EnvelopeMode::Structured => (
                structured_headers(attrs),
                Bytes::from(attrs.structured_json(&envelope.payload, None)),
            ),
        };
        (self.subject.render(envelope), headers, body)
    }

    /// Awaits the PubAck of a handed-over publish and sorts the result.
    async fn settle(
        &self,
        envelope: &Envelope,
        attrs: Attributes,
        sent: Result<PublishAckFuture, PublishError>,
    ) -> Outcome {
        let acked = match sent {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        };
        match acked {
            Ok(()) => Outcome::Delivered,
            Err(e) if is_too_large(&e) => {
                let reason = format!("too large for the broker: {e}");
                let subject = self.dead_letter_subject.render(envelope);
                self.send_dead_letter(subject, &attrs, envelope.payload.clone(), reason)
                    .await
            }
            Err(e) => failed(&e),
        }
    }

    /// Publishes to the dead-letter route; when even that is too large, publishes the
    /// attributes and reason without the body, so the loss is recorded, never silent.
    async fn send_dead_letter(
        &self,
        subject: String,
        attrs: &Attributes,
        body: Bytes,
        reason: String,
    ) -> Outcome {
        let size = body.len();
        match self
            .send(subject.clone(), binary_headers(attrs, Some(&reason)), body)
            .await
        {
            Ok(()) => Outcome::DeadLettered { reason },
            Err(e) if is_too_large(&e) => {
                let reason = format!("{reason}; body of {size} bytes omitted");
                let headers = binary_headers(attrs, Some(&reason));
                match self.send(subject, headers, Bytes::new()).await {
                    Ok(()) => Outcome::DeadLettered { reason },
                    Err(e) => failed(&e),
                }
            }
            Err(e) => failed(&e),
        }
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &'static str {
        "nats"
    }

    /// Hands every message to the connection in batch order (so one chat's updates
    /// reach the stream in order), then awaits all PubAcks together.
    fn publish<'a>(&'a self, batch: &'a [Envelope]) -> BoxFuture<'a, Vec<Outcome>> {
        async move {
            let mut sent = Vec::with_capacity(batch.len());
            for envelope in batch {
                let attrs = Attributes::of(envelope);
                let (subject, headers, body) = self.message(envelope, &attrs);
                let handed = self.js.publish_with_headers(subject, headers, body).await;
                sent.push((attrs, handed));
            }
            let settled = batch
                .iter()
                .zip(sent)
                .map(|(envelope, (attrs, handed))| self.settle(envelope, attrs, handed));
            join_all(settled).await
        }
        .boxed()
    }

    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Outcome> {
        let attrs = Attributes::of_dead_letter(letter);
        let subject =
            self.dead_letter_subject
                .render_with(&letter.bot.name, letter.bot.id, "unknown");
        async move {
            self.send_dead_letter(
                subject,
                &attrs,
                letter.payload.clone(),
                letter.reason.clone(),
            )
            .await
        }
        .boxed()
    }

    fn is_ready(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            if let Err(e) = self.client.flush().await {
                tracing::warn!(error = %e, "flushing the NATS connection on shutdown");
            }
        }
        .boxed()
    }
}

/// Contract headers for binary mode; `error` adds `tgrelay-error` (dead letters).
fn binary_headers(attrs: &Attributes, error: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (attr, value) in attrs.pairs() {
        headers.insert(header_name(attr), value);
    }
    headers.insert("Content-Type", cloudevent::DATA_CONTENT_TYPE);
    headers.insert(NATS_MESSAGE_ID, attrs.id.as_str());
    if let Some(error) = error {
        // Header values are one line.
        headers.insert("tgrelay-error", error.replace(['\r', '\n'], " ").as_str());
    }
    headers
}

/// The NATS header name of an attribute, parsed once (names are looked up per message).
fn header_name(attr: Attr) -> HeaderName {
    static NAMES: OnceLock<Vec<HeaderName>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        Attr::ALL
            .iter()
            .map(|a| a.nats_header().into_header_name())
            .collect()
    });
    names[attr as usize].clone()
}

fn structured_headers(attrs: &Attributes) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", cloudevent::STRUCTURED_CONTENT_TYPE);
    headers.insert(NATS_MESSAGE_ID, attrs.id.as_str());
    headers
}

fn is_too_large(e: &PublishError) -> bool {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => true,
        PublishErrorKind::Other => std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|js| js.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM),
        _ => false,
    }
}

fn failed(e: &PublishError) -> Outcome {
    let fatal = e.kind() == PublishErrorKind::StreamNotFound;
    let reason = if fatal {
        format!("no JetStream stream captures the subject ({e})")
    } else {
        e.to_string()
    };
    Outcome::Failed { reason, fatal }
}
