//! A broker of one's own: a nats-server or tansu on a free port, so a chaos scenario or
//! a benchmark can stop or freeze it without touching the brokers other tests share.
//! scripts/test, scripts/bench and scripts/chaos install both binaries; scripts/test
//! and scripts/chaos name the current nats-server in `TEST_TGRELAY_NATS_SERVER`.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Nats,
    Kafka,
}

impl BrokerKind {
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Nats => "nats",
            BrokerKind::Kafka => "kafka",
        }
    }
}

/// Killed when dropped (SIGKILL ends a frozen process too).
pub struct PrivateBroker {
    pub kind: BrokerKind,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More command-line arguments for the broker (authentication, TLS).
    args: Vec<String>,
}

impl PrivateBroker {
    pub fn start(kind: BrokerKind) -> PrivateBroker {
        Self::start_with(kind, &[])
    }

    /// A broker started with more arguments, e.g. nats-server's `--user`, `--tlsverify`.
    pub fn start_with(kind: BrokerKind, args: &[&str]) -> PrivateBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut broker = PrivateBroker {
            kind,
            port,
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        broker.spawn();
        broker
    }

    /// `nats://127.0.0.1:<port>` or `127.0.0.1:<port>`, as the sink's config wants it.
    pub fn address(&self) -> String {
        match self.kind {
            BrokerKind::Nats => format!("nats://127.0.0.1:{}", self.port),
            BrokerKind::Kafka => format!("127.0.0.1:{}", self.port),
        }
    }

    /// The outage this broker can have and survive with its data: NATS is stopped
    /// (JetStream keeps its file store) and restarted; tansu keeps its data in memory,
    /// so it is frozen (SIGSTOP) instead: a hung broker.
    pub fn outage_name(&self) -> &'static str {
        match self.kind {
            BrokerKind::Nats => "down",
            BrokerKind::Kafka => "hung",
        }
    }

    pub fn begin_outage(&mut self) {
        match self.kind {
            BrokerKind::Nats => {
                let mut child = self.child.take().expect("running");
                // SIGTERM: nats-server flushes JetStream before it exits.
                signal(child.id(), "TERM");
                child.wait().expect("nats-server exits");
            }
            BrokerKind::Kafka => {
                signal(self.pid(), "STOP");
            }
        }
    }

    pub fn end_outage(&mut self) {
        match self.kind {
            BrokerKind::Nats => self.spawn(),
            BrokerKind::Kafka => {
                signal(self.pid(), "CONT");
            }
        }
    }

    /// The last `lines` lines the broker logged, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("the broker's log file");
        let port = self.port.to_string();
        let mut command = match self.kind {
            BrokerKind::Nats => {
                let mut c = Command::new(nats_server());
                c.args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
                    .arg(self.dir.path().join("store"));
                c
            }
            BrokerKind::Kafka => {
                let url = format!("tcp://127.0.0.1:{port}");
                let mut c = Command::new(tansu());
                c.args(["broker", "--listener-url", &url])
                    .args(["--advertised-listener-url", &url])
                    .args(["--storage-engine", "memory://tansu/"])
                    .current_dir(self.dir.path());
                c
            }
        };
        let child = command
            .args(&self.args)
            .stdout(log.try_clone().expect("a second handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} (scripts/test, scripts/bench and scripts/chaos install it): {e}",
                    self.kind.name()
                )
            });
        self.child = Some(child);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("the broker's status") {
                panic!(
                    "the private broker exited ({status}):\n{}",
                    self.log_tail(30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on 127.0.0.1:{}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `TEST_TGRELAY_NATS_SERVER` (the current server, set by scripts/test and
/// scripts/chaos), else nats-server from PATH.
pub fn nats_server() -> PathBuf {
    std::env::var_os("TEST_TGRELAY_NATS_SERVER")
        .map_or_else(|| PathBuf::from("nats-server"), PathBuf::from)
}

/// tansu from PATH, else where `cargo install` put it.
fn tansu() -> PathBuf {
    let installed =
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("tansu")
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}
