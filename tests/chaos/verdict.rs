//! The verdict on one scenario, from outside the relay: what the broker holds (read
//! back by an independent consumer), when the fake Bot API saw each update confirmed,
//! every Bot API call the relay made, and the relay's memory and CPU from /proc.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use super::harness::{Mode, World, BOT_ID, MAX_CONNECTIONS, POLL_LIMIT, PREFIX, SECRET, STREAM};
use super::support::private_broker::BrokerKind;
use super::support::{kafka, nats};

/// What every 429 the scenarios inject asks for.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// The relay's shortest backoff is 250 ms (half of 500 ms); a little slack for timers.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// How much the relay's resident memory may grow while the broker is away.
const FLAT_MEMORY_KIB: u64 = 10 * 1024;
/// The relay's CPU while the broker is away, as a share of the outage (a tight retry
/// loop would take a whole core).
const MAX_OUTAGE_CPU_SHARE: f64 = 0.10;
/// A query parameter that marks the scenario's own getUpdates calls (a second poller).
pub const FOREIGN_MARK: &str = "chaos_foreign";

/// Topics with broker-set timestamps, so "stored before confirmed" is the broker's word.
pub async fn create_kafka_topics(brokers: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("an admin client");
    let main = format!("{PREFIX}.main");
    let dead = format!("{PREFIX}.main.deadletter");
    let topics: Vec<NewTopic<'_>> = [(main.as_str(), 3), (dead.as_str(), 1)]
        .into_iter()
        .map(|(name, partitions)| {
            NewTopic::new(name, partitions, TopicReplication::Fixed(1))
                .set("message.timestamp.type", "LogAppendTime")
        })
        .collect();
    let results = admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("create topics");
    for result in results {
        result.unwrap_or_else(|(topic, e)| panic!("creating {topic}: {e}"));
    }
}

/// Counts every publish the broker receives, by `ce-id`, with a core NATS
/// subscription: it sees the copies JetStream then drops as duplicates.
pub struct PublishCounter {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PublishCounter {
    pub async fn start(url: &str) -> PublishCounter {
        let client = async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .subscription_capacity(1 << 16)
            .connect(url)
            .await
            .expect("NATS for the publish counter");
        let mut sub = client
            .subscribe(format!("{PREFIX}.>"))
            .await
            .expect("subscribe");
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let seen = Arc::clone(&counts);
        let task = tokio::spawn(async move {
            let _client = client;
            while let Some(msg) = sub.next().await {
                if let Some(id) = msg.headers.as_ref().and_then(|h| h.get("ce-id")) {
                    *seen.lock().unwrap().entry(id.to_string()).or_insert(0) += 1;
                }
            }
        });
        PublishCounter { counts, task }
    }

    pub fn publishes(&self) -> usize {
        self.counts.lock().unwrap().values().sum()
    }
}

impl Drop for PublishCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Memory and CPU while the broker was away.
#[derive(Debug, Clone)]
pub struct Outage {
    pub what: &'static str,
    pub length: Duration,
    pub rss_start_kib: u64,
    pub rss_peak_kib: u64,
    pub cpu: Duration,
}

/// One update as the broker holds it: body and (first) storage time in ms since 1970.
struct Held {
    copies: usize,
    payload: Vec<u8>,
    stored_ms: u128,
}

pub struct Verdict {
    pub scenario: String,
    pub fed: usize,
    pub all_confirmed: bool,
    pub lost: Vec<i64>,
    pub altered: Vec<i64>,
    pub early: Vec<i64>,
    pub timestamps: &'static str,
    pub duplicates: usize,
    pub duplicate_bound: Option<usize>,
    pub crashes: usize,
    pub clean_restarts: usize,
    pub retry_after_violations: Vec<String>,
    pub fast_retries: Vec<String>,
    pub calls: usize,
    pub call_bound: usize,
    pub outage: Option<Outage>,
    pub secrets_in_log: bool,
    pub bad_exits: Vec<String>,
}

/// How many duplicates a scenario allows.
pub enum Duplicates {
    /// One batch (polling) or max_connections (webhook) per crash.
    PerCrash,
    /// None: only clean restarts happened.
    NoneAllowed,
    /// Reported, not bounded (the issue sets no bound for outages and faults).
    Reported,
}

pub struct Expectations {
    pub duplicates: Duplicates,
    /// Faults injected into Bot API calls, for the bound on calls.
    pub faults: usize,
}

impl Verdict {
    pub async fn judge(
        scenario: &str,
        world: &World,
        all_confirmed: bool,
        counter: Option<&PublishCounter>,
        outage: Option<Outage>,
        expect: Expectations,
    ) -> Verdict {
        let (held, timestamps) = read_broker(world).await;
        let confirmed = world.api.confirmation_times(&world.token);
        let (mut lost, mut altered, mut early) = (Vec::new(), Vec::new(), Vec::new());
        for (i, raw) in world.updates.iter().enumerate() {
            let id = i64::try_from(i + 1).unwrap();
            let Some(h) = held.get(&format!("{BOT_ID}:{id}")) else {
                lost.push(id);
                continue;
            };
            if &h.payload != raw {
                altered.push(id);
            }
            let confirmed_ms = confirmed.get(&id).map(|t| millis(*t));
            if confirmed_ms.is_some_and(|c| h.stored_ms > c) {
                early.push(id);
            }
        }
        let copies: usize = held.values().map(|h| h.copies).sum();
        let duplicates = counter.map_or(copies, |c| c.publishes().max(copies)) - held.len();
        let unit = match world.mode {
            Mode::Polling => POLL_LIMIT,
            Mode::Webhook => MAX_CONNECTIONS,
        };
        let duplicate_bound = match expect.duplicates {
            Duplicates::PerCrash => Some(world.crashes * unit),
            Duplicates::NoneAllowed => Some(0),
            Duplicates::Reported => None,
        };
        let (retry_after_violations, fast_retries, calls) = check_calls(world);
        let elapsed = world.started.elapsed().as_secs() as usize;
        // Long polls and getWebhookInfo each cost about one call a second when idle;
        // every push, fault and start may add one or two. A tight loop is far above.
        let call_bound =
            3 * elapsed + 2 * world.pushes + 3 * expect.faults + 10 * world.spawned_at.len();
        let log = std::fs::read_to_string(world.log_path()).unwrap_or_default();
        let token_secret = world.token.split_once(':').map_or("", |(_, s)| s);
        Verdict {
            scenario: scenario.to_owned(),
            fed: world.updates.len(),
            all_confirmed,
            lost,
            altered,
            early,
            timestamps,
            duplicates,
            duplicate_bound,
            crashes: world.crashes,
            clean_restarts: world.clean_restarts,
            retry_after_violations,
            fast_retries,
            calls,
            call_bound,
            outage,
            secrets_in_log: log.contains(token_secret) || log.contains(SECRET),
            bad_exits: world.bad_exits.clone(),
        }
    }

    /// Every rule broken, in words; empty when the scenario passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rule = |broken: bool, text: String| {
            if broken {
                out.push(text);
            }
        };
        rule(
            !self.all_confirmed,
            "not every update was confirmed in time".into(),
        );
        rule(
            !self.lost.is_empty(),
            format!("lost: {}", sample(&self.lost)),
        );
        rule(
            !self.altered.is_empty(),
            format!("altered: {}", sample(&self.altered)),
        );
        rule(
            !self.early.is_empty(),
            format!(
                "confirmed before the broker stored them: {}",
                sample(&self.early)
            ),
        );
        if let Some(bound) = self.duplicate_bound {
            rule(
                self.duplicates > bound,
                format!("{} duplicates, more than {bound}", self.duplicates),
            );
        }
        rule(
            !self.retry_after_violations.is_empty(),
            format!(
                "retry_after not honoured: {:?}",
                self.retry_after_violations
            ),
        );
        rule(
            !self.fast_retries.is_empty(),
            format!("retried without backoff: {:?}", self.fast_retries),
        );
        rule(
            self.calls > self.call_bound,
            format!(
                "{} Bot API calls, more than {}",
                self.calls, self.call_bound
            ),
        );
        if let Some(o) = &self.outage {
            rule(
                o.rss_peak_kib > o.rss_start_kib + FLAT_MEMORY_KIB,
                format!(
                    "memory grew from {} to {} KiB during the outage",
                    o.rss_start_kib, o.rss_peak_kib
                ),
            );
            rule(
                o.cpu.as_secs_f64() > MAX_OUTAGE_CPU_SHARE * o.length.as_secs_f64(),
                format!("{:?} of CPU during a {:?} outage", o.cpu, o.length),
            );
        }
        rule(
            self.secrets_in_log,
            "the token or the webhook secret is in the log".into(),
        );
        rule(
            !self.bad_exits.is_empty(),
            format!("SIGTERM exits: {:?}", self.bad_exits),
        );
        out
    }

    /// One markdown table row (see `HEADER`).
    pub fn row(&self) -> String {
        let bound = self
            .duplicate_bound
            .map_or("—".to_owned(), |b| format!("≤ {b}"));
        let outage = self.outage.as_ref().map_or("—".to_owned(), |o| {
            format!(
                "{} {} s: RSS {:.1} → peak {:.1} MiB, CPU {:.2} s",
                o.what,
                o.length.as_secs(),
                o.rss_start_kib as f64 / 1024.0,
                o.rss_peak_kib as f64 / 1024.0,
                o.cpu.as_secs_f64()
            )
        });
        let failures = self.failures();
        let verdict = if failures.is_empty() {
            "pass".to_owned()
        } else {
            format!("**FAIL**: {}", failures.join("; "))
        };
        format!(
            "| {} | {} | {} | {} | {} ({}) | {} ({bound}) | {} / {} | {} | {} | {} (≤ {}) | {outage} | {verdict} |",
            self.scenario,
            self.fed,
            self.lost.len(),
            self.altered.len(),
            self.early.len(),
            self.timestamps,
            self.duplicates,
            self.crashes,
            self.clean_restarts,
            self.retry_after_violations.len(),
            self.fast_retries.len(),
            self.calls,
            self.call_bound,
        )
    }
}

pub const HEADER: &str = "| scenario | updates fed | lost | altered | confirmed before stored (clock) | duplicates (allowed) | crashes / clean restarts | retry_after violations | retries without backoff | Bot API calls (bound) | broker outage | verdict |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|";

fn sample(ids: &[i64]) -> String {
    let shown: Vec<String> = ids.iter().take(10).map(i64::to_string).collect();
    format!("{} ({} in all)", shown.join(", "), ids.len())
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

/// Every copy the broker holds, by `ce-id`, and which clock stamped them.
async fn read_broker(world: &World) -> (HashMap<String, Held>, &'static str) {
    let mut held: HashMap<String, Held> = HashMap::new();
    let mut add = |id: String, payload: Vec<u8>, stored_ms: u128| {
        held.entry(id)
            .and_modify(|h| {
                h.copies += 1;
                h.stored_ms = h.stored_ms.min(stored_ms);
            })
            .or_insert(Held {
                copies: 1,
                payload,
                stored_ms,
            });
    };
    match world.broker.kind {
        BrokerKind::Nats => {
            let client = async_nats::connect(world.broker.address())
                .await
                .expect("NATS for the reader");
            let js = async_nats::jetstream::new(client);
            for m in nats::read_all(&js, STREAM).await {
                add(
                    m.headers["ce-id"].clone(),
                    m.payload.to_vec(),
                    millis(m.stored_at),
                );
            }
            (held, "server time")
        }
        BrokerKind::Kafka => {
            let address = world.broker.address();
            let records =
                tokio::task::spawn_blocking(move || kafka::read_prefix_at(&address, PREFIX))
                    .await
                    .expect("the reader");
            let mut clock = "log append time";
            for r in records {
                if !r.log_append_time {
                    clock = "producer time";
                }
                let ms = u128::try_from(r.timestamp_ms.unwrap_or(0)).unwrap_or(0);
                add(r.headers["ce_id"].clone(), r.payload, ms);
            }
            (held, clock)
        }
    }
}

/// retry_after and backoff, checked between consecutive calls of one method by one
/// relay process; returns violations of each and the number of relay calls.
fn check_calls(world: &World) -> (Vec<String>, Vec<String>, usize) {
    let calls: Vec<_> = world
        .api
        .calls(&world.token)
        .into_iter()
        .filter(|c| c.params.get(FOREIGN_MARK).is_none())
        .collect();
    let epoch = |at: std::time::Instant| world.spawned_at.iter().filter(|s| **s <= at).count();
    let (mut retry_after, mut fast) = (Vec::new(), Vec::new());
    for (i, call) in calls.iter().enumerate() {
        if call.status == 200 {
            continue;
        }
        let method = call.method.to_ascii_lowercase();
        // The final confirming getUpdates at shutdown (timeout 0) follows at once, rightly.
        let next = calls[i + 1..]
            .iter()
            .find(|c| c.method.to_ascii_lowercase() == method && !is_shutdown_confirm(c));
        let Some(next) = next.filter(|n| epoch(n.at) == epoch(call.at)) else {
            continue;
        };
        let gap = next.at.duration_since(call.at);
        let at = call.at.duration_since(world.started).as_secs_f64();
        if call.status == 429 && gap < RETRY_AFTER {
            retry_after.push(format!("{method} at {at:.1} s: next after {gap:?}"));
        } else if gap < MIN_BACKOFF {
            fast.push(format!(
                "{method} {} at {at:.1} s: next after {gap:?}",
                call.status
            ));
        }
    }
    (retry_after, fast, calls.len())
}

fn is_shutdown_confirm(call: &super::support::fake_bot_api::Call) -> bool {
    call.params
        .get("timeout")
        .is_some_and(|t| t.as_i64() == Some(0) || t.as_str() == Some("0"))
        && call
            .params
            .get("limit")
            .is_some_and(|l| l.as_i64() == Some(1) || l.as_str() == Some("1"))
}
