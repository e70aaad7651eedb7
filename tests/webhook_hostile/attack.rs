//! Hostile clients: connections that send part of a request (or nothing) and stall,
//! each watched until the relay closes it.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The webhook secret the relay is given: a stalled body needs it, or the relay answers
/// 401 without waiting for the body.
macro_rules! secret {
    () => {
        "hostile-Secret_7"
    };
}
pub const SECRET: &str = secret!();
pub const HALF_HEADER: &[u8] = b"POST /telegram/main HTTP/1.1\r\nHost: relay\r\nContent-Ty";
pub const HALF_BODY: &[u8] = concat!(
    "POST /telegram/main HTTP/1.1\r\nHost: relay\r\nX-Telegram-Bot-Api-Secret-Token: ",
    secret!(),
    "\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"update_id\":"
)
.as_bytes();

/// Raises this process's soft open-file limit (the relay inherits it) to `needed`.
pub fn ensure_open_file_limit(needed: u64) {
    let limits = || -> (u64, u64) {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let mut n = line
            .split_whitespace()
            .skip(3)
            .map(|v| v.parse().unwrap_or(u64::MAX));
        (n.next().unwrap(), n.next().unwrap())
    };
    let (soft, hard) = limits();
    if soft < needed && hard >= needed {
        let pid = std::process::id().to_string();
        let arg = format!("--nofile={needed}:{hard}");
        let _ = Command::new("prlimit").args(["--pid", &pid, &arg]).status();
    }
    let (soft, _) = limits();
    assert!(
        soft >= needed,
        "open-file limit {soft}, the test needs {needed}"
    );
}

/// Opens `count` more connections that each send `request` and stall; each task ends
/// when the relay closes its connection, with how long it was held open.
pub async fn stall(
    held: &mut JoinSet<Duration>,
    addr: SocketAddr,
    request: &'static [u8],
    count: usize,
) {
    let connecting = Arc::new(Semaphore::new(200));
    for _ in 0..count {
        let permit = Arc::clone(&connecting).acquire_owned().await.unwrap();
        held.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(request).await.expect("send");
            drop(permit);
            let since = Instant::now();
            let mut buf = [0u8; 256];
            // Until EOF (or a reset): anything the relay sends first is read and ignored.
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            since.elapsed()
        });
    }
}

/// Waits (at most `within`) until the relay has closed every stalled connection; how
/// long each was held, sorted.
pub async fn all_closed(mut held: JoinSet<Duration>, within: Duration) -> Vec<Duration> {
    let mut times = Vec::new();
    let closing = async {
        while let Some(done) = held.join_next().await {
            times.push(done.unwrap());
        }
    };
    if tokio::time::timeout(within, closing).await.is_err() {
        panic!("the relay left {} stalled connections open", held.len());
    }
    times.sort();
    times
}
