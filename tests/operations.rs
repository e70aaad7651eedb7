//! The relay as operations see it: its admin server checked by Prometheus' own tools.
//! `promtool check metrics` accepts the exposition after real traffic and faults; a
//! real Prometheus server (Debian's `prometheus`, installed by scripts/test) scrapes
//! the relay and its HTTP API shows the counters moving; `/healthz` answers while the
//! process serves and `/readyz` follows the pod (the sink), going unavailable during a
//! broker outage and coming back by itself, while a bot that cannot run shows in its
//! verbose view and its own metrics only. Every query of the Grafana dashboard is run
//! through a real Prometheus scraping two replicas in shared mode, and returns data.

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
use support::gateway;
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
        Prometheus::scraping(&[target.to_owned()]).await
    }

    /// Starts Prometheus scraping every one of `targets` as job `tgrelay`.
    async fn scraping(targets: &[String]) -> Prometheus {
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let binary = prometheus_tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tgrelay\n    static_configs:\n      \
                 - targets: [{targets}]\n"
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
        let result = self.samples(promql).await?;
        assert!(
            result.len() <= 1,
            "{promql}: one sample expected: {result:?}"
        );
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// The samples of an instant query (`None` when Prometheus did not answer); a query
    /// Prometheus refuses fails the test.
    async fn samples(&self, promql: &str) -> Option<Vec<Value>> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?;
        let body: Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"].as_array().cloned()
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
    let same_bots = Arc::new(config.bots.clone());
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
    assert_eq!(relay.metric(refused), 1.0, "tried once");
    // Asked to start it again with the same token (as the shared ownership asks every
    // tick, and a reload of other bots does), the supervisor leaves it failed: Telegram
    // sees no second getMe (the fake answers one within a millisecond or so).
    relay.supervisor().start(&same_bots, "revoked");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(relay.metric(refused), 1.0, "not tried again");
    assert!(!relay.supervisor().running().contains("revoked"));
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
async fn readyz_names_the_webhook_listener_where_one_is_bound() {
    let api = FakeBotApi::start().await;
    let token = token(707070);
    api.add_bot(&token);
    let admin = free_port();
    let webhook = format!(
        "[webhook]\nlisten = \"127.0.0.1:0\"\n[bots.hook]\ntoken = \"{token}\"\n\
         api_url = \"{}\"\nmode = \"webhook\"\n[bots.hook.webhook]\n\
         url = \"https://relay.example/telegram/hook\"\nsecret_token = \"s3cret\"\n\
         register = false\n",
        api.base_url()
    );
    let config = config_with_admin(&api, &[], admin, &webhook);
    let relay = RunningRelay::started(config, Arc::new(MemorySink::new())).await;
    let bound = format!("listener {}: ready", relay.webhook_addr.expect("bound"));
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    wait_for(&readyz, 200, &["sink memory: ready", &bound]).await;
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

/// Two replicas sharing a polling bot `main` and a webhook bot `hook` through NATS, with
/// the gateway on; each has its admin server on its own port.
fn shared_config(
    api: &FakeBotApi,
    tokens: [&str; 2],
    admin: u16,
    instance: &str,
    prefix: &str,
) -> Config {
    let url = api.base_url();
    let [main, hook] = tokens;
    let toml = format!(
        "drain_timeout = \"5s\"\n{sink}{outbound}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [webhook]\nlisten = \"127.0.0.1:0\"\n\
         [cluster]\nmode = \"shared\"\ninstance = \"{instance}\"\nname = \"{prefix}\"\nlease_ttl = \"3s\"\n\
         [bots.main]\ntoken = \"{main}\"\napi_url = \"{url}\"\npoll_timeout = \"1s\"\n\
         [bots.hook]\ntoken = \"{hook}\"\napi_url = \"{url}\"\nmode = \"webhook\"\n\
         [bots.hook.webhook]\nurl = \"https://relay.example/telegram/hook\"\n\
         secret_token = \"s3cret\"\nregister = false\ninfo_interval = \"1s\"\n",
        sink = jsupport::sink_toml(&format!("{prefix}_UPD"), prefix, ""),
        outbound = gateway::outbound_toml(prefix, ""),
    );
    Config::from_figment(Figment::from(Toml::string(&toml)))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// A relay of `shared_config`, started as `tgrelay run` starts it (its real sink).
struct Replica {
    metrics: Arc<tgrelay::metrics::Metrics>,
    webhook: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    async fn start(config: Config) -> Replica {
        let relay = Relay::new(config);
        let metrics = relay.metrics();
        let shutdown = CancellationToken::new();
        let running = relay
            .start(shutdown.clone())
            .await
            .expect("the relay starts");
        Replica {
            metrics,
            webhook: running.webhook_addr.expect("a webhook listener"),
            shutdown,
            task: tokio::spawn(running.wait()),
        }
    }

    fn owned(&self) -> i64 {
        self.metrics.bots_owned.get()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Every query of the dashboard (its panels' and its variables'), as Grafana would send
/// it over the last two minutes of a job named `tgrelay`, with every bot selected.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/helm/tgrelay/dashboards/tgrelay.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let grafana = |expr: &str| {
        expr.replace("$__rate_interval", "2m")
            .replace("$job", "tgrelay")
            .replace("$bot", ".*")
    };
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = format!("{} ({})", panel["title"], target["refId"]);
            queries.push((title, grafana(target["expr"].as_str().unwrap())));
        }
    }
    // `label_values(<series>, <label>)`: the series must exist, carrying the label.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let inner = query
            .strip_prefix("label_values(")
            .unwrap()
            .strip_suffix(')')
            .unwrap();
        let (series, label) = inner.rsplit_once(',').unwrap();
        let (series, label) = (grafana(series.trim()), label.trim());
        queries.push((
            format!("variable {}", variable["name"]),
            format!("count by ({label}) ({series})"),
        ));
    }
    queries
}

/// Four sendMessage calls through the gateway, each answered. A call's histograms appear
/// with it: the first goes alone, the rest once Prometheus has seen them, so that their
/// rates read. (The test makes Telegram answer the first with 429, so it is sent again.)
async fn gateway_calls(js: &async_nats::jetstream::Context, prefix: &str, prometheus: &Prometheus) {
    let results = format!("{prefix}-out.main.results");
    for (round, calls) in [(0, 0..1), (1, 1..4)] {
        for i in calls.clone() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("tg-method", "sendMessage");
            headers.insert("tg-request-id", format!("call-{i}").as_str());
            let body = format!("{{\"chat_id\":{},\"text\":\"hi\"}}", 1000 + i);
            js.publish_with_headers(format!("{prefix}-out.main"), headers, body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let stream = format!("{prefix}_OUT");
        let answers = gateway::results_nats(js, &stream, &results, calls.len(), WAIT).await;
        assert_eq!(answers.len(), calls.len(), "one result per call");
        if round == 0 {
            let seen = "sum(tgrelay_outbound_wait_seconds_count{job=\"tgrelay\"})";
            prometheus.wait_for(seen, |n| n >= 1.0).await;
        }
    }
}

/// Runs every query, round after round, until each yields a number (not none, not NaN)
/// or `WAIT` passed; returns the ones that did not, with what they yielded last.
async fn queries_without_data(
    prometheus: &Prometheus,
    mut pending: Vec<(String, String)>,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut failing = Vec::new();
        let mut still = Vec::new();
        for (title, promql) in pending {
            let samples = prometheus.samples(&promql).await.unwrap_or_default();
            let number = samples.iter().any(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| !v.is_nan())
            });
            if !number {
                failing.push(format!("{title}: {promql} = {samples:?}"));
                still.push((title, promql));
            }
        }
        pending = still;
        if pending.is_empty() || tokio::time::Instant::now() >= deadline {
            return failing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The dashboard as an operator opens it: two replicas in shared mode with the gateway
/// on, after a takeover, updates by polling and by webhook, and gateway calls (one
/// answered 429); a real Prometheus scrapes both, and every query of every panel
/// returns data, a number rather than none or NaN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tgrelay=info")
        .with_test_writer()
        .try_init();
    let api = FakeBotApi::start().await;
    let (main, hook) = (token(686868), token(696969));
    api.add_bot(&main);
    api.add_bot(&hook);
    api.sends().set_limits(gateway::fast_limits());
    let prefix = unique("dash");
    let js = jsupport::jetstream().await;
    let admins = [free_port(), free_port()];
    let config = |i: usize| {
        shared_config(
            &api,
            [main.as_str(), hook.as_str()],
            admins[i],
            &format!("r{i}"),
            &prefix,
        )
    };
    let (first, second) = tokio::join!(Replica::start(config(0)), Replica::start(config(1)));
    let targets: Vec<String> = admins.iter().map(|a| format!("127.0.0.1:{a}")).collect();
    let prometheus = Prometheus::scraping(&targets).await;
    assert!(
        eventually(30, || first.owned() == 1 && second.owned() == 1).await,
        "one bot each: {} and {}",
        first.owned(),
        second.owned()
    );

    // Scraped before anything happens, so that every counter and histogram counts from
    // a sample taken before it moved.
    let scraped = "count(up{job=\"tgrelay\"} == 1)";
    prometheus.wait_for(scraped, |n| n == 2.0).await;

    // A rollout's step: the first replica hands its bot over to the second.
    first.stop().await;
    assert!(
        eventually(30, || second.owned() == 2).await,
        "the second runs both"
    );
    let corpus = Corpus::load();
    api.push_updates(&main, corpus.mixed(1, 10, 19));
    assert!(api.wait_for_confirmed(&main, 10, WAIT).await);
    let posted = reqwest::Client::new()
        .post(format!("http://{}/telegram/hook", second.webhook))
        .header("X-Telegram-Bot-Api-Secret-Token", "s3cret")
        .body(corpus.update("message", 1, 20))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    api.inject_on(
        &main,
        "sendMessage",
        Fault::TooManyRequests { retry_after: 1 },
    );
    gateway_calls(&js, &prefix, &prometheus).await;

    let without_data = queries_without_data(&prometheus, dashboard_queries()).await;
    drop(prometheus);
    second.stop().await;
    for stream in ["UPD", "OUT", "OUT_LIMITS"] {
        jsupport::delete_stream(&js, &format!("{prefix}_{stream}")).await;
    }
    for bucket in ["members", "owners"] {
        let _ = js.delete_key_value(format!("{prefix}-{bucket}")).await;
    }
    assert!(
        without_data.is_empty(),
        "queries without data:\n{}",
        without_data.join("\n")
    );
}
