//! The webhook source, with the test posting as Telegram does: what each request is
//! answered, what gets published (nothing, for hostile or broken requests), and the
//! webhook's registration at the fake Bot API.

mod support;

use std::sync::Arc;

use figment::providers::Format;
use support::corpus::Corpus;
use support::fake_bot_api::FakeBotApi;
use support::relay::{eventually, token, RunningRelay};
use support::tls::self_signed;
use tgrelay::config::Config;
use tgrelay::sink::memory::MemorySink;

const SECRET: &str = "s3cret-Token_value";

/// One webhook bot `main` on 127.0.0.1:0, with registration at `api` when `register`.
fn webhook_config(api: &FakeBotApi, token: &str, register: bool, extra: &str) -> Config {
    let toml = format!(
        "drain_timeout = \"5s\"\n[admin]\nlisten = \"\"\n[webhook]\nlisten = \"127.0.0.1:0\"\n\
         max_body_bytes = 65536\npublish_timeout = \"2s\"\n{extra}\n\
         [bots.main]\ntoken = \"{token}\"\napi_url = \"{}\"\nmode = \"webhook\"\n\
         [bots.main.webhook]\nurl = \"https://relay.example/telegram/main\"\nsecret_token = \"{SECRET}\"\n\
         register = {register}\ninfo_interval = \"1s\"\n",
        api.base_url()
    );
    Config::from_figment(figment::Figment::from(figment::providers::Toml::string(
        &toml,
    )))
    .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

struct Harness {
    /// Kept alive for the relay's Bot API calls.
    _api: FakeBotApi,
    sink: Arc<MemorySink>,
    relay: RunningRelay,
    url: String,
    http: reqwest::Client,
}

async fn harness(bot_id: u64, register: bool) -> Harness {
    let api = FakeBotApi::start().await;
    let token = token(bot_id);
    api.add_bot(&token);
    let sink = Arc::new(MemorySink::new());
    let relay =
        RunningRelay::started(webhook_config(&api, &token, register, ""), sink.clone()).await;
    let url = format!(
        "http://{}/telegram/main",
        relay.webhook_addr.expect("bound")
    );
    Harness {
        _api: api,
        sink,
        relay,
        url,
        http: reqwest::Client::new(),
    }
}

impl Harness {
    async fn post(&self, body: &[u8], secret: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        request.send().await.expect("the relay answers")
    }

    fn requests(&self, status: u16) -> f64 {
        self.relay.metric(&format!(
            "tgrelay_webhook_requests_total{{bot=\"main\",code=\"{status}\"}}"
        ))
    }
}

#[tokio::test]
async fn every_update_is_answered_200_only_after_it_was_published() {
    let h = harness(2001, false).await;
    let updates = Corpus::load().mixed(1, 60, 3);
    for raw in &updates {
        let response = h.post(raw, Some(SECRET)).await;
        assert_eq!(response.status(), 200);
        // The 200 came after the publish: the update is already in the sink.
        let id: i64 = serde_json::from_slice::<serde_json::Value>(raw).unwrap()["update_id"]
            .as_i64()
            .unwrap();
        assert!(h.sink.delivered().iter().any(|e| e.update_id == id));
    }
    let delivered = h.sink.delivered();
    assert_eq!(delivered.len(), 60);
    for (raw, envelope) in updates.iter().zip(&delivered) {
        assert_eq!(&envelope.payload[..], &raw[..], "bytes untouched");
    }
    assert_eq!(h.requests(200), 60.0);
    h.relay.stop().await.unwrap();
}

#[tokio::test]
async fn hostile_and_broken_requests_get_their_status_and_publish_nothing() {
    let h = harness(2002, false).await;
    let update = Corpus::load().update("message", 7, 1);
    assert_eq!(h.post(&update, None).await.status(), 401, "missing secret");
    assert_eq!(
        h.post(&update, Some("wrong")).await.status(),
        401,
        "wrong secret"
    );
    assert_eq!(
        h.post(&update, Some(&SECRET[..SECRET.len() - 1]))
            .await
            .status(),
        401,
        "a prefix"
    );
    for body in [
        &b"not json"[..],
        b"[1,2]",
        br#"{"message":{}}"#,
        br#"{"update_id":"1"}"#,
        b"",
        b"{\"update_id\":9,\"message\":{\"chat\":{\"i\nd\":5}}}",
        b"{\"update_id\":9,\"message\":{\"text\":\"\xe3\xe3\xb9\"}}",
    ] {
        assert_eq!(
            h.post(body, Some(SECRET)).await.status(),
            400,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let huge = format!(
        r#"{{"update_id":8,"message":{{"text":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    assert_eq!(h.post(huge.as_bytes(), Some(SECRET)).await.status(), 413);
    assert_eq!(h.http.get(&h.url).send().await.unwrap().status(), 405);
    let elsewhere = h.url.replace("/telegram/main", "/telegram/other");
    assert_eq!(
        h.http
            .post(&elsewhere)
            .body(update.clone())
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(h.sink.delivered().is_empty(), "nothing published");
    assert_eq!(h.sink.attempts(), 0);
    assert_eq!(
        (h.requests(401), h.requests(400), h.requests(413)),
        (3.0, 7.0, 1.0)
    );
    h.relay.stop().await.unwrap();
}

#[tokio::test]
async fn a_broker_outage_answers_503_with_retry_after_and_recovery_answers_200() {
    let h = harness(2003, false).await;
    let update = Corpus::load().update("callback_query", 11, 2);
    h.sink.set_down(true);
    let refused = h.post(&update, Some(SECRET)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    h.sink.set_down(false);
    assert_eq!(
        h.post(&update, Some(SECRET)).await.status(),
        200,
        "Telegram's retry succeeds"
    );
    assert_eq!(h.sink.delivered().len(), 1);
    h.relay.stop().await.unwrap();
}

#[tokio::test]
async fn an_update_resent_after_its_ack_is_answered_200_without_publishing_again() {
    let h = harness(2004, false).await;
    let update = Corpus::load().update("message", 21, 4);
    for _ in 0..3 {
        assert_eq!(h.post(&update, Some(SECRET)).await.status(), 200);
    }
    assert_eq!(h.sink.delivered().len(), 1);
    let suppressed = h
        .relay
        .metric("tgrelay_duplicates_suppressed_total{bot=\"main\"}");
    assert_eq!(suppressed, 2.0);
    h.relay.stop().await.unwrap();
}

#[tokio::test]
async fn an_update_resent_while_its_first_publish_still_runs_is_not_published_twice() {
    let h = harness(2011, false).await;
    let update = Corpus::load().update("message", 41, 4);
    h.sink.hold(true);
    // The broker hangs past the publish timeout (2 s): Telegram is told to retry.
    assert_eq!(h.post(&update, Some(SECRET)).await.status(), 503);
    let resent = h.post(&update, Some(SECRET)).await;
    assert_eq!(resent.status(), 503, "the first publish still decides");
    assert_eq!(
        h.sink.attempts(),
        1,
        "no second copy while the first is in flight"
    );
    h.sink.hold(false);
    assert!(eventually(10, || h.sink.delivered().len() == 1).await);
    // The broker took the first copy after all: Telegram's next retry gets its 200.
    assert_eq!(h.post(&update, Some(SECRET)).await.status(), 200);
    assert_eq!(h.sink.attempts(), 1);
    assert_eq!(h.sink.delivered().len(), 1);
    h.relay.stop().await.unwrap();
}

#[tokio::test]
async fn after_shutdown_the_listener_is_gone_so_telegram_retries_later() {
    let h = harness(2005, false).await;
    let update = Corpus::load().update("message", 31, 4);
    assert_eq!(h.post(&update, Some(SECRET)).await.status(), 200);
    let url = h.url.clone();
    h.relay.stop().await.unwrap();
    // After shutdown the listener is gone: Telegram's request fails and it retries later.
    assert!(reqwest::Client::new()
        .post(&url)
        .body(update)
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn registration_sets_the_webhook_once_and_never_drops_pending_updates() {
    let api = FakeBotApi::start().await;
    let token = token(2006);
    api.add_bot(&token);
    let sink = Arc::new(MemorySink::new());
    let relay = RunningRelay::started(webhook_config(&api, &token, true, ""), sink.clone()).await;
    let set_calls = || {
        api.calls(&token)
            .iter()
            .filter(|c| c.method == "setWebhook")
            .count()
    };
    assert!(eventually(10, || set_calls() == 1).await);
    let params = api.webhook_params(&token);
    assert_eq!(params["url"], "https://relay.example/telegram/main");
    assert_eq!(params["secret_token"], SECRET);
    assert_eq!(params["max_connections"], 40);
    assert_eq!(
        params["allowed_updates"],
        serde_json::json!(Corpus::load().kinds()),
        "every kind of the Bot API by default"
    );
    assert!(
        params.get("drop_pending_updates").is_none(),
        "never sent unless configured"
    );
    assert!(
        eventually(10, || relay.metric("tgrelay_source_up{bot=\"main\"}")
            == 1.0)
        .await
    );
    relay.stop().await.unwrap();

    // A restart finds the same settings at Telegram and leaves them alone.
    let relay = RunningRelay::started(webhook_config(&api, &token, true, ""), sink).await;
    let infos = || {
        api.calls(&token)
            .iter()
            .filter(|c| c.method == "getWebhookInfo")
            .count()
    };
    let before = infos();
    assert!(eventually(10, || infos() > before).await);
    relay.stop().await.unwrap();
    assert_eq!(set_calls(), 1, "an identical webhook is not set again");
}

#[tokio::test]
async fn only_telegram_networks_when_asked() {
    let api = FakeBotApi::start().await;
    let token = token(2007);
    api.add_bot(&token);
    let sink = Arc::new(MemorySink::new());
    let config = webhook_config(
        &api,
        &token,
        false,
        "telegram_networks_only = true\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    let relay = RunningRelay::started(config, sink.clone()).await;
    let url = format!("http://{}/telegram/main", relay.webhook_addr.unwrap());
    let update = Corpus::load().update("message", 41, 4);
    let post = |from: Option<&'static str>| {
        let mut request = reqwest::Client::new()
            .post(&url)
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .body(update.clone());
        if let Some(from) = from {
            request = request.header("x-forwarded-for", from);
        }
        request.send()
    };
    assert_eq!(
        post(None).await.unwrap().status(),
        403,
        "loopback is not Telegram"
    );
    assert_eq!(post(Some("8.8.8.8")).await.unwrap().status(), 403);
    assert_eq!(post(Some("149.154.167.220")).await.unwrap().status(), 200);
    assert_eq!(sink.delivered().len(), 1);
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn serves_https_directly_with_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let api = FakeBotApi::start().await;
    let token = token(2008);
    api.add_bot(&token);
    let sink = Arc::new(MemorySink::new());
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let relay =
        RunningRelay::started(webhook_config(&api, &token, false, &tls), sink.clone()).await;
    let url = format!(
        "https://127.0.0.1:{}/telegram/main",
        relay.webhook_addr.unwrap().port()
    );
    let pem = std::fs::read(&cert).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let update = Corpus::load().update("message", 51, 2);
    let response = client
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
        .body(update.clone())
        .send()
        .await
        .expect("a TLS handshake with the configured certificate");
    assert_eq!(response.status(), 200);
    assert_eq!(&sink.delivered()[0].payload[..], &update[..]);
    let plain = url.replace("https://", "http://");
    assert!(reqwest::Client::new()
        .post(&plain)
        .body(update)
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true));
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn at_shutdown_the_request_in_flight_is_answered_and_new_connections_are_refused() {
    let api = FakeBotApi::start().await;
    let token = token(2012);
    api.add_bot(&token);
    let sink = Arc::new(MemorySink::new());
    let mut config = webhook_config(&api, &token, false, "");
    config.webhook.publish_timeout = std::time::Duration::from_secs(30);
    config.drain_timeout = std::time::Duration::from_secs(30);
    let relay = RunningRelay::started(config, sink.clone()).await;
    let addr = relay.webhook_addr.unwrap();
    let update = Corpus::load().update("message", 61, 3);
    sink.hold(true);
    let in_flight = tokio::spawn(
        reqwest::Client::new()
            .post(format!("http://{addr}/telegram/main"))
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .body(update)
            .send(),
    );
    assert!(eventually(10, || sink.attempts() == 1).await);
    let stopping = tokio::spawn(relay.stop());
    assert!(
        eventually(10, || std::net::TcpStream::connect(addr).is_err()).await,
        "the listener closes at once"
    );
    sink.hold(false);
    let answer = in_flight.await.unwrap().expect("answered, not cut");
    assert_eq!(answer.status(), 200, "the update in flight is confirmed");
    stopping.await.unwrap().unwrap();
    assert_eq!(sink.delivered().len(), 1);
}

#[tokio::test]
async fn without_the_secret_the_body_is_never_waited_for() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = harness(2013, false).await;
    let mut stream = tokio::net::TcpStream::connect(h.relay.webhook_addr.unwrap())
        .await
        .unwrap();
    // A body is announced but never sent: the header alone is enough to refuse it.
    let head = "POST /telegram/main HTTP/1.1\r\nHost: relay\r\n\
                X-Telegram-Bot-Api-Secret-Token: guess\r\nContent-Length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("answered and closed")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 401 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let timed_out = "tgrelay_webhook_connections_closed_total{reason=\"request_timeout\"}";
    assert_eq!(
        h.relay.metric(timed_out),
        0.0,
        "not after the request timeout"
    );
    assert_eq!(h.requests(401), 1.0);
    h.relay.stop().await.unwrap();
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_is_cut_after_its_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let api = FakeBotApi::start().await;
    let token = token(2014);
    api.add_bot(&token);
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_handshake_timeout = \"1s\"",
        cert.display(),
        key.display()
    );
    let config = webhook_config(&api, &token, false, &tls);
    let relay = RunningRelay::started(config, Arc::new(MemorySink::new())).await;
    let mut silent = tokio::net::TcpStream::connect(relay.webhook_addr.unwrap())
        .await
        .unwrap();
    let mut buf = [0; 16];
    let read = silent.read(&mut buf);
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), read).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the relay"
    );
    let reason = "tgrelay_webhook_connections_closed_total{reason=\"tls_handshake_timeout\"}";
    assert_eq!(relay.metric(reason), 1.0);
    relay.stop().await.unwrap();
}
