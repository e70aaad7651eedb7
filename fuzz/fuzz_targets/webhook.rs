//! The webhook listener's real router, sent requests as Telegram, a proxy or anyone
//! else might: the answer must be one the contract allows for that request, and an
//! update is published (byte for byte) only when the answer is 200.
//!
//! Input: six control bytes, then `X-Forwarded-For` (as long as control byte 5 says),
//! then the body. Every byte value is valid, so mutations never waste a run.
//!   0 method   1 path   2 secret header   3 flags (see `Flags`)   4 peer address
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tgrelay::envelope::{BotIdentity, UpdateHead};
use tgrelay::health::Health;
use tgrelay::lease::Lease;
use tgrelay::metrics::Metrics;
use tgrelay::secret::Secret;
use tgrelay::sink::memory::MemorySink;
use tgrelay::source::webhook::{WebhookBot, WebhookServer, WebhookServerConfig};
use tgrelay::source::BotContext;
use tgrelay::telegram::BotApi;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Two bots, so a request for one with the other's secret is tried too.
const BOTS: [(&str, &str); 2] = [
    ("/telegram/main", "s3cret-Token_value"),
    ("/telegram/other", "another_secret-42"),
];
/// Small, so that the fuzzer reaches 413 too (scripts/fuzz allows inputs of 8 KiB).
const MAX_BODY: usize = 4096;

const METHODS: [Method; 6] = [
    Method::POST,
    Method::GET,
    Method::PUT,
    Method::HEAD,
    Method::OPTIONS,
    Method::DELETE,
];
const PATHS: [&str; 6] = [
    "/telegram/main",
    "/telegram/other",
    "/telegram/main?x=1",
    "/telegram/main/",
    "/TELEGRAM/MAIN",
    "/",
];
/// Peers, with whether each is in Telegram's networks and a trusted proxy (10.0.0.0/8).
const PEERS: [(&str, bool, bool); 5] = [
    ("127.0.0.1:40000", false, false),
    ("149.154.167.220:443", true, false),
    ("[::ffff:91.108.4.1]:443", true, false),
    ("10.0.0.2:8080", false, true),
    ("[2001:db8::1]:443", false, false),
];

/// Control byte 3.
struct Flags(u8);

impl Flags {
    fn content_type(&self) -> Option<&'static str> {
        [
            Some("application/json"),
            None,
            Some("text/plain"),
            Some("multipart/form-data"),
        ][usize::from(self.0 & 3)]
    }
    fn sink_down(&self) -> bool {
        self.0 & 4 != 0
    }
    fn send_twice(&self) -> bool {
        self.0 & 8 != 0
    }
    fn telegram_networks_only(&self) -> bool {
        self.0 & 16 != 0
    }
    fn shutting_down(&self) -> bool {
        self.0 & 32 != 0
    }
}

/// What lives across runs: building a runtime, an HTTP client or a metrics registry
/// per run would cost more than the request does.
struct Shared {
    runtime: tokio::runtime::Runtime,
    ctx: BotContext,
}

static SHARED: LazyLock<Shared> = LazyLock::new(|| Shared {
    runtime: tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime"),
    ctx: BotContext {
        bot: Arc::new(BotIdentity::new("main", 123_456)),
        // Never called: the listener only publishes.
        api: BotApi::new(
            BotApi::http_client(),
            "http://127.0.0.1:9",
            Secret::new("1:x"),
        ),
        sink: Arc::new(MemorySink::new()),
        metrics: Arc::new(Metrics::new()),
        health: Arc::new(Health::new()),
        lease: Lease::unbounded(),
    },
});

fuzz_target!(|data: &[u8]| {
    let Some((control, rest)) = data.split_first_chunk::<6>() else {
        return;
    };
    let [method, path, secret, flags, peer, xff_len] = *control;
    let (xff, body) = rest.split_at(usize::from(xff_len).min(rest.len()));
    let method = &METHODS[usize::from(method) % METHODS.len()];
    let path = PATHS[usize::from(path) % PATHS.len()];
    let (peer, peer_in_telegram, peer_is_proxy) = PEERS[usize::from(peer) % PEERS.len()];
    let flags = Flags(flags);
    // A new server each run: nothing a run publishes or remembers leaks into the next,
    // so every crash reproduces from its input alone.
    let shared = &*SHARED;
    let sink = Arc::new(MemorySink::new());
    sink.set_down(flags.sink_down());
    let shutdown = CancellationToken::new();
    if flags.shutting_down() {
        shutdown.cancel();
    }
    let bots = BOTS
        .iter()
        .map(|(path, secret)| {
            let ctx = BotContext {
                sink: sink.clone(),
                ..shared.ctx.clone()
            };
            WebhookBot::new(ctx, (*path).to_owned(), Secret::new(*secret))
        })
        .collect();
    let config = WebhookServerConfig {
        max_body_bytes: MAX_BODY,
        publish_timeout: Duration::from_secs(1),
        telegram_networks_only: flags.telegram_networks_only(),
        trusted_proxies: vec!["10.0.0.0/8".into()],
        ..WebhookServerConfig::default()
    };
    let router = WebhookServer::new(&config, bots, shutdown).router(MAX_BODY);

    let secret = match secret % 6 {
        0 => Some(BOTS[0].1.as_bytes().to_vec()),
        1 => None,
        2 => Some(BOTS[1].1.as_bytes().to_vec()),
        3 => Some(BOTS[0].1.as_bytes()[..BOTS[0].1.len() - 1].to_vec()),
        4 => Some([BOTS[0].1.as_bytes(), b"x"].concat()),
        _ => Some(Vec::new()),
    };
    let request = || {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .body(Body::from(body.to_vec()))
            .expect("a request");
        let headers = request.headers_mut();
        if let Some(secret) = &secret {
            let value = HeaderValue::from_bytes(secret).expect("a header value");
            headers.insert("x-telegram-bot-api-secret-token", value);
        }
        if let Some(content_type) = flags.content_type() {
            headers.insert("content-type", HeaderValue::from_static(content_type));
        }
        if let Ok(xff) = HeaderValue::from_bytes(xff) {
            headers.insert("x-forwarded-for", xff);
        }
        let peer: SocketAddr = peer.parse().expect("a socket address");
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    };
    let send = |request: Request<Body>| {
        let response = shared.runtime.block_on(router.clone().oneshot(request));
        response.expect("the router is infallible").status()
    };

    // What the contract says, in the order the listener checks.
    let route = path.split('?').next().unwrap_or(path);
    let bot = BOTS.iter().find(|(p, _)| *p == route);
    let expected = match bot {
        None => StatusCode::NOT_FOUND,
        Some(_) if method != Method::POST => StatusCode::METHOD_NOT_ALLOWED,
        Some(_) if flags.shutting_down() => StatusCode::SERVICE_UNAVAILABLE,
        // Behind the trusted proxy, X-Forwarded-For decides; that is checked below.
        Some(_) if flags.telegram_networks_only() && !peer_in_telegram && !peer_is_proxy => {
            StatusCode::FORBIDDEN
        }
        Some((_, s)) if secret.as_deref() != Some(s.as_bytes()) => StatusCode::UNAUTHORIZED,
        Some(_) if body.len() > MAX_BODY => StatusCode::PAYLOAD_TOO_LARGE,
        Some(_) if UpdateHead::parse(body).is_err() => StatusCode::BAD_REQUEST,
        Some(_) if flags.sink_down() => StatusCode::SERVICE_UNAVAILABLE,
        Some(_) => StatusCode::OK,
    };
    let proxied = bot.is_some()
        && method == Method::POST
        && flags.telegram_networks_only()
        && peer_is_proxy
        && !flags.shutting_down();

    let status = send(request());
    if proxied {
        assert!(
            status == expected || status == StatusCode::FORBIDDEN,
            "{status} for {expected}"
        );
    } else {
        assert_eq!(status, expected);
    }
    let delivered = sink.delivered();
    if status == StatusCode::OK {
        assert_eq!(delivered.len(), 1, "200 without exactly one publish");
        assert_eq!(&delivered[0].payload[..], body, "the body was changed");
        assert!(
            std::str::from_utf8(body).is_ok(),
            "200 for bytes that are not JSON text"
        );
        let head = UpdateHead::parse(body).expect("200 for an update");
        assert_eq!(delivered[0].update_id, head.update_id);
    } else {
        assert!(delivered.is_empty(), "published, yet answered {status}");
    }

    if flags.send_twice() {
        // Telegram's retry of the same request: the same answer, and an update already
        // acknowledged is not published again.
        let again = send(request());
        assert_eq!(again, status, "a retry answered differently");
        assert_eq!(
            sink.delivered().len(),
            delivered.len(),
            "a retry published again"
        );
    }
});
