//! A lean fake Bot API for many bots at once: getMe, getWebhookInfo, deleteWebhook and
//! getUpdates, nothing else, with a few atomics per bot and no log of calls.
//!
//! `tests/support/fake_bot_api.rs` keeps every call and every update of every bot (what
//! tests need to check), behind one lock; at 10 000 bots that lock and those records are
//! what would be measured. Here a bot is `{BASE_ID + i}:AAE-many_bots-{i}` for `i` below
//! the count, and its state is when its first getUpdates came and whether it confirmed its
//! update. Each bot's first getUpdates is answered at once with one small update (so the
//! relay's publish path runs for every bot); every later one is held for its `timeout`,
//! then answered `[]`, as Telegram does on a quiet bot. Connections are counted as they
//! open and close: each long poll holds one (HTTP/1.1, no pipelining).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpSocket;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The id of bot 0; bot `i` is `BASE_ID + i`.
pub const BASE_ID: u64 = 7_000_000;

/// The token of bot `i`.
pub fn token(i: usize) -> String {
    format!("{}:AAE-many_bots-{i}", BASE_ID + i as u64)
}

/// What the fake has seen, shared with the bench.
pub struct LeanBotApi {
    pub addr: SocketAddr,
    bots: usize,
    /// When the fake started; the times below count from it.
    pub epoch: Instant,
    /// Per bot: microseconds from `epoch` to its first getUpdates, plus one (0: none yet).
    first_poll: Vec<AtomicU64>,
    /// Per bot: 1 once a getUpdates confirmed its update.
    confirmed: Vec<AtomicU64>,
    /// Per bot: microseconds from `epoch` to its last getUpdates with timeout 0 (a
    /// relay's final confirm when it stops the bot), plus one.
    last_short_poll: Vec<AtomicU64>,
    polling: AtomicUsize,
    confirmed_count: AtomicUsize,
    /// Microseconds from `epoch` to the first request of any bot, plus one.
    first_request: AtomicU64,
    pub open_connections: AtomicUsize,
    pub peak_connections: AtomicUsize,
    pub accepted_connections: AtomicUsize,
    pub requests: AtomicU64,
    /// getUpdates calls answered before their timeout with nothing (timeout 0, or a
    /// relay that gave up): should stay near zero.
    pub short_polls: AtomicU64,
    changed: Notify,
}

#[derive(Deserialize, Default)]
struct GetUpdates {
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    timeout: u64,
}

impl LeanBotApi {
    /// Listens on a free loopback port. The backlog is as long as the kernel allows:
    /// a relay dialling thousands of connections at once must not see SYNs dropped
    /// (a retransmission waits a whole second) because of the fake.
    pub async fn start(bots: usize) -> std::io::Result<Arc<LeanBotApi>> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind("127.0.0.1:0".parse().unwrap())?;
        let listener = socket.listen(65_535)?;
        let api = Arc::new(LeanBotApi {
            addr: listener.local_addr()?,
            bots,
            epoch: Instant::now(),
            first_poll: (0..bots).map(|_| AtomicU64::new(0)).collect(),
            confirmed: (0..bots).map(|_| AtomicU64::new(0)).collect(),
            last_short_poll: (0..bots).map(|_| AtomicU64::new(0)).collect(),
            polling: AtomicUsize::new(0),
            confirmed_count: AtomicUsize::new(0),
            first_request: AtomicU64::new(0),
            open_connections: AtomicUsize::new(0),
            peak_connections: AtomicUsize::new(0),
            accepted_connections: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            short_polls: AtomicU64::new(0),
            changed: Notify::new(),
        });
        let server = Arc::clone(&api);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors: wait for some to close rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(Arc::clone(&server).serve(stream));
            }
        });
        Ok(api)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn polling(&self) -> usize {
        self.polling.load(Ordering::Relaxed)
    }

    pub fn confirmed(&self) -> usize {
        self.confirmed_count.load(Ordering::Relaxed)
    }

    /// From `epoch` to bot `i`'s first getUpdates.
    pub fn first_poll(&self, i: usize) -> Option<Duration> {
        micros(self.first_poll[i].load(Ordering::Relaxed))
    }

    /// From `epoch` to bot `i`'s last getUpdates with timeout 0 (its final confirm).
    pub fn last_short_poll(&self, i: usize) -> Option<Duration> {
        micros(self.last_short_poll[i].load(Ordering::Relaxed))
    }

    /// From `epoch` to the first request of any bot.
    pub fn first_request(&self) -> Option<Duration> {
        micros(self.first_request.load(Ordering::Relaxed))
    }

    /// From `epoch` to the last first getUpdates of bots `0..n`, once each has polled.
    pub fn all_polling(&self, n: usize) -> Option<Duration> {
        self.first_poll[..n]
            .iter()
            .map(|t| micros(t.load(Ordering::Relaxed)))
            .try_fold(Duration::ZERO, |latest, t| Some(latest.max(t?)))
    }

    /// Waits until `done` holds or `within` passes; says whether it holds.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return true;
            }
            // Woken by progress, or every 100 ms to look at the deadline.
            let wake = deadline.min(Instant::now() + Duration::from_millis(100));
            let _ = tokio::time::timeout_at(wake, changed).await;
            if Instant::now() >= deadline {
                return done(self);
            }
        }
    }

    async fn serve(self: Arc<Self>, stream: tokio::net::TcpStream) {
        self.accepted_connections.fetch_add(1, Ordering::Relaxed);
        let open = self.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_connections.fetch_max(open, Ordering::Relaxed);
        let api = Arc::clone(&self);
        let service = service_fn(move |request| {
            let api = Arc::clone(&api);
            async move { Ok::<_, Infallible>(api.answer(request).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let since = self.epoch.elapsed().as_micros() as u64 + 1;
        let _ = self
            .first_request
            .compare_exchange(0, since, Ordering::Relaxed, Ordering::Relaxed);
        let path = request.uri().path().to_owned();
        let Some((bot, method)) = self.route(&path) else {
            return reply(
                404,
                r#"{"ok":false,"error_code":404,"description":"Not Found"}"#,
            );
        };
        let body = axum::body::to_bytes(Body::new(request.into_body()), 1 << 16)
            .await
            .unwrap_or_default();
        match method {
            "getMe" => reply(
                200,
                format!(
                    r#"{{"ok":true,"result":{{"id":{},"is_bot":true,"first_name":"b","username":"many_{bot}_bot"}}}}"#,
                    BASE_ID + bot as u64
                ),
            ),
            "getWebhookInfo" => reply(
                200,
                r#"{"ok":true,"result":{"url":"","has_custom_certificate":false,"pending_update_count":0}}"#,
            ),
            "deleteWebhook" => reply(200, r#"{"ok":true,"result":true}"#),
            "getUpdates" => self.get_updates(bot, &body).await,
            _ => reply(
                404,
                r#"{"ok":false,"error_code":404,"description":"Not Found"}"#,
            ),
        }
    }

    /// `/bot<token>/<method>` for one of our bots: its index and the method.
    fn route<'a>(&self, path: &'a str) -> Option<(usize, &'a str)> {
        let (token, method) = path.strip_prefix("/bot")?.split_once('/')?;
        let (id, secret) = token.split_once(':')?;
        let bot = id.parse::<u64>().ok()?.checked_sub(BASE_ID)? as usize;
        (bot < self.bots && secret == format!("AAE-many_bots-{bot}")).then_some((bot, method))
    }

    async fn get_updates(&self, bot: usize, body: &Bytes) -> Response<Body> {
        let params: GetUpdates = serde_json::from_slice(body).unwrap_or_default();
        let since = self.epoch.elapsed().as_micros() as u64 + 1;
        if self.first_poll[bot]
            .compare_exchange(0, since, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.polling.fetch_add(1, Ordering::Relaxed);
            self.changed.notify_waiters();
        }
        if params.offset >= 2 && self.confirmed[bot].swap(1, Ordering::Relaxed) == 0 {
            self.confirmed_count.fetch_add(1, Ordering::Relaxed);
            self.changed.notify_waiters();
        }
        if params.offset < 2 {
            // The bot's one update, until it is confirmed.
            return reply(
                200,
                format!(
                    r#"{{"ok":true,"result":[{{"update_id":1,"message":{{"message_id":1,"date":1700000000,"chat":{{"id":{bot},"type":"private"}},"text":"hello"}}}}]}}"#
                ),
            );
        }
        if params.timeout == 0 {
            self.short_polls.fetch_add(1, Ordering::Relaxed);
            self.last_short_poll[bot].store(since, Ordering::Relaxed);
            self.changed.notify_waiters();
        } else {
            tokio::time::sleep(Duration::from_secs(params.timeout)).await;
        }
        reply(200, r#"{"ok":true,"result":[]}"#)
    }
}

fn micros(stored: u64) -> Option<Duration> {
    stored.checked_sub(1).map(Duration::from_micros)
}

fn reply(status: u16, body: impl Into<Body>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.into())
        .expect("a valid response")
}
