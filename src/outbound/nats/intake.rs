//! One bot's calls from its durable consumer: pulled only as far as the executor has
//! room, kept alive while they wait (`+WPI` progress), and given back with a NAK.
//!
//! After an owner ended without giving its calls back (a crash), the calls it held
//! come back only as their ack waits run out, each at its own time, so in no useful
//! order; and calls published after them could overtake them. So when the consumer
//! has calls delivered and not acknowledged at start, every call is held until all
//! of those have come back (or twice the ack wait passed), then handed on in the
//! order they were published.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::super::broker::{Delivery, Taken};
use super::super::call::{Options, Request, METHOD, REPLY_TO, REQUEST_ID};
use super::super::OutboundConfig;
use crate::backoff::Backoff;

/// At most this many calls per pull request.
const BATCH: usize = 64;
/// How long one pull request waits for calls.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How often a held-back start looks whether the older calls are back.
const BARRIER_CHECK: Duration = Duration::from_millis(500);

/// Calls taken and not yet settled, kept alive with progress acks.
#[derive(Default)]
struct Held(Mutex<HashMap<u64, Arc<Acker>>>);

pub struct NatsIntake {
    js: jetstream::Context,
    bot: String,
    stream: String,
    consumer: String,
    route: String,
    ack_wait: Duration,
    max_pending: usize,
    held: Arc<Held>,
}

enum Ended {
    Stopped,
    Failed(String),
}

impl NatsIntake {
    pub(super) fn new(
        js: jetstream::Context,
        config: &OutboundConfig,
        bot: &str,
        consumer: String,
        route: String,
    ) -> NatsIntake {
        NatsIntake {
            js,
            bot: bot.to_owned(),
            stream: config.stream.clone(),
            consumer,
            route,
            ack_wait: config.ack_wait,
            max_pending: config.max_pending,
            held: Arc::default(),
        }
    }

    /// Pulls calls into `tx` until `stop`, reconnecting the consumer when it fails.
    pub async fn run(self, tx: mpsc::Sender<Taken>, stop: CancellationToken) {
        let progress = tokio::spawn(keep_alive(Arc::clone(&self.held), self.ack_wait / 3));
        let mut failures = 0;
        loop {
            let ended = match self.consumer().await {
                Ok(consumer) => self.pull(consumer, &tx, &stop).await,
                Err(e) => Ended::Failed(e),
            };
            match ended {
                Ended::Stopped => break,
                Ended::Failed(error) => {
                    if failures % 10 == 0 {
                        tracing::warn!(bot = %self.bot, consumer = %self.consumer, %error, "pulling outbound calls failed; retrying");
                    }
                    let wait = Backoff::DEFAULT.next_delay(failures.min(6));
                    failures += 1;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        progress.abort();
    }

    async fn consumer(&self) -> Result<PullConsumer, String> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let config = pull::Config {
            durable_name: Some(self.consumer.clone()),
            filter_subject: self.route.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: -1,
            max_ack_pending: (self.max_pending + 2 * BATCH) as i64,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&self.consumer, config)
            .await
            .map_err(|e| e.to_string())
    }

    /// Pulls until stopped or failed; calls still held back then are given back, in order.
    async fn pull(
        &self,
        mut consumer: PullConsumer,
        tx: &mpsc::Sender<Taken>,
        stop: &CancellationToken,
    ) -> Ended {
        let mut barrier = match consumer.info().await {
            Ok(info) if info.num_ack_pending > 0 => Some(Barrier {
                upto: info.delivered.stream_sequence,
                due: info.num_ack_pending,
                back: BTreeSet::new(),
                until: Instant::now() + 2 * self.ack_wait,
                waiting: BTreeMap::new(),
            }),
            Ok(_) => None,
            Err(e) => return Ended::Failed(e.to_string()),
        };
        if let Some(b) = &barrier {
            tracing::info!(bot = %self.bot, due = b.due, upto = b.upto, "calls of a previous owner are due back; every call waits for them");
        }
        let ended = self.pull_held(consumer, tx, stop, &mut barrier).await;
        for taken in barrier.into_iter().flat_map(|b| b.waiting.into_values()) {
            taken.delivery.release().await;
        }
        ended
    }

    async fn pull_held(
        &self,
        consumer: PullConsumer,
        tx: &mpsc::Sender<Taken>,
        stop: &CancellationToken,
        barrier: &mut Option<Barrier>,
    ) -> Ended {
        loop {
            if let Some(b) = barrier.as_mut().filter(|b| b.lifted()) {
                tracing::info!(bot = %self.bot, back = b.back.len(), due = b.due, "handing on the calls held back, in order");
                if !hand_on(b, tx, stop).await {
                    return Ended::Stopped;
                }
                *barrier = None;
            }
            let waiting = barrier.as_ref().map_or(0, |b| b.waiting.len());
            let room = tx
                .capacity()
                .min(self.max_pending.saturating_sub(waiting))
                .min(BATCH);
            if room == 0 {
                tokio::select! {
                    _ = stop.cancelled() => return Ended::Stopped,
                    permit = tx.reserve() => match permit {
                        Ok(permit) => drop(permit),
                        Err(_) => return Ended::Stopped,
                    },
                    _ = tokio::time::sleep(BARRIER_CHECK), if barrier.is_some() => {}
                }
                continue;
            }
            let expires = if barrier.is_some() {
                BARRIER_CHECK
            } else {
                PULL_EXPIRES
            };
            if let Err(ended) = self
                .take_batch(&consumer, room, expires, tx, stop, barrier)
                .await
            {
                return ended;
            }
        }
    }

    /// One pull request of up to `room` calls: each handed on, or held back.
    async fn take_batch(
        &self,
        consumer: &PullConsumer,
        room: usize,
        expires: Duration,
        tx: &mpsc::Sender<Taken>,
        stop: &CancellationToken,
        barrier: &mut Option<Barrier>,
    ) -> Result<(), Ended> {
        let batch = consumer
            .batch()
            .max_messages(room)
            .expires(expires)
            .messages()
            .await;
        let mut batch = batch.map_err(|e| Ended::Failed(e.to_string()))?;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return Err(Ended::Stopped),
                next = batch.next() => next,
            };
            let message = match next {
                None => return Ok(()),
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(Ended::Failed(e.to_string())),
            };
            let Some((seq, taken)) = self.taken(message) else {
                continue;
            };
            match barrier.as_mut() {
                Some(b) => b.hold(seq, taken),
                // The batch asked for no more than the channel had room for.
                None => tx.try_send(taken).map_err(|_| Ended::Stopped)?,
            }
        }
    }

    /// A message as a call; its stream sequence is the broker's id of it.
    fn taken(&self, message: jetstream::Message) -> Option<(u64, Taken)> {
        let info = message.info().ok()?;
        let seq = info.stream_sequence;
        let nanos = u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0);
        let published = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
        let (message, acker) = message.split();
        let header = |name: &str| {
            let headers = message.headers.as_ref()?;
            headers
                .iter()
                .find(|(key, _)| key.to_string().eq_ignore_ascii_case(name))
                .and_then(|(_, values)| values.first())
                .map(|v| v.as_str().to_owned())
        };
        let request = Request {
            method: header(METHOD),
            request_id: header(REQUEST_ID).or_else(|| header("Nats-Msg-Id")),
            reply_to: header(REPLY_TO),
            broker_id: seq.to_string(),
            body: message.payload.clone(),
            published: Some(published),
            options: Options::read(header),
        };
        let acker = Arc::new(acker);
        self.held.0.lock().unwrap().insert(seq, Arc::clone(&acker));
        let delivery = Box::new(NatsDelivery {
            seq,
            acker,
            held: Arc::clone(&self.held),
        });
        Some((seq, Taken { request, delivery }))
    }
}

/// Every call taken, held until the `due` calls a previous owner left unacknowledged
/// (all at or below `upto`) have come back.
struct Barrier {
    upto: u64,
    due: usize,
    back: BTreeSet<u64>,
    until: Instant,
    /// By stream sequence: the order they were published in.
    waiting: BTreeMap<u64, Taken>,
}

impl Barrier {
    fn hold(&mut self, seq: u64, taken: Taken) {
        if seq <= self.upto {
            self.back.insert(seq);
        }
        // The same call delivered again while held: the first delivery settles it.
        self.waiting.entry(seq).or_insert(taken);
    }

    fn lifted(&self) -> bool {
        self.back.len() >= self.due || Instant::now() >= self.until
    }
}

/// Hands the held calls on in order; false when stopped first (the rest stay held).
async fn hand_on(
    barrier: &mut Barrier,
    tx: &mpsc::Sender<Taken>,
    stop: &CancellationToken,
) -> bool {
    while let Some((seq, taken)) = barrier.waiting.pop_first() {
        let permit = tokio::select! {
            _ = stop.cancelled() => None,
            permit = tx.reserve() => permit.ok(),
        };
        let Some(permit) = permit else {
            barrier.waiting.insert(seq, taken);
            return false;
        };
        permit.send(taken);
    }
    true
}

/// Tells the server every `every` that the calls held are still being worked on.
async fn keep_alive(held: Arc<Held>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let ackers: Vec<Arc<Acker>> = held.0.lock().unwrap().values().cloned().collect();
        for acker in ackers {
            let _ = acker.ack_with(AckKind::Progress).await;
        }
    }
}

struct NatsDelivery {
    seq: u64,
    acker: Arc<Acker>,
    held: Arc<Held>,
}

impl Delivery for NatsDelivery {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), String>> {
        self.held.0.lock().unwrap().remove(&self.seq);
        async move { self.acker.ack().await.map_err(|e| e.to_string()) }.boxed()
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.held.0.lock().unwrap().remove(&self.seq);
        async move {
            let _ = self.acker.ack_with(AckKind::Nak(None)).await;
        }
        .boxed()
    }
}
