//! End to end: how fast the release relay answers webhook POSTs when each answer waits
//! for the NATS JetStream PubAck, next to `NatsSink` publishing alone at the same
//! concurrency. Run: `cargo bench --bench e2e_webhook`.
//!
//! The relay binary runs one bot in webhook mode (no registration; the fake Bot API
//! only answers its getWebhookInfo) publishing to a fresh stream. A load generator in
//! this process posts generated updates (`Corpus::mixed`, every kind, ~800 bytes,
//! distinct update ids) with the secret-token header over HTTP/1.1 keep-alive: N
//! connections (40, then 100, as Telegram's `max_connections` allows), each a task
//! posting one update at a time and awaiting the answer. The generator writes its
//! requests on bare sockets (as wrk does), because on 2 cores an HTTP client library
//! costs more CPU per request than the relay itself and would measure the generator. Against it, the sink alone:
//! N tasks each publishing a single-envelope batch and awaiting its PubAck before the
//! next. Both get a short warm-up, then `TEST_TGRELAY_BENCH_REQUESTS` (default
//! 100 000) items per level; every item's wall time is kept, sorted, and read for
//! p50 and p99. The relay's CPU (utime+stime from /proc) covers the measured phase
//! only; so does the whole machine's (/proc/stat), split into the relay and this
//! process (the load generator), because on a machine whose cores are busy in both
//! runs the rate ratio is about the ratio of the machine's CPU per item. The relay's
//! thread count is its own pick unless `TEST_TGRELAY_BENCH_WORKER_THREADS` sets
//! `worker_threads`. Everything shares the machine's cores with NATS, so figures vary by run;
//! the targets (≥ 70 % of the sink-alone rate at 100 connections, p99 within 2 ms of
//! the sink's) are printed, never asserted. The relay-process, CPU and naming
//! helpers come from `e2e_polling.rs`, included as a module.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use tgrelay::cloudevent::EnvelopeMode;
use tgrelay::envelope::Envelope;
use tgrelay::sink::nats::NatsSink;
use tgrelay::sink::Sink;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[allow(dead_code)]
#[path = "e2e_polling.rs"]
mod e2e_polling;

use e2e_polling::corpus::Corpus;
use e2e_polling::fake_bot_api::FakeBotApi;
use e2e_polling::{
    delete_stream, env_count, envelopes, nats_config, nats_sink_toml, print_machine, print_markers,
    proc_status_kib, CpuTime, MachineCpu, Names, RelayProcess, TOKEN,
};

/// Concurrent connections (and sink-alone tasks), in the order measured.
const CONCURRENCY: [usize; 2] = [40, 100];
/// Items each connection or task sends before the measured phase.
const WARM_UP_PER_TASK: usize = 10;
const SECRET: &str = "bench-Secret_token-0123456789";
const WEBHOOK_PATH: &str = "/telegram/main";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let n = env_count("TEST_TGRELAY_BENCH_REQUESTS", 100_000)?;
    print_machine();
    let sink_names = Names::unique("whsink");
    let relay_names = Names::unique("webhook");
    let result = measure(n, &sink_names, &relay_names).await;
    for names in [&sink_names, &relay_names] {
        delete_stream(&names.stream).await;
    }
    let report = result?;
    print_markers("e2e_webhook", || print_table(n, &report));
    print_markers("figures", || print_figures(&report));
    Ok(())
}

/// One concurrency level: the relay and the sink alone on the same updates.
struct Level {
    concurrency: usize,
    relay: Run,
    relay_cpu: RelayCpu,
    sink: Run,
    /// The whole machine while the sink alone ran: this process, NATS, the idle relay.
    sink_machine: MachineCpu,
}

/// CPU spent while the relay was measured.
struct RelayCpu {
    relay: CpuTime,
    /// This process: the load generator.
    generator: CpuTime,
    /// Every process: relay, generator, NATS.
    machine: MachineCpu,
}

struct Report {
    levels: Vec<Level>,
    bytes_per_update: usize,
    rss_idle_kib: u64,
    rss_peak_kib: u64,
    log: String,
}

async fn measure(n: usize, sink_names: &Names, relay_names: &Names) -> anyhow::Result<Report> {
    let corpus = Corpus::load();
    let sink =
        Arc::new(e2e_polling::nats_sink(&nats_config(sink_names), EnvelopeMode::Binary).await?);
    let api = FakeBotApi::start().await;
    api.add_bot(TOKEN);
    let dir = tempfile::tempdir()?;
    let addr = free_address()?;
    let config = relay_config(&api.base_url(), addr, relay_names);
    let mut relay = RelayProcess::spawn(&config, dir.path())?;
    wait_for_listener(addr, &mut relay).await?;
    let rss_idle_kib = proc_status_kib(relay.pid(), "VmRSS")?;
    let (mut levels, mut bytes, mut posted) = (Vec::new(), 0, 0);
    for (i, &concurrency) in CONCURRENCY.iter().enumerate() {
        let warm_up = concurrency * WARM_UP_PER_TASK;
        let first_id = 1 + (i as i64) * 10_000_000;
        let updates = corpus.mixed(first_id, warm_up + n, 11);
        bytes = updates.iter().map(Vec::len).sum::<usize>() / updates.len();
        let (warm, measured) = updates.split_at(warm_up);
        let (sink_run, sink_machine) = sink_level(&sink, concurrency, warm, measured).await?;
        let (relay_run, relay_cpu) =
            relay_level(addr, &mut relay, concurrency, warm, measured).await?;
        posted += updates.len();
        levels.push(Level {
            concurrency,
            relay: relay_run,
            relay_cpu,
            sink: sink_run,
            sink_machine,
        });
    }
    sink.close().await;
    let rss_peak_kib = proc_status_kib(relay.pid(), "VmHWM")?;
    let log = relay.log();
    relay.terminate().await?;
    ensure_stored(&relay_names.stream, posted).await?;
    Ok(Report {
        levels,
        bytes_per_update: bytes,
        rss_idle_kib,
        rss_peak_kib,
        log,
    })
}

// ---- The load ----

/// Wall times of every item of a run, sorted, and how long the run took.
struct Run {
    elapsed: Duration,
    sorted: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.sorted.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (nearest rank), in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let rank = ((q * self.sorted.len() as f64).ceil() as usize).clamp(1, self.sorted.len());
        self.sorted[rank - 1].as_secs_f64() * 1e3
    }
}

/// Runs `op(state, 0..count)` from one task per state, each awaiting one item before
/// taking the next; fails on the first failed item. The states (connections) come back
/// for the next run.
async fn drive<S, F, Fut>(states: Vec<S>, count: usize, op: F) -> anyhow::Result<(Run, Vec<S>)>
where
    S: Send + 'static,
    F: Fn(S, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<S>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let per_task = count / states.len().max(1) + 1;
    let started = Instant::now();
    let tasks: Vec<_> = states
        .into_iter()
        .map(|mut state| {
            let (op, next) = (Arc::clone(&op), Arc::clone(&next));
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(per_task);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>((times, state));
                    }
                    let sent = Instant::now();
                    state = op(state, i).await?;
                    times.push(sent.elapsed());
                }
            })
        })
        .collect();
    let (mut sorted, mut states) = (Vec::with_capacity(count), Vec::new());
    for task in tasks {
        let (times, state) = task.await??;
        sorted.extend(times);
        states.push(state);
    }
    let elapsed = started.elapsed();
    sorted.sort_unstable();
    Ok((Run { elapsed, sorted }, states))
}

// ---- The sink alone ----

/// Warm-up, then the measured single-envelope publishes.
async fn sink_level(
    sink: &Arc<NatsSink>,
    concurrency: usize,
    warm: &[Vec<u8>],
    measured: &[Vec<u8>],
) -> anyhow::Result<(Run, MachineCpu)> {
    publish_all(sink, concurrency, envelopes(warm)?).await?;
    let envelopes = envelopes(measured)?;
    let before = MachineCpu::now()?;
    let run = publish_all(sink, concurrency, envelopes).await?;
    Ok((run, MachineCpu::now()?.since(before)))
}

async fn publish_all(
    sink: &Arc<NatsSink>,
    concurrency: usize,
    envelopes: Vec<Envelope>,
) -> anyhow::Result<Run> {
    let (sink, envelopes) = (Arc::clone(sink), Arc::new(envelopes));
    let tasks = vec![(); concurrency];
    let (run, _) = drive(tasks, envelopes.len(), move |(), i| {
        let (sink, envelopes) = (Arc::clone(&sink), Arc::clone(&envelopes));
        async move {
            let outcomes = sink.publish(std::slice::from_ref(&envelopes[i])).await;
            ensure!(
                outcomes.iter().all(|o| o.is_safe()),
                "publish failed: {outcomes:?}"
            );
            Ok(())
        }
    })
    .await?;
    Ok(run)
}

// ---- The relay ----

fn relay_config(api_url: &str, listen: SocketAddr, names: &Names) -> String {
    // `worker_threads` of the relay: TEST_TGRELAY_BENCH_WORKER_THREADS, else its own pick.
    let threads = std::env::var("TEST_TGRELAY_BENCH_WORKER_THREADS").unwrap_or_else(|_| "0".into());
    format!(
        "worker_threads = {threads}\ndrain_timeout = \"10s\"\n[admin]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n\
         [webhook]\nlisten = \"{listen}\"\n\
         [bots.main]\ntoken = \"{TOKEN}\"\napi_url = \"{api_url}\"\nmode = \"webhook\"\n\
         [bots.main.webhook]\nregister = false\nsecret_token = \"{SECRET}\"\n\
         info_interval = \"60s\"\n{sink}",
        sink = nats_sink_toml(names),
    )
}

/// A loopback address nothing listens on now (the relay binds it a moment later).
fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Waits until the relay accepts connections (it has connected to NATS and bound).
async fn wait_for_listener(addr: SocketAddr, relay: &mut RelayProcess) -> anyhow::Result<()> {
    for _ in 0..1200 {
        relay.ensure_running()?;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the relay did not listen on {addr} within 60 s:\n{}",
        relay.log()
    )
}

/// One kept-alive HTTP/1.1 connection posting updates as Telegram does (JSON body, the
/// secret-token header), one request at a time. It is written on a bare socket, as
/// load generators such as wrk are, so that on a 2-core machine the generator's own
/// CPU takes as little as it can from the relay and NATS it measures.
struct Connection {
    stream: TcpStream,
    host: String,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            host: addr.to_string(),
            request: Vec::with_capacity(4096),
            response: Vec::with_capacity(1024),
        })
    }

    /// One POST, answered 200 or failed.
    async fn post(&mut self, update: &[u8]) -> anyhow::Result<()> {
        self.request.clear();
        write!(
            self.request,
            "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             X-Telegram-Bot-Api-Secret-Token: {SECRET}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            update.len()
        )?;
        self.request.extend_from_slice(update);
        self.stream.write_all(&self.request).await?;
        self.response.clear();
        loop {
            if self.stream.read_buf(&mut self.response).await? == 0 {
                bail!("the relay closed the connection");
            }
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut head = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head_len) = head.parse(&self.response)? else {
                continue;
            };
            let status = head.code.context("a status code")?;
            let body_len = head
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)?
                        .parse::<usize>()
                        .map_err(anyhow::Error::from)
                })
                .transpose()?
                .context("the relay's answer has no Content-Length")?;
            if self.response.len() < head_len + body_len {
                continue;
            }
            ensure!(
                status == 200,
                "the relay answered {status}: {}",
                String::from_utf8_lossy(&self.response[head_len..])
            );
            ensure!(
                self.response.len() == head_len + body_len,
                "the relay sent more than one answer"
            );
            return Ok(());
        }
    }
}

/// Opens one connection per concurrent poster.
async fn connect_all(addr: SocketAddr, concurrency: usize) -> anyhow::Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections.push(Connection::open(addr).await?);
    }
    Ok(connections)
}

/// Posts every update, one connection per concurrent poster.
async fn post_all(
    connections: Vec<Connection>,
    updates: &[Vec<u8>],
) -> anyhow::Result<(Run, Vec<Connection>)> {
    let updates: Arc<Vec<Vec<u8>>> = Arc::new(updates.to_vec());
    drive(connections, updates.len(), move |mut connection, i| {
        let updates = Arc::clone(&updates);
        async move {
            connection.post(&updates[i]).await?;
            Ok(connection)
        }
    })
    .await
}

/// Warm-up, then the measured posts, with the relay's CPU time over the latter.
async fn relay_level(
    addr: SocketAddr,
    relay: &mut RelayProcess,
    concurrency: usize,
    warm: &[Vec<u8>],
    measured: &[Vec<u8>],
) -> anyhow::Result<(Run, RelayCpu)> {
    let (_, connections) = post_all(connect_all(addr, concurrency).await?, warm).await?;
    let own = std::process::id();
    let before = (
        CpuTime::of(relay.pid())?,
        CpuTime::of(own)?,
        MachineCpu::now()?,
    );
    let run = post_all(connections, measured).await;
    relay.ensure_running()?;
    let cpu = RelayCpu {
        relay: CpuTime::of(relay.pid())?.since(before.0),
        generator: CpuTime::of(own)?.since(before.1),
        machine: MachineCpu::now()?.since(before.2),
    };
    Ok((run?.0, cpu))
}

/// Checks the relay's stream holds every update answered 200.
async fn ensure_stored(stream: &str, expected: usize) -> anyhow::Result<()> {
    let url = e2e_polling::nats_url();
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    let mut stream = js.get_stream(stream).await?;
    let stored = stream.info().await?.state.messages;
    ensure!(
        stored == expected as u64,
        "the stream holds {stored} messages, {expected} were answered 200"
    );
    Ok(())
}

// ---- The report ----

fn print_table(n: usize, report: &Report) {
    println!(
        "Webhook → NATS: {n} POSTs per level of {} bytes on average (after {WARM_UP_PER_TASK} \
         per connection to warm up), one update per request; sink alone: `NatsSink` \
         publishing single-envelope batches from as many tasks.\n",
        report.bytes_per_update
    );
    println!(
        "| concurrency | relay req/s | sink alone publishes/s | relay / sink | relay p50 / p99 \
         | sink p50 / p99 | p99 difference | relay CPU per request |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for level in &report.levels {
        let (relay, sink) = (&level.relay, &level.sink);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} % | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:+.2} ms | {} |",
            level.concurrency,
            relay.rate(),
            sink.rate(),
            100.0 * relay.rate() / sink.rate(),
            relay.quantile_ms(0.5),
            relay.quantile_ms(0.99),
            sink.quantile_ms(0.5),
            sink.quantile_ms(0.99),
            relay.quantile_ms(0.99) - sink.quantile_ms(0.99),
            level.relay_cpu.relay.per_item(relay.sorted.len()),
        );
    }
    println!(
        "\nWhere the CPU went, over the whole machine (every process: this one, the relay, \
         nats-server). When the cores are close to fully busy in both runs, the rate ratio \
         is about the ratio of these costs per item.\n"
    );
    println!(
        "| concurrency | sink alone: machine CPU per publish (cores busy) | relay run: machine \
         CPU per request (cores busy) | of it, relay | of it, load generator |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for level in &report.levels {
        let (n_relay, n_sink) = (level.relay.sorted.len(), level.sink.sorted.len());
        let cpu = &level.relay_cpu;
        println!(
            "| {} | {:.1} µs ({:.0} %) | {:.1} µs ({:.0} %) | {:.1} µs | {:.1} µs |",
            level.concurrency,
            level.sink_machine.us_per(n_sink),
            level.sink_machine.busy_pct(),
            cpu.machine.us_per(n_relay),
            cpu.machine.busy_pct(),
            cpu.relay.us_per(n_relay),
            cpu.generator.us_per(n_relay),
        );
    }
    println!(
        "\nRelay RSS: {:.1} MiB idle (VmRSS), {:.1} MiB peak (VmHWM). Targets: relay ≥ 70 % \
         of the sink-alone rate at 100 connections; relay p99 ≤ sink p99 + 2 ms.\n",
        report.rss_idle_kib as f64 / 1024.0,
        report.rss_peak_kib as f64 / 1024.0
    );
    if !report.log.trim().is_empty() {
        println!(
            "The relay logged (level warn):\n\n```\n{}\n```\n",
            report.log.trim_end()
        );
    }
}

/// `key=value` lines for scripts/bench.
fn print_figures(report: &Report) {
    for level in &report.levels {
        let key = format!("webhook.c{}", level.concurrency);
        let (relay, sink) = (&level.relay, &level.sink);
        println!("{key}.relay_rate={:.0}", relay.rate());
        println!("{key}.sink_rate={:.0}", sink.rate());
        println!("{key}.ratio_pct={:.0}", 100.0 * relay.rate() / sink.rate());
        println!("{key}.relay_p50_ms={:.2}", relay.quantile_ms(0.5));
        println!("{key}.relay_p99_ms={:.2}", relay.quantile_ms(0.99));
        println!("{key}.sink_p50_ms={:.2}", sink.quantile_ms(0.5));
        println!("{key}.sink_p99_ms={:.2}", sink.quantile_ms(0.99));
        let diff = relay.quantile_ms(0.99) - sink.quantile_ms(0.99);
        println!("{key}.p99_diff_ms={diff:+.2}");
        let n = relay.sorted.len();
        println!("{key}.cpu_us={:.1}", level.relay_cpu.relay.us_per(n));
        println!(
            "{key}.generator_cpu_us={:.1}",
            level.relay_cpu.generator.us_per(n)
        );
        println!(
            "{key}.machine_cpu_us={:.1}",
            level.relay_cpu.machine.us_per(n)
        );
        println!(
            "{key}.sink_machine_cpu_us={:.1}",
            level.sink_machine.us_per(sink.sorted.len())
        );
    }
    println!(
        "webhook.rss_idle_mib={:.1}",
        report.rss_idle_kib as f64 / 1024.0
    );
    println!(
        "webhook.rss_peak_mib={:.1}",
        report.rss_peak_kib as f64 / 1024.0
    );
}
