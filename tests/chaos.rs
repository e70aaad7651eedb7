//! The chaos suite: the relay binary between the fake Bot API and a private NATS
//! JetStream or Kafka-protocol broker, with faults on every side, in polling and in
//! webhook mode:
//!
//! - `sigkill`: the relay killed with SIGKILL at random moments and restarted;
//! - `broker_outage`: NATS stopped, or tansu frozen, for 30 s mid-stream;
//! - `telegram_faults`: 429 storms with `retry_after`, nginx 502 pages, reset
//!   connections, slow answers, a second poller (409); in webhook mode on the calls the
//!   relay makes (setWebhook, getWebhookInfo);
//! - `clean_restart`: SIGTERM and a new start, repeatedly;
//! - `cluster`: three replicas sharing six bots, each fault a SIGKILL and restart or a
//!   freeze past the lease (see `chaos/cluster.rs`).
//!
//! Every scenario is judged from outside (see `chaos/verdict.rs`): no update lost or
//! altered, none confirmed to Telegram before the broker stored it, duplicates within
//! one batch (polling) or `max_connections` (webhook) per crash and none after clean
//! restarts, `retry_after` and backoff kept, Bot API calls bounded, memory flat and CPU
//! idle while the broker is away, secrets kept out of the log.
//!
//! `cargo test --test chaos` runs the short version, which CI runs too;
//! `TEST_TGRELAY_CHAOS=full` (what `scripts/chaos` sets) runs 20 kill cycles and more
//! updates. Each scenario writes its verdict row to `target/tmp/chaos/`. Scenarios run
//! one at a time: they measure the relay's memory and CPU.

#[path = "chaos/cluster.rs"]
mod cluster;
#[path = "cluster/harness.rs"]
#[allow(dead_code)]
mod cluster_harness;
#[path = "chaos/harness.rs"]
mod harness;
mod support;
#[path = "chaos/verdict.rs"]
mod verdict;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::{Mode, World};
use rand::Rng;
use support::fake_bot_api::Fault;
use support::private_broker::BrokerKind;
use verdict::{
    Duplicates, Expectations, Outage, PublishCounter, Verdict, FOREIGN_MARK, RETRY_AFTER,
};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const OUTAGE: Duration = Duration::from_secs(30);
/// Long enough for a relay to catch up after a 30 s outage and its backoff.
const CATCH_UP: Duration = Duration::from_secs(180);

struct Settings {
    updates: usize,
    kill_cycles: usize,
    clean_restarts: usize,
    storm: usize,
}

fn settings() -> Settings {
    match std::env::var("TEST_TGRELAY_CHAOS").as_deref() {
        Ok("full") => Settings {
            updates: 5000,
            kill_cycles: 20,
            clean_restarts: 5,
            storm: 6,
        },
        _ => Settings {
            updates: 1200,
            kill_cycles: 3,
            clean_restarts: 2,
            storm: 3,
        },
    }
}

#[derive(Debug, Clone, Copy)]
enum Chaos {
    Sigkill,
    BrokerOutage,
    TelegramFaults,
    CleanRestart,
}

impl Chaos {
    fn name(self) -> &'static str {
        match self {
            Chaos::Sigkill => "sigkill",
            Chaos::BrokerOutage => "broker outage",
            Chaos::TelegramFaults => "telegram faults",
            Chaos::CleanRestart => "clean restart",
        }
    }
}

/// Runs `test` alone among this binary's tests: they measure the relay's memory and CPU.
fn serially(test: impl std::future::Future<Output = ()>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(test);
}

async fn scenario(mode: Mode, sink: BrokerKind, chaos: Chaos) {
    let s = settings();
    let name = format!("{} → {}: {}", mode.name(), sink.name(), chaos.name());
    let slug = format!("{}_{}_{}", mode.name(), sink.name(), chaos.name()).replace(' ', "_");
    let seed = rand::random::<u64>();
    let mut world = World::new(mode, sink, s.updates, seed).await;
    let counter = match sink {
        BrokerKind::Nats => Some(PublishCounter::start(&world.broker.address()).await),
        BrokerKind::Kafka => None,
    };
    let duplicates = match chaos {
        Chaos::Sigkill => Duplicates::PerCrash,
        Chaos::CleanRestart => Duplicates::NoneAllowed,
        Chaos::BrokerOutage | Chaos::TelegramFaults => Duplicates::Reported,
    };
    let (mut outage, mut faults) = (None, 0);
    match chaos {
        Chaos::Sigkill => sigkill_cycles(&mut world, s.kill_cycles).await,
        Chaos::BrokerOutage => outage = Some(broker_outage(&mut world).await),
        Chaos::TelegramFaults => faults = telegram_faults(&mut world, s.storm).await,
        Chaos::CleanRestart => clean_restarts(&mut world, s.clean_restarts).await,
    }
    let all_confirmed = world.finish(CATCH_UP).await;
    let expect = Expectations { duplicates, faults };
    let verdict = Verdict::judge(
        &name,
        &world,
        all_confirmed,
        counter.as_ref(),
        outage,
        expect,
    )
    .await;
    report(&slug, &verdict, seed);
    let failures = verdict.failures();
    assert!(
        failures.is_empty(),
        "{name} (corpus seed {seed}) failed:\n- {}\nrelay log, last lines:\n{}",
        failures.join("\n- "),
        world.log_tail(40)
    );
}

/// Prints the verdict and keeps its row for scripts/chaos's report.
fn report(slug: &str, verdict: &Verdict, seed: u64) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos");
    std::fs::create_dir_all(&dir).unwrap();
    let row = format!("{}\n", verdict.row());
    std::fs::write(dir.join(format!("{slug}.md")), row).unwrap();
    eprintln!(
        "{}\n{}\n(corpus seed {seed})",
        verdict::HEADER,
        verdict.row()
    );
}

fn random_ms(range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rand::rng().random_range(range))
}

async fn sigkill_cycles(world: &mut World, cycles: usize) {
    // Kills come every 0.1-1.5 s, restarts 0-0.3 s later: feed over about that long.
    world.pace(Duration::from_millis(950) * cycles as u32);
    world.spawn();
    for _ in 0..cycles {
        world.feed_for(random_ms(100..1500)).await;
        // Every other kill lands just after a burst, while its batch is being published.
        if rand::random::<bool>() {
            world.feed(super_batch());
            tokio::time::sleep(random_ms(0..20)).await;
        }
        world.kill();
        world.feed_for(random_ms(0..300)).await;
        world.spawn();
    }
}

/// A burst of updates: a full batch and then some.
fn super_batch() -> usize {
    harness::POLL_LIMIT * 3 / 2
}

async fn clean_restarts(world: &mut World, restarts: usize) {
    world.pace(Duration::from_millis(1000) * restarts as u32);
    world.spawn();
    for _ in 0..restarts {
        world.feed_for(random_ms(300..1500)).await;
        world.restart_cleanly().await;
    }
}

/// A third of the updates before the outage, the rest while the broker is away.
async fn broker_outage(world: &mut World) -> Outage {
    world.pace(OUTAGE * 3 / 2);
    world.spawn();
    world.feed_for(OUTAGE / 2).await;
    let (api, token) = (&world.api, world.token.clone());
    assert!(
        api.wait_for_confirmed(&token, world.fed / 2, Duration::from_secs(60))
            .await,
        "the relay runs before the outage"
    );
    let rss_start_kib = world.relay().rss_kib();
    let cpu_before = world.relay().cpu_time();
    world.broker.begin_outage();
    let begun = Instant::now();
    let mut rss_peak_kib = rss_start_kib;
    while begun.elapsed() < OUTAGE {
        world.feed_for(Duration::from_millis(100)).await;
        rss_peak_kib = rss_peak_kib.max(world.relay().rss_kib());
    }
    let cpu = world.relay().cpu_time() - cpu_before;
    world.broker.end_outage();
    Outage {
        what: world.broker.outage_name(),
        length: OUTAGE,
        rss_start_kib,
        rss_peak_kib,
        cpu,
    }
}

/// Injects faults in waves while updates flow; returns how many were injected.
async fn telegram_faults(world: &mut World, storm: usize) -> usize {
    let token = world.token.clone();
    let retry_after = Fault::TooManyRequests {
        retry_after: RETRY_AFTER.as_secs(),
    };
    let mut injected = 0;
    let mut inject = |world: &World, method: &str, fault: &Fault, times: usize| {
        for _ in 0..times {
            world.api.inject_on(&token, method, fault.clone());
        }
        injected += times;
    };
    let waves: Vec<(&str, Fault, usize)> = match world.mode {
        Mode::Polling => {
            inject(world, "getMe", &retry_after, 1);
            inject(world, "getMe", &Fault::BadGatewayHtml, 1);
            vec![
                ("getUpdates", retry_after.clone(), storm),
                ("getUpdates", Fault::BadGatewayHtml, storm),
                ("getUpdates", Fault::Reset, storm),
                ("getUpdates", Fault::Delay(Duration::from_secs(2)), 2),
                ("getUpdates", Fault::Conflict, storm),
            ]
        }
        Mode::Webhook => {
            inject(world, "getWebhookInfo", &retry_after, 1);
            inject(world, "setWebhook", &retry_after, 1);
            inject(world, "setWebhook", &Fault::BadGatewayHtml, 1);
            inject(world, "setWebhook", &Fault::Reset, 1);
            inject(
                world,
                "setWebhook",
                &Fault::Delay(Duration::from_secs(2)),
                1,
            );
            vec![
                ("getWebhookInfo", retry_after.clone(), storm),
                ("getWebhookInfo", Fault::BadGatewayHtml, storm),
                ("getWebhookInfo", Fault::Reset, storm),
            ]
        }
    };
    // Each wave takes a few seconds (retry_after, backoff, getWebhookInfo's interval).
    world.pace(Duration::from_secs(3) * (waves.len() as u32 + 2));
    world.spawn();
    // The start's own faults first: the waves hit a relay that is up.
    while world.api.confirmed(&token).is_empty() {
        world.feed_for(Duration::from_millis(100)).await;
    }
    for (method, fault, times) in &waves {
        inject(world, method, fault, *times);
        let deadline = Instant::now() + Duration::from_secs(120);
        // Until the wave is used up and the relay has relayed since: each wave then
        // starts a new run of failures, as separate incidents would.
        let confirmed = world.api.confirmed(&token).len();
        let progressed = |w: &World| {
            let now = w.api.confirmed(&token).len();
            now > confirmed || now == w.updates.len()
        };
        while world.api.pending_faults(&token) > 0 || !progressed(world) {
            assert!(
                Instant::now() < deadline,
                "the relay stopped calling {method}; {} faults left; log:\n{}",
                world.api.pending_faults(&token),
                world.log_tail(30)
            );
            world.feed_for(Duration::from_millis(100)).await;
        }
    }
    if world.mode == Mode::Polling {
        // A second poller: each of its long polls ends the relay's with a 409.
        for _ in 0..3 {
            second_poller(world).await;
            world.feed_for(Duration::from_millis(700)).await;
        }
    }
    injected
}

/// One long poll by another instance; it sends no offset, so it confirms nothing.
async fn second_poller(world: &World) {
    let url = format!(
        "{}/bot{}/getUpdates?timeout=1&{FOREIGN_MARK}=1",
        world.api.base_url(),
        world.token
    );
    let _ = reqwest::get(&url).await;
}

/// A broker that is away at shutdown must not keep the relay from exiting: what it
/// confirmed was acknowledged already.
#[test]
fn sigterm_while_the_broker_is_down_still_exits_zero() {
    serially(async {
        let mut world = World::new(Mode::Polling, BrokerKind::Nats, 200, 7).await;
        world.spawn();
        world.feed(100);
        let token = world.token.clone();
        assert!(
            world
                .api
                .wait_for_confirmed(&token, 100, Duration::from_secs(60))
                .await
        );
        world.broker.begin_outage();
        world.feed_rest();
        tokio::time::sleep(Duration::from_secs(1)).await;
        world.terminate().await; // panics if the relay outlives 30 s
        assert!(world.bad_exits.is_empty(), "{:?}", world.bad_exits);
    });
}

macro_rules! scenarios {
    ($($name:ident: $mode:ident, $sink:ident, $chaos:ident;)*) => {$(
        #[test]
        fn $name() {
            serially(scenario(Mode::$mode, BrokerKind::$sink, Chaos::$chaos));
        }
    )*};
}

scenarios! {
    polling_nats_sigkill: Polling, Nats, Sigkill;
    polling_nats_broker_outage: Polling, Nats, BrokerOutage;
    polling_nats_telegram_faults: Polling, Nats, TelegramFaults;
    polling_nats_clean_restart: Polling, Nats, CleanRestart;
    polling_kafka_sigkill: Polling, Kafka, Sigkill;
    polling_kafka_broker_outage: Polling, Kafka, BrokerOutage;
    polling_kafka_telegram_faults: Polling, Kafka, TelegramFaults;
    polling_kafka_clean_restart: Polling, Kafka, CleanRestart;
    webhook_nats_sigkill: Webhook, Nats, Sigkill;
    webhook_nats_broker_outage: Webhook, Nats, BrokerOutage;
    webhook_nats_telegram_faults: Webhook, Nats, TelegramFaults;
    webhook_nats_clean_restart: Webhook, Nats, CleanRestart;
    webhook_kafka_sigkill: Webhook, Kafka, Sigkill;
    webhook_kafka_broker_outage: Webhook, Kafka, BrokerOutage;
    webhook_kafka_telegram_faults: Webhook, Kafka, TelegramFaults;
    webhook_kafka_clean_restart: Webhook, Kafka, CleanRestart;
}

/// Three replicas sharing six bots, with kills and freezes (`chaos/cluster.rs`).
fn cluster_scenario(broker: BrokerKind) {
    serially(async {
        let verdict = cluster::run(broker, settings().kill_cycles).await;
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos");
        std::fs::create_dir_all(&dir).unwrap();
        let slug = format!("cluster_{}", broker.name());
        std::fs::write(
            dir.join(format!("{slug}.md")),
            format!("{}\n", verdict.row()),
        )
        .unwrap();
        eprintln!("{}\n{}", cluster::HEADER, verdict.row());
        let failures = verdict.failures();
        assert!(
            failures.is_empty(),
            "{} failed:\n- {}",
            verdict.name,
            failures.join("\n- ")
        );
    });
}

#[test]
fn cluster_nats_kills_and_freezes() {
    cluster_scenario(BrokerKind::Nats);
}

#[test]
fn cluster_kafka_kills_and_freezes() {
    cluster_scenario(BrokerKind::Kafka);
}
