//! The gateway on NATS JetStream: the calls' work-queue stream and each bot's durable
//! consumer, results published where they are asked for, and the limiter's memory in
//! a stream of its own keeping one message per bot (`<stream>_LIMITS`, subject
//! `<stream>_LIMITS.<bot>`; a plain stream rather than a key-value bucket, so that
//! the NATS server Debian ships, 2.9, does as well).
//!
//! Each call's request id is kept in a key-value bucket, `<stream>_REQUESTS` (see
//! `journal`).
//!
//! Calls wait in the stream (work-queue retention: a call leaves it once acked) and
//! are pulled through one durable consumer per bot, which every replica shares and
//! only the bot's owner pulls from. A result goes to a subject a stream captures with
//! a JetStream publish (its PubAck awaited), else with a core publish flushed to the
//! server (a service waiting on its own inbox). Each result carries
//! `Nats-Msg-Id: tgrelay-result:<ce-id>`, so a result published again is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::context::{GetStreamByNameErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::time::Instant;

use super::broker::{LimitsStore, PublishError, Results};
use super::call::Reply;
use super::OutboundConfig;
use crate::broker::nats::{NatsBroker, NatsSinkError};

mod intake;
mod journal;

pub use intake::NatsIntake;
pub use journal::{bucket as journal_bucket, NatsJournal};

/// How long what a route lookup found is trusted.
const ROUTE_TTL: Duration = Duration::from_secs(60);
const ROUTE_CACHE: usize = 10_000;

/// The gateway's NATS side, shared by every bot.
pub struct NatsOutbound {
    js: jetstream::Context,
    limits: stream::Stream,
    journal: kv::Store,
    routes: Arc<RouteLookup>,
    config: OutboundConfig,
}

impl NatsOutbound {
    /// Checks (or creates) the calls' stream, the limits stream and the journal bucket.
    pub async fn connect(
        broker: &NatsBroker,
        config: &OutboundConfig,
    ) -> Result<NatsOutbound, NatsSinkError> {
        ensure_stream(broker, config).await?;
        let limits = limits_stream(broker, &config.stream).await?;
        let journal = broker
            .key_value(kv::Config {
                bucket: journal::bucket(&config.stream),
                description: "tgrelay: the gateway's request journal".into(),
                history: 1,
                max_age: config.dedup_window,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let js = broker.jetstream();
        Ok(NatsOutbound {
            js: js.clone(),
            limits,
            journal,
            routes: Arc::new(RouteLookup {
                js: js.clone(),
                known: Mutex::new(HashMap::new()),
            }),
            config: config.clone(),
        })
    }

    /// Where results go, for any bot.
    pub fn results(&self) -> Arc<dyn Results> {
        Arc::new(NatsResults {
            js: self.js.clone(),
            routes: Arc::clone(&self.routes),
        })
    }

    /// Where bot `name` keeps its limiter's memory.
    pub fn limits(&self, name: &str) -> Arc<dyn LimitsStore> {
        Arc::new(NatsLimits {
            js: self.js.clone(),
            stream: self.limits.clone(),
            subject: format!("{}.{name}", self.limits.cached_info().config.name),
        })
    }

    /// Bot `id`'s request journal.
    pub fn journal(&self, id: u64) -> Arc<NatsJournal> {
        Arc::new(NatsJournal {
            store: self.journal.clone(),
            prefix: format!("{id}."),
        })
    }

    /// The intake of one bot's calls: its durable consumer `consumer`, on `route`.
    pub fn intake(&self, bot: &str, consumer: String, route: String) -> NatsIntake {
        NatsIntake::new(self.js.clone(), &self.config, bot, consumer, route)
    }
}

/// The calls' work-queue stream, created when missing and `create_stream` is set.
async fn ensure_stream(broker: &NatsBroker, config: &OutboundConfig) -> Result<(), NatsSinkError> {
    let spec = stream::Config {
        name: config.stream.clone(),
        subjects: config.stream_subjects.clone(),
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: config.duplicate_window,
        max_age: config.max_age,
        ..Default::default()
    };
    let hint = "create it, or set outbound.create_stream = true";
    broker
        .stream(spec, config.create_stream, hint)
        .await
        .map(|_| ())
}

/// The stream of the bots' limiter memories: the last message of each bot's subject.
async fn limits_stream(broker: &NatsBroker, calls: &str) -> Result<stream::Stream, NatsSinkError> {
    let name = format!("{calls}_LIMITS");
    let spec = stream::Config {
        subjects: vec![format!("{name}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        name: name.clone(),
        ..Default::default()
    };
    broker.stream(spec, true, "").await
}

/// Which subjects a stream captures, looked up once a minute per subject.
struct RouteLookup {
    js: jetstream::Context,
    known: Mutex<HashMap<String, (bool, Instant)>>,
}

impl RouteLookup {
    async fn is_captured(&self, route: &str) -> Result<bool, PublishError> {
        let now = Instant::now();
        if let Some((captured, at)) = self.known.lock().unwrap().get(route) {
            if now.duration_since(*at) < ROUTE_TTL {
                return Ok(*captured);
            }
        }
        let captured = match self.js.stream_by_subject(route).await {
            Ok(_) => true,
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => false,
            Err(e) if e.kind() == GetStreamByNameErrorKind::InvalidSubject => {
                return Err(PublishError::Refused(e.to_string()))
            }
            Err(e) => return Err(PublishError::Transient(format!("looking up {route}: {e}"))),
        };
        let mut known = self.known.lock().unwrap();
        if known.len() >= ROUTE_CACHE {
            known.clear();
        }
        known.insert(route.to_owned(), (captured, now));
        Ok(captured)
    }
}

struct NatsResults {
    js: jetstream::Context,
    routes: Arc<RouteLookup>,
}

impl Results for NatsResults {
    fn publish<'a>(&'a self, reply: &'a Reply) -> BoxFuture<'a, Result<(), PublishError>> {
        async move {
            let mut headers = HeaderMap::new();
            for (name, value) in &reply.headers {
                headers.insert(*name, value.as_str());
            }
            let ce_id = reply
                .headers
                .iter()
                .find(|(n, _)| *n == "ce-id")
                .map(|(_, v)| v.as_str());
            headers.insert(
                NATS_MESSAGE_ID,
                format!("tgrelay-result:{}", ce_id.unwrap_or_default()).as_str(),
            );
            let route = reply.route.clone();
            let body = reply.body.clone();
            if self.routes.is_captured(&route).await? {
                return publish_acked(&self.js, route, headers, body).await;
            }
            let client = self.js.client();
            let transient = |e: &dyn std::fmt::Display| PublishError::Transient(e.to_string());
            client
                .publish_with_headers(route, headers, body)
                .await
                .map_err(|e| transient(&e))?;
            client.flush().await.map_err(|e| transient(&e))
        }
        .boxed()
    }
}

async fn publish_acked(
    js: &jetstream::Context,
    route: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(), PublishError> {
    let acked = match js.publish_with_headers(route, headers, body).await {
        Ok(ack) => ack.await.map(|_| ()),
        Err(e) => Err(e),
    };
    acked.map_err(|e| match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => PublishError::Refused(e.to_string()),
        _ => PublishError::Transient(e.to_string()),
    })
}

struct NatsLimits {
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
}

impl LimitsStore for NatsLimits {
    fn load(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        async move {
            match self
                .stream
                .get_last_raw_message_by_subject(&self.subject)
                .await
            {
                Ok(message) => Ok(Some(message.payload.to_vec())),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        }
        .boxed()
    }

    fn save(&self, snapshot: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let sent = self
                .js
                .publish(self.subject.clone(), Bytes::from(snapshot))
                .await;
            match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        .boxed()
    }
}
