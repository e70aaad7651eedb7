//! The relay binary as a child process for the hostile-client tests, and what the
//! kernel and its /metrics tell about it: resident memory, open files, samples.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::attack::SECRET;
use super::support::fake_bot_api::FakeBotApi;
use super::support::relay::{allow_future_kinds, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_tgrelay");

/// The relay binary with its own config, its webhook listener and its admin server.
pub struct Relay {
    child: Child,
    pub webhook: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Relay {
    pub async fn start(api: &FakeBotApi, token: &str, sink: &str, webhook: &str) -> Relay {
        let (port, admin) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "drain_timeout = \"5s\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[webhook]\n\
             listen = \"127.0.0.1:{port}\"\n{webhook}\n{sink}\n[bots.main]\ntoken = \"{token}\"\n\
             api_url = \"{}\"\nmode = \"webhook\"\n{}[bots.main.webhook]\n\
             url = \"http://127.0.0.1:{port}/telegram/main\"\nsecret_token = \"{SECRET}\"\n\
             max_connections = 20\ninfo_interval = \"1s\"\n",
            api.base_url(),
            allow_future_kinds()
        );
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("relay.log")).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the relay binary starts");
        Relay {
            child,
            webhook: ([127, 0, 0, 1], port).into(),
            admin: ([127, 0, 0, 1], admin).into(),
            _dir: dir,
        }
    }

    pub fn memory_kib(&self, field: &str) -> u64 {
        memory_kib(self.child.id(), field)
    }

    pub fn open_files(&self) -> usize {
        open_files(self.child.id())
    }

    pub async fn metric(&self, sample: &str) -> f64 {
        metric(self.admin, sample).await
    }

    /// SIGTERM, then the exit status.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        for _ in 0..1500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child.kill().unwrap();
        panic!("the relay did not exit within 30 s");
    }
}

impl Drop for Relay {
    /// A failed test leaves no relay behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A line of /proc/<pid>/status in KiB: `VmRSS` now, `VmHWM` the peak so far.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc status"))
}

/// Open file descriptors, counted by the kernel rather than by the relay.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// One sample of the relay's /metrics.
async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("the admin server answers")
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{sample} in /metrics"))
}

/// The most the relay showed at once while it was sampled.
#[derive(Debug, Default, Clone, Copy)]
pub struct Peak {
    pub open_gauge: f64,
    pub open_files: usize,
    pub rss_kib: u64,
}

/// Samples the relay every 100 ms until the returned sender is dropped.
pub fn sample(
    relay: &Relay,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Peak>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let (pid, admin) = (relay.child.id(), relay.admin);
    let task = tokio::spawn(async move {
        let mut peak = Peak::default();
        loop {
            let gauge = metric(admin, "tgrelay_webhook_connections_open").await;
            peak.open_gauge = peak.open_gauge.max(gauge);
            peak.open_files = peak.open_files.max(open_files(pid));
            peak.rss_kib = peak.rss_kib.max(memory_kib(pid, "VmRSS"));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = &mut stopped => return peak,
            }
        }
    });
    (stop, task)
}
