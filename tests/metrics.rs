//! The metrics as an operator reads them from the first scrape: every alerting counter of
//! every bot present at 0 before anything happened, the Bot API calls a bot makes at
//! start counted like the others, `process_cpu_seconds_total` finer than a second, and a
//! refused configuration change shown until a valid one is applied.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;

use support::corpus::Corpus;
use support::fake_bot_api::{FakeBotApi, Fault};
use support::relay::{eventually, free_port, token, RunningRelay};
use tgrelay::app::Relay;
use tgrelay::config::Config;
use tgrelay::reload::ConfigSource;
use tgrelay::sink::memory::MemorySink;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// A polling bot `main` and a webhook bot `hook` (registered at `api`), both at `api`,
/// with the admin server on `127.0.0.1:<admin>`.
fn config(api: &FakeBotApi, main: &str, hook: &str, admin: u16) -> Config {
    let url = api.base_url();
    let toml = format!(
        "drain_timeout = \"5s\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [webhook]\nlisten = \"127.0.0.1:0\"\n\
         [bots.main]\ntoken = \"{main}\"\napi_url = \"{url}\"\npoll_timeout = \"1s\"\n\
         [bots.hook]\ntoken = \"{hook}\"\napi_url = \"{url}\"\nmode = \"webhook\"\n\
         [bots.hook.webhook]\nurl = \"https://relay.example/telegram/hook\"\n\
         secret_token = \"s3cret\"\ninfo_interval = \"1s\"\n"
    );
    Config::from_figment(Figment::from(Toml::string(&toml)))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// Every sample of a text exposition, `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

async fn scrape(admin: u16) -> String {
    let response = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("the admin server answers");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alerting_counter_of_every_bot_is_at_zero_before_any_update() {
    let api = FakeBotApi::start().await;
    let (main, hook) = (token(717171), token(727272));
    api.add_bot(&main);
    api.add_bot(&hook);
    let admin = free_port();
    let sink = Arc::new(MemorySink::new());
    let relay = RunningRelay::started(config(&api, &main, &hook, admin), sink).await;
    // The first scrape: the bots may have made their first calls, which succeed.
    let text = scrape(admin).await;
    relay.stop().await.unwrap();
    let samples = samples(&text);
    let zero = |series: String| {
        assert_eq!(samples.get(&series), Some(&0.0), "{series} in:\n{text}");
    };

    let polling = ["getMe", "getWebhookInfo", "deleteWebhook", "getUpdates"];
    let webhook = ["getWebhookInfo", "setWebhook"];
    for (bot, methods) in [("main", &polling[..]), ("hook", &webhook[..])] {
        for method in methods {
            for code in ["401", "409", "429", "transport"] {
                zero(format!(
                    "tgrelay_telegram_errors_total{{bot=\"{bot}\",code=\"{code}\",method=\"{method}\"}}"
                ));
            }
            zero(format!(
                "tgrelay_telegram_requests_total{{bot=\"{bot}\",method=\"{method}\",outcome=\"error\"}}"
            ));
        }
        for class in ["transient", "fatal"] {
            zero(format!(
                "tgrelay_publish_failures_total{{bot=\"{bot}\",class=\"{class}\",sink=\"memory\"}}"
            ));
        }
        zero(format!(
            "tgrelay_telegram_retry_after_seconds_total{{bot=\"{bot}\"}}"
        ));
        zero(format!("tgrelay_malformed_updates_total{{bot=\"{bot}\"}}"));
    }
    for code in ["200", "400", "401", "403", "413", "503"] {
        zero(format!(
            "tgrelay_webhook_requests_total{{bot=\"hook\",code=\"{code}\"}}"
        ));
    }
    zero("tgrelay_duplicates_suppressed_total{bot=\"hook\"}".to_owned());
    // A polling bot answers no webhook requests: it has no such series.
    assert!(
        !text.contains("tgrelay_webhook_requests_total{bot=\"main\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_at_start_are_counted_so_a_bot_failing_get_me_shows_its_errors() {
    let api = FakeBotApi::start().await;
    let (main, hook) = (token(737373), token(747474));
    api.add_bot(&main);
    // A webhook left from an earlier deployment: the polling bot deletes it at start.
    api.set_webhook_url(&main, Some("https://old.example/hook"));
    for _ in 0..3 {
        api.inject_on(&main, "getMe", Fault::InternalError);
    }
    // `hook` is never added: the fake refuses its token (401), as for a revoked one.
    let relay = RunningRelay::started(
        config(&api, &main, &hook, free_port()),
        Arc::new(MemorySink::new()),
    )
    .await;
    let series =
        |bot: &str, name: &str, labels: &str| format!("tgrelay_{name}{{bot=\"{bot}\",{labels}}}");
    let get_me_500 = series(
        "main",
        "telegram_errors_total",
        "code=\"500\",method=\"getMe\"",
    );
    assert!(
        eventually(30, || relay.metric(&get_me_500) == 3.0).await,
        "{}",
        relay.metrics.render()
    );
    let deleted = series(
        "main",
        "telegram_requests_total",
        "method=\"deleteWebhook\",outcome=\"ok\"",
    );
    assert!(
        eventually(30, || relay.metric(&deleted) == 1.0).await,
        "{}",
        relay.metrics.render()
    );
    let refused = series(
        "hook",
        "telegram_errors_total",
        "code=\"401\",method=\"getWebhookInfo\"",
    );
    assert!(
        eventually(30, || relay.metric(&refused) == 1.0).await,
        "{}",
        relay.metrics.render()
    );
    api.push_updates(&main, Corpus::load().mixed(1, 3, 31));
    assert!(api.wait_for_confirmed(&main, 3, WAIT).await);

    let checks = [
        (
            "main",
            "telegram_requests_total",
            "method=\"getMe\",outcome=\"error\"",
            3.0,
        ),
        (
            "main",
            "telegram_requests_total",
            "method=\"getMe\",outcome=\"ok\"",
            1.0,
        ),
        (
            "main",
            "telegram_requests_total",
            "method=\"getWebhookInfo\",outcome=\"ok\"",
            1.0,
        ),
        // The refused token ended the bot at its first call: setWebhook never came.
        (
            "hook",
            "telegram_requests_total",
            "method=\"getWebhookInfo\",outcome=\"error\"",
            1.0,
        ),
        (
            "hook",
            "telegram_errors_total",
            "code=\"401\",method=\"setWebhook\"",
            0.0,
        ),
    ];
    for (bot, name, labels, expected) in checks {
        let sample = series(bot, name, labels);
        assert_eq!(
            relay.metric(&sample),
            expected,
            "{sample}\n{}",
            relay.metrics.render()
        );
    }
    relay.stop().await.unwrap();
}

/// This process's CPU time in clock ticks (utime + stime, fields 14 and 15 of
/// /proc/self/stat; the command name before them may hold spaces, so count from its `)`).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_cpu_seconds_count_clock_ticks_not_whole_seconds() {
    let api = FakeBotApi::start().await;
    let (main, hook) = (token(757575), token(767676));
    api.add_bot(&main);
    api.add_bot(&hook);
    let admin = free_port();
    let relay = RunningRelay::started(
        config(&api, &main, &hook, admin),
        Arc::new(MemorySink::new()),
    )
    .await;
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let hz: u64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // The relay runs in this process, so /proc/self is its CPU time too. Work until that
    // time is not a whole number of seconds, then scrape between two equal readings.
    let mut work = 0u64;
    let (ticks, text) = loop {
        while cpu_ticks() % hz == 0 {
            work = (0..100_000u64).fold(work, |acc, i| acc.wrapping_mul(31).wrapping_add(i));
        }
        let before = cpu_ticks();
        let text = scrape(admin).await;
        if cpu_ticks() == before && before % hz != 0 {
            break (before, text);
        }
    };
    std::hint::black_box(work);
    relay.stop().await.unwrap();
    let value = samples(&text)["process_cpu_seconds_total"];
    assert_eq!(value, ticks as f64 / hz as f64, "{ticks} ticks at {hz} Hz");
    assert_ne!(value.fract(), 0.0);
    for family in [
        "process_open_fds",
        "process_max_fds",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_threads",
    ] {
        assert!(samples(&text)[family] > 0.0, "{family} in:\n{text}");
    }
}

/// A configuration change the relay refuses (here a token file that holds no token)
/// reads 0 in `tgrelay_config_last_reload_successful`, the refused-reload alert's
/// series, until a valid change is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_configuration_change_reads_zero_until_a_valid_one_is_applied() {
    let api = FakeBotApi::start().await;
    let main = token(767676);
    api.add_bot(&main);
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    std::fs::write(tokens.join("main"), &main).unwrap();
    let toml = format!(
        "tokens_dir = \"{}\"\ndrain_timeout = \"5s\"\n[admin]\nlisten = \"\"\n\
         [bot_defaults]\napi_url = \"{}\"\npoll_timeout = \"1s\"\n",
        tokens.display(),
        api.base_url()
    );
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, toml).unwrap();
    let source = ConfigSource {
        path,
        required: true,
    };
    let config = source.load().expect("a valid configuration");
    let relay = Relay::with_sink(config, Arc::new(MemorySink::new())).reloading_from(source);
    let metrics = relay.metrics();
    let shutdown = CancellationToken::new();
    let running = relay
        .start(shutdown.clone())
        .await
        .expect("the relay starts");
    let task = tokio::spawn(running.wait());
    let applied = || metrics.config_last_reload_successful.get();
    assert_eq!(applied(), 1, "the configuration it started with");

    // Written again until seen: the watcher's first look may come after the first write.
    let mut seen = false;
    for _ in 0..5 {
        std::fs::write(tokens.join("other"), "not-a-token").unwrap();
        if eventually(3, || applied() == 0).await {
            seen = true;
            break;
        }
        std::fs::remove_file(tokens.join("other")).unwrap();
    }
    assert!(seen, "refused");
    let refused = metrics.config_reloads.with_label_values(&["refused"]);
    assert!(refused.get() >= 1);

    std::fs::remove_file(tokens.join("other")).unwrap();
    assert!(eventually(15, || applied() == 1).await, "applied again");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
