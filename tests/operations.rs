//! The relay as operations see it: its admin server checked by Prometheus' own tools.
//! `promtool check metrics` accepts the exposition after real traffic and faults; a
//! real Prometheus server (Debian's `prometheus`, installed by scripts/test) scrapes
//! the relay and its HTTP API shows the counters moving; `/healthz` answers while the
//! process serves and `/readyz` follows the pod (the sink), going unavailable during a
//! broker outage and coming back by itself, while a bot that cannot run shows in its
//! verbose view and its own metrics only.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use support::corpus::Corpus;
use support::fake_bot_api::{FakeBotApi, Fault};
use support::nats::{self as jsupport, unique};
use support::relay::{eventually, free_port, token, RunningRelay};
use tgrelay::app::Relay;
use tgrelay::config::Config;
use tgrelay::sink::memory::MemorySink;

const WAIT: Duration = Duration::from_secs(30);

/// What `support::relay::config` builds, but with the admin server on
/// `127.0.0.1:<admin>`: that helper turns it off, and TOML cannot repeat `[admin]`.
fn config_with_admin(api: &FakeBotApi, bots: &[(&str, &str)], admin: u16, extra: &str) -> Config {
    config_polling_for(api, bots, "1s", admin, extra)
}

/// `config_with_admin` with long polls of `poll_timeout`.
fn config_polling_for(
    api: &FakeBotApi,
    bots: &[(&str, &str)],
    poll_timeout: &str,
    admin: u16,
    extra: &str,
) -> Config {
    let mut toml = format!("drain_timeout = \"10s\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    for (name, token) in bots {
        toml.push_str(&format!(
            "[bots.{name}]\ntoken = \"{token}\"\napi_url = \"{}\"\npoll_timeout = \"{poll_timeout}\"\n",
            api.base_url()
        ));
    }
    toml.push_str(extra);
    Config::from_figment(Figment::from(Toml::string(&toml)))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// GET `url`: status, Content-Type and body; a connection error is status 0.
async fn get(url: &str) -> (u16, String, String) {
    match reqwest::get(url).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (
                status,
                content_type,
                response.text().await.unwrap_or_default(),
            )
        }
        Err(_) => (0, String::new(), String::new()),
    }
}

/// Polls `url` until it answers `status` with a body holding every one of `lines`;
/// panics with the last answer after `WAIT`.
async fn wait_for(url: &str, status: u16, lines: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (got, _, body) = get(url).await;
        if got == status && lines.iter().all(|line| body.contains(line)) {
            return body;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{url} did not answer {status} with {lines:?}; last: {got}\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The path of a tool from Debian's `prometheus` package; a clear failure, not a
/// skip, when it is missing.
fn prometheus_tool(name: &str) -> String {
    match Command::new(name).arg("--version").output() {
        Ok(out) if out.status.success() => name.to_owned(),
        _ => panic!(
            "`{name}` is not installed: run the tests with scripts/test, which installs \
             Debian's `prometheus` package (or `apt-get install prometheus`)"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics_after_traffic_and_faults() {
    let promtool = prometheus_tool("promtool");
    let api = FakeBotApi::start().await;
    let token = token(616161);
    api.add_bot(&token);
    api.inject(&token, Fault::TooManyRequests { retry_after: 1 });
    api.inject(&token, Fault::BadGatewayHtml);
    let mut updates = Corpus::load().mixed(1, 30, 11);
    // An item that is not an update (but of an allowed kind, so the fake serves it)
    // fills the malformed-updates family.
    updates.insert(10, br#"{"update_id":"eleven","message":{}}"#.to_vec());
    api.push_updates(&token, updates);
    let sink = Arc::new(MemorySink::new());
    sink.fail_once([20]); // fills the publish-failures family
    let admin = free_port();
    let config = config_with_admin(&api, &[("main", &token)], admin, "");
    let relay = RunningRelay::started(config, sink.clone()).await;
    assert!(api.wait_for_confirmed(&token, 30, WAIT).await);

    let (status, content_type, text) = get(&format!("http://127.0.0.1:{admin}/metrics")).await;
    relay.stop().await.unwrap();
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    // promtool would pass an empty exposition too: make sure it judged these.
    for family in [
        "tgrelay_updates_received_total{",
        "tgrelay_updates_published_total{",
        "tgrelay_publish_failures_total{",
        "tgrelay_publish_ack_seconds_bucket{",
        "tgrelay_updates_in_flight{",
        "tgrelay_last_confirmed_update_id{",
        "tgrelay_telegram_requests_total{",
        "tgrelay_telegram_request_duration_seconds_bucket{",
        "tgrelay_telegram_errors_total{bot=\"main\",code=\"429\"",
        "tgrelay_telegram_errors_total{bot=\"main\",code=\"502\"",
        "tgrelay_telegram_retry_after_seconds_total{",
        "tgrelay_malformed_updates_total{",
        "tgrelay_source_up{",
        "tgrelay_build_info{",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(family), "no {family} in:\n{text}");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}\nexposition:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server run by a test; dropping it kills the process, so a failing
/// test does not leave one running.
struct Prometheus {
    child: Child,
    url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second as job `tgrelay`, and waits
    /// until it reports ready.
    async fn start(target: &str) -> Prometheus {
        let binary = prometheus_tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tgrelay\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus starts");
        let mut prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while get(&format!("{}/-/ready", prometheus.url)).await.0 != 200 {
            let exited = prometheus.child.try_wait().unwrap();
            if exited.is_some() || tokio::time::Instant::now() >= deadline {
                panic!(
                    "prometheus not ready ({exited:?}):\n{}",
                    prometheus.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        prometheus
    }

    /// The value of an instant query that yields one sample; `None` while it yields none.
    async fn query(&self, promql: &str) -> Option<f64> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?;
        let body: Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
        assert_eq!(body["status"], "success", "{promql}: {body}");
        let result = body["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{promql}: one sample expected: {body}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Polls `promql` until its value satisfies `check`; panics with the last value
    /// and Prometheus' log after `WAIT`.
    async fn wait_for(&self, promql: &str, check: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.query(promql).await;
            if let Some(v) = value.filter(|v| check(*v)) {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{promql} = {value:?}\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_relay_and_sees_the_counters_move() {
    let api = FakeBotApi::start().await;
    let token = token(626262);
    api.add_bot(&token);
    api.inject(&token, Fault::TooManyRequests { retry_after: 1 });
    let sink = Arc::new(MemorySink::new());
    let admin = free_port();
    let config = config_with_admin(&api, &[("main", &token)], admin, "");
    let relay = RunningRelay::started(config, sink.clone()).await;
    let prometheus = Prometheus::start(&format!("127.0.0.1:{admin}")).await;
    let corpus = Corpus::load();

    api.push_updates(&token, corpus.mixed(1, 25, 12));
    assert!(api.wait_for_confirmed(&token, 25, WAIT).await);
    let received = "sum(tgrelay_updates_received_total)";
    // Exactly what was fed: the 429 answered no updates, the memory sink never failed.
    let first = prometheus.wait_for(received, |v| v == 25.0).await;

    api.push_updates(&token, corpus.mixed(26, 40, 13));
    assert!(api.wait_for_confirmed(&token, 65, WAIT).await);
    let second = prometheus.wait_for(received, |v| v == 65.0).await;
    assert!(second > first, "{first} then {second}");

    assert_eq!(
        prometheus
            .wait_for("up{job=\"tgrelay\"}", |v| v == 1.0)
            .await,
        1.0
    );
    let errors = "sum(tgrelay_telegram_errors_total{job=\"tgrelay\",code=\"429\"})";
    assert!(prometheus.wait_for(errors, |v| v >= 1.0).await >= 1.0);
    let published = "sum(tgrelay_updates_published_total{outcome=\"delivered\"})";
    assert_eq!(prometheus.wait_for(published, |v| v == 65.0).await, 65.0);
    drop(prometheus);
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_goes_unavailable_during_a_broker_outage_and_comes_back_by_itself() {
    let api = FakeBotApi::start().await;
    let token = token(636363);
    api.add_bot(&token);
    let sink = Arc::new(MemorySink::new());
    let admin = free_port();
    let config = config_with_admin(&api, &[("main", &token)], admin, "");
    let relay = RunningRelay::started(config, sink.clone()).await;
    let base = format!("http://127.0.0.1:{admin}");
    let (status, _, body) = get(&format!("{base}/healthz")).await;
    assert_eq!((status, body.trim()), (200, "ok"));

    let corpus = Corpus::load();
    api.push_updates(&token, corpus.mixed(1, 5, 14));
    assert!(api.wait_for_confirmed(&token, 5, WAIT).await);
    let readyz = format!("{base}/readyz?verbose");
    wait_for(&readyz, 200, &["sink memory: ready", "bot main: ready"]).await;

    // The broker goes down before more updates come: none of them can be confirmed.
    sink.set_down(true);
    api.push_updates(&token, corpus.mixed(6, 5, 15));
    wait_for(&readyz, 503, &["sink memory: not ready", "bot main: ready"]).await;
    assert!(
        eventually(30, || sink.attempts() > 5).await,
        "the relay tried the broker during the outage"
    );
    let failures =
        "tgrelay_publish_failures_total{bot=\"main\",class=\"transient\",sink=\"memory\"}";
    assert!(relay.metric(failures) > 0.0, "{}", relay.metrics.render());
    let (status, _, _) = get(&format!("{base}/healthz")).await;
    assert_eq!(status, 200, "the process still serves");
    assert_eq!(
        api.confirmed(&token).len(),
        5,
        "nothing confirmed while down"
    );

    // The broker comes back: readiness returns and the held updates flow, untouched by the test.
    sink.set_down(false);
    wait_for(&readyz, 200, &["sink memory: ready", "bot main: ready"]).await;
    assert!(api.wait_for_confirmed(&token, 10, WAIT).await);
    relay.stop().await.unwrap();
    let mut ids: Vec<i64> = sink.delivered().iter().map(|e| e.update_id).collect();
    ids.dedup();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_leaves_the_pod_ready_and_shows_in_the_verbose_view() {
    let api = FakeBotApi::start().await;
    let good = token(646464);
    api.add_bot(&good);
    // Never added: the fake answers 401 Unauthorized, as for a revoked token.
    let revoked = token(656565);
    let sink = Arc::new(MemorySink::new());
    let admin = free_port();
    let bots = [("main", good.as_str()), ("revoked", revoked.as_str())];
    let config = config_with_admin(&api, &bots, admin, "");
    let relay = RunningRelay::started(config, sink.clone()).await;
    api.push_updates(&good, Corpus::load().mixed(1, 5, 16));
    assert!(
        api.wait_for_confirmed(&good, 5, WAIT).await,
        "the other bot keeps running"
    );
    assert!(
        eventually(30, || api.calls(&revoked).iter().any(|c| c.status == 401)).await,
        "the revoked token was tried"
    );
    let base = format!("http://127.0.0.1:{admin}");
    let verbose = format!("{base}/readyz?verbose");
    let expected = [
        "sink memory: ready",
        "bot main: ready",
        "bot revoked: failed",
    ];
    wait_for(&verbose, 200, &expected).await;
    // The pod serves the good bot: it stays ready while that bot keeps relaying.
    api.push_updates(&good, Corpus::load().mixed(6, 5, 17));
    assert!(api.wait_for_confirmed(&good, 10, WAIT).await);
    let (status, _, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("bots: 1 ready, 0 not ready, 1 failed"),
        "{body}"
    );
    assert!(
        !body.contains("bot main"),
        "bots are listed only verbose: {body}"
    );
    // The bad bot is reported by its own series, for its own alert.
    assert_eq!(relay.metric("tgrelay_source_up{bot=\"revoked\"}"), 0.0);
    assert_eq!(relay.metric("tgrelay_source_up{bot=\"main\"}"), 1.0);
    let refused = "tgrelay_telegram_errors_total{bot=\"revoked\",code=\"401\",method=\"getMe\"}";
    assert_eq!(
        relay.metric(refused),
        1.0,
        "tried once, not again and again"
    );
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_polling_bot_is_ready_before_its_first_long_poll_returns() {
    let api = FakeBotApi::start().await;
    let token = token(676767);
    api.add_bot(&token);
    let sink = Arc::new(MemorySink::new());
    let admin = free_port();
    // No update comes: the fake holds each getUpdates for the whole 50 s.
    let config = config_polling_for(&api, &[("quiet", token.as_str())], "50s", admin, "");
    let relay = RunningRelay::started(config, sink.clone()).await;
    let verbose = format!("http://127.0.0.1:{admin}/readyz?verbose");
    wait_for(&verbose, 200, &["bot quiet: ready"]).await;
    let polls: Vec<_> = api
        .calls(&token)
        .into_iter()
        .filter(|c| c.method == "getUpdates")
        .collect();
    assert_eq!(polls.len(), 1, "{polls:?}");
    assert_eq!(polls[0].status, 0, "its first long poll is still open");
    assert_eq!(relay.metric("tgrelay_source_up{bot=\"quiet\"}"), 1.0);
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ok_with_a_connected_nats_sink() {
    let js = jsupport::jetstream().await;
    let (stream, prefix) = (unique("TGRELAY_READY"), unique("ready"));
    let api = FakeBotApi::start().await;
    let token = token(666666);
    api.add_bot(&token);
    api.push_updates(&token, Corpus::load().mixed(1, 5, 18));
    let admin = free_port();
    let sink = jsupport::sink_toml(&stream, &prefix, "");
    let config = config_with_admin(&api, &[("main", &token)], admin, &sink);
    // The real sink, connected (and its stream created) the way `tgrelay run` does it.
    let relay = Relay::new(config);
    let shutdown = CancellationToken::new();
    let running = relay
        .start(shutdown.clone())
        .await
        .expect("the relay starts");
    let task = tokio::spawn(running.wait());

    assert!(api.wait_for_confirmed(&token, 5, WAIT).await);
    let readyz = format!("http://127.0.0.1:{admin}/readyz?verbose");
    wait_for(&readyz, 200, &["sink nats: ready", "bot main: ready"]).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(jsupport::read_all(&js, &stream).await.len(), 5);
    jsupport::delete_stream(&js, &stream).await;
}
