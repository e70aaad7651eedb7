//! Running a relay inside a test: configuration from TOML text, a handle to stop it.

use std::sync::Arc;

use figment::providers::{Format, Toml};
use figment::Figment;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use tgrelay::app::Relay;
use tgrelay::config::Config;
use tgrelay::metrics::Metrics;
use tgrelay::sink::Sink;
use tgrelay::supervisor::Supervisor;

/// A token the fake Bot API accepts, for bot id `id`.
pub fn token(id: u64) -> String {
    format!("{id}:AAE-test_token-{id}")
}

/// A configuration with one polling bot per `(name, token)`, all pointed at `api_url`,
/// with short long-polls and no admin server; `extra` is appended TOML.
pub fn config(api_url: &str, bots: &[(&str, &str)], extra: &str) -> Config {
    let mut toml = String::from("drain_timeout = \"10s\"\n[admin]\nlisten = \"\"\n");
    for (name, token) in bots {
        toml.push_str(&format!(
            "[bots.{name}]\ntoken = \"{token}\"\napi_url = \"{api_url}\"\npoll_timeout = \"1s\"\n"
        ));
    }
    toml.push_str(extra);
    Config::from_figment(Figment::from(Toml::string(&toml)))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// TOML asking for every Bot API kind and `story_reaction`, the kind `Corpus::mixed`
/// adds as one a later Bot API could bring (it arrives only when asked for).
pub fn allow_future_kinds() -> String {
    let kinds: Vec<String> = super::corpus::Corpus::load()
        .kinds()
        .into_iter()
        .chain(["story_reaction".to_owned()])
        .collect();
    format!("allowed_updates = {kinds:?}\n")
}

/// A relay running in this process.
pub struct RunningRelay {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    pub metrics: Arc<Metrics>,
    /// The webhook listener's address, when a bot uses webhooks (see `started`).
    pub webhook_addr: Option<std::net::SocketAddr>,
    /// The relay's bot supervisor (see `started`).
    pub supervisor: Option<Supervisor>,
}

impl RunningRelay {
    pub fn start(config: Config, sink: Arc<dyn Sink>) -> RunningRelay {
        let relay = Relay::with_sink(config, sink);
        let metrics = relay.metrics();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay.run(shutdown.clone()));
        RunningRelay {
            shutdown,
            task,
            metrics,
            webhook_addr: None,
            supervisor: None,
        }
    }

    /// Like `start`, but returns once the listeners are bound (webhook tests need the address).
    pub async fn started(config: Config, sink: Arc<dyn Sink>) -> RunningRelay {
        let relay = Relay::with_sink(config, sink);
        let metrics = relay.metrics();
        let shutdown = CancellationToken::new();
        let running = relay
            .start(shutdown.clone())
            .await
            .expect("the relay starts");
        let webhook_addr = running.webhook_addr;
        let supervisor = Some(running.supervisor().clone());
        RunningRelay {
            shutdown,
            task: tokio::spawn(running.wait()),
            metrics,
            webhook_addr,
            supervisor,
        }
    }

    /// Graceful shutdown, as on SIGTERM; returns what `run` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.expect("the relay task does not panic")
    }

    /// The supervisor of a relay made with `started`.
    pub fn supervisor(&self) -> &Supervisor {
        self.supervisor
            .as_ref()
            .expect("made with RunningRelay::started")
    }

    /// Whether the relay has ended (by itself, or stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the relay to end by itself (every bot stopped).
    pub async fn finished(self) -> anyhow::Result<()> {
        self.task.await.expect("the relay task does not panic")
    }

    /// The value of one metric sample in the text exposition, e.g.
    /// `tgrelay_telegram_errors_total{bot="main",code="429",method="getUpdates"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Polls `check` every 20 ms until it holds or `secs` pass; returns whether it held.
pub async fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    check()
}

/// Runs a relay built from its configuration (so with its real sink), with every Bot API
/// kind and `story_reaction` asked for, until the fake Bot API saw `count` updates confirmed.
pub async fn relay_until_confirmed(
    api: &super::fake_bot_api::FakeBotApi,
    token: &str,
    sink_toml: &str,
    count: usize,
) {
    let toml = format!("{}{sink_toml}", allow_future_kinds());
    let cfg = config(&api.base_url(), &[("main", token)], &toml);
    let relay = Relay::new(cfg);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    let within = std::time::Duration::from_secs(60);
    assert!(
        api.wait_for_confirmed(token, count, within).await,
        "confirmed {count}"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// A port nothing listens on right now (bound, read, released), for URLs a relay must
/// know before it binds.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What one run of the `tgrelay` binary did.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Both outputs, for assertions on what a person sees.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `tgrelay ARGS` in `dir` to its end, with `env` as its only `TGRELAY_*` variables.
pub fn tgrelay(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tgrelay"));
    for (name, _) in std::env::vars_os() {
        let settings = name.to_str().is_some_and(|n| {
            n.get(..8)
                .is_some_and(|p| p.eq_ignore_ascii_case("TGRELAY_"))
        });
        if settings {
            command.env_remove(name);
        }
    }
    let output = command
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .expect("the relay binary runs");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
