//! Webhook mode end to end: the relay registers its webhook with the fake Bot API, which
//! then delivers as Telegram does (one update per chat in flight, retries on anything
//! but 2xx) into the relay and the real NATS JetStream.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Format, Toml};
use support::corpus::{expected_routing, Corpus};
use support::fake_bot_api::{FakeBotApi, WebhookTiming};
use support::nats::{self as jsupport, read_all, unique};
use support::relay::{allow_future_kinds, eventually, free_port, token, RunningRelay};
use tgrelay::app::Relay;
use tgrelay::config::Config;
use tgrelay::sink::memory::MemorySink;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "delivery-Secret_42";

fn config(api: &FakeBotApi, token: &str, port: u16, sink_toml: &str) -> Config {
    let toml = format!(
        "drain_timeout = \"5s\"\n[admin]\nlisten = \"\"\n[webhook]\nlisten = \"127.0.0.1:{port}\"\n\
         publish_timeout = \"2s\"\n{sink_toml}\n[bots.main]\ntoken = \"{token}\"\napi_url = \"{}\"\n\
         mode = \"webhook\"\n{}[bots.main.webhook]\nurl = \"http://127.0.0.1:{port}/telegram/main\"\n\
         secret_token = \"{SECRET}\"\nmax_connections = 20\ninfo_interval = \"1s\"\n",
        api.base_url(),
        allow_future_kinds()
    );
    Config::from_figment(figment::Figment::from(Toml::string(&toml)))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

async fn fake_telegram(bot_id: u64) -> (FakeBotApi, String) {
    let api = FakeBotApi::start().await;
    api.set_webhook_timing(WebhookTiming {
        answer_timeout: Duration::from_secs(10),
        first_retry: Duration::from_millis(50),
        max_retry: Duration::from_millis(500),
    });
    let token = token(bot_id);
    api.add_bot(&token);
    (api, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_update_telegram_delivers_lands_in_jetstream_in_chat_order() {
    let js = jsupport::jetstream().await;
    let (stream, prefix) = (unique("TGRELAY_WH"), unique("wh"));
    let (api, token) = fake_telegram(3001).await;
    let updates = Corpus::load().mixed(700001, 500, 8);
    api.push_updates(&token, updates.clone());
    let port = free_port();
    let cfg = config(
        &api,
        &token,
        port,
        &jsupport::sink_toml(&stream, &prefix, ""),
    );
    let shutdown = CancellationToken::new();
    let running = Relay::new(cfg).start(shutdown.clone()).await.unwrap();
    let task = tokio::spawn(running.wait());
    assert!(
        api.wait_for_confirmed(&token, 500, Duration::from_secs(60))
            .await,
        "all delivered"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();

    let sent: HashMap<String, &Vec<u8>> = updates
        .iter()
        .map(|raw| {
            let v: serde_json::Value = serde_json::from_slice(raw).unwrap();
            (format!("3001:{}", v["update_id"]), raw)
        })
        .collect();
    let stored = read_all(&js, &stream).await;
    assert_eq!(stored.len(), 500, "one message per update, no extra");
    let mut per_chat: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for msg in &stored {
        let raw = sent[&msg.headers["ce-id"]];
        assert_eq!(&msg.payload[..], &raw[..], "byte-identical");
        let update: serde_json::Value = serde_json::from_slice(raw).unwrap();
        if let (_, Some(chat), _) = expected_routing(&update) {
            per_chat
                .entry(chat)
                .or_default()
                .push(update["update_id"].as_i64().unwrap());
        }
    }
    for (chat, ids) in per_chat {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "chat {chat} in order: {ids:?}"
        );
    }
    jsupport::delete_stream(&js, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_becomes_503s_and_telegrams_retries_deliver_everything() {
    let (api, token) = fake_telegram(3002).await;
    let sink = Arc::new(MemorySink::new());
    sink.set_down(true);
    let port = free_port();
    let relay = RunningRelay::started(config(&api, &token, port, ""), sink.clone()).await;
    api.push_updates(&token, Corpus::load().mixed(1, 100, 9));
    let refused = || {
        api.deliveries(&token)
            .iter()
            .filter(|d| d.status == Some(503))
            .count()
    };
    assert!(
        eventually(30, || refused() >= 20).await,
        "the outage is answered 503"
    );
    assert!(
        api.confirmed(&token).is_empty(),
        "nothing confirmed while the broker is down"
    );
    sink.set_down(false);
    assert!(
        api.wait_for_confirmed(&token, 100, Duration::from_secs(60))
            .await,
        "retries deliver all"
    );
    relay.stop().await.unwrap();
    let mut ids: Vec<i64> = sink.delivered().iter().map(|e| e.update_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, (1..=100).collect::<Vec<_>>());
}
