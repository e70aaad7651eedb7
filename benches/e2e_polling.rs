//! End to end: how fast the release relay moves polled updates into NATS JetStream,
//! next to the two things it sits between. Run: `cargo bench --bench e2e_polling`.
//!
//! One run measures the same N generated updates (`TEST_TGRELAY_BENCH_UPDATES`, default
//! 50 000, every kind, ~800 bytes each): (1) the fake Bot API alone, drained by a
//! plain getUpdates loop (limit 100, timeout 0), to show the fake is not the
//! bottleneck; (2) `NatsSink` alone, batches of 100 with four in flight: what the
//! broker takes on this machine; (3) the `tgrelay` binary polling the fake into a
//! fresh stream, timed from the moment the updates were queued (or the first
//! getUpdates, if later) until the fake saw them all confirmed, with its CPU time per
//! update (utime+stime from /proc, and this process's for (2) to compare) and its
//! resident memory idle and at peak. Read "relay / sink alone" as the share of the
//! broker's capacity one polling bot reaches: the getUpdates offset is both cursor
//! and confirmation, so a bot cannot fetch batch k+1 before batch k is acked, and
//! each 100 updates cost a getUpdates round trip plus a publish round trip, where
//! (2) overlaps four batches. The fake runs in this process and shares the cores
//! with NATS and the relay, so figures vary by run; they are measurements only,
//! nothing here asserts a speed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tgrelay::ack::Outcome;
use tgrelay::config::EnvelopeMode;
use tgrelay::envelope::{BotIdentity, Envelope};
use tgrelay::sink::nats::{NatsSink, NatsSinkConfig};
use tgrelay::sink::Sink;

#[allow(dead_code)]
#[path = "../tests/support/corpus.rs"]
mod corpus;
#[allow(dead_code)]
#[path = "../tests/support/fake_bot_api.rs"]
mod fake_bot_api;

use corpus::Corpus;
use fake_bot_api::FakeBotApi;

const BOT_ID: u64 = 424242;
const TOKEN: &str = "424242:AAE-bench_token-424242";
const BATCH: usize = 100;
/// Batches the sink-alone measurement keeps in flight at once.
const IN_FLIGHT: usize = 4;
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
    let corpus = Corpus::load();
    let updates = corpus.mixed(1, n, 7);
    let kinds: Vec<String> = corpus
        .kinds()
        .into_iter()
        .chain(["story_reaction".to_owned()])
        .collect();
    print_machine(&updates);

    let js = async_nats::jetstream::new(
        async_nats::connect(nats_url())
            .await
            .with_context(|| format!("NATS at {}", nats_url()))?,
    );
    let sink_names = Names::unique("sink");
    let relay_names = Names::unique("relay");
    let result = measure(&updates, &kinds, &sink_names, &relay_names).await;
    for names in [&sink_names, &relay_names] {
        let _ = js.delete_stream(&names.stream).await;
    }
    let (fake, sink, relay) = result?;
    print_table(n, fake, &sink, &relay);
    Ok(())
}

async fn measure(
    updates: &[Vec<u8>],
    kinds: &[String],
    sink_names: &Names,
    relay_names: &Names,
) -> anyhow::Result<(Duration, SinkFigures, RelayFigures)> {
    let fake = fake_alone(updates.to_vec(), kinds).await?;
    let sink = sink_alone(updates, sink_names).await?;
    let relay = relay_end_to_end(updates.to_vec(), kinds, relay_names).await?;
    Ok((fake, sink, relay))
}

fn update_count() -> anyhow::Result<usize> {
    let Ok(text) = std::env::var("TEST_TGRELAY_BENCH_UPDATES") else {
        return Ok(50_000);
    };
    let n: usize = text
        .parse()
        .with_context(|| format!("TEST_TGRELAY_BENCH_UPDATES={text:?}"))?;
    ensure!(n > 0, "TEST_TGRELAY_BENCH_UPDATES must be at least 1");
    Ok(n)
}

fn nats_url() -> String {
    std::env::var("TEST_TGRELAY_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A stream and subject prefix no other run uses.
struct Names {
    stream: String,
    prefix: String,
}

impl Names {
    fn unique(what: &str) -> Names {
        let tag = format!("{}_{:08x}", std::process::id(), rand::random::<u32>());
        Names {
            stream: format!("TGRELAY_BENCH_{}_{tag}", what.to_uppercase()),
            prefix: format!("bench_{what}_{tag}"),
        }
    }
}

fn print_machine(updates: &[Vec<u8>]) {
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
    let bytes: usize = updates.iter().map(Vec::len).sum();
    println!("Machine: {cpus} CPUs (nproc), {model}");
    println!(
        "Input: {} updates, {} bytes on average, batches of {BATCH}\n",
        updates.len(),
        bytes / updates.len().max(1)
    );
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

// ---- 2. The NATS sink alone ----

fn sink_config(names: &Names) -> NatsSinkConfig {
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

struct SinkFigures {
    elapsed: Duration,
    /// Of this whole process, which does nothing else meanwhile.
    cpu: CpuTime,
}

/// Publishes every update through `NatsSink`, `IN_FLIGHT` batches at a time.
async fn sink_alone(updates: &[Vec<u8>], names: &Names) -> anyhow::Result<SinkFigures> {
    let sink = NatsSink::connect(&sink_config(names), EnvelopeMode::Binary).await?;
    let bot = Arc::new(BotIdentity::new("main", BOT_ID));
    let now = SystemTime::now();
    let envelopes = updates
        .iter()
        .map(|u| Envelope::from_update(&bot, Bytes::from(u.clone()), now))
        .collect::<Result<Vec<_>, _>>()?;
    let cpu_before = CpuTime::of(std::process::id())?;
    let started = Instant::now();
    let outcomes: Vec<Vec<Outcome>> = futures::stream::iter(envelopes.chunks(BATCH))
        .map(|batch| sink.publish(batch))
        .buffer_unordered(IN_FLIGHT)
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
struct RelayProcess {
    child: Child,
    log_path: std::path::PathBuf,
}

impl RelayProcess {
    fn spawn(config: &str, dir: &Path) -> anyhow::Result<RelayProcess> {
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config)?;
        let log_path = dir.join("relay.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tgrelay"));
        command
            .args(["run", "--config"])
            .arg(&config_path)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?);
        // The environment overrides the file; only the file should configure this run.
        for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("TGRELAY_")) {
            command.env_remove(name);
        }
        let child = command.spawn().context("starting the relay binary")?;
        Ok(RelayProcess { child, log_path })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the relay exited ({status}):\n{}", self.log());
        }
        Ok(())
    }

    /// SIGTERM, then waits up to 30 s for a clean exit.
    async fn terminate(mut self) -> anyhow::Result<()> {
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

fn relay_config(api_url: &str, kinds: &[String], names: &Names) -> String {
    format!(
        "drain_timeout = \"10s\"\n[admin]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n\
         [bots.main]\ntoken = \"{TOKEN}\"\napi_url = \"{api_url}\"\npoll_timeout = \"1s\"\n\
         poll_limit = {BATCH}\nallowed_updates = {kinds:?}\n\
         [sink]\nkind = \"nats\"\n[sink.nats]\nurl = \"{url}\"\nstream = \"{stream}\"\n\
         stream_subjects = [\"{prefix}.>\"]\nsubject = \"{prefix}.{{bot}}.{{kind}}\"\n\
         dead_letter_subject = \"{prefix}.{{bot}}.deadletter\"\ncreate_stream = true\n",
        url = nats_url(),
        stream = names.stream,
        prefix = names.prefix,
    )
}

/// Starts the relay, samples it idle, feeds it every update and waits for all to be confirmed.
async fn relay_end_to_end(
    updates: Vec<Vec<u8>>,
    kinds: &[String],
    names: &Names,
) -> anyhow::Result<RelayFigures> {
    let n = updates.len();
    let api = FakeBotApi::start().await;
    api.add_bot(TOKEN);
    let dir = tempfile::tempdir()?;
    let mut relay = RelayProcess::spawn(&relay_config(&api.base_url(), kinds, names), dir.path())?;
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

/// Waits until the relay polls (it has connected to NATS and created its stream).
async fn wait_for_first_poll(api: &FakeBotApi, relay: &mut RelayProcess) -> anyhow::Result<()> {
    for _ in 0..600 {
        relay.ensure_running()?;
        if first_get_updates(api).is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the relay did not call getUpdates within 30 s:\n{}",
        relay.log()
    )
}

/// CPU time a process has used, from /proc/<pid>/stat.
#[derive(Debug, Clone, Copy)]
struct CpuTime {
    user: Duration,
    system: Duration,
}

impl CpuTime {
    fn of(pid: u32) -> anyhow::Result<CpuTime> {
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

    fn since(self, before: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }

    /// `T µs (user U + sys S)` per update.
    fn per_update(self, n: usize) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        format!(
            "{:.1} µs (user {:.1} + sys {:.1})",
            us(self.user + self.system),
            us(self.user),
            us(self.system)
        )
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `kB` line of /proc/<pid>/status, such as VmRSS or VmHWM.
fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

// ---- The report ----

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn print_table(n: usize, fake: Duration, sink: &SinkFigures, relay: &RelayFigures) {
    let (fake_rate, sink_rate) = (rate(n, fake), rate(n, sink.elapsed));
    let relay_rate = rate(n, relay.elapsed);
    let throughput =
        |rate: f64, time: Duration| format!("{rate:.0} updates/s ({:.2} s)", time.as_secs_f64());
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let rows = [
        (
            format!("1. fake Bot API alone (getUpdates loop, limit {BATCH})"),
            throughput(fake_rate, fake),
        ),
        (
            format!("2. NatsSink alone ({IN_FLIGHT} batches of {BATCH} in flight)"),
            throughput(sink_rate, sink.elapsed),
        ),
        (
            "3. relay binary, fake → NATS, all confirmed".into(),
            throughput(relay_rate, relay.elapsed),
        ),
        (
            "relay / sink alone".into(),
            format!("{:.0} %", 100.0 * relay_rate / sink_rate),
        ),
        ("relay CPU per update".into(), relay.cpu.per_update(n)),
        (
            "NatsSink alone CPU per update (bench process)".into(),
            sink.cpu.per_update(n),
        ),
        ("relay RSS idle (VmRSS)".into(), mib(relay.rss_idle_kib)),
        ("relay RSS peak (VmHWM)".into(), mib(relay.rss_peak_kib)),
    ];
    println!("| figure | value |");
    println!("|---|---:|");
    for (figure, value) in rows {
        println!("| {figure} | {value} |");
    }
    if !relay.log.trim().is_empty() {
        println!("\nThe relay logged (level warn):\n{}", relay.log.trim_end());
    }
}
