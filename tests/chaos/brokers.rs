//! Private brokers: each chaos scenario starts its own nats-server or tansu on a free
//! port, so it can stop or freeze it without touching the brokers other tests share.
//! Both binaries are installed by scripts/test.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::relay::free_port;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Nats,
    Kafka,
}

impl SinkKind {
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Nats => "nats",
            SinkKind::Kafka => "kafka",
        }
    }
}

pub struct Broker {
    pub kind: SinkKind,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    frozen: bool,
}

impl Broker {
    pub fn start(kind: SinkKind) -> Broker {
        let mut broker = Broker {
            kind,
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
            frozen: false,
        };
        broker.spawn();
        broker
    }

    /// `nats://127.0.0.1:<port>` or `127.0.0.1:<port>`, as the sink's config wants it.
    pub fn address(&self) -> String {
        match self.kind {
            SinkKind::Nats => format!("nats://127.0.0.1:{}", self.port),
            SinkKind::Kafka => format!("127.0.0.1:{}", self.port),
        }
    }

    /// The outage this broker can have and survive with its data: NATS is stopped
    /// (JetStream keeps its file store) and restarted; tansu keeps its data in memory,
    /// so it is frozen (SIGSTOP) instead: a hung broker.
    pub fn outage_name(&self) -> &'static str {
        match self.kind {
            SinkKind::Nats => "down",
            SinkKind::Kafka => "hung",
        }
    }

    pub fn begin_outage(&mut self) {
        match self.kind {
            SinkKind::Nats => {
                let mut child = self.child.take().expect("running");
                // SIGTERM: nats-server flushes JetStream before it exits.
                signal(child.id(), "TERM");
                child.wait().expect("nats-server exits");
            }
            SinkKind::Kafka => {
                signal(self.pid(), "STOP");
                self.frozen = true;
            }
        }
    }

    pub fn end_outage(&mut self) {
        match self.kind {
            SinkKind::Nats => self.spawn(),
            SinkKind::Kafka => {
                signal(self.pid(), "CONT");
                self.frozen = false;
            }
        }
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
            SinkKind::Nats => {
                let mut c = Command::new("nats-server");
                c.args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
                    .arg(self.dir.path());
                c
            }
            SinkKind::Kafka => {
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
            .stdout(log.try_clone().expect("a second handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} (scripts/test installs it): {e}",
                    self.kind.name()
                )
            });
        self.child = Some(child);
        wait_listening(self.port);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.frozen {
                signal(child.id(), "CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
