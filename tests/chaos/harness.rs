//! One scenario's world: the fake Bot API, a private broker, the relay binary as a
//! child process (so SIGKILL is real), and the updates fed to it in chunks.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::support::corpus::Corpus;
use super::support::fake_bot_api::{FakeBotApi, WebhookTiming};
use super::support::private_broker::{signal, BrokerKind, PrivateBroker};
use super::support::relay::{allow_future_kinds, free_port, token};

const BIN: &str = env!("CARGO_BIN_EXE_tgrelay");
pub const BOT_ID: u64 = 777000;
pub const POLL_LIMIT: usize = 100;
pub const MAX_CONNECTIONS: usize = 8;
/// Where the sink routes: one Kafka topic (reading dozens back from tansu is slow),
/// NATS subjects by kind.
pub const PREFIX: &str = "chaos";
pub const STREAM: &str = "CHAOS";
pub const SECRET: &str = "chaos-Secret_9f3b";
const TICK: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Polling,
    Webhook,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Polling => "polling",
            Mode::Webhook => "webhook",
        }
    }
}

/// The relay binary running with the scenario's config.
pub struct RelayProcess {
    child: Child,
}

impl RelayProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the relay is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// User + system CPU time so far, from /proc (clock ticks of 10 ms).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("the relay is running");
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("stat format")
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    async fn terminate(mut self) -> ExitStatus {
        signal(self.pid(), "TERM");
        for _ in 0..1500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child.kill().unwrap();
        panic!("the relay did not exit within 30 s of SIGTERM");
    }
}

/// A failing scenario must not leave its relay running.
impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct World {
    pub mode: Mode,
    pub broker: PrivateBroker,
    pub api: FakeBotApi,
    pub token: String,
    /// Every update the scenario feeds, in update_id order from 1.
    pub updates: Vec<Vec<u8>>,
    pub fed: usize,
    per_tick: usize,
    /// How many times updates were pushed (each may wake a long poll).
    pub pushes: usize,
    /// When each relay process started, so checks compare calls of one process only.
    pub spawned_at: Vec<Instant>,
    pub crashes: usize,
    pub clean_restarts: usize,
    /// Exit statuses of SIGTERMed relays that were not 0.
    pub bad_exits: Vec<String>,
    pub started: Instant,
    dir: tempfile::TempDir,
    config: PathBuf,
    relay: Option<RelayProcess>,
}

impl World {
    pub async fn new(mode: Mode, sink: BrokerKind, count: usize, seed: u64) -> World {
        let broker = PrivateBroker::start(sink);
        if sink == BrokerKind::Kafka {
            super::verdict::create_kafka_topics(&broker.address()).await;
        }
        let api = FakeBotApi::start().await;
        // Telegram's schedule (2, 4, 8… s) compressed, so a run takes seconds.
        api.set_webhook_timing(WebhookTiming {
            answer_timeout: Duration::from_secs(10),
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_secs(1),
        });
        let token = token(BOT_ID);
        api.add_bot(&token);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("config.toml");
        let toml = relay_config(mode, &broker, &api.base_url(), &token);
        std::fs::write(&config, toml).expect("config written");
        World {
            mode,
            broker,
            api,
            token,
            updates: Corpus::load().mixed(1, count, seed),
            fed: 0,
            per_tick: 10,
            pushes: 0,
            spawned_at: Vec::new(),
            crashes: 0,
            clean_restarts: 0,
            bad_exits: Vec::new(),
            started: Instant::now(),
            dir,
            config,
            relay: None,
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("relay.log")
    }

    pub fn relay(&self) -> &RelayProcess {
        self.relay.as_ref().expect("the relay runs")
    }

    /// Pushes the next `n` updates (fewer at the end) to the fake Bot API.
    pub fn feed(&mut self, n: usize) {
        let end = (self.fed + n).min(self.updates.len());
        if end == self.fed {
            return;
        }
        self.pushes += 1;
        self.api
            .push_updates(&self.token, self.updates[self.fed..end].to_vec());
        self.fed = end;
    }

    /// Feeds at a steady pace for `d`, so faults land mid-stream: `per_tick`
    /// updates every 20 ms (see `pace`).
    pub async fn feed_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.feed(self.per_tick);
            tokio::time::sleep(TICK.min(end.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Sets the pace so that every update is fed in about `over`.
    pub fn pace(&mut self, over: Duration) {
        let ticks = (over.as_millis() / TICK.as_millis()).max(1) as usize;
        self.per_tick = self.updates.len().div_ceil(ticks);
    }

    pub fn feed_rest(&mut self) {
        self.feed(self.updates.len());
    }

    pub fn spawn(&mut self) {
        assert!(self.relay.is_none(), "one relay at a time");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the relay binary starts");
        self.spawned_at.push(Instant::now());
        self.relay = Some(RelayProcess { child });
    }

    pub fn kill(&mut self) {
        self.relay.take().expect("the relay runs").kill();
        self.crashes += 1;
    }

    pub async fn terminate(&mut self) {
        // A SIGTERM in the first milliseconds of a process, before its handlers are
        // installed, kills it outright, as for any program; its first Bot API call
        // comes after them.
        let spawned = *self.spawned_at.last().expect("spawned");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && !self.api.calls(&self.token).iter().any(|c| c.at >= spawned)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = self.relay.take().expect("the relay runs").terminate().await;
        if !status.success() {
            self.bad_exits.push(status.to_string());
        }
    }

    pub async fn restart_cleanly(&mut self) {
        self.terminate().await;
        self.clean_restarts += 1;
        self.spawn();
    }

    /// Feeds whatever is left, waits until every update is confirmed, stops the relay.
    pub async fn finish(&mut self, within: Duration) -> bool {
        self.feed_rest();
        let all = self
            .api
            .wait_for_confirmed(&self.token, self.updates.len(), within)
            .await;
        self.terminate().await;
        all
    }

    /// The last lines of the relay's log, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn relay_config(mode: Mode, broker: &PrivateBroker, api_url: &str, token: &str) -> String {
    let mut toml = String::from("drain_timeout = \"10s\"\n[admin]\nlisten = \"\"\n");
    let port = free_port();
    if mode == Mode::Webhook {
        toml.push_str(&format!(
            "[webhook]\nlisten = \"127.0.0.1:{port}\"\npublish_timeout = \"5s\"\n"
        ));
    }
    toml.push_str(&match broker.kind {
        BrokerKind::Nats => format!(
            "[sink]\nkind = \"nats\"\n[sink.nats]\nurl = \"{}\"\nstream = \"{STREAM}\"\n\
             stream_subjects = [\"{PREFIX}.>\"]\nsubject = \"{PREFIX}.{{bot}}.{{kind}}\"\n\
             dead_letter_subject = \"{PREFIX}.{{bot}}.deadletter\"\n",
            broker.address()
        ),
        BrokerKind::Kafka => format!(
            "[sink]\nkind = \"kafka\"\n[sink.kafka]\nbrokers = \"{}\"\ntopic = \"{PREFIX}.{{bot}}\"\n\
             dead_letter_topic = \"{PREFIX}.{{bot}}.deadletter\"\n",
            broker.address()
        ),
    });
    toml.push_str(&format!(
        "[bots.main]\ntoken = \"{token}\"\napi_url = \"{api_url}\"\npoll_timeout = \"1s\"\n\
         poll_limit = {POLL_LIMIT}\n{}",
        allow_future_kinds()
    ));
    if mode == Mode::Webhook {
        toml.push_str(&format!(
            "mode = \"webhook\"\n[bots.main.webhook]\nurl = \"http://127.0.0.1:{port}/telegram/main\"\n\
             secret_token = \"{SECRET}\"\nmax_connections = {MAX_CONNECTIONS}\ninfo_interval = \"1s\"\n"
        ));
    }
    toml
}
