//! The metrics as an operator reads them: `process_cpu_seconds_total` finer than a second.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use figment::providers::{Format, Toml};
use figment::Figment;

use support::fake_bot_api::FakeBotApi;
use support::relay::{free_port, token, RunningRelay};
use tgrelay::config::Config;
use tgrelay::sink::memory::MemorySink;

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
