//! The webhook listener against hostile clients, with the relay binary as a child
//! process: thousands of connections send half a request (or nothing) and stall, while
//! the fake Bot API delivers updates as Telegram does. Every update must still land in
//! the real JetStream and be confirmed, the relay must close every stalled connection
//! itself, it never holds more than `webhook.max_open_connections`, and its memory is
//! bounded by that cap, not by the number of attackers.

#[path = "webhook_hostile/attack.rs"]
mod attack;
#[path = "webhook_hostile/relay.rs"]
mod relay;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use attack::{all_closed, ensure_open_file_limit, stall, HALF_BODY, HALF_HEADER};
use relay::{sample, Peak, Relay};
use support::corpus::Corpus;
use support::fake_bot_api::{FakeBotApi, WebhookTiming};
use support::nats::{self as jsupport, read_all, unique};
use support::relay::token;
use tokio::task::JoinSet;

async fn fake_telegram(bot_id: u64) -> (FakeBotApi, String) {
    let api = FakeBotApi::start().await;
    api.set_webhook_timing(WebhookTiming {
        answer_timeout: Duration::from_secs(30),
        first_retry: Duration::from_millis(50),
        max_retry: Duration::from_millis(500),
    });
    let token = token(bot_id);
    api.add_bot(&token);
    (api, token)
}

/// Every update confirmed at the fake Bot API and stored once in `stream`.
async fn assert_all_landed(api: &FakeBotApi, token: &str, stream: &str, ids: BTreeSet<i64>) {
    assert!(
        api.wait_for_confirmed(token, ids.len(), Duration::from_secs(60))
            .await,
        "every update is confirmed"
    );
    let stored = read_all(&jsupport::jetstream().await, stream).await;
    let landed: BTreeSet<i64> = stored
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["update_id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(landed, ids, "every update is in JetStream");
}

/// Prints how long the relay held the stalled connections (for docs/benchmarks.md).
fn report_held(what: &str, held: &[Duration]) {
    let at = |i: usize| held[i].as_secs_f64();
    eprintln!(
        "{what}: {} stalled connections held {:.1} / {:.1} / {:.1} s (min / median / max)",
        held.len(),
        at(0),
        at(held.len() / 2),
        at(held.len() - 1)
    );
}

/// Prints what the relay's memory and connections came to.
fn report_peak(what: &str, baseline_kib: u64, peak: Peak, hwm_kib: u64) {
    eprintln!(
        "{what}: relay RSS {} MiB before, at most {} MiB during (VmHWM {} MiB); at most {} \
         connections open (gauge), {} open files",
        baseline_kib / 1024,
        peak.rss_kib / 1024,
        hwm_kib / 1024,
        peak.open_gauge,
        peak.open_files,
    );
}

fn ids(updates: &[Vec<u8>]) -> BTreeSet<i64> {
    updates
        .iter()
        .map(|raw| {
            serde_json::from_slice::<serde_json::Value>(raw).unwrap()["update_id"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

/// Memory the relay may take per open connection: hyper's read and write buffers and
/// the connection's task come to about 20 KiB; the rest is the allocator's slack.
const KIB_PER_CONNECTION: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_stalled_connections_are_closed_while_every_update_lands() {
    ensure_open_file_limit(8192);
    let (stream, prefix) = (unique("TGRELAY_HOSTILE"), unique("hostile"));
    let (api, token) = fake_telegram(4101).await;
    let updates = Corpus::load().mixed(1, 300, 12);
    // The listener's defaults: 10 s to send a request, 90 s idle, 4096 connections.
    let relay = Relay::start(&api, &token, &jsupport::sink_toml(&stream, &prefix, ""), "").await;
    api.push_updates(&token, updates[..100].to_vec());
    assert!(
        api.wait_for_confirmed(&token, 100, Duration::from_secs(60))
            .await,
        "the relay takes updates before the attack"
    );
    let baseline = relay.memory_kib("VmRSS");
    let (stop, sampler) = sample(&relay);

    let mut held = JoinSet::new();
    stall(&mut held, relay.webhook, HALF_HEADER, 2500).await;
    stall(&mut held, relay.webhook, HALF_BODY, 500).await;
    api.push_updates(&token, updates[100..].to_vec());
    // More stalled connections keep coming until every update got through, so the
    // updates are delivered while the attack is on, however long that takes.
    let mut attackers = 3000;
    while !api
        .wait_for_confirmed(&token, 300, Duration::from_millis(500))
        .await
    {
        stall(&mut held, relay.webhook, HALF_HEADER, 50).await;
        attackers += 50;
        assert!(
            attackers <= 10_000,
            "the updates did not get through the attack"
        );
    }
    let times = all_closed(held, Duration::from_secs(120)).await;
    drop(stop);
    let peak = sampler.await.unwrap();
    let hwm = relay.memory_kib("VmHWM");
    report_held("defaults", &times);
    report_peak("defaults", baseline, peak, hwm);

    assert_all_landed(&api, &token, &stream, ids(&updates)).await;
    let closed = relay
        .metric("tgrelay_webhook_connections_closed_total{reason=\"request_timeout\"}")
        .await;
    assert_eq!(
        closed, attackers as f64,
        "the relay closed every stalled connection"
    );
    assert!(
        peak.open_gauge >= 3000.0,
        "thousands were open at once: {peak:?}"
    );
    assert!(peak.open_gauge <= 4096.0, "never above the cap: {peak:?}");
    let bound = baseline + peak.open_gauge as u64 * KIB_PER_CONNECTION;
    assert!(
        hwm <= bound,
        "memory {hwm} KiB above {bound} KiB ({peak:?})"
    );
    assert!(relay.stop().await.success());
    jsupport::delete_stream(&jsupport::jetstream().await, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_accepting_pauses_and_memory_stays_flat() {
    const CAP: usize = 300;
    ensure_open_file_limit(8192);
    let (stream, prefix) = (unique("TGRELAY_CAPPED"), unique("capped"));
    let (api, token) = fake_telegram(4102).await;
    let updates = Corpus::load().mixed(1, 300, 13);
    let limits = format!(
        "max_open_connections = {CAP}\nrequest_read_timeout = \"2s\"\nidle_timeout = \"4s\""
    );
    let relay = Relay::start(
        &api,
        &token,
        &jsupport::sink_toml(&stream, &prefix, ""),
        &limits,
    )
    .await;
    api.push_updates(&token, updates[..100].to_vec());
    assert!(
        api.wait_for_confirmed(&token, 100, Duration::from_secs(60))
            .await
    );
    let (baseline, baseline_files) = (relay.memory_kib("VmRSS"), relay.open_files());
    let (stop, sampler) = sample(&relay);

    // Two waves, each more than three times the cap: half requests, and silence.
    let mut hwm = Vec::new();
    for wave in 1..=2 {
        let mut held = JoinSet::new();
        stall(&mut held, relay.webhook, HALF_HEADER, 900).await;
        stall(&mut held, relay.webhook, b"", 100).await;
        api.push_updates(&token, updates[wave * 100..(wave + 1) * 100].to_vec());
        let times = all_closed(held, Duration::from_secs(120)).await;
        hwm.push(relay.memory_kib("VmHWM"));
        report_held(&format!("cap {CAP}, wave {wave}"), &times);
    }
    drop(stop);
    let peak = sampler.await.unwrap();
    report_peak(&format!("cap {CAP}"), baseline, peak, hwm[1]);

    assert_all_landed(&api, &token, &stream, ids(&updates)).await;
    let limited = relay
        .metric("tgrelay_webhook_connection_limit_reached_total")
        .await;
    assert!(limited > 0.0, "the cap was reached");
    assert!(
        peak.open_gauge <= CAP as f64,
        "never above the cap: {peak:?}"
    );
    // The kernel's count: the cap's connections, what the relay had open before, and
    // a few for its own clients (Bot API, broker) that come and go.
    assert!(
        peak.open_files <= CAP + baseline_files + 8,
        "{peak:?}, {baseline_files} before"
    );
    let closed =
        |reason: &str| format!("tgrelay_webhook_connections_closed_total{{reason=\"{reason}\"}}");
    assert_eq!(relay.metric(&closed("request_timeout")).await, 1800.0);
    assert!(relay.metric(&closed("idle_timeout")).await >= 200.0);
    let bound = baseline + CAP as u64 * KIB_PER_CONNECTION;
    assert!(hwm[0] <= bound, "memory {} KiB above {bound} KiB", hwm[0]);
    assert!(
        hwm[1] <= hwm[0] + 4096,
        "the second wave reused the first's memory: {hwm:?}"
    );
    assert!(relay.stop().await.success());
    jsupport::delete_stream(&jsupport::jetstream().await, &stream).await;
}
