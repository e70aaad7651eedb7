//! The Bot API gateway: how close it keeps to the configured rate, what it adds to a
//! call's way from the broker to Telegram, and its CPU per call.
//! Run: `cargo bench --bench gateway`.
//!
//! The release relay runs the calls of two bots against the fake Bot API, whose flood
//! control (`tests/support/fake_sends.rs`, sliding windows over arrival times) is set
//! to the bot's configured rate, so a call over it would be a 429: `main` at
//! Telegram's default of 30 calls/s and `fast` at 300/s (a bot with paid broadcasts).
//! For each broker of `TEST_TGRELAY_BENCH_GATEWAY_SINKS` (default `nats,kafka`):
//! (1) sustained: `TEST_TGRELAY_BENCH_GATEWAY_CALLS` calls (default 1800, a minute at
//! 30/s) to as many private chats, published at once; the rate is the calls over the
//! time from the first to the last arrival at the fake, against the configured rate;
//! the relay's CPU time (utime+stime, /proc) per call; every 429 counted. (2) the same
//! for `fast`, four times as many calls. (3) latency under the limit: 300 calls to
//! `main`, one every 100 ms (a third of its rate), each timed to its arrival at the
//! fake from just before its publish (the broker's write, the relay's pull, its
//! limiter and its Bot API call, the request journal's two writes) and from the
//! broker's acknowledgement. (4) priority: 10 000 calls to `main` for as many chats
//! (five and a half minutes of its rate), then one with `tg-priority: interactive`,
//! timed from just before its publish to its arrival at the fake. The Kafka
//! run sets the consumers' `fetch.wait.max.ms` to 5: tansu holds a fetch for all of
//! it even when a record arrives (Kafka answers at once), which would time the
//! setting, not the relay. The fake runs in this process and shares the cores with
//! the broker and the relay; nothing here asserts a speed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

#[allow(dead_code)]
#[path = "e2e_polling.rs"]
mod e2e_polling;
#[path = "support/publisher.rs"]
mod publisher;

use e2e_polling::fake_bot_api::{FakeBotApi, FloodLimits};
use e2e_polling::{env_count, print_machine, print_markers, CpuTime, Names, RelayProcess};
use publisher::{kafka_brokers, Broker, Publisher};

const MAIN: &str = "525252:AAE-bench_token-525252";
const FAST: &str = "535353:AAE-bench_token-535353";
const MAIN_RATE: usize = 30;
const FAST_RATE: usize = 300;
const LATENCY_CALLS: usize = 300;
const LATENCY_EVERY: Duration = Duration::from_millis(100);
const BULK_AHEAD: usize = 10_000;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

/// One flood: the rate reached, the 429s, the relay's CPU.
struct Sustained {
    calls: usize,
    configured: usize,
    rate: f64,
    too_many: usize,
    cpu: CpuTime,
}

struct Figures {
    main: Sustained,
    fast: Sustained,
    /// Milliseconds, sorted: from just before each publish, and from its acknowledgement.
    latency: Vec<f64>,
    from_ack: Vec<f64>,
    /// Milliseconds from an interactive call's publish, behind `BULK_AHEAD` bulk ones,
    /// to its arrival.
    overtake: f64,
}

async fn run() -> anyhow::Result<()> {
    let calls = env_count("TEST_TGRELAY_BENCH_GATEWAY_CALLS", 1800)?;
    let sinks =
        std::env::var("TEST_TGRELAY_BENCH_GATEWAY_SINKS").unwrap_or_else(|_| "nats,kafka".into());
    print_machine();
    let mut results = Vec::new();
    for sink in sinks.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let broker = match sink {
            "nats" => Broker::Nats,
            "kafka" => Broker::Kafka,
            other => anyhow::bail!("TEST_TGRELAY_BENCH_GATEWAY_SINKS: unknown sink {other:?}"),
        };
        results.push((broker, measure(broker, calls).await?));
    }
    print_markers("gateway", || {
        println!("| broker | bot | calls | configured | sustained | of configured | 429s | relay CPU per call |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for (broker, f) in &results {
            for (bot, s) in [("main", &f.main), ("fast", &f.fast)] {
                println!(
                    "| {} | {bot} | {} | {}/s | {:.1}/s | {:.1} % | {} | {:.0} µs |",
                    broker.name(),
                    s.calls,
                    s.configured,
                    s.rate,
                    100.0 * s.rate / s.configured as f64,
                    s.too_many,
                    s.cpu.us_per(s.calls)
                );
            }
        }
        println!();
        println!("Added latency: from a call's publish to its arrival at the fake, one call every 100 ms");
        println!("to `main` ({LATENCY_CALLS} calls), timed from just before the publish (the broker's write included)");
        println!("and from the broker's acknowledgement (PubAck, delivery report), which the relay may beat:");
        println!();
        println!("| broker | from | p50 | p99 | max |");
        println!("|---|---|---:|---:|---:|");
        for (broker, f) in &results {
            for (from, l) in [("publish", &f.latency), ("acknowledgement", &f.from_ack)] {
                println!(
                    "| {} | {from} | {:.2} ms | {:.2} ms | {:.2} ms |",
                    broker.name(),
                    pct(l, 50.0),
                    pct(l, 99.0),
                    l[l.len() - 1]
                );
            }
        }
        println!();
        println!("Priority: one call with `tg-priority: interactive` published behind {BULK_AHEAD} bulk calls to");
        println!("other chats (`main`, 30 calls/s), from just before its publish to its arrival at the fake:");
        println!();
        println!("| broker | interactive call sent after |");
        println!("|---|---:|");
        for (broker, f) in &results {
            println!("| {} | {:.0} ms |", broker.name(), f.overtake);
        }
        if results.iter().any(|(b, _)| *b == Broker::Kafka) {
            println!();
            println!("On Kafka the relay's consumers run with `fetch.wait.max.ms` = 5 here: tansu holds a fetch");
            println!("for all of it even when a record arrives, where Kafka answers at once, so the default");
            println!("(500 ms) would time the broker. Those fetches, every 5 ms even when idle, are most of");
            println!("the CPU per call at 30 calls/s.");
        }
    });
    print_markers("figures", || {
        for (broker, f) in &results {
            let b = broker.name().to_lowercase();
            for (bot, s) in [("main", &f.main), ("fast", &f.fast)] {
                println!(
                    "gateway.{b}.{bot}.rate_pct={:.1}",
                    100.0 * s.rate / s.configured as f64
                );
                println!("gateway.{b}.{bot}.too_many={}", s.too_many);
                println!("gateway.{b}.{bot}.cpu_us={:.0}", s.cpu.us_per(s.calls));
            }
            println!("gateway.{b}.p50_ms={:.2}", pct(&f.latency, 50.0));
            println!("gateway.{b}.p99_ms={:.2}", pct(&f.latency, 99.0));
            println!("gateway.{b}.ack_p50_ms={:.2}", pct(&f.from_ack, 50.0));
            println!("gateway.{b}.ack_p99_ms={:.2}", pct(&f.from_ack, 99.0));
            println!("gateway.{b}.overtake_ms={:.0}", f.overtake);
        }
    });
    Ok(())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

async fn measure(broker: Broker, calls: usize) -> anyhow::Result<Figures> {
    let api = FakeBotApi::start().await;
    api.add_bot(MAIN);
    api.add_bot(FAST);
    let names = Names::unique("gateway");
    let dir = tempfile::tempdir()?;
    let relay = RelayProcess::spawn(&config(broker, &names, &api.base_url()), dir.path())?;
    let publisher = Publisher::connect(broker).await?;
    let route = |bot: &str| format!("{}-out.{bot}", names.prefix);
    // A first call shows the relay is up; the windows empty before the floods.
    set_rate(&api, MAIN_RATE);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // The relay makes the stream (or topics) once connected.
    while let Err(e) = publisher.send(&route("main"), "warm", 0).await {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "publishing the first call: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    arrivals(&api, MAIN, "warm", 1, Duration::from_secs(60))
        .await
        .context("the relay never sent a first call")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let main = flood(
        &api,
        &publisher,
        &relay,
        &route("main"),
        MAIN,
        MAIN_RATE,
        calls,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fast = flood(
        &api,
        &publisher,
        &relay,
        &route("fast"),
        FAST,
        FAST_RATE,
        calls * 4,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    set_rate(&api, MAIN_RATE);
    let mut published = Vec::with_capacity(LATENCY_CALLS);
    let start = tokio::time::Instant::now();
    for i in 0..LATENCY_CALLS {
        tokio::time::sleep_until(start + LATENCY_EVERY * i as u32).await;
        let before = Instant::now();
        publisher.send(&route("main"), "latency", i).await?;
        published.push((before, Instant::now()));
    }
    let arrived = arrivals(
        &api,
        MAIN,
        "latency",
        LATENCY_CALLS,
        Duration::from_secs(60),
    )
    .await?;
    let ms = |from: Instant, to: Instant| {
        // The relay may have the call before its publisher has the acknowledgement.
        let sign = if to >= from { 1.0 } else { -1.0 };
        sign * to.max(from).duration_since(to.min(from)).as_secs_f64() * 1000.0
    };
    let sorted = |pick: fn(&(Instant, Instant)) -> Instant| {
        let mut v: Vec<f64> = (0..LATENCY_CALLS)
            .map(|i| ms(pick(&published[i]), arrived[&i]))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (latency, from_ack) = (sorted(|p| p.0), sorted(|p| p.1));
    let overtake = overtake(&api, &publisher, &route("main")).await?;
    publisher.clean(&names).await;
    drop(relay);
    Ok(Figures {
        main,
        fast,
        latency,
        from_ack,
        overtake,
    })
}

/// `BULK_AHEAD` calls to as many chats, then an interactive one: how long it took to
/// reach Telegram from just before its publish. The bulk calls are left behind.
async fn overtake(api: &FakeBotApi, publisher: &Publisher, route: &str) -> anyhow::Result<f64> {
    set_rate(api, MAIN_RATE);
    publisher.send_all(route, "bulk", BULK_AHEAD).await?;
    let before = Instant::now();
    publisher
        .send_with(route, "interactive", 0, Some("interactive"))
        .await?;
    let arrived = arrivals(api, MAIN, "interactive", 1, Duration::from_secs(60)).await?;
    let bulk_before = arrivals(api, MAIN, "bulk", 0, Duration::ZERO)
        .await?
        .values()
        .filter(|at| **at < arrived[&0])
        .count();
    eprintln!("the interactive call went after {bulk_before} of {BULK_AHEAD} bulk calls");
    Ok(arrived[&0].duration_since(before).as_secs_f64() * 1000.0)
}

/// `calls` calls to as many private chats, published at once; the rate they reached Telegram at.
async fn flood(
    api: &FakeBotApi,
    publisher: &Publisher,
    relay: &RelayProcess,
    route: &str,
    token: &str,
    rate: usize,
    calls: usize,
) -> anyhow::Result<Sustained> {
    set_rate(api, rate);
    let phase = format!("flood{rate}");
    let cpu_before = CpuTime::of(relay.pid())?;
    publisher.send_all(route, &phase, calls).await?;
    let within = Duration::from_secs_f64(calls as f64 / rate as f64 * 2.0 + 30.0);
    let arrived = arrivals(api, token, &phase, calls, within).await?;
    let cpu = CpuTime::of(relay.pid())?.since(cpu_before);
    let first = arrived.values().min().expect("calls arrived");
    let last = arrived.values().max().expect("calls arrived");
    let span = last.duration_since(*first).as_secs_f64();
    let too_many = api.sends().flood_refusals(token).len();
    Ok(Sustained {
        calls,
        configured: rate,
        rate: (calls - 1) as f64 / span,
        too_many,
        cpu,
    })
}

fn set_rate(api: &FakeBotApi, rate: usize) {
    api.sends().set_limits(FloodLimits {
        bot_per_second: rate,
        ..FloodLimits::default()
    });
}

/// When each call `<phase>:<i>` first reached the fake, once all `count` did.
async fn arrivals(
    api: &FakeBotApi,
    token: &str,
    phase: &str,
    count: usize,
    within: Duration,
) -> anyhow::Result<HashMap<usize, Instant>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut seen = HashMap::new();
        for sent in api
            .sends()
            .sent(token)
            .into_iter()
            .filter(|s| s.status == 200)
        {
            let text = sent.params["text"].as_str().unwrap_or_default().to_owned();
            if let Some(i) = text
                .strip_prefix(&format!("{phase}:"))
                .and_then(|i| i.parse().ok())
            {
                seen.entry(i).or_insert(sent.at);
            }
        }
        if seen.len() >= count {
            return Ok(seen);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{phase}: {} of {count} calls arrived",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(broker: Broker, names: &Names, api_url: &str) -> String {
    let sink = match broker {
        Broker::Nats => e2e_polling::nats_sink_toml(names),
        Broker::Kafka => format!(
            "[sink]\nkind = \"kafka\"\n[sink.kafka]\nbrokers = \"{}\"\ntopic = \"{p}.{{bot}}.{{kind}}\"\n\
             dead_letter_topic = \"{p}.{{bot}}.deadletter\"\ncreate_topics = true\npartitions = 3\nreplication_factor = 1\n\
             properties = {{ \"fetch.wait.max.ms\" = \"5\" }}\n",
            kafka_brokers(),
            p = names.prefix
        ),
    };
    let p = &names.prefix;
    let mut toml =
        format!("drain_timeout = \"5s\"\n[admin]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n{sink}");
    toml.push_str(&format!(
        "[outbound]\nenabled = true\nsubject = \"{p}-out.{{bot}}\"\nresults = \"{p}-out.{{bot}}.results\"\n\
         stream = \"{s}_OUT\"\nstream_subjects = [\"{p}-out.>\"]\nconsumer = \"{p}-{{bot}}\"\ngroup = \"{p}-{{bot}}\"\n\
         bot_rate = {MAIN_RATE}\n[outbound.bot_rates]\nfast = {FAST_RATE}\n",
        s = names.stream
    ));
    for (name, token) in [("main", MAIN), ("fast", FAST)] {
        toml.push_str(&format!(
            "[bots.{name}]\ntoken = \"{token}\"\napi_url = \"{api_url}\"\n"
        ));
    }
    toml
}
