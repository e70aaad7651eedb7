//! A broker that is down when the relay starts is an outage, not a crash: the relay
//! runs, reports not ready, fetches nothing, and begins once the broker answers; the
//! same for a stream created a little later.

mod support;

use std::time::Duration;

use support::corpus::Corpus;
use support::fake_bot_api::FakeBotApi;
use support::nats::{self as jsupport, unique};
use support::private_broker::{BrokerKind, PrivateBroker};
use support::relay::{allow_future_kinds, config, free_port, token};
use tgrelay::app::Relay;
use tgrelay::config::Config;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// `/readyz`: its status and body (status 0 when nothing answers).
async fn readyz(admin: &str) -> (u16, String) {
    match reqwest::get(format!("http://{admin}/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

fn polls(api: &FakeBotApi, token: &str) -> usize {
    api.calls(token)
        .iter()
        .filter(|c| c.method == "getUpdates")
        .count()
}

/// A relay on `sink_toml` with the admin server on a port of its own.
fn relay_config(api: &FakeBotApi, token: &str, sink_toml: &str) -> (Config, String) {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut cfg = config(
        &api.base_url(),
        &[("main", token)],
        &format!("{}{sink_toml}", allow_future_kinds()),
    );
    cfg.admin.listen = admin.clone();
    (cfg, admin)
}

/// Starts the relay while its broker is away, checks it waits without fetching, then
/// lets the broker come (`arrive`) and checks every update gets through.
async fn waits_then_relays(
    api: &FakeBotApi,
    token: &str,
    cfg: Config,
    admin: &str,
    arrive: impl std::future::Future<Output = ()>,
) {
    api.push_updates(token, Corpus::load().mixed(1, 20, 31));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Relay::new(cfg).run(shutdown.clone()));
    let mut waiting = readyz(admin).await;
    for _ in 0..100 {
        if waiting.0 != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waiting = readyz(admin).await;
    }
    assert_eq!(
        waiting.0, 503,
        "not ready while the broker is away: {}",
        waiting.1
    );
    assert!(waiting.1.contains("not ready"), "{}", waiting.1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!task.is_finished(), "an outage at start is no crash");
    assert_eq!(polls(api, token), 0, "nothing fetched without a broker");

    arrive.await;
    assert!(
        api.wait_for_confirmed(token, 20, WAIT).await,
        "all relayed once it answers"
    );
    let (status, body) = readyz(admin).await;
    assert_eq!(status, 200, "{body}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_started_before_nats_waits_not_ready_and_begins_when_it_answers() {
    let api = FakeBotApi::start().await;
    let token = token(760_001);
    api.add_bot(&token);
    let mut broker = PrivateBroker::start(BrokerKind::Nats);
    broker.begin_outage();
    let sink = format!(
        "[sink]\nkind = \"nats\"\n[sink.nats]\nurl = \"{}\"\n",
        broker.address()
    );
    let (cfg, admin) = relay_config(&api, &token, &sink);
    waits_then_relays(&api, &token, cfg, &admin, async {
        broker.end_outage();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_created_after_the_relay_started_is_picked_up() {
    let api = FakeBotApi::start().await;
    let token = token(760_002);
    api.add_bot(&token);
    let (stream, prefix) = (unique("LATE"), unique("late"));
    let sink = jsupport::sink_toml(&stream, &prefix, "")
        .replace("[sink.nats]\n", "[sink.nats]\ncreate_stream = false\n");
    let (cfg, admin) = relay_config(&api, &token, &sink);
    let js = jsupport::jetstream().await;
    waits_then_relays(&api, &token, cfg, &admin, async {
        jsupport::create_stream(&js, &stream, &prefix, 1 << 20).await;
    })
    .await;
    assert_eq!(jsupport::read_all(&js, &stream).await.len(), 20);
    jsupport::delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_started_while_kafka_hangs_begins_when_it_answers() {
    let api = FakeBotApi::start().await;
    let token = token(760_003);
    api.add_bot(&token);
    let mut broker = PrivateBroker::start(BrokerKind::Kafka);
    broker.begin_outage();
    let prefix = unique("hung");
    let sink = format!(
        "[sink]\nkind = \"kafka\"\n[sink.kafka]\nbrokers = \"{}\"\ntopic = \"{prefix}.{{bot}}\"\n\
         dead_letter_topic = \"{prefix}.{{bot}}.deadletter\"\ncreate_topics = true\n\
         partitions = 1\nreplication_factor = 1\n",
        broker.address()
    );
    let (cfg, admin) = relay_config(&api, &token, &sink);
    waits_then_relays(&api, &token, cfg, &admin, async {
        broker.end_outage();
    })
    .await;
}
