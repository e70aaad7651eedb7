//! Webhook delivery for the fake Bot API, modelled on the Bot API server's
//! `WebhookActor` (tdlib/telegram-bot-api). Once a bot calls setWebhook, its queued
//! updates, and those pushed later, are POSTed to the URL as `application/json`,
//! byte-identical, with the `X-Telegram-Bot-Api-Secret-Token` header when a secret
//! was set. An update leaves the queue only on a 2xx answer; any other answer, a
//! connection error or no answer within `answer_timeout` is retried on a doubling
//! schedule, never sooner than a `Retry-After` header asks. The updates of one chat
//! go one at a time and in order, other chats in parallel, up to `max_connections`
//! requests at once. One task per webhook does all of it, so dropping the webhook
//! (deleteWebhook, a different setWebhook, the fake's drop) aborts every request in
//! flight.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::StatusCode;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{int_param, is_allowed, str_param, Bot, Queued, Reply, Shared};

const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";
const DEFAULT_MAX_CONNECTIONS: i64 = 40;
const MAX_CONNECTIONS: i64 = 100;
/// The longest `Retry-After` Telegram honours.
const MAX_RETRY_AFTER: u64 = 3600;
const MAX_SECRET_LEN: usize = 256;
/// Where a chat id sits in an update's body, tried in order (as the relay does).
const CHAT_PATHS: [&[&str]; 4] = [
    &["chat", "id"],
    &["message", "chat", "id"],
    &["voter_chat", "id"],
    &["user_chat_id"],
];

/// How long the fake waits for a webhook's answer, and between retries. (Telegram's
/// server also retries a first failure at once, and lets `Retry-After` replace the
/// backoff rather than floor it; the fake keeps to the documented schedule.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTiming {
    /// A request not answered (status and body) within this has failed.
    pub answer_timeout: Duration,
    /// The wait after an update's first failure; it doubles with each further one…
    pub first_retry: Duration,
    /// …until it would reach this; from then on each wait is random in `max_retry..=2 * max_retry`.
    pub max_retry: Duration,
}

impl Default for WebhookTiming {
    /// Telegram's: 60 s to answer; retries after 2, 4, 8, 16 and 32 s, then every 60–120 s.
    fn default() -> Self {
        WebhookTiming {
            answer_timeout: Duration::from_secs(60),
            first_retry: Duration::from_secs(2),
            max_retry: Duration::from_secs(60),
        }
    }
}

impl WebhookTiming {
    /// The wait before the next attempt after `failures` (at least 1) failed ones.
    fn retry_delay(&self, failures: u32, retry_after: Option<u64>) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let doubled = self.first_retry.saturating_mul(factor);
        let backoff = if doubled >= self.max_retry {
            // Jitter keeps a long outage from ending in a burst of every chat at once.
            rand::random_range(self.max_retry..=self.max_retry.saturating_mul(2))
        } else {
            doubled
        };
        let asked = Duration::from_secs(retry_after.unwrap_or(0).min(MAX_RETRY_AFTER));
        backoff.max(asked)
    }
}

/// One POST attempt and how it ended.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// None for a pushed item that is not an update.
    pub update_id: Option<i64>,
    /// The chat that orders it (see `chat_of`); None if it has none.
    pub chat: Option<i64>,
    /// When the request was started and when its answer (or failure) was complete.
    pub started: std::time::Instant,
    pub finished: std::time::Instant,
    /// The answer's status; None for a connection error or no answer in time.
    pub status: Option<u16>,
    /// The answer's `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
}

/// What setWebhook asked for that shapes delivery; an identical call keeps the
/// running engine, so a relay re-registering at start does not cut its own requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HookConfig {
    url: reqwest::Url,
    secret: Option<String>,
    max_connections: usize,
    ip_address: Option<IpAddr>,
}

impl HookConfig {
    /// Checks setWebhook's parameters as Telegram does, except that any http(s) URL
    /// and port is accepted so tests can use plain local receivers.
    pub(super) fn from_params(url: &str, params: &Map<String, Value>) -> Result<HookConfig, Reply> {
        let bad = |what: &str| Reply::error(400, &format!("Bad Request: {what}"));
        let url = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| bad("bad webhook: Wrong HTTP URL"))?;
        let secret = str_param(params, "secret_token").filter(|s| !s.is_empty());
        if let Some(secret) = &secret {
            if secret.len() > MAX_SECRET_LEN {
                return Err(bad("secret token is too long"));
            }
            if !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad("secret token contains unallowed characters"));
            }
        }
        let ip_address = match str_param(params, "ip_address").filter(|s| !s.is_empty()) {
            Some(ip) => Some(
                ip.parse()
                    .map_err(|_| bad("invalid IP address specified"))?,
            ),
            None => None,
        };
        let max_connections = int_param(params, "max_connections")
            .unwrap_or(DEFAULT_MAX_CONNECTIONS)
            .clamp(1, MAX_CONNECTIONS);
        Ok(HookConfig {
            url,
            secret,
            max_connections: usize::try_from(max_connections).expect("clamped to 1..=100"),
            ip_address,
        })
    }

    fn client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            // Deliveries go where the test said, whatever proxy the CI sets.
            .no_proxy()
            // Telegram speaks HTTP/1.1 to webhooks and does not follow redirects.
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            // Test receivers use self-signed certificates.
            .danger_accept_invalid_certs(true)
            .pool_max_idle_per_host(self.max_connections);
        if let (Some(ip), Some(host)) = (self.ip_address, self.url.host_str()) {
            // Port 0: the URL's port is kept.
            builder = builder.resolve(host, SocketAddr::new(ip, 0));
        }
        builder.build().expect("webhook client")
    }
}

/// A bot's webhook side: the engine serving it and what getWebhookInfo reports.
#[derive(Default)]
pub(super) struct WebhookState {
    pub(super) hook: Option<Hook>,
    /// Engines started so far; each attempt is tagged with its engine's number.
    started: u64,
    pub(super) deliveries: Vec<Delivery>,
    /// Unix time and Telegram's wording of the last failed delivery.
    last_error: Option<(u64, String)>,
    pub(super) has_certificate: bool,
}

impl WebhookState {
    /// Starts delivering with `config`, unless an engine with the same config runs.
    pub(super) fn serve(
        &mut self,
        shared: &Arc<Shared>,
        token: &str,
        config: HookConfig,
        wake: Arc<Notify>,
    ) {
        if self.hook.as_ref().is_some_and(|h| h.config == config) {
            return;
        }
        self.started += 1;
        self.last_error = None;
        let engine = Engine {
            shared: Arc::clone(shared),
            token: token.to_owned(),
            client: config.client(),
            config: config.clone(),
            generation: self.started,
        };
        // Replacing the old hook aborts its engine.
        self.hook = Some(Hook {
            config,
            generation: self.started,
            task: tokio::spawn(engine.run(wake)),
        });
    }

    /// getWebhookInfo's fields beyond url, certificate and pending count.
    pub(super) fn describe(&self, info: &mut Map<String, Value>) {
        if let Some(hook) = &self.hook {
            info.insert("max_connections".into(), hook.config.max_connections.into());
            if let Some(ip) = hook.config.ip_address {
                info.insert("ip_address".into(), ip.to_string().into());
            }
        }
        if let Some((date, message)) = &self.last_error {
            info.insert("last_error_date".into(), (*date).into());
            info.insert("last_error_message".into(), message.clone().into());
        }
    }
}

/// A webhook being served; dropping it aborts its engine and every request in flight.
pub(super) struct Hook {
    config: HookConfig,
    generation: u64,
    task: JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An update's delivery progress, kept next to its bytes in the queue.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// The engine (by number) that has a request for it in flight; a number of an
    /// aborted engine means nothing is.
    sending: Option<u64>,
    failures: u32,
    /// Set after a failure: not to be sent again before this.
    not_before: Option<Instant>,
}

/// The chat an update belongs to: the updates of one chat are sent one at a time.
pub(super) fn chat_of(update: &Value, kind: Option<&str>) -> Option<i64> {
    let body = update.get(kind?)?;
    CHAT_PATHS
        .iter()
        .find_map(|path| path.iter().try_fold(body, |v, key| v.get(key))?.as_i64())
}

/// Updates that must wait for each other: those of one chat; any other is on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    Chat(i64),
    Alone(u64),
}

impl Queued {
    fn lane(&self) -> Lane {
        self.chat.map_or(Lane::Alone(self.seq), Lane::Chat)
    }
}

/// A request to make: one queued update.
struct Attempt {
    seq: u64,
    update_id: Option<i64>,
    chat: Option<i64>,
    bytes: Bytes,
}

/// An attempt and how it ended: an answer, or Telegram's wording of why there was none.
struct Outcome {
    attempt: Attempt,
    started: std::time::Instant,
    finished: std::time::Instant,
    answer: Result<Answered, String>,
}

struct Answered {
    status: StatusCode,
    retry_after: Option<u64>,
}

impl Outcome {
    fn confirms(&self) -> bool {
        matches!(&self.answer, Ok(a) if a.status.is_success())
    }

    fn record(&self) -> Delivery {
        let answered = self.answer.as_ref().ok();
        Delivery {
            update_id: self.attempt.update_id,
            chat: self.attempt.chat,
            started: self.started,
            finished: self.finished,
            status: answered.map(|a| a.status.as_u16()),
            retry_after: answered.and_then(|a| a.retry_after),
        }
    }

    fn error_message(&self) -> String {
        match &self.answer {
            Ok(a) => format!(
                "Wrong response from the webhook: {} {}",
                a.status.as_u16(),
                a.status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_owned(),
            Err(message) => message.clone(),
        }
    }
}

impl Bot {
    /// What the engine numbered `generation` may send now, at most `free` updates: the
    /// oldest update of each lane, unless it is in flight or waiting to retry. Also
    /// when the earliest waiting retry falls due. The scan stops once `free` are
    /// found, so with many chats it costs about what is in flight, not the queue.
    fn next_attempts(&mut self, generation: u64, free: usize) -> (Vec<Attempt>, Option<Instant>) {
        let (mut attempts, mut wakeup) = (Vec::new(), None::<Instant>);
        let allowed = self.allowed_updates.clone();
        let now = Instant::now();
        let mut lanes = HashSet::new();
        let mut i = 0;
        while i < self.queue.len() && attempts.len() < free {
            if !is_allowed(allowed.as_deref(), self.queue[i].kind.as_deref()) {
                // Telegram never delivers a kind the bot did not subscribe to.
                let gone = self.queue.remove(i).expect("index is in range");
                self.forgotten.extend(gone.update_id);
                continue;
            }
            let item = &mut self.queue[i];
            i += 1;
            if !lanes.insert(item.lane()) || item.progress.sending == Some(generation) {
                continue;
            }
            if let Some(at) = item.progress.not_before.filter(|&at| at > now) {
                wakeup = Some(wakeup.map_or(at, |w| w.min(at)));
                continue;
            }
            item.progress.sending = Some(generation);
            attempts.push(Attempt {
                seq: item.seq,
                update_id: item.update_id,
                chat: item.chat,
                bytes: item.bytes.clone(),
            });
        }
        (attempts, wakeup)
    }

    /// Applies a finished attempt: a 2xx confirms the update, anything else schedules a retry.
    fn finish(&mut self, generation: u64, outcome: &Outcome, timing: &WebhookTiming) {
        self.webhook.deliveries.push(outcome.record());
        // The queue stays in push order, so sequence numbers are sorted.
        let index = self
            .queue
            .binary_search_by_key(&outcome.attempt.seq, |q| q.seq)
            .ok();
        if outcome.confirms() {
            if let Some(done) = index.and_then(|i| self.queue.remove(i)) {
                self.confirm(done.update_id);
            }
            return;
        }
        self.webhook.last_error = Some((unix_now(), outcome.error_message()));
        let Some(progress) = index.map(|i| &mut self.queue[i].progress) else {
            return;
        };
        // Only the engine that sent it reschedules it (a replaced engine may finish late).
        if progress.sending == Some(generation) {
            progress.sending = None;
            progress.failures += 1;
            let retry_after = outcome.answer.as_ref().ok().and_then(|a| a.retry_after);
            let delay = timing.retry_delay(progress.failures, retry_after);
            progress.not_before = Some(Instant::now() + delay);
        }
    }
}

impl Shared {
    /// None once the engine numbered `generation` no longer serves the bot: it was
    /// replaced or deleted, and its abort may not have landed yet.
    fn next_attempts(
        &self,
        token: &str,
        generation: u64,
        free: usize,
    ) -> Option<(Vec<Attempt>, Option<Instant>, Duration)> {
        let mut state = self.state();
        let answer_timeout = state.timing.answer_timeout;
        let bot = state.bots.get_mut(token)?;
        if bot.webhook.hook.as_ref().map(|h| h.generation) != Some(generation) {
            return None;
        }
        let (attempts, wakeup) = bot.next_attempts(generation, free);
        Some((attempts, wakeup, answer_timeout))
    }

    fn finish(&self, token: &str, generation: u64, outcome: &Outcome) {
        let mut state = self.state();
        let timing = state.timing.clone();
        if let Some(bot) = state.bots.get_mut(token) {
            bot.finish(generation, outcome, &timing);
        }
    }
}

/// The delivery loop of one webhook.
struct Engine {
    shared: Arc<Shared>,
    token: String,
    config: HookConfig,
    generation: u64,
    client: reqwest::Client,
}

impl Engine {
    /// Sends what is due, then waits for a push, a finished request or a retry falling due.
    async fn run(self, wake: Arc<Notify>) {
        let mut requests = FuturesUnordered::new();
        loop {
            // Registered before looking at the queue, so a push in between is not missed.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let free = self.config.max_connections.saturating_sub(requests.len());
            let Some((attempts, wakeup, timeout)) =
                self.shared
                    .next_attempts(&self.token, self.generation, free)
            else {
                return;
            };
            requests.extend(attempts.into_iter().map(|a| self.send(a, timeout)));
            let wakeup = wakeup.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = &mut notified => {}
                Some(outcome) = requests.next() => {
                    self.shared.finish(&self.token, self.generation, &outcome);
                }
                () = tokio::time::sleep_until(wakeup) => {}
            }
        }
    }

    async fn send(&self, attempt: Attempt, timeout: Duration) -> Outcome {
        let started = std::time::Instant::now();
        let mut request = self
            .client
            .post(self.config.url.clone())
            .timeout(timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(attempt.bytes.clone());
        if let Some(secret) = &self.config.secret {
            request = request.header(SECRET_HEADER, secret);
        }
        let answer = answer(request).await;
        Outcome {
            attempt,
            started,
            finished: std::time::Instant::now(),
            answer,
        }
    }
}

async fn answer(request: reqwest::RequestBuilder) -> Result<Answered, String> {
    let response = request.send().await.map_err(|e| describe_error(&e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    // The answer counts once complete: Telegram reads it (it may carry a method call).
    response.bytes().await.map_err(|e| describe_error(&e))?;
    Ok(Answered {
        status,
        retry_after,
    })
}

/// Telegram's wording for a request that got no answer.
fn describe_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "Read timeout expired".to_owned();
    }
    let chain = std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source());
    let innermost = chain.clone().last().map(ToString::to_string);
    match chain
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
        .next()
    {
        Some(std::io::ErrorKind::ConnectionRefused) => "Connection refused".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => "Connection reset by peer".to_owned(),
        _ => innermost.unwrap_or_else(|| error.to_string()),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
