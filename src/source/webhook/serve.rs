//! Serving the webhook listener, plain HTTP/1.1 or HTTPS, with a graceful stop.
//!
//! Hostile or broken clients must not wear the listener down, while Telegram's own
//! connections never meet a limit: at most `max_open_connections` are open (at the cap
//! accepting pauses, and new connections wait in the kernel's backlog); a request must
//! arrive whole within `request_read_timeout` of its first byte; a connection waits at
//! most `idle_timeout` for a request; a TLS handshake gets `tls_handshake_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::http1;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activity::{Expiry, Limits};
use super::connection::{self, Listener, Slot, TLS_HANDSHAKE_TIMEOUT};
use super::{tls, WebhookServer, WebhookServerConfig};
use crate::metrics::Metrics;

/// Connections the kernel completes while accepting is paused at the cap; they are
/// served as soon as places free up (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 1024;
/// The read buffer of a connection. A Telegram request's header is well under 1 KiB;
/// a larger header gets 431, and a stalled client cannot make the buffer grow past this.
const MAX_BUF_BYTES: usize = 16 * 1024;
/// Files the relay keeps open besides webhook connections, with room to spare.
const FILES_BESIDES: usize = 256;
/// A warning that repeats (the cap reached, accept failing) is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Binds now (so a taken port is a startup error), then serves in the background until
/// `shutdown`, giving in-flight requests `drain` to finish. Returns the bound address
/// and the serving task.
pub async fn serve(
    config: &WebhookServerConfig,
    server: WebhookServer,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let socket = bind(&config.listen)
        .with_context(|| format!("binding the webhook listener to {}", config.listen))?;
    let addr = socket.local_addr()?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let mut http = http1::Builder::new();
    // hyper's own header timer would also run while a connection waits between
    // requests; the listener's limits (see `activity`) tell the two apart.
    http.header_read_timeout(None).max_buf_size(MAX_BUF_BYTES);
    for reason in [
        Expiry::RequestRead.label(),
        Expiry::Idle.label(),
        TLS_HANDSHAKE_TIMEOUT,
    ] {
        metrics
            .webhook_connections_closed
            .with_label_values(&[reason]);
    }
    let listener = Arc::new(Listener {
        router: server.router(config.max_body_bytes),
        http,
        tls,
        tls_handshake_timeout: config.tls_handshake_timeout,
        limits: Limits {
            request_read: config.request_read_timeout,
            idle: config.idle_timeout,
        },
        metrics,
        shutdown,
        halt: CancellationToken::new(),
    });
    warn_above_open_file_limit(config.max_open_connections);
    let slots = Arc::new(Semaphore::new(config.max_open_connections));
    let task = tokio::spawn(accept_until_shutdown(socket, listener, slots, drain));
    Ok((addr, task))
}

fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = listen.parse()?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As the standard library does for listeners: a restart may bind at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(BACKLOG)?)
}

/// The cap only protects the process if its sockets fit in the open-file limit, with
/// room left for the broker and Bot API connections; otherwise accept fails first.
fn warn_above_open_file_limit(max_open_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next()?.parse::<usize>().ok());
    if let Some(soft) = soft.filter(|&soft| soft < max_open_connections + FILES_BESIDES) {
        tracing::warn!(
            open_file_limit = soft,
            max_open_connections,
            "webhook.max_open_connections is near or above the open-file limit: \
             raise the limit (ulimit -n) or lower the cap"
        );
    }
}

async fn accept_until_shutdown(
    socket: TcpListener,
    listener: Arc<Listener>,
    slots: Arc<Semaphore>,
    drain: Duration,
) {
    let connections = TaskTracker::new();
    let (mut at_cap, mut failing) = (Throttle::default(), Throttle::default());
    loop {
        let Some(permit) = free_slot(&slots, &listener, &mut at_cap).await else {
            break;
        };
        let (stream, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if failing.ready() {
                        tracing::warn!(error = %e, "accepting a webhook connection failed");
                    }
                    // Out of file descriptors, say: give connections time to close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = listener.shutdown.cancelled() => break,
        };
        let slot = Slot::new(permit, listener.metrics.webhook_connections_open.clone());
        connections.spawn(connection::serve(Arc::clone(&listener), stream, peer, slot));
    }
    // New connections are refused from here on: Telegram retries them later.
    drop(socket);
    connections.close();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        listener.halt.cancel();
        connections.wait().await;
    }
}

/// A place for the next connection, waiting for one at the cap; None on shutdown.
async fn free_slot(
    slots: &Arc<Semaphore>,
    listener: &Listener,
    throttle: &mut Throttle,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
        return Some(permit);
    }
    listener.metrics.webhook_connection_limit_reached.inc();
    if throttle.ready() {
        tracing::warn!("webhook.max_open_connections are open: accepting pauses until one closes");
    }
    tokio::select! {
        permit = Arc::clone(slots).acquire_owned() => Some(permit.expect("never closed")),
        _ = listener.shutdown.cancelled() => None,
    }
}

/// Lets a repeated warning through at most once per `WARN_EVERY`.
#[derive(Default)]
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        let ready = self.0.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if ready {
            self.0 = Some(Instant::now());
        }
        ready
    }
}
