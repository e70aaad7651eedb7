//! A fake Telegram Bot API server for integration tests.
//!
//! It serves the methods of the Bot API's "Getting updates" section (getMe,
//! getUpdates, setWebhook, deleteWebhook, getWebhookInfo) the way
//! <https://core.telegram.org/bots/api> documents them, including the parts a
//! relay must survive: offsets that confirm, sticky `allowed_updates`, a 409 for
//! a competing poller or an active webhook, and injectable faults (429 with
//! `retry_after`, and the odd 429s of a proxy in front of it, an nginx HTML 502, a
//! reset connection, a slow answer). Updates
//! are kept as the bytes a test pushed and served byte-identical, so a test can
//! check that the relay never re-serializes them. After a setWebhook call (JSON,
//! form or multipart with a certificate) it delivers them to the webhook as
//! Telegram does: see `fake_webhook.rs`. The sending side (sendMessage and the few
//! other methods services call, under Telegram's flood limits) is `fake_sends.rs`.
//! It logs nothing.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[path = "fake_webhook.rs"]
mod delivery;
#[path = "fake_sends.rs"]
mod sends;

use delivery::{chat_of, HookConfig, Progress, WebhookState};
pub use delivery::{Delivery, WebhookTiming};
#[allow(unused_imports)]
pub use sends::{FloodLimits, Sends, Sent};

/// Kinds Telegram leaves out unless a bot asks for them (getUpdates, `allowed_updates`).
const DEFAULT_EXCLUDED: [&str; 3] = ["chat_member", "message_reaction", "message_reaction_count"];
const CONFLICT_OTHER_POLLER: &str = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
const CONFLICT_WEBHOOK: &str =
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";
const NGINX_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n";
const NGINX_429: &str = "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n";
/// Bodies the Bot API accepts are small; this only guards against a runaway test.
const MAX_BODY: usize = 16 << 20;

/// One Bot API request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method name as sent (Telegram matches it case-insensitively).
    pub method: String,
    /// When the request arrived, so tests can check back-off lower bounds.
    pub at: std::time::Instant,
    /// Query-string and body parameters merged into one JSON object; values from
    /// a query string or form body are strings, as on the wire.
    pub params: Value,
    /// HTTP status answered; 0 while the request is pending or when the fake reset
    /// the connection instead of answering.
    pub status: u16,
}

/// A failure the next getUpdates call suffers instead of its normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `parameters.retry_after`, as Telegram's flood control answers.
    TooManyRequests { retry_after: u64 },
    /// 429 whose `retry_after` has a fraction (1500 ms is written `1.5`). The Bot API
    /// documents an Integer; a server or proxy in front of it may write this.
    TooManyRequestsFraction { retry_after_ms: u64 },
    /// 429 from a rate limiter in front of the Bot API: nginx's HTML page, no Bot API
    /// reply, with a `Retry-After: <seconds>` header when given.
    TooManyRequestsHtml { retry_after: Option<u64> },
    /// 502 with an nginx HTML page, as Telegram's front end answers when the API is down.
    BadGatewayHtml,
    /// 500 with a JSON error body.
    InternalError,
    /// 401, as for a revoked token.
    Unauthorized,
    /// 409, as if another instance had polled.
    Conflict,
    /// The connection is closed without any HTTP answer.
    Reset,
    /// The call is answered normally, but only after this delay.
    Delay(Duration),
    /// The call takes effect at once (a message is sent), and its answer comes only
    /// after this delay: a slow link, or an answer lost on the way back.
    AnswerLate(Duration),
}

/// The fake server; dropping it stops the server and closes every open connection.
pub struct FakeBotApi {
    base_url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FakeBotApi {
    /// Binds 127.0.0.1 on a free port and serves in a spawned task.
    pub async fn start() -> FakeBotApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = KillableListener {
            inner: listener,
            shared: Arc::clone(&shared),
        };
        let server = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<Killer>();
            // The listener retries accept errors itself, so serve only ends when aborted.
            let _ = axum::serve(listener, service).await;
        });
        FakeBotApi {
            base_url: format!("http://{addr}"),
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, to be followed by `/bot<token>/<method>`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Registers a bot; its id is the number before `:` in the token.
    pub fn add_bot(&self, token: &str) {
        let id = token
            .split_once(':')
            .and_then(|(id, _)| id.parse().ok())
            .unwrap_or_else(|| panic!("token {token:?} does not start with `<bot id>:`"));
        self.shared
            .state()
            .bots
            .insert(token.to_owned(), Bot::new(id));
    }

    /// Queues updates (raw JSON, each with its `update_id`) and wakes a waiting poller.
    ///
    /// An item that is not an update (no integer `update_id`, or not even JSON) is
    /// queued and served as-is too, so tests can feed the relay garbage. For offsets it
    /// counts as having the id of the item before it; having no id, it never appears
    /// in `pending`, `confirmed` or `forgotten`.
    pub fn push_updates(&self, token: &str, updates: Vec<Vec<u8>>) {
        let wake = self.bot(token, |bot| {
            for bytes in updates {
                let queued = Queued::new(bytes, bot.last_position, bot.next_seq);
                bot.last_position = queued.position;
                bot.next_seq += 1;
                bot.queue.push_back(queued);
            }
            Arc::clone(&bot.wake)
        });
        wake.notify_waiters();
    }

    /// Update ids still queued, in queue order.
    pub fn pending(&self, token: &str) -> Vec<i64> {
        self.bot(token, |bot| {
            bot.queue.iter().filter_map(|q| q.update_id).collect()
        })
    }

    /// Update ids confirmed by an offset, in the order they were confirmed.
    pub fn confirmed(&self, token: &str) -> Vec<i64> {
        self.bot(token, |bot| {
            bot.confirmed.iter().map(|(id, _)| *id).collect()
        })
    }

    /// Update ids dropped without confirmation: by a negative offset, by
    /// `allowed_updates`, or by `drop_pending_updates`.
    pub fn forgotten(&self, token: &str) -> Vec<i64> {
        self.bot(token, |bot| bot.forgotten.clone())
    }

    /// Every request made with this token (known or not), in order of arrival.
    pub fn calls(&self, token: &str) -> Vec<Call> {
        self.shared
            .state()
            .calls
            .get(token)
            .cloned()
            .unwrap_or_default()
    }

    /// Queues a fault for the next getUpdates call; faults apply one per call, first in first out.
    pub fn inject(&self, token: &str, fault: Fault) {
        self.inject_on(token, "getUpdates", fault);
    }

    /// Queues a fault for the next call of `method` (any Bot API method, matched
    /// case-insensitively), one per call, first in first out.
    pub fn inject_on(&self, token: &str, method: &str, fault: Fault) {
        self.bot(token, |bot| {
            bot.faults
                .entry(method.to_ascii_lowercase())
                .or_default()
                .push_back(fault)
        });
    }

    /// Injected faults not yet used up, over every method.
    pub fn pending_faults(&self, token: &str) -> usize {
        self.bot(token, |bot| bot.faults.values().map(VecDeque::len).sum())
    }

    /// When each update was confirmed (by an offset, or by a webhook's 2xx), by
    /// the wall clock, so it can be compared with a broker's timestamps.
    pub fn confirmation_times(&self, token: &str) -> HashMap<i64, SystemTime> {
        self.bot(token, |bot| bot.confirmed.iter().copied().collect())
    }

    /// Sets or clears the webhook URL as if done outside the relay. It never starts
    /// deliveries (the URL is not the relay's); it stops those a setWebhook started.
    pub fn set_webhook_url(&self, token: &str, url: Option<&str>) {
        self.bot(token, |bot| {
            bot.webhook_url = url.map(str::to_owned);
            bot.webhook.hook = None;
        });
    }

    /// Timing of webhook deliveries started from now on (Telegram's by default).
    pub fn set_webhook_timing(&self, timing: WebhookTiming) {
        self.shared.state().timing = timing;
    }

    /// Every webhook POST attempt, in order of completion.
    pub fn deliveries(&self, token: &str) -> Vec<Delivery> {
        self.bot(token, |bot| bot.webhook.deliveries.clone())
    }

    /// What getWebhookInfo would answer as its `result`.
    pub fn webhook_info(&self, token: &str) -> Value {
        self.bot(token, |bot| Value::Object(bot.webhook_info()))
    }

    /// The parameters of the last successful setWebhook call (`Null` if none).
    pub fn webhook_params(&self, token: &str) -> Value {
        self.bot(token, |bot| bot.webhook_params.clone())
    }

    /// Waits until at least `count` updates are confirmed; false if `within` passes first.
    pub async fn wait_for_confirmed(&self, token: &str, count: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.bot(token, |bot| bot.confirmed.len()) >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The sending side: sendMessage and friends, their record and flood limits.
    pub fn sends(&self) -> &Sends {
        &self.shared.sends
    }

    /// Stops the server and closes its connections (the same as dropping it).
    pub fn shutdown(self) {
        drop(self);
    }

    fn bot<R>(&self, token: &str, f: impl FnOnce(&mut Bot) -> R) -> R {
        self.shared
            .with_bot(token, f)
            .unwrap_or_else(|| panic!("unknown bot token {token:?}: call add_bot first"))
    }
}

impl Drop for FakeBotApi {
    fn drop(&mut self) {
        self.server.abort();
        // Delivery engines hold the shared state, so they are stopped explicitly.
        for bot in self.shared.state().bots.values_mut() {
            bot.webhook.hook = None;
        }
        // Aborting serve only stops accepting; open keep-alive connections and
        // pending long polls live in their own tasks, so they are killed here.
        for conn in self.shared.connections().drain(..) {
            conn.kill();
        }
    }
}

/// State shared by the test-facing handle and the request handlers.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    connections: Mutex<Vec<Killer>>,
    sends: Sends,
}

#[derive(Default)]
struct State {
    bots: HashMap<String, Bot>,
    calls: HashMap<String, Vec<Call>>,
    timing: WebhookTiming,
}

struct Bot {
    id: i64,
    queue: VecDeque<Queued>,
    /// In the order confirmed, with when (an update leaves the queue once, so once each).
    confirmed: Vec<(i64, SystemTime)>,
    forgotten: Vec<i64>,
    /// Injected faults by lowercased method name.
    faults: HashMap<String, VecDeque<Fault>>,
    webhook_url: Option<String>,
    webhook_params: Value,
    allowed_updates: Option<Vec<String>>,
    /// Bumped by every getUpdates; a long poll whose generation is stale was superseded.
    poll_generation: u64,
    /// Wakes the pending long poll: on new updates, and when a newer poll supersedes it.
    wake: Arc<Notify>,
    /// Position of the last pushed item, inherited by a following item without an id.
    last_position: i64,
    /// Sequence number of the next pushed item.
    next_seq: u64,
    webhook: WebhookState,
}

struct Queued {
    /// None for an item that is not an update (see `push_updates`).
    update_id: Option<i64>,
    /// What offsets compare: the update_id, or the previous item's position.
    position: i64,
    /// The update's one field besides update_id; None when it has zero or several.
    kind: Option<String>,
    bytes: Bytes,
    /// Unique and increasing in push order, so a webhook delivery finds its item.
    seq: u64,
    /// The chat whose updates a webhook delivers one at a time.
    chat: Option<i64>,
    progress: Progress,
}

impl Queued {
    fn new(bytes: Vec<u8>, previous: i64, seq: u64) -> Queued {
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let update_id = value.get("update_id").and_then(Value::as_i64);
        let mut fields = value
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .filter(|k| k.as_str() != "update_id");
        let kind = match (fields.next(), fields.next()) {
            (Some(kind), None) => Some(kind.clone()),
            _ => None,
        };
        Queued {
            update_id,
            position: update_id.unwrap_or(previous),
            chat: chat_of(&value, kind.as_deref()),
            kind,
            bytes: Bytes::from(bytes),
            seq,
            progress: Progress::default(),
        }
    }
}

impl Bot {
    fn new(id: i64) -> Bot {
        Bot {
            id,
            queue: VecDeque::new(),
            confirmed: Vec::new(),
            forgotten: Vec::new(),
            faults: HashMap::new(),
            webhook_url: None,
            webhook_params: Value::Null,
            allowed_updates: None,
            poll_generation: 0,
            wake: Arc::new(Notify::new()),
            last_position: i64::MIN,
            next_seq: 0,
            webhook: WebhookState::default(),
        }
    }

    /// getUpdates' offset: positive confirms everything below it, -N keeps the last N.
    fn apply_offset(&mut self, offset: i64) {
        if offset > 0 {
            // The queue is in position order: confirming pops from the front, so a poll
            // costs what it confirms, not what is queued.
            while self.queue.front().is_some_and(|q| q.position < offset) {
                let done = self.queue.pop_front().expect("front exists");
                self.confirm(done.update_id);
            }
        } else if offset < 0 {
            let keep = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
            let excess = self.queue.len().saturating_sub(keep);
            let dropped: Vec<i64> = self
                .queue
                .drain(..excess)
                .filter_map(|q| q.update_id)
                .collect();
            self.forgotten.extend(dropped);
        }
    }

    fn confirm(&mut self, update_id: Option<i64>) {
        if let Some(id) = update_id {
            self.confirmed.push((id, SystemTime::now()));
        }
    }

    /// Telegram never delivers a kind the bot did not subscribe to; it is simply gone.
    /// Only the front of the queue, up to `limit` deliverable updates, is looked at.
    fn drop_disallowed(&mut self, limit: usize) {
        let allowed = self.allowed_updates.clone();
        let (mut i, mut kept) = (0, 0);
        while i < self.queue.len() && kept < limit {
            if is_allowed(allowed.as_deref(), self.queue[i].kind.as_deref()) {
                kept += 1;
                i += 1;
            } else if let Some(gone) = self.queue.remove(i) {
                self.forgotten.extend(gone.update_id);
            }
        }
    }

    fn forget_all(&mut self) {
        let dropped: Vec<i64> = self.queue.drain(..).filter_map(|q| q.update_id).collect();
        self.forgotten.extend(dropped);
    }

    /// getWebhookInfo's result; in-flight updates count as pending. It drops nothing:
    /// kinds are filtered when served, by the `allowed_updates` in force then.
    fn webhook_info(&self) -> Map<String, Value> {
        let mut info = Map::new();
        info.insert(
            "url".into(),
            self.webhook_url.clone().unwrap_or_default().into(),
        );
        info.insert(
            "has_custom_certificate".into(),
            self.webhook.has_certificate.into(),
        );
        info.insert("pending_update_count".into(), self.queue.len().into());
        if self.webhook_url.is_some() {
            self.webhook.describe(&mut info);
        }
        if let Some(allowed) = self.allowed_updates.as_ref().filter(|a| !a.is_empty()) {
            info.insert("allowed_updates".into(), allowed.clone().into());
        }
        info
    }
}

/// An unset or empty `allowed_updates` means the default set; an update of no
/// recognisable kind is always delivered (only Telegram could have sent it).
fn is_allowed(allowed: Option<&[String]>, kind: Option<&str>) -> bool {
    let Some(kind) = kind else { return true };
    match allowed {
        Some(list) if !list.is_empty() => list.iter().any(|k| k == kind),
        _ => !DEFAULT_EXCLUDED.contains(&kind),
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connections(&self) -> MutexGuard<'_, Vec<Killer>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn with_bot<R>(&self, token: &str, f: impl FnOnce(&mut Bot) -> R) -> Option<R> {
        self.state().bots.get_mut(token).map(f)
    }

    fn track(&self, conn: Killer) {
        let mut conns = self.connections();
        // Only this list still holds a finished connection's switch.
        conns.retain(|k| Arc::strong_count(&k.0) > 1);
        conns.push(conn);
    }

    fn record(&self, token: &str, method: &str, params: Value) -> usize {
        let mut state = self.state();
        let calls = state.calls.entry(token.to_owned()).or_default();
        calls.push(Call {
            method: method.to_owned(),
            at: std::time::Instant::now(),
            params,
            status: 0,
        });
        calls.len() - 1
    }

    fn set_status(&self, token: &str, index: usize, status: u16) {
        if let Some(call) = self
            .state()
            .calls
            .get_mut(token)
            .and_then(|c| c.get_mut(index))
        {
            call.status = status;
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        token: &str,
        method: &str,
        params: &Map<String, Value>,
        conn: &Killer,
    ) -> Reply {
        let named = method;
        let method = method.to_ascii_lowercase();
        let Some((bot_id, fault)) = self.with_bot(token, |bot| {
            let fault = bot.faults.get_mut(&method).and_then(VecDeque::pop_front);
            (bot.id, fault)
        }) else {
            return Reply::unauthorized();
        };
        let mut late = None;
        match fault {
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(Fault::AnswerLate(delay)) => late = Some(delay),
            // A faulted call returns before it has any effect (an offset confirms nothing).
            Some(fault) => return fault.reply(),
            None => {}
        }
        let reply = self.execute(token, bot_id, named, params, conn).await;
        if let Some(delay) = late {
            tokio::time::sleep(delay).await;
        }
        reply
    }

    async fn execute(
        self: &Arc<Self>,
        token: &str,
        bot_id: i64,
        named: &str,
        params: &Map<String, Value>,
        conn: &Killer,
    ) -> Reply {
        let method = named.to_ascii_lowercase();
        match method.as_str() {
            "getme" => get_me(bot_id),
            "getupdates" => self.get_updates(token, params, conn).await,
            "setwebhook" => self.set_webhook(token, params),
            "deletewebhook" => self.delete_webhook(token, params),
            "getwebhookinfo" => self.webhook_info(token),
            _ => self
                .sends
                .answer(token, bot_id, named, params)
                .unwrap_or_else(|| Reply::error(404, "Not Found")),
        }
    }

    async fn get_updates(&self, token: &str, params: &Map<String, Value>, conn: &Killer) -> Reply {
        let request = PollRequest::from_params(params);
        match self.begin_poll(token, &request) {
            Ok((generation, wake)) => {
                self.long_poll(token, &request, generation, &wake, conn)
                    .await
            }
            Err(reply) => reply,
        }
    }

    /// Applies the request to the bot's state and supersedes any older long poll.
    fn begin_poll(&self, token: &str, request: &PollRequest) -> Result<(u64, Arc<Notify>), Reply> {
        self.with_bot(token, |bot| {
            if bot.webhook_url.is_some() {
                return Err(Reply::error(409, CONFLICT_WEBHOOK));
            }
            if let Some(allowed) = &request.allowed_updates {
                bot.allowed_updates = Some(allowed.clone());
            }
            bot.apply_offset(request.offset);
            bot.poll_generation += 1;
            bot.wake.notify_waiters();
            Ok((bot.poll_generation, Arc::clone(&bot.wake)))
        })
        .unwrap_or_else(|| Err(Reply::unauthorized()))
    }

    async fn long_poll(
        &self,
        token: &str,
        request: &PollRequest,
        generation: u64,
        wake: &Notify,
        conn: &Killer,
    ) -> Reply {
        let deadline = Instant::now() + request.timeout;
        loop {
            // Registered before looking at the queue, so a push in between is not missed.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.eligible(token, request.limit, generation) {
                None => return Reply::error(409, CONFLICT_OTHER_POLLER),
                Some(batch) if !batch.is_empty() || Instant::now() >= deadline => {
                    return Reply::updates(&batch)
                }
                Some(_) => {}
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = conn.killed() => return Reply::Reset,
            }
        }
    }

    /// The updates a poll of this generation would get now, or None if it was superseded.
    fn eligible(&self, token: &str, limit: usize, generation: u64) -> Option<Vec<Bytes>> {
        self.with_bot(token, |bot| {
            if bot.poll_generation != generation {
                return None;
            }
            bot.drop_disallowed(limit);
            Some(
                bot.queue
                    .iter()
                    .take(limit)
                    .map(|q| q.bytes.clone())
                    .collect(),
            )
        })
        .flatten()
    }

    fn set_webhook(self: &Arc<Self>, token: &str, params: &Map<String, Value>) -> Reply {
        let url = str_param(params, "url").unwrap_or_default();
        if url.is_empty() {
            return self.delete_webhook(token, params);
        }
        let config = match HookConfig::from_params(&url, params) {
            Ok(config) => config,
            Err(reply) => return reply,
        };
        self.with_bot(token, |bot| {
            let already = bot.webhook_url.as_deref() == Some(url.as_str());
            bot.webhook_url = Some(url);
            bot.webhook_params = Value::Object(params.clone());
            if let Some(allowed) = list_param(params, "allowed_updates") {
                bot.allowed_updates = Some(allowed);
            }
            if bool_param(params, "drop_pending_updates") {
                bot.forget_all();
            }
            bot.webhook.has_certificate = params.contains_key("certificate");
            bot.webhook
                .serve(self, token, config, Arc::clone(&bot.wake));
            let description = if already {
                "Webhook is already set"
            } else {
                "Webhook was set"
            };
            Reply::ok_described("true", description)
        })
        .unwrap_or_else(Reply::unauthorized)
    }

    fn delete_webhook(&self, token: &str, params: &Map<String, Value>) -> Reply {
        self.with_bot(token, |bot| {
            let was_set = bot.webhook_url.take().is_some();
            // Stops delivery at once: requests in flight are cut, their updates stay queued.
            bot.webhook.hook = None;
            bot.webhook.has_certificate = false;
            if bool_param(params, "drop_pending_updates") {
                bot.forget_all();
            }
            let description = if was_set {
                "Webhook was deleted"
            } else {
                "Webhook is already deleted"
            };
            Reply::ok_described("true", description)
        })
        .unwrap_or_else(Reply::unauthorized)
    }

    fn webhook_info(&self, token: &str) -> Reply {
        self.with_bot(token, |bot| {
            Reply::ok(&Value::Object(bot.webhook_info()).to_string())
        })
        .unwrap_or_else(Reply::unauthorized)
    }
}

fn get_me(bot_id: i64) -> Reply {
    Reply::ok(&format!(
        r#"{{"id":{bot_id},"is_bot":true,"first_name":"Fake","username":"fake_{bot_id}_bot"}}"#
    ))
}

/// getUpdates' parameters, normalised as Telegram documents them.
struct PollRequest {
    offset: i64,
    limit: usize,
    timeout: Duration,
    allowed_updates: Option<Vec<String>>,
}

impl PollRequest {
    fn from_params(params: &Map<String, Value>) -> PollRequest {
        let limit = match int_param(params, "limit").unwrap_or(0) {
            0 => 100,
            n => n.clamp(1, 100),
        };
        let timeout = int_param(params, "timeout").unwrap_or(0).max(0);
        PollRequest {
            offset: int_param(params, "offset").unwrap_or(0),
            limit: usize::try_from(limit).expect("clamped to 1..=100"),
            timeout: Duration::from_secs(timeout.unsigned_abs()),
            allowed_updates: list_param(params, "allowed_updates"),
        }
    }
}

/// What to answer: an HTTP response, or a connection closed without one.
enum Reply {
    Http {
        status: u16,
        content_type: &'static str,
        /// Headers besides Content-Type.
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    Reset,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply::Http {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    fn ok(result: &str) -> Reply {
        Reply::json(200, format!(r#"{{"ok":true,"result":{result}}}"#))
    }

    fn ok_described(result: &str, description: &str) -> Reply {
        let description = json_string(description);
        Reply::json(
            200,
            format!(r#"{{"ok":true,"result":{result},"description":{description}}}"#),
        )
    }

    fn error(code: u16, description: &str) -> Reply {
        let description = json_string(description);
        Reply::json(
            code,
            format!(r#"{{"ok":false,"error_code":{code},"description":{description}}}"#),
        )
    }

    fn unauthorized() -> Reply {
        Reply::error(401, "Unauthorized")
    }

    /// Concatenates the stored bytes so every update is served exactly as pushed.
    fn updates(batch: &[Bytes]) -> Reply {
        let mut body = b"{\"ok\":true,\"result\":[".to_vec();
        for (i, update) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(update);
        }
        body.extend_from_slice(b"]}");
        Reply::Http {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    fn status(&self) -> u16 {
        match self {
            Reply::Http { status, .. } => *status,
            Reply::Reset => 0,
        }
    }

    fn into_response(self, conn: &Killer) -> Response {
        let (status, content_type, headers, body) = match self {
            Reply::Http {
                status,
                content_type,
                headers,
                body,
            } => (status, content_type, headers, body),
            Reply::Reset => {
                // The killed stream fails the write of this response, so hyper closes
                // the connection and the client sees it end without an answer.
                conn.kill();
                (500, "text/plain", Vec::new(), Vec::new())
            }
        };
        let mut response = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, content_type);
        for (name, value) in headers {
            response = response.header(name, value);
        }
        response
            .body(Body::from(body))
            .expect("valid response parts")
    }
}

impl Fault {
    fn reply(&self) -> Reply {
        match self {
            Fault::TooManyRequests { retry_after } => Reply::json(
                429,
                format!(
                    r#"{{"ok":false,"error_code":429,"description":"Too Many Requests: retry after {retry_after}","parameters":{{"retry_after":{retry_after}}}}}"#
                ),
            ),
            Fault::TooManyRequestsFraction { retry_after_ms } => {
                let seconds = *retry_after_ms as f64 / 1000.0;
                Reply::json(
                    429,
                    format!(
                        r#"{{"ok":false,"error_code":429,"description":"Too Many Requests: retry after {seconds}","parameters":{{"retry_after":{seconds}}}}}"#
                    ),
                )
            }
            Fault::TooManyRequestsHtml { retry_after } => Reply::Http {
                status: 429,
                content_type: "text/html",
                headers: retry_after
                    .iter()
                    .map(|s| ("retry-after", s.to_string()))
                    .collect(),
                body: NGINX_429.as_bytes().to_vec(),
            },
            Fault::BadGatewayHtml => Reply::Http {
                status: 502,
                content_type: "text/html",
                headers: Vec::new(),
                body: NGINX_502.as_bytes().to_vec(),
            },
            Fault::InternalError => Reply::error(500, "Internal Server Error"),
            Fault::Unauthorized => Reply::unauthorized(),
            Fault::Conflict => Reply::error(409, CONFLICT_OTHER_POLLER),
            Fault::Reset => Reply::Reset,
            // Handled by the caller, which must still answer normally.
            Fault::Delay(_) | Fault::AnswerLate(_) => {
                unreachable!("a late answer is not an error answer")
            }
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// The single handler: Bot API URLs are `/bot<token>/<method>` for any HTTP method.
async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Killer>,
    request: Request,
) -> Response {
    let Some((token, method)) = split_path(request.uri().path()) else {
        return Reply::error(404, "Not Found").into_response(&conn);
    };
    let params = read_params(request).await;
    let index = shared.record(&token, &method, Value::Object(params.clone()));
    let reply = shared.dispatch(&token, &method, &params, &conn).await;
    shared.set_status(&token, index, reply.status());
    reply.into_response(&conn)
}

fn split_path(path: &str) -> Option<(String, String)> {
    let (token, method) = path.strip_prefix("/bot")?.split_once('/')?;
    if token.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((token.to_owned(), method.to_owned()))
}

/// Query string, then body (JSON or urlencoded form); body values win, as they come later.
async fn read_params(request: Request) -> Map<String, Value> {
    let mut params = request.uri().query().map(decode_form).unwrap_or_default();
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .unwrap_or_default();
    params.extend(decode_body(&content_type, &body));
    params
}

/// The body's parameters: a form, multipart form data, or else a JSON object.
fn decode_body(content_type: &str, body: &[u8]) -> Map<String, Value> {
    let media_type = content_type.to_ascii_lowercase();
    if media_type.starts_with("application/x-www-form-urlencoded") {
        return decode_form(&String::from_utf8_lossy(body));
    }
    if media_type.starts_with("multipart/") {
        return decode_multipart(content_type, body);
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// `multipart/form-data` (RFC 7578), as far as uploads to the Bot API need: a text
/// part becomes a string parameter, a file part (one with a filename) is recorded
/// as `<uploaded N bytes>`. Anything malformed is skipped, not an error.
fn decode_multipart(content_type: &str, body: &[u8]) -> Map<String, Value> {
    let Some(boundary) = header_param(content_type, "boundary") else {
        return Map::new();
    };
    split_parts(body, &boundary)
        .into_iter()
        .filter_map(decode_part)
        .collect()
}

/// The parts between delimiter lines; the preamble and epilogue are left out.
fn split_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let first = format!("--{boundary}");
    let next = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    let Some(start) = find(body, first.as_bytes()) else {
        return parts;
    };
    let mut rest = &body[start + first.len()..];
    // A delimiter followed by CRLF opens a part; one followed by `--` closes the body.
    while let Some(part) = rest.strip_prefix(b"\r\n") {
        let Some(end) = find(part, next.as_bytes()) else {
            break;
        };
        parts.push(&part[..end]);
        rest = &part[end + next.len()..];
    }
    parts
}

fn decode_part(part: &[u8]) -> Option<(String, Value)> {
    let split = find(part, b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&part[..split]);
    let content = &part[split + 4..];
    let disposition = headers.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(value)
    })?;
    let name = header_param(disposition, "name")?;
    let value = if header_param(disposition, "filename").is_some() {
        format!("<uploaded {} bytes>", content.len())
    } else {
        String::from_utf8_lossy(content).into_owned()
    };
    Some((name, Value::String(value)))
}

/// A `key=value` or `key="value"` parameter of a header value such as
/// `multipart/form-data; boundary=x` (quoted values holding `;` are not supported).
fn header_param(header: &str, key: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn decode_form(form: &str) -> Map<String, Value> {
    form.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), Value::String(percent_decode(value)))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_byte) {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                // A stray `%` stays literal, as lenient servers treat it.
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(pair).ok()?;
    u8::from_str_radix(text, 16).ok()
}

fn str_param(params: &Map<String, Value>, name: &str) -> Option<String> {
    match params.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn int_param(params: &Map<String, Value>, name: &str) -> Option<i64> {
    match params.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn bool_param(params: &Map<String, Value>, name: &str) -> bool {
    match params.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1"),
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// A list sent as a JSON array, or as a JSON-encoded string in a query string or form.
fn list_param(params: &Map<String, Value>, name: &str) -> Option<Vec<String>> {
    let value = match params.get(name)? {
        Value::String(s) => serde_json::from_str(s).ok()?,
        other => other.clone(),
    };
    let items = value.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
    )
}

/// A connection's kill switch: once thrown, its stream fails every read and write
/// (waking any pending one) and long polls on it end. This is how the fake closes
/// a connection without an HTTP answer: axum has no API for that.
#[derive(Debug, Clone, Default)]
struct Killer(Arc<KillSwitch>);

#[derive(Debug, Default)]
struct KillSwitch {
    killed: AtomicBool,
    /// The last reader's and writer's wakers, woken by `kill`.
    wakers: Mutex<[Option<Waker>; 2]>,
    notify: Notify,
}

const READ: usize = 0;
const WRITE: usize = 1;

impl Killer {
    fn kill(&self) {
        self.0.killed.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers());
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
        self.0.notify.notify_waiters();
    }

    fn is_killed(&self) -> bool {
        self.0.killed.load(Ordering::SeqCst)
    }

    async fn killed(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_killed() {
                return;
            }
            notified.await;
        }
    }

    /// Stores the waker before checking, so a concurrent `kill` either is seen or wakes us.
    fn check(&self, slot: usize, cx: &Context<'_>) -> io::Result<()> {
        self.wakers()[slot] = Some(cx.waker().clone());
        if self.is_killed() {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        Ok(())
    }

    fn wakers(&self) -> MutexGuard<'_, [Option<Waker>; 2]> {
        self.0.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Killer {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener whose connections can be killed; the "address" it reports for a
/// connection is that connection's kill switch, which handlers get as `ConnectInfo`.
struct KillableListener {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = Killer;

    async fn accept(&mut self) -> (KillableStream, Killer) {
        loop {
            match self.inner.accept().await {
                Ok((inner, _)) => {
                    let killer = Killer::default();
                    self.shared.track(killer.clone());
                    let stream = KillableStream {
                        inner,
                        killer: killer.clone(),
                    };
                    return (stream, killer);
                }
                // Accept errors (e.g. too many open files) pass; retry shortly, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Killer> {
        Ok(Killer::default())
    }
}

struct KillableStream {
    inner: TcpStream,
    killer: Killer,
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.killer.check(READ, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.killer.check(WRITE, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.killer.check(WRITE, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killer.is_killed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
