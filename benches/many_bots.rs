//! Many polling bots in one relay: what each costs in memory, CPU and connections, and
//! how long the relay takes until every one of them polls. Run:
//! `cargo bench --bench many_bots` (sizes 1000 and 10000), or name the sizes:
//! `cargo bench --bench many_bots -- 500 2000`, or `TEST_TGRELAY_BENCH_BOTS=1000,10000`.
//!
//! For each size N the release relay runs N polling bots (default settings: 30 s long
//! polls, every update kind) against a lean fake Bot API in this process
//! (`support/lean_bot_api.rs`) that holds N long polls at once, into the file sink (no
//! broker: this measures the relay, not a broker; each bot's first getUpdates brings one
//! update, so every bot's publish path runs once). Measured:
//! - `tgrelay check-config` on the generated configuration (loading alone);
//! - the time from starting the process until the fake has seen every bot's first
//!   getUpdates, and from the relay's first Bot API request to that (without loading);
//! - resident memory (VmRSS) once every bot polls and has confirmed its update, and the
//!   peak (VmHWM) over the run;
//! - CPU (utime+stime from /proc) over an idle window (`TEST_TGRELAY_BENCH_IDLE_SECS`,
//!   default 30, one long poll: each bot's poll ends and is made again once in it), as a
//!   share of one core;
//! - TCP connections open at the fake at the end of the idle window (and the peak, and
//!   how many were dialled in all), and the socket descriptors of the relay;
//! - one scrape of `/metrics`: its size, series and time;
//! - a token file added to `tokens_dir` (the relay reads its bots from there, with
//!   `[bot_defaults]`), until that bot's first getUpdates; another removed, until that
//!   bot's final confirm; and how many of the other bots' long polls ended early meanwhile.
//!
//! The relay and this process each hold one descriptor per long poll, so both need a
//! `RLIMIT_NOFILE` above N: the bench raises its own soft limit to the hard one (with
//! `prlimit`; the relay inherits it) and refuses a size the hard limit cannot hold
//! (`ulimit -Hn`; 10 000 bots need about 10 500). Everything shares the machine's cores;
//! figures are measurements, nothing here asserts a speed.
//!
//! Output: Markdown between `<!-- tgrelay-bench:many_bots begin/end -->`, then
//! `key=value` figures between `<!-- tgrelay-bench:figures begin/end -->` for scripts/bench.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

#[allow(dead_code)]
#[path = "e2e_polling.rs"]
mod e2e_polling;
#[path = "support/lean_bot_api.rs"]
mod lean_bot_api;

use e2e_polling::{print_machine, print_markers, proc_status_kib, CpuTime, RelayProcess};
use lean_bot_api::LeanBotApi;

const DEFAULT_SIZES: [usize; 2] = [1000, 10_000];
/// Descriptors a relay needs besides its long polls (runtime, files, listeners).
const FD_MARGIN: usize = 512;
/// After every bot confirmed its update, before anything is sampled.
const SETTLE: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let sizes = sizes()?;
    let idle =
        Duration::from_secs(e2e_polling::env_count("TEST_TGRELAY_BENCH_IDLE_SECS", 30)? as u64);
    raise_fd_limit(sizes.iter().copied().max().unwrap_or(0))?;
    print_machine();
    let mut results = Vec::new();
    for n in sizes {
        eprintln!("many_bots: {n} bots");
        results.push(measure(n, idle).await?);
    }
    print_markers("many_bots", || print_table(&results, idle));
    print_markers("figures", || {
        for figures in &results {
            print_figures(figures);
        }
    });
    Ok(())
}

/// Sizes from the command line (numbers; cargo's own `--bench` is skipped), else from
/// `TEST_TGRELAY_BENCH_BOTS`, else 1000 and 10000.
fn sizes() -> anyhow::Result<Vec<usize>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let listed = if args.is_empty() {
        std::env::var("TEST_TGRELAY_BENCH_BOTS").unwrap_or_default()
    } else {
        args.join(",")
    };
    let sizes: Vec<usize> = listed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().with_context(|| format!("bot count {s:?}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(if sizes.is_empty() {
        DEFAULT_SIZES.to_vec()
    } else {
        sizes
    })
}

/// Raises this process's soft descriptor limit to its hard one (the relay inherits it).
fn raise_fd_limit(bots: usize) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let (soft, hard) = fd_limits()?;
    if soft < hard {
        let raised = format!("--nofile={hard}:");
        let _ = Command::new("prlimit")
            .args(["--pid", &pid, &raised])
            .status();
    }
    let (soft, hard) = fd_limits()?;
    let needed = bots + FD_MARGIN;
    ensure!(
        soft >= needed as u64,
        "{bots} bots need {needed} open files per process; the limit is {soft} (hard {hard}): \
         raise it (ulimit -n {needed}) and run again"
    );
    Ok(())
}

/// This process's `Max open files` (soft, hard), from /proc/self/limits.
fn fd_limits() -> anyhow::Result<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("Max open files in /proc/self/limits")?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| match w {
            "unlimited" => Some(u64::MAX),
            w => w.parse().ok(),
        })
        .collect();
    match numbers[..] {
        [soft, hard, ..] => Ok((soft, hard)),
        _ => bail!("cannot read {line:?}"),
    }
}

/// Everything measured for one size.
struct Figures {
    bots: usize,
    check_config: Duration,
    /// From spawning the relay to the last bot's first getUpdates.
    all_polling: Duration,
    /// From the relay's first Bot API request to the last bot's first getUpdates.
    all_polling_from_first_request: Duration,
    all_confirmed: Duration,
    rss_kib: u64,
    rss_after_idle_kib: u64,
    rss_peak_kib: u64,
    idle: Duration,
    idle_cpu: CpuTime,
    connections_open: usize,
    connections_peak: usize,
    connections_dialled: usize,
    relay_sockets: usize,
    requests_in_idle: u64,
    /// Connections dialled during the idle window (reused ones are not).
    dialled_in_idle: usize,
    scrape: Scrape,
    changes: Changes,
    shutdown: Duration,
}

struct Scrape {
    time: Duration,
    bytes: usize,
    series: usize,
}

async fn measure(n: usize, idle: Duration) -> anyhow::Result<Figures> {
    // Bot n is the one added to the token directory while the others run.
    let fake = LeanBotApi::start(n + 1).await?;
    let dir = tempfile::tempdir()?;
    let admin = free_port()?;
    let updates = dir.path().join("updates.jsonl");
    let check_config = check_config(
        &relay_config(n, &fake.base_url(), admin, &updates),
        dir.path(),
    )?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens)?;
    for i in 0..n {
        std::fs::write(tokens.join(bot_name(i)), lean_bot_api::token(i))?;
    }
    let config = token_dir_config(&tokens, &fake.base_url(), admin, &updates);

    let spawned = Instant::now();
    let mut relay = RelayProcess::spawn(&config, dir.path())?;
    let within = Duration::from_secs(120 + n as u64 / 50);
    let polling = wait(&fake, &mut relay, within, |f| f.polling() == n).await?;
    ensure!(
        polling,
        "{} of {n} bots polled within {within:?}:\n{}",
        fake.polling(),
        relay.log()
    );
    let epoch_to_spawn = spawned.saturating_duration_since(fake.epoch.into_std());
    let last_first_poll = fake.all_polling(n).context("every bot polled")?;
    let first_request = fake.first_request().context("a first request")?;
    let confirmed = wait(&fake, &mut relay, within, |f| f.confirmed() == n).await?;
    ensure!(
        confirmed,
        "{} of {n} bots confirmed their update within {within:?}:\n{}",
        fake.confirmed(),
        relay.log()
    );
    let all_confirmed = spawned.elapsed();
    tokio::time::sleep(SETTLE).await;

    let pid = relay.pid();
    let rss_kib = proc_status_kib(pid, "VmRSS")?;
    let (cpu_before, requests_before, dialled_before, idle_started) = (
        CpuTime::of(pid)?,
        fake.requests.load(Ordering::Relaxed),
        fake.accepted_connections.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(idle).await;
    let idle_cpu = CpuTime::of(pid)?.since(cpu_before);
    let idle = idle_started.elapsed();
    let requests_in_idle = fake.requests.load(Ordering::Relaxed) - requests_before;
    let dialled_in_idle = fake.accepted_connections.load(Ordering::Relaxed) - dialled_before;
    let rss_after_idle_kib = proc_status_kib(pid, "VmRSS")?;
    let connections_open = fake.open_connections.load(Ordering::Relaxed);
    let relay_sockets = socket_fds(pid)?;
    relay.ensure_running()?;

    let scrape = scrape(admin).await?;
    let changes = token_dir_changes(&fake, &mut relay, &tokens, n).await?;
    let rss_peak_kib = proc_status_kib(pid, "VmHWM")?;
    let stopping = Instant::now();
    relay.terminate().await?;
    let shutdown = stopping.elapsed();
    let lines = std::fs::read_to_string(&updates)?.lines().count();
    ensure!(
        lines == n + 1,
        "{lines} updates in the file sink, {} expected",
        n + 1
    );
    Ok(Figures {
        bots: n,
        check_config,
        all_polling: last_first_poll.saturating_sub(epoch_to_spawn),
        all_polling_from_first_request: last_first_poll.saturating_sub(first_request),
        all_confirmed,
        rss_kib,
        rss_after_idle_kib,
        rss_peak_kib,
        idle,
        idle_cpu,
        connections_open,
        connections_peak: fake.peak_connections.load(Ordering::Relaxed),
        connections_dialled: fake.accepted_connections.load(Ordering::Relaxed),
        relay_sockets,
        requests_in_idle,
        dialled_in_idle,
        scrape,
        changes,
        shutdown,
    })
}

/// What a change to the token directory took while every other bot long-polled.
struct Changes {
    /// From writing a new token file to that bot's first getUpdates.
    added: Duration,
    /// From deleting a token file to that bot's final confirm (getUpdates, timeout 0).
    removed: Duration,
    /// Long polls of the other bots answered early meanwhile (cut short): should be 0.
    others_cut_short: u64,
}

/// Adds bot `n`'s token file, then removes bot 0's, timing each as the fake saw it.
async fn token_dir_changes(
    fake: &Arc<LeanBotApi>,
    relay: &mut RelayProcess,
    tokens: &Path,
    n: usize,
) -> anyhow::Result<Changes> {
    let within = Duration::from_secs(60);
    let short_before = fake.short_polls.load(Ordering::Relaxed);
    let since_epoch = |at: Instant| at.saturating_duration_since(fake.epoch.into_std());

    let added_at = Instant::now();
    std::fs::write(tokens.join(bot_name(n)), lean_bot_api::token(n))?;
    let polled = wait(fake, relay, within, |f| f.first_poll(n).is_some()).await?;
    ensure!(polled, "the added bot did not poll within {within:?}");
    let added = fake
        .first_poll(n)
        .unwrap()
        .saturating_sub(since_epoch(added_at));
    let confirmed = wait(fake, relay, within, |f| f.confirmed() == n + 1).await?;
    ensure!(confirmed, "the added bot did not confirm its update");

    let removed_at = Instant::now();
    std::fs::remove_file(tokens.join(bot_name(0)))?;
    let after = since_epoch(removed_at);
    let stopped = wait(fake, relay, within, |f| {
        f.last_short_poll(0).is_some_and(|t| t > after)
    })
    .await?;
    ensure!(
        stopped,
        "the removed bot did not confirm and stop within {within:?}"
    );
    let removed = fake.last_short_poll(0).unwrap().saturating_sub(after);
    let short = fake.short_polls.load(Ordering::Relaxed) - short_before;
    Ok(Changes {
        added,
        removed,
        others_cut_short: short.saturating_sub(1),
    })
}

fn bot_name(i: usize) -> String {
    format!("bot{i:05}")
}

/// The relay's configuration: every bot a file of `tokens`, with the defaults' settings.
fn token_dir_config(tokens: &Path, api_url: &str, admin: u16, updates: &Path) -> String {
    format!(
        "tokens_dir = {:?}\ndrain_timeout = \"20s\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [log]\nlevel = \"warn\"\n[sink]\nkind = \"file\"\n[sink.file]\npath = {:?}\n\
         [bot_defaults]\napi_url = \"{api_url}\"\n",
        tokens.display().to_string(),
        updates.display().to_string()
    )
}

/// Waits for `done` while checking that the relay still runs.
async fn wait(
    fake: &Arc<LeanBotApi>,
    relay: &mut RelayProcess,
    within: Duration,
    done: impl Fn(&LeanBotApi) -> bool,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        relay.ensure_running()?;
        if fake.wait_until(Duration::from_secs(1), &done).await {
            return Ok(true);
        }
    }
    Ok(done(fake))
}

/// N polling bots with default settings, into the file sink; the admin server on `admin`.
fn relay_config(n: usize, api_url: &str, admin: u16, updates: &Path) -> String {
    let mut config = format!(
        "drain_timeout = \"20s\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[log]\nlevel = \"warn\"\n\
         [sink]\nkind = \"file\"\n[sink.file]\npath = {:?}\n",
        updates.display().to_string()
    );
    for i in 0..n {
        config.push_str(&format!(
            "[bots.bot{i:05}]\ntoken = \"{}\"\napi_url = \"{api_url}\"\n",
            lean_bot_api::token(i)
        ));
    }
    config
}

/// `tgrelay check-config` on `config` (written to `<dir>/config.toml`), timed.
fn check_config(config: &str, dir: &Path) -> anyhow::Result<Duration> {
    let path = dir.join("config.toml");
    std::fs::write(&path, config)?;
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_tgrelay"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let took = started.elapsed();
    ensure!(
        output.status.success(),
        "check-config failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(took)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Socket descriptors the process holds (its connections and listeners).
fn socket_fds(pid: u32) -> anyhow::Result<usize> {
    let mut sockets = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if let Ok(target) = std::fs::read_link(entry?.path()) {
            sockets += usize::from(target.to_string_lossy().starts_with("socket:"));
        }
    }
    Ok(sockets)
}

async fn scrape(admin: u16) -> anyhow::Result<Scrape> {
    let started = Instant::now();
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(Scrape {
        time: started.elapsed(),
        bytes: text.len(),
        series: text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count(),
    })
}

// ---- The report ----

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn cpu_pct(cpu: CpuTime, over: Duration) -> f64 {
    cpu.us_per(1) / 1e6 / over.as_secs_f64() * 100.0
}

/// One cell of the table, from one size's figures.
type Cell = dyn Fn(&Figures) -> String;

fn print_table(results: &[Figures], idle: Duration) {
    println!(
        "Polling bots with default settings (30 s long polls, every update kind), each a token \
         file in `tokens_dir`, against a lean fake Bot API in the bench process, into the file \
         sink; idle window {} s. `check-config` loads the same bots written as `[bots.<name>]` \
         tables. Then one token file is added and another removed while the others poll.\n",
        idle.as_secs()
    );
    let column = |f: &Cell| -> String { results.iter().map(|r| format!(" {} |", f(r))).collect() };
    let header: String = results
        .iter()
        .map(|r| format!(" {} bots |", r.bots))
        .collect();
    println!("| |{header}");
    println!("|---|{}", "---:|".repeat(results.len()));
    let rows: [(&str, &Cell); 18] = [
        ("`check-config` (loading the configuration)", &|r| {
            format!("{:.2} s", r.check_config.as_secs_f64())
        }),
        ("start → every bot's first getUpdates", &|r| {
            format!("{:.1} s", r.all_polling.as_secs_f64())
        }),
        (
            "first Bot API request → every bot's first getUpdates",
            &|r| format!("{:.1} s", r.all_polling_from_first_request.as_secs_f64()),
        ),
        ("start → every bot's update confirmed", &|r| {
            format!("{:.1} s", r.all_confirmed.as_secs_f64())
        }),
        ("RSS, every bot polling (after idle window)", &|r| {
            format!(
                "{:.0} MiB ({:.0} MiB)",
                mib(r.rss_kib),
                mib(r.rss_after_idle_kib)
            )
        }),
        ("RSS per bot", &|r| {
            format!("{:.1} KiB", r.rss_after_idle_kib as f64 / r.bots as f64)
        }),
        ("peak RSS (VmHWM)", &|r| {
            format!("{:.0} MiB", mib(r.rss_peak_kib))
        }),
        ("idle CPU, share of one core (user+sys)", &|r| {
            format!("{:.2} %", cpu_pct(r.idle_cpu, r.idle))
        }),
        ("requests at the fake during the idle window", &|r| {
            r.requests_in_idle.to_string()
        }),
        ("TCP connections open at the fake (peak)", &|r| {
            format!("{} ({})", r.connections_open, r.connections_peak)
        }),
        ("TCP connections dialled in all", &|r| {
            r.connections_dialled.to_string()
        }),
        ("TCP connections dialled during the idle window", &|r| {
            r.dialled_in_idle.to_string()
        }),
        ("relay socket descriptors", &|r| r.relay_sockets.to_string()),
        ("token file added → that bot's first getUpdates", &|r| {
            format!("{:.2} s", r.changes.added.as_secs_f64())
        }),
        ("token file removed → that bot's final confirm", &|r| {
            format!("{:.2} s", r.changes.removed.as_secs_f64())
        }),
        (
            "other bots' long polls cut short by the two changes",
            &|r| r.changes.others_cut_short.to_string(),
        ),
        ("one `/metrics` scrape: series, size, time", &|r| {
            format!(
                "{}, {:.1} MiB, {:.0} ms",
                r.scrape.series,
                r.scrape.bytes as f64 / 1048576.0,
                r.scrape.time.as_secs_f64() * 1000.0
            )
        }),
        ("SIGTERM → exit (each bot confirms)", &|r| {
            format!("{:.1} s", r.shutdown.as_secs_f64())
        }),
    ];
    for (label, value) in rows {
        println!("| {label} |{}", column(value));
    }
    println!();
}

fn print_figures(r: &Figures) {
    let key = format!("many_bots.{}", r.bots);
    println!("{key}.check_config_s={:.2}", r.check_config.as_secs_f64());
    println!("{key}.all_polling_s={:.1}", r.all_polling.as_secs_f64());
    println!("{key}.rss_mib={:.0}", mib(r.rss_after_idle_kib));
    println!("{key}.rss_peak_mib={:.0}", mib(r.rss_peak_kib));
    println!("{key}.idle_cpu_pct={:.2}", cpu_pct(r.idle_cpu, r.idle));
    println!("{key}.connections={}", r.connections_open);
    println!("{key}.series={}", r.scrape.series);
    println!("{key}.added_s={:.2}", r.changes.added.as_secs_f64());
    println!("{key}.removed_s={:.2}", r.changes.removed.as_secs_f64());
}
