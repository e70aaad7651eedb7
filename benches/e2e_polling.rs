//! End to end: how fast the release relay moves polled updates into NATS JetStream and
//! Kafka, next to the things it sits between. Run: `cargo bench --bench e2e_polling`.
//!
//! One run measures the same N generated updates (`TEST_TGRELAY_BENCH_UPDATES`, default
//! 50 000, every kind, ~800 bytes each): (1) the fake Bot API alone, drained by a
//! plain getUpdates loop (limit 100, timeout 0), to show the fake is not the
//! bottleneck; then, for each broker of `TEST_TGRELAY_BENCH_SINKS` (default
//! `nats,kafka,kafka-per-bot`, the last Kafka with one topic per bot instead of one
//! per kind): (2) the sink alone (`NatsSink`, `KafkaSink`), batches of 100 with
//! four in flight: what the broker takes on this machine; (2b) the sink alone once
//! more, one batch at a time: the ceiling of any poller that confirms only acked
//! updates, whatever its own cost; (3) the `tgrelay` binary
//! polling the fake into fresh subjects/topics, timed from the moment the updates were
//! queued (or the first getUpdates, if later) until the fake saw them all confirmed,
//! with its CPU time per update (utime+stime from /proc, and this process's for (2) to
//! compare) and its resident memory idle and at peak under load; (4) the relay through
//! a broker outage (`support/outage.rs`): its resident memory while a broker of the
//! bench's own is away (`TEST_TGRELAY_BENCH_OUTAGE_SECS`, default 10 s) and updates
//! keep coming, and that all are confirmed once it is back. Read "relay / sink alone"
//! as the share of the broker's capacity one polling bot reaches: the getUpdates offset
//! is both cursor and confirmation, so a bot cannot fetch batch k+1 before batch k is
//! acked, and each 100 updates cost a getUpdates round trip plus a publish round trip,
//! where (2) overlaps four batches. The fake runs in this process and shares the cores
//! with the broker and the relay, so figures vary by run; they are measurements only,
//! nothing here asserts a speed.
//!
//! Output: Markdown between `<!-- tgrelay-bench:e2e_polling begin/end -->` markers,
//! then `key=value` figures between `<!-- tgrelay-bench:figures begin/end -->` for
//! scripts/bench. `benches/e2e_webhook.rs` includes this file as a module to share the
//! relay-process, CPU and naming helpers, so those are `pub`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use serde::Deserialize;
use tgrelay::ack::Outcome;
use tgrelay::broker::kafka::{topics, KafkaBroker};
use tgrelay::broker::nats::{NatsBroker, NatsSinkConfig};
use tgrelay::broker::BotRoutes;
use tgrelay::cloudevent::EnvelopeMode;
use tgrelay::envelope::{BotIdentity, Envelope};
use tgrelay::sink::kafka::{KafkaSink, KafkaSinkConfig};
use tgrelay::sink::nats::NatsSink;
use tgrelay::sink::Sink;

#[allow(dead_code)]
#[path = "../tests/support/corpus.rs"]
pub mod corpus;
#[allow(dead_code)]
#[path = "../tests/support/fake_bot_api.rs"]
pub mod fake_bot_api;
#[path = "support/outage.rs"]
mod outage;
#[allow(dead_code)]
#[path = "../tests/support/private_broker.rs"]
mod private_broker;

use corpus::Corpus;
use fake_bot_api::FakeBotApi;
use outage::OutageFigures;

pub const BOT_ID: u64 = 424242;
pub const TOKEN: &str = "424242:AAE-bench_token-424242";
const BATCH: usize = 100;
/// Batches the sink-alone measurement keeps in flight at once.
const IN_FLIGHT: usize = 4;
/// The sink alone once more, one batch at a time: the most any poller can reach that
/// confirms only acked updates (it cannot fetch batch k+1 before batch k is acked).
const SERIAL: usize = 1;
/// How long the relay runs idle before its resident memory is sampled.
const IDLE: Duration = Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let n = update_count()?;
    let brokers = selected_brokers()?;
    let outage = outage::outage_duration()?;
    let corpus = Corpus::load();
    let updates = corpus.mixed(1, n, 7);
    let kinds: Vec<String> = corpus
        .kinds()
        .into_iter()
        .chain(["story_reaction".to_owned()])
        .collect();
    print_machine();
    let fake = fake_alone(updates.clone(), &kinds).await?;
    let mut results = Vec::new();
    for broker in brokers {
        let mut figures = measure(broker, &updates, &kinds).await?;
        // The topic layout changes nothing about an outage: one Kafka outage is enough.
        if let Some(outage) = outage.filter(|_| broker != Broker::KafkaPerBot) {
            let updates = corpus.mixed(1, outage::BEFORE + outage::DURING, 13);
            let through = outage::relay_through_outage(broker, updates, &kinds, outage).await?;
            figures.outage = Some(through);
        }
        results.push((broker, figures));
    }
    print_markers("e2e_polling", || {
        print_input(&updates);
        print_fake(n, fake);
        for (broker, figures) in &results {
            print_table(*broker, n, figures);
        }
    });
    print_markers("figures", || {
        for (broker, figures) in &results {
            print_figures(*broker, n, figures);
        }
    });
    Ok(())
}

/// Everything measured against one broker.
struct BrokerFigures {
    sink: SinkFigures,
    /// The sink alone, one batch at a time (`SERIAL`).
    serial: SinkFigures,
    relay: RelayFigures,
    outage: Option<OutageFigures>,
}

/// The sink alone, then the relay, each on names of its own; cleans up either way.
async fn measure(
    broker: Broker,
    updates: &[Vec<u8>],
    kinds: &[String],
) -> anyhow::Result<BrokerFigures> {
    // Fresh names for each part: a stream that had seen these ids would drop them as
    // duplicates, faster than it stores them.
    let sink_names = Names::unique("sink");
    let serial_names = Names::unique("serial");
    let relay_names = Names::unique("relay");
    let result = async {
        let sink = sink_alone(broker, updates, kinds, &sink_names, IN_FLIGHT).await?;
        let serial = sink_alone(broker, updates, kinds, &serial_names, SERIAL).await?;
        let relay = relay_end_to_end(broker, updates.to_vec(), kinds, &relay_names).await?;
        Ok(BrokerFigures {
            sink,
            serial,
            relay,
            outage: None,
        })
    }
    .await;
    for names in [&sink_names, &serial_names, &relay_names] {
        broker.clean_up(names, kinds).await;
    }
    result
}

fn update_count() -> anyhow::Result<usize> {
    env_count("TEST_TGRELAY_BENCH_UPDATES", 50_000)
}

/// A positive count from the environment, or `default` when unset.
pub fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    let Ok(text) = std::env::var(name) else {
        return Ok(default);
    };
    let n: usize = text.parse().with_context(|| format!("{name}={text:?}"))?;
    ensure!(n > 0, "{name} must be at least 1");
    Ok(n)
}

/// `TEST_TGRELAY_BENCH_SINKS`: comma-separated `nats`, `kafka`, `kafka-per-bot`.
fn selected_brokers() -> anyhow::Result<Vec<Broker>> {
    let text = std::env::var("TEST_TGRELAY_BENCH_SINKS")
        .unwrap_or_else(|_| "nats,kafka,kafka-per-bot".to_owned());
    let brokers = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Broker::parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(!brokers.is_empty(), "TEST_TGRELAY_BENCH_SINKS is empty");
    Ok(brokers)
}

pub fn nats_url() -> String {
    std::env::var("TEST_TGRELAY_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn kafka_brokers() -> String {
    std::env::var("TEST_TGRELAY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A stream and subject (or topic) prefix no other run uses.
pub struct Names {
    pub stream: String,
    pub prefix: String,
}

impl Names {
    pub fn unique(what: &str) -> Names {
        let tag = format!("{}_{:08x}", std::process::id(), rand::random::<u32>());
        Names {
            stream: format!("TGRELAY_BENCH_{}_{tag}", what.to_uppercase()),
            prefix: format!("bench_{what}_{tag}"),
        }
    }
}

/// `Machine: …`, outside the markers (scripts/bench describes the machine itself).
pub fn print_machine() {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                Some(
                    l.strip_prefix("model name")?
                        .trim_start_matches([' ', '\t', ':'])
                        .to_owned(),
                )
            })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("Machine: {cpus} CPUs (nproc), {model}\n");
}

// ---- The brokers ----

/// A broker the relay can publish to, with what the bench needs to know about it.
/// `KafkaPerBot` is Kafka with one topic per bot (`telegram.{bot}`) instead of the
/// default topic per kind: every kind of the mixed input lands in its own topic by
/// default, so a batch of 100 spreads over ~80 partitions, and librdkafka's (and the
/// broker's) cost per partition batch dominates. The two show what the layout costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Nats,
    Kafka,
    KafkaPerBot,
}

impl Broker {
    fn parse(name: &str) -> anyhow::Result<Broker> {
        match name {
            "nats" => Ok(Broker::Nats),
            "kafka" => Ok(Broker::Kafka),
            "kafka-per-bot" => Ok(Broker::KafkaPerBot),
            other => bail!(
                "TEST_TGRELAY_BENCH_SINKS: unknown sink {other:?} (nats, kafka, kafka-per-bot)"
            ),
        }
    }

    fn key(self) -> &'static str {
        match self {
            Broker::Nats => "nats",
            Broker::Kafka => "kafka",
            Broker::KafkaPerBot => "kafka_per_bot",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Broker::Nats => "NATS",
            Broker::Kafka => "Kafka",
            Broker::KafkaPerBot => "Kafka, one topic per bot",
        }
    }

    fn sink_type(self) -> &'static str {
        match self {
            Broker::Nats => "NatsSink",
            Broker::Kafka | Broker::KafkaPerBot => "KafkaSink",
        }
    }

    async fn connect(self, names: &Names, kinds: &[String]) -> anyhow::Result<Box<dyn Sink>> {
        let mode = EnvelopeMode::Binary;
        Ok(match self {
            Broker::Nats => Box::new(nats_sink(&nats_config(names), mode).await?),
            Broker::Kafka | Broker::KafkaPerBot => {
                let routes = bot_routes(kinds);
                let config = kafka_config(names, self.kafka_topic());
                let broker = KafkaBroker::connect(&config).await?;
                broker.ensure_update_topics(&routes).await?;
                Box::new(KafkaSink::new(&broker, mode))
            }
        })
    }

    /// The shared broker: `TEST_TGRELAY_NATS_URL` or `TEST_TGRELAY_KAFKA_BROKERS`.
    fn shared_address(self) -> String {
        match self {
            Broker::Nats => nats_url(),
            Broker::Kafka | Broker::KafkaPerBot => kafka_brokers(),
        }
    }

    /// The topic template after the run's prefix.
    fn kafka_topic(self) -> &'static str {
        match self {
            Broker::KafkaPerBot => "{bot}",
            Broker::Nats | Broker::Kafka => "{bot}.{kind}",
        }
    }

    /// The `[sink]` tables of a relay configuration publishing to `names` at `address`.
    fn relay_toml(self, address: &str, names: &Names) -> String {
        match self {
            Broker::Nats => nats_toml(address, names),
            Broker::Kafka | Broker::KafkaPerBot => format!(
                "[sink]\nkind = \"kafka\"\n[sink.kafka]\nbrokers = \"{address}\"\n\
                 topic = \"{prefix}.{topic}\"\n\
                 dead_letter_topic = \"{prefix}.{{bot}}.deadletter\"\ncreate_topics = true\n\
                 replication_factor = 1\npartitions = 3\n",
                prefix = names.prefix,
                topic = self.kafka_topic(),
            ),
        }
    }

    /// Deletes the stream or topics a run created; best effort.
    async fn clean_up(self, names: &Names, kinds: &[String]) {
        match self {
            Broker::Nats => delete_stream(&names.stream).await,
            Broker::Kafka | Broker::KafkaPerBot => {
                delete_topics(&kafka_config(names, self.kafka_topic()), kinds).await
            }
        }
    }
}

pub fn nats_config(names: &Names) -> NatsSinkConfig {
    NatsSinkConfig {
        url: nats_url(),
        subject: format!("{}.{{bot}}.{{kind}}", names.prefix),
        dead_letter_subject: format!("{}.{{bot}}.deadletter", names.prefix),
        stream: names.stream.clone(),
        stream_subjects: vec![format!("{}.>", names.prefix)],
        create_stream: true,
        ..NatsSinkConfig::default()
    }
}

/// The `[sink]` tables of a relay configuration publishing to the NATS stream `names`.
pub fn nats_sink_toml(names: &Names) -> String {
    nats_toml(&nats_url(), names)
}

fn nats_toml(url: &str, names: &Names) -> String {
    format!(
        "[sink]\nkind = \"nats\"\n[sink.nats]\nurl = \"{url}\"\nstream = \"{stream}\"\n\
         stream_subjects = [\"{prefix}.>\"]\nsubject = \"{prefix}.{{bot}}.{{kind}}\"\n\
         dead_letter_subject = \"{prefix}.{{bot}}.deadletter\"\ncreate_stream = true\n",
        stream = names.stream,
        prefix = names.prefix,
    )
}

pub async fn delete_stream(stream: &str) {
    if let Ok(client) = async_nats::connect(nats_url()).await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(stream)
            .await;
    }
}

fn kafka_config(names: &Names, topic: &str) -> KafkaSinkConfig {
    KafkaSinkConfig {
        brokers: kafka_brokers(),
        topic: format!("{}.{topic}", names.prefix),
        dead_letter_topic: format!("{}.{{bot}}.deadletter", names.prefix),
        create_topics: true,
        replication_factor: 1,
        partitions: 3,
        ..KafkaSinkConfig::default()
    }
}

/// A NATS sink as the relay makes one: connected, its stream provisioned.
pub async fn nats_sink(config: &NatsSinkConfig, mode: EnvelopeMode) -> anyhow::Result<NatsSink> {
    let broker = NatsBroker::connect(config).await?;
    broker.ensure_updates_stream().await?;
    Ok(NatsSink::new(&broker, mode))
}

fn bot_routes(kinds: &[String]) -> Vec<BotRoutes> {
    vec![BotRoutes {
        name: "main".into(),
        id: BOT_ID,
        kinds: kinds.to_vec(),
    }]
}

/// Deletes every topic the routes of `config` can reach (whichever were created).
async fn delete_topics(config: &KafkaSinkConfig, kinds: &[String]) {
    let topics: Vec<String> = topics::required(config, &bot_routes(kinds))
        .into_iter()
        .collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let Ok(admin) = config
        .client_config()
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let _ = tokio::time::timeout(
        Duration::from_secs(20),
        admin.delete_topics(&topics, &options),
    )
    .await;
}

// ---- 1. The fake Bot API alone ----

#[derive(Deserialize)]
struct UpdatesReply {
    result: Vec<UpdateId>,
}

#[derive(Deserialize)]
struct UpdateId {
    update_id: i64,
}

/// Drains the fake with a plain getUpdates loop; returns the time it took.
async fn fake_alone(updates: Vec<Vec<u8>>, kinds: &[String]) -> anyhow::Result<Duration> {
    let n = updates.len();
    let api = FakeBotApi::start().await;
    api.add_bot(TOKEN);
    api.push_updates(TOKEN, updates);
    let http = reqwest::Client::new();
    let url = format!("{}/bot{TOKEN}/getUpdates", api.base_url());
    let started = Instant::now();
    let (mut offset, mut received) = (0, 0);
    while received < n {
        let batch = get_updates(&http, &url, offset, kinds).await?;
        ensure!(
            !batch.is_empty(),
            "the fake ran dry after {received} updates"
        );
        received += batch.len();
        offset = batch.last().map_or(offset, |u| u.update_id + 1);
    }
    Ok(started.elapsed())
}

async fn get_updates(
    http: &reqwest::Client,
    url: &str,
    offset: i64,
    kinds: &[String],
) -> anyhow::Result<Vec<UpdateId>> {
    let params = serde_json::json!({
        "offset": offset, "limit": BATCH, "timeout": 0, "allowed_updates": kinds,
    });
    let body = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&params)?)
        .send()
        .await?
        .bytes()
        .await?;
    let reply: UpdatesReply = serde_json::from_slice(&body)
        .with_context(|| format!("getUpdates reply {}", String::from_utf8_lossy(&body)))?;
    Ok(reply.result)
}

// ---- 2. The sink alone ----

struct SinkFigures {
    elapsed: Duration,
    /// Of this whole process, which does nothing else meanwhile.
    cpu: CpuTime,
}

/// Envelopes of bot `main` for these updates, as the relay would build them.
pub fn envelopes(updates: &[Vec<u8>]) -> anyhow::Result<Vec<Envelope>> {
    let bot = Arc::new(BotIdentity::new("main", BOT_ID));
    let now = SystemTime::now();
    Ok(updates
        .iter()
        .map(|u| Envelope::from_update(&bot, Bytes::from(u.clone()), now))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Publishes every update through the broker's sink, `in_flight` batches at a time.
async fn sink_alone(
    broker: Broker,
    updates: &[Vec<u8>],
    kinds: &[String],
    names: &Names,
    in_flight: usize,
) -> anyhow::Result<SinkFigures> {
    let sink = broker.connect(names, kinds).await?;
    let envelopes = envelopes(updates)?;
    let cpu_before = CpuTime::of(std::process::id())?;
    let started = Instant::now();
    let outcomes: Vec<Vec<Outcome>> = futures::stream::iter(envelopes.chunks(BATCH))
        .map(|batch| sink.publish(batch))
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let cpu = CpuTime::of(std::process::id())?.since(cpu_before);
    sink.close().await;
    let unsafe_count = outcomes.iter().flatten().filter(|o| !o.is_safe()).count();
    ensure!(unsafe_count == 0, "{unsafe_count} publishes failed");
    Ok(SinkFigures { elapsed, cpu })
}

// ---- 3. The relay binary, end to end ----

struct RelayFigures {
    elapsed: Duration,
    cpu: CpuTime,
    rss_idle_kib: u64,
    rss_peak_kib: u64,
    log: String,
}

/// The relay subprocess; killed if still running when dropped (an error path).
pub struct RelayProcess {
    child: Child,
    log_path: std::path::PathBuf,
}

impl RelayProcess {
    /// Starts the release binary with `config` as its only configuration, in `dir`.
    pub fn spawn(config: &str, dir: &Path) -> anyhow::Result<RelayProcess> {
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config)?;
        let log_path = dir.join("relay.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tgrelay"));
        command
            .args(["run", "--config"])
            .arg(&config_path)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            // The log lands in the report as text: no ANSI colours.
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?);
        // The environment overrides the file; only the file should configure this run.
        for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("TGRELAY_")) {
            command.env_remove(name);
        }
        let child = command.spawn().context("starting the relay binary")?;
        Ok(RelayProcess { child, log_path })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the relay exited ({status}):\n{}", self.log());
        }
        Ok(())
    }

    /// SIGTERM, then waits up to 30 s for a clean exit.
    pub async fn terminate(mut self) -> anyhow::Result<()> {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "the relay exited with {status}");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the relay did not exit within 30 s of SIGTERM")
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn relay_config(
    api_url: &str,
    kinds: &[String],
    broker: Broker,
    address: &str,
    names: &Names,
) -> String {
    format!(
        "drain_timeout = \"10s\"\n[admin]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n\
         [bots.main]\ntoken = \"{TOKEN}\"\napi_url = \"{api_url}\"\npoll_timeout = \"1s\"\n\
         poll_limit = {BATCH}\nallowed_updates = {kinds:?}\n{sink}",
        sink = broker.relay_toml(address, names),
    )
}

/// Starts the relay, samples it idle, feeds it every update and waits for all to be confirmed.
async fn relay_end_to_end(
    broker: Broker,
    updates: Vec<Vec<u8>>,
    kinds: &[String],
    names: &Names,
) -> anyhow::Result<RelayFigures> {
    let n = updates.len();
    let api = FakeBotApi::start().await;
    api.add_bot(TOKEN);
    let dir = tempfile::tempdir()?;
    let config = relay_config(
        &api.base_url(),
        kinds,
        broker,
        &broker.shared_address(),
        names,
    );
    let mut relay = RelayProcess::spawn(&config, dir.path())?;
    wait_for_first_poll(&api, &mut relay).await?;
    tokio::time::sleep(IDLE).await;
    let rss_idle_kib = proc_status_kib(relay.pid(), "VmRSS")?;
    let cpu_before = CpuTime::of(relay.pid())?;
    api.push_updates(TOKEN, updates);
    let queued = Instant::now();
    let within = Duration::from_secs(120 + n as u64 / 500);
    let all = api.wait_for_confirmed(TOKEN, n, within).await;
    let done = Instant::now();
    relay.ensure_running()?;
    ensure!(
        all,
        "only {} of {n} confirmed in {within:?}:\n{}",
        api.confirmed(TOKEN).len(),
        relay.log()
    );
    let cpu = CpuTime::of(relay.pid())?.since(cpu_before);
    let rss_peak_kib = proc_status_kib(relay.pid(), "VmHWM")?;
    let start = first_get_updates(&api).map_or(queued, |first| first.max(queued));
    let log = relay.log();
    relay.terminate().await?;
    Ok(RelayFigures {
        elapsed: done - start,
        cpu,
        rss_idle_kib,
        rss_peak_kib,
        log,
    })
}

fn first_get_updates(api: &FakeBotApi) -> Option<Instant> {
    api.calls(TOKEN)
        .iter()
        .find(|c| c.method.eq_ignore_ascii_case("getUpdates"))
        .map(|c| c.at)
}

/// Waits until the relay polls (it has connected to the broker and set up its routes).
async fn wait_for_first_poll(api: &FakeBotApi, relay: &mut RelayProcess) -> anyhow::Result<()> {
    for _ in 0..1200 {
        relay.ensure_running()?;
        if first_get_updates(api).is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the relay did not call getUpdates within 60 s:\n{}",
        relay.log()
    )
}

/// Busy and total CPU time of the whole machine (every core, every process), from
/// the first line of /proc/stat.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    busy: Duration,
    total: Duration,
}

impl MachineCpu {
    pub fn now() -> anyhow::Result<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        // cpu user nice system idle iowait irq softirq steal (guest time is in user).
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cpu "))
            .context("/proc/stat")?
            .split_whitespace()
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        ensure!(ticks.len() == 8, "/proc/stat: {} cpu fields", ticks.len());
        let ticks_per_second = clock_ticks_per_second();
        let time = |t: u64| Duration::from_secs_f64(t as f64 / ticks_per_second);
        let total: u64 = ticks.iter().sum();
        Ok(MachineCpu {
            busy: time(total - ticks[3] - ticks[4]),
            total: time(total),
        })
    }

    pub fn since(self, before: MachineCpu) -> MachineCpu {
        MachineCpu {
            busy: self.busy.saturating_sub(before.busy),
            total: self.total.saturating_sub(before.total),
        }
    }

    /// Busy µs per item, for `n` items.
    pub fn us_per(self, n: usize) -> f64 {
        self.busy.as_secs_f64() * 1e6 / n as f64
    }

    /// How busy the cores were, 0-100 %.
    pub fn busy_pct(self) -> f64 {
        100.0 * self.busy.as_secs_f64() / self.total.as_secs_f64().max(f64::EPSILON)
    }
}

/// CPU time a process has used, from /proc/<pid>/stat.
#[derive(Debug, Clone, Copy)]
pub struct CpuTime {
    user: Duration,
    system: Duration,
}

impl CpuTime {
    pub fn of(pid: u32) -> anyhow::Result<CpuTime> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses and may hold spaces:
        // state is field 3, utime field 14, stime field 15.
        let rest = stat.rsplit_once(')').context("/proc/<pid>/stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks_per_second = clock_ticks_per_second();
        let field = |i: usize| -> anyhow::Result<Duration> {
            let ticks: u64 = fields.get(i).context("/proc/<pid>/stat")?.parse()?;
            Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_second))
        };
        Ok(CpuTime {
            user: field(11)?,
            system: field(12)?,
        })
    }

    pub fn since(self, before: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }

    /// User + system µs per item, for `n` items.
    pub fn us_per(self, n: usize) -> f64 {
        (self.user + self.system).as_secs_f64() * 1e6 / n as f64
    }

    /// `T µs (user U + sys S)` per item, for `n` items.
    pub fn per_item(self, n: usize) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        format!(
            "{:.1} µs (user {:.1} + sys {:.1})",
            self.us_per(n),
            us(self.user),
            us(self.system)
        )
    }
}

/// Asked once: every CPU reading needs it, several of them inside measured runs.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `kB` line of /proc/<pid>/status, such as VmRSS or VmHWM.
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

// ---- The report ----

/// Runs `body` between `<!-- tgrelay-bench:<what> begin -->` and `... end -->` lines.
pub fn print_markers(what: &str, body: impl FnOnce()) {
    println!("<!-- tgrelay-bench:{what} begin -->");
    body();
    println!("<!-- tgrelay-bench:{what} end -->");
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn throughput(n: usize, time: Duration) -> String {
    format!(
        "{:.0} updates/s ({:.2} s)",
        rate(n, time),
        time.as_secs_f64()
    )
}

fn print_input(updates: &[Vec<u8>]) {
    let bytes: usize = updates.iter().map(Vec::len).sum();
    println!(
        "Input: {} updates, {} bytes on average, batches of {BATCH}.\n",
        updates.len(),
        bytes / updates.len().max(1)
    );
}

fn print_fake(n: usize, fake: Duration) {
    println!(
        "1. fake Bot API alone (getUpdates loop, limit {BATCH}): {}\n",
        throughput(n, fake)
    );
}

fn print_table(broker: Broker, n: usize, figures: &BrokerFigures) {
    let BrokerFigures {
        sink,
        serial,
        relay,
        outage,
    } = figures;
    let (label, sink_type) = (broker.label(), broker.sink_type());
    let ratio = rate(n, relay.elapsed) / rate(n, sink.elapsed);
    let mut rows = vec![
        (
            format!("2. {sink_type} alone ({IN_FLIGHT} batches of {BATCH} in flight)"),
            throughput(n, sink.elapsed),
        ),
        (
            format!("2b. {sink_type} alone, one batch at a time (the ceiling of a poller that confirms only acked updates)"),
            throughput(n, serial.elapsed),
        ),
        (
            "2b / 2".into(),
            format!("{:.0} %", 100.0 * rate(n, serial.elapsed) / rate(n, sink.elapsed)),
        ),
        (
            format!("3. relay binary, fake → {label}, all confirmed"),
            throughput(n, relay.elapsed),
        ),
        (
            "relay / sink alone".into(),
            format!("{:.0} %", 100.0 * ratio),
        ),
        (
            "relay / sink alone one batch at a time (3 / 2b)".into(),
            format!("{:.0} %", 100.0 * rate(n, relay.elapsed) / rate(n, serial.elapsed)),
        ),
        ("relay CPU per update".into(), relay.cpu.per_item(n)),
        (
            format!("{sink_type} alone CPU per update (bench process)"),
            sink.cpu.per_item(n),
        ),
        (
            "relay RSS idle (VmRSS)".into(),
            format!("{:.1} MiB", mib(relay.rss_idle_kib)),
        ),
        (
            "relay RSS peak under load (VmHWM)".into(),
            format!("{:.1} MiB", mib(relay.rss_peak_kib)),
        ),
    ];
    if let Some(outage) = outage {
        rows.push((
            format!(
                "4. relay RSS during a {} s {label} outage: start / peak / end (VmRSS every 100 ms)",
                outage.duration.as_secs()
            ),
            format!(
                "{:.1} / {:.1} / {:.1} MiB",
                mib(outage.rss_start_kib),
                mib(outage.rss_peak_kib),
                mib(outage.rss_end_kib)
            ),
        ));
        rows.push((
            "all confirmed after the broker returned, within".into(),
            format!("{:.1} s", outage.recovery.as_secs_f64()),
        ));
    }
    println!("Polling → {label}:\n");
    println!("| figure | value |");
    println!("|---|---:|");
    for (figure, value) in rows {
        println!("| {figure} | {value} |");
    }
    println!();
    print_log("The relay logged (level warn)", &relay.log);
    if let Some(outage) = outage {
        println!(
            "4. Outage: after the relay had confirmed {} updates, {}; {} more updates were \
             queued at the fake meanwhile ({} of them confirmed before the broker returned).\n",
            outage::BEFORE,
            outage::how(broker),
            outage::DURING,
            outage.confirmed_during
        );
        print_log(
            "Through the outage the relay logged (level warn)",
            &outage.log,
        );
    }
}

fn print_log(title: &str, log: &str) {
    if !log.trim().is_empty() {
        println!("{title}:\n\n```\n{}\n```\n", log.trim_end());
    }
}

/// `key=value` lines for scripts/bench.
fn print_figures(broker: Broker, n: usize, figures: &BrokerFigures) {
    let BrokerFigures {
        sink,
        serial,
        relay,
        outage,
    } = figures;
    let key = format!("polling.{}", broker.key());
    let (sink_rate, relay_rate) = (rate(n, sink.elapsed), rate(n, relay.elapsed));
    let serial_rate = rate(n, serial.elapsed);
    println!("{key}.sink_rate={sink_rate:.0}");
    println!("{key}.serial_rate={serial_rate:.0}");
    println!("{key}.ceiling_pct={:.0}", 100.0 * serial_rate / sink_rate);
    println!(
        "{key}.relay_serial_pct={:.0}",
        100.0 * relay_rate / serial_rate
    );
    println!("{key}.relay_rate={relay_rate:.0}");
    println!("{key}.ratio_pct={:.0}", 100.0 * relay_rate / sink_rate);
    println!("{key}.cpu_us={:.1}", relay.cpu.us_per(n));
    println!("{key}.rss_idle_mib={:.1}", mib(relay.rss_idle_kib));
    println!("{key}.rss_peak_mib={:.1}", mib(relay.rss_peak_kib));
    if let Some(outage) = outage {
        println!("{key}.outage_s={}", outage.duration.as_secs());
        println!(
            "{key}.rss_outage_start_mib={:.1}",
            mib(outage.rss_start_kib)
        );
        println!("{key}.rss_outage_peak_mib={:.1}", mib(outage.rss_peak_kib));
        println!("{key}.rss_outage_end_mib={:.1}", mib(outage.rss_end_kib));
        println!(
            "{key}.outage_recovery_s={:.1}",
            outage.recovery.as_secs_f64()
        );
    }
}
