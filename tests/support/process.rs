//! The relay binary as a child process: started on a configuration file, its log kept,
//! signalled (SIGKILL, SIGTERM, SIGSTOP/SIGCONT are real), measured from /proc, and
//! killed if a test leaves it running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub use super::private_broker::signal;

pub const BIN: &str = env!("CARGO_BIN_EXE_tgrelay");

pub struct RelayProcess {
    child: Child,
    pub log: PathBuf,
}

impl RelayProcess {
    /// Writes `config` to `<dir>/<name>.toml` and runs `tgrelay run` on it, stderr to
    /// `<dir>/<name>.log`, with `env` added (`RUST_LOG` is debug unless given).
    pub fn spawn(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> RelayProcess {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("config written");
        Self::spawn_file(dir, name, &path, env)
    }

    /// Runs `tgrelay run` on an existing configuration file.
    pub fn spawn_file(dir: &Path, name: &str, config: &Path, env: &[(&str, &str)]) -> RelayProcess {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the relay binary starts");
        RelayProcess { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`...).
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// SIGKILL, and reaped.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then waits for the exit (at most 30 s).
    pub async fn terminate(mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit().await
    }

    /// Waits for the process to exit by itself (at most 30 s).
    pub async fn wait_exit(&mut self) -> ExitStatus {
        for _ in 0..1500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child.kill().unwrap();
        panic!("the relay did not exit within 30 s");
    }

    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
}

/// A failing test must not leave its relay running (or stopped).
impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One sample of the Prometheus text a relay serves on `admin` (0 when absent or down).
pub async fn scrape(admin: &str, sample: &str) -> f64 {
    let text = metrics_text(admin).await;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every sample of the Prometheus text a relay serves on `admin` whose line
/// starts with `metric{` and holds each of `labels` (0 when down).
pub async fn scrape_sum(admin: &str, metric: &str, labels: &[&str]) -> f64 {
    let text = metrics_text(admin).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The exposition a relay serves on `admin`; empty when it does not answer within 2 s
/// (a stopped process accepts the connection and never answers).
async fn metrics_text(admin: &str) -> String {
    let get = async {
        reqwest::get(format!("http://{admin}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}
