//! `WebhookServer`: Telegram POSTs each update; the answer is the commit.
//!
//! Telegram forgets an update when it gets a 2xx, so the relay answers 200 only after
//! the broker acknowledged the update, 503 (with a small `Retry-After`) when the broker
//! failed or took too long, so Telegram retries, and 4xx only for requests that must
//! never be retried: a wrong secret (401), a body that is not an update (400), too
//! large (413). Every webhook bot shares one listener, each on its own path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::BotContext;
use crate::envelope::{Envelope, UpdateHead};
use crate::secret::Secret;

mod activity;
pub mod config;
mod connection;
mod network;
mod recent;
pub mod registration;
mod serve;
mod tls;
mod watched;

pub use config::{BotWebhookConfig, WebhookServerConfig};
pub use network::Cidr;
pub use serve::serve;

use network::{client_address, TELEGRAM_NETWORKS};
use recent::{Begin, RecentIds};

/// The header Telegram puts the registered secret token in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// How many recently acked update ids each bot remembers, and for how long.
const RECENT_CAPACITY: usize = 10_000;
const RECENT_TTL: Duration = Duration::from_secs(600);

/// One webhook bot as the listener sees it.
pub struct WebhookBot {
    pub ctx: BotContext,
    pub path: String,
    pub secret: Secret,
    recent: Mutex<RecentIds>,
}

impl WebhookBot {
    pub fn new(ctx: BotContext, path: String, secret: Secret) -> Self {
        WebhookBot {
            ctx,
            path,
            secret,
            recent: Mutex::new(RecentIds::new(RECENT_CAPACITY, RECENT_TTL)),
        }
    }
}

/// Shared state of the listener.
#[derive(Clone)]
pub struct WebhookServer {
    inner: Arc<Inner>,
}

struct Inner {
    /// Bots by path; replaced whole when the bot set changes while the listener runs.
    bots: RwLock<HashMap<String, Arc<WebhookBot>>>,
    shutdown: CancellationToken,
    /// Publishes in flight, held by the publish itself, which may outlive its request.
    permits: Arc<Semaphore>,
    publish_timeout: Duration,
    retry_after: HeaderValue,
    allowed_networks: Option<Vec<Cidr>>,
    trusted_proxies: Vec<Cidr>,
}

impl WebhookServer {
    pub fn new(
        config: &WebhookServerConfig,
        bots: Vec<WebhookBot>,
        shutdown: CancellationToken,
    ) -> Self {
        let parse = |list: &[String]| -> Vec<Cidr> {
            list.iter()
                .map(|c| Cidr::parse(c).expect("validated network"))
                .collect()
        };
        let telegram: Vec<String> = TELEGRAM_NETWORKS.iter().map(|s| s.to_string()).collect();
        let inner = Inner {
            bots: RwLock::new(
                bots.into_iter()
                    .map(|b| (b.path.clone(), Arc::new(b)))
                    .collect(),
            ),
            shutdown,
            permits: Arc::new(Semaphore::new(config.max_concurrency)),
            publish_timeout: config.publish_timeout,
            retry_after: HeaderValue::from(config.retry_after_secs),
            allowed_networks: config.telegram_networks_only.then(|| parse(&telegram)),
            trusted_proxies: parse(&config.trusted_proxies),
        };
        WebhookServer {
            inner: Arc::new(inner),
        }
    }

    /// Every bot's path answers POST; anything else is 404 or 405. The paths are
    /// looked up per request, so bots can come and go on a running listener.
    pub fn router(&self, max_body_bytes: usize) -> Router {
        Router::new()
            .fallback(receive)
            .layer(DefaultBodyLimit::max(max_body_bytes))
            .with_state(self.clone())
    }

    /// Serves exactly `bots` from now on. A bot whose path, identity and secret are
    /// unchanged keeps its state (the updates it acked recently), so a retry of one of
    /// them is still answered without a second publish.
    pub fn set_bots(&self, bots: Vec<WebhookBot>) {
        let mut current = self.inner.bots.write().unwrap();
        let next = bots
            .into_iter()
            .map(|bot| {
                let kept = current
                    .remove(&bot.path)
                    .filter(|old| old.ctx.bot == bot.ctx.bot && old.secret == bot.secret);
                (bot.path.clone(), kept.unwrap_or_else(|| Arc::new(bot)))
            })
            .collect();
        *current = next;
    }

    /// The paths served now.
    pub fn paths(&self) -> Vec<String> {
        self.inner.bots.read().unwrap().keys().cloned().collect()
    }
}

/// Handles one POST from Telegram.
async fn receive(
    State(server): State<WebhookServer>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let inner = &server.inner;
    let bot = inner
        .bots
        .read()
        .unwrap()
        .get(request.uri().path())
        .cloned();
    let Some(bot) = bot else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if request.method() != Method::POST {
        let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let status = answer(inner, &bot, peer, request).await;
    bot.ctx
        .metrics
        .webhook_requests
        .with_label_values(&[&bot.ctx.bot.name, status.as_str()])
        .inc();
    let mut response = (status, status.canonical_reason().unwrap_or("")).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert("retry-after", inner.retry_after.clone());
    }
    response
}

/// The status for one request; publishing happens here, and only here.
async fn answer(
    inner: &Inner,
    bot: &Arc<WebhookBot>,
    peer: SocketAddr,
    request: Request,
) -> StatusCode {
    let headers = request.headers();
    if inner.shutdown.is_cancelled() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Some(networks) = &inner.allowed_networks {
        let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        let client = client_address(peer.ip(), forwarded, &inner.trusted_proxies);
        if !networks.iter().any(|n| n.contains(client)) {
            return StatusCode::FORBIDDEN;
        }
    }
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same_secret(given, bot.secret.expose().as_bytes()) {
        return StatusCode::UNAUTHORIZED;
    }
    // Only a request that passed the checks gets its body read (up to max_body_bytes):
    // anyone else could make the listener buffer that much per connection.
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) => return rejection.status(),
    };
    let Ok(head) = UpdateHead::parse(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let update_id = head.update_id;
    match bot.recent.lock().unwrap().begin(update_id, Instant::now()) {
        Begin::Publish => {}
        Begin::Acked => {
            let m = &bot.ctx.metrics;
            m.duplicates_suppressed
                .with_label_values(&[&bot.ctx.bot.name])
                .inc();
            return StatusCode::OK;
        }
        // Telegram re-sent it while an earlier publish still runs (it timed out on
        // us, or our answer was lost); that publish decides, so no second copy now.
        Begin::InFlight => return StatusCode::SERVICE_UNAVAILABLE,
    }
    let publishing = Publishing {
        bot: Arc::clone(bot),
        update_id,
        acked: false,
    };
    let Ok(permit) = Arc::clone(&inner.permits).try_acquire_owned() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let envelope = Envelope::from_head(&bot.ctx.bot, head, body, SystemTime::now());
    let mut publish = Box::pin(async move {
        let mut publishing = publishing;
        let outcomes = publishing
            .bot
            .ctx
            .publish(std::slice::from_ref(&envelope))
            .await;
        publishing.acked = outcomes.iter().all(|o| o.is_safe());
        drop(permit);
        outcomes
    });
    match tokio::time::timeout(inner.publish_timeout, publish.as_mut()).await {
        Ok(outcomes) if outcomes.iter().all(|o| o.is_safe()) => StatusCode::OK,
        Ok(outcomes) => {
            tracing::debug!(bot = %bot.ctx.bot.name, update_id, ?outcomes, "publish failed; answering 503");
            StatusCode::SERVICE_UNAVAILABLE
        }
        Err(_) => {
            // The publish goes on by itself: a broker may still take the update, and
            // then Telegram's retry gets a 200 instead of adding a second copy.
            tokio::spawn(publish);
            tracing::debug!(bot = %bot.ctx.bot.name, update_id, "publish timed out; answering 503");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// One update's publish, from `Begin::Publish` until it ends, however it ends (even
/// by a panic): dropping it clears the in-flight mark, remembering an acked update.
struct Publishing {
    bot: Arc<WebhookBot>,
    update_id: i64,
    acked: bool,
}

impl Drop for Publishing {
    fn drop(&mut self) {
        let mut recent = self.bot.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.finish(self.update_id, self.acked, Instant::now());
    }
}

/// Compares in time that depends only on the expected secret's length.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, b) in expected.iter().enumerate() {
        diff |= usize::from(b ^ given.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// A strong random secret token (Telegram allows 1-256 of `A-Za-z0-9_-`).
pub fn random_secret() -> Secret {
    use rand::distr::{Alphanumeric, SampleString};
    Secret::new(Alphanumeric.sample_string(&mut rand::rng(), 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        for given in [&b""[..], b"ab", b"abd", b"abcd", b"ABC"] {
            assert!(!same_secret(given, b"abc"), "{given:?}");
        }
        assert_eq!(random_secret().expose().len(), 64);
        assert_ne!(random_secret(), random_secret());
    }
}
