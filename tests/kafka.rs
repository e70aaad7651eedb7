//! The relay into the real Kafka-protocol broker on this machine, read back by an
//! independent consumer on assigned partitions: bodies, headers, keys, per-chat
//! partitioning and order, no extra records, dead letters, startup checks.

mod support;

use std::collections::{BTreeMap, HashMap};

use support::corpus::{expected_routing, Corpus};
use support::fake_bot_api::FakeBotApi;
use support::kafka::{self as ksupport, read_prefix};
use support::nats::unique;
use support::relay::{relay_until_confirmed, token};
use tgrelay::broker::kafka::{KafkaBroker, KafkaSinkConfig, KafkaSinkError};
use tgrelay::broker::BotRoutes;
use tgrelay::cloudevent::EnvelopeMode;
use tgrelay::sink::kafka::KafkaSink;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_land_keyed_by_chat_on_one_partition_in_order_with_the_contract_headers() {
    let prefix = unique("k1");
    let api = FakeBotApi::start().await;
    let token = token(777001);
    api.add_bot(&token);
    let updates = Corpus::load().mixed(500001, 400, 13);
    api.push_updates(&token, updates.clone());
    relay_until_confirmed(
        &api,
        &token,
        &ksupport::sink_toml(&prefix, ""),
        updates.len(),
    )
    .await;

    let records = tokio::task::spawn_blocking(move || read_prefix(&prefix))
        .await
        .unwrap();
    assert_eq!(
        records.len(),
        updates.len(),
        "one record per update, no extra"
    );
    let sent: HashMap<String, &Vec<u8>> = updates
        .iter()
        .map(|raw| {
            let v: serde_json::Value = serde_json::from_slice(raw).unwrap();
            (format!("777001:{}", v["update_id"]), raw)
        })
        .collect();
    // (topic, key) -> (partition, offset, update_id) of each record.
    type Placement = (i32, i64, i64);
    let mut by_key: BTreeMap<(String, String), Vec<Placement>> = BTreeMap::new();
    for r in &records {
        let id = &r.headers["ce_id"];
        let raw = sent[id];
        assert_eq!(&r.payload, raw, "{id}: body is Telegram's bytes");
        let update: serde_json::Value = serde_json::from_slice(raw).unwrap();
        let (kind, chat, user) = expected_routing(&update);
        assert!(
            r.topic.ends_with(&format!(".main.{kind}")),
            "{} for {kind}",
            r.topic
        );
        let key = chat
            .or(user)
            .map(|k| k.to_string())
            .unwrap_or_else(|| id.clone());
        assert_eq!(
            r.key.as_deref(),
            Some(key.as_str()),
            "{id}: key is chat, else user, else id"
        );
        assert_eq!(r.headers["ce_specversion"], "1.0");
        assert_eq!(r.headers["ce_source"], "/telegram/bot/777001");
        assert_eq!(r.headers["ce_type"], format!("org.telegram.update.{kind}"));
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(
            r.headers.get("ce_subject").cloned(),
            chat.map(|c| c.to_string())
        );
        assert!(humantime::parse_rfc3339(&r.headers["ce_time"]).is_ok());
        let update_id = update["update_id"].as_i64().unwrap();
        by_key
            .entry((r.topic.clone(), key))
            .or_default()
            .push((r.partition, r.offset, update_id));
    }
    for ((topic, key), mut seen) in by_key {
        let partitions: std::collections::BTreeSet<i32> = seen.iter().map(|s| s.0).collect();
        assert_eq!(partitions.len(), 1, "{topic} key {key}: one partition");
        seen.sort_by_key(|s| s.1);
        assert!(
            seen.windows(2).all(|w| w[0].2 < w[1].2),
            "{topic} key {key}: in update order"
        );
    }
}

fn routes(id: u64) -> Vec<BotRoutes> {
    vec![BotRoutes {
        name: "main".into(),
        id,
        kinds: vec!["message".into()],
    }]
}

/// Connects a Kafka sink as the relay does: the broker, its topics, the sink on it.
async fn connect(cfg: &KafkaSinkConfig, routes: &[BotRoutes]) -> Result<KafkaSink, KafkaSinkError> {
    let broker = KafkaBroker::connect(cfg).await?;
    broker.ensure_update_topics(routes).await?;
    Ok(KafkaSink::new(&broker, EnvelopeMode::Binary))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_a_clear_startup_error_unless_topics_are_created() {
    let prefix = unique("k2");
    let mut cfg = KafkaSinkConfig {
        brokers: ksupport::brokers(),
        topic: format!("{prefix}.{{bot}}.{{kind}}"),
        dead_letter_topic: format!("{prefix}.{{bot}}.deadletter"),
        replication_factor: 1,
        ..Default::default()
    };
    let err = connect(&cfg, &routes(1)).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{prefix}.main.message")) && text.contains("create_topics"),
        "{text}"
    );

    cfg.create_topics = true;
    connect(&cfg, &routes(1)).await.expect("creates the topics");
    cfg.create_topics = false;
    connect(&cfg, &routes(1)).await.expect("now they exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_too_large_for_the_producer_goes_to_the_dead_letter_topic() {
    let prefix = unique("k3");
    let api = FakeBotApi::start().await;
    let token = token(777003);
    api.add_bot(&token);
    let text = "x".repeat(20_000);
    let big = format!(r#"{{"update_id":7,"message":{{"chat":{{"id":-5}},"text":"{text}"}}}}"#)
        .into_bytes();
    let small = br#"{"update_id":8,"message":{"chat":{"id":-5},"text":"hi"}}"#.to_vec();
    api.push_updates(&token, vec![big, small.clone()]);
    let toml = ksupport::sink_toml(
        &prefix,
        "[sink.kafka.properties]\n\"message.max.bytes\" = \"10000\"\n",
    );
    relay_until_confirmed(&api, &token, &toml, 2).await;

    let records = tokio::task::spawn_blocking(move || read_prefix(&prefix))
        .await
        .unwrap();
    let dead: Vec<_> = records
        .iter()
        .filter(|r| r.topic.ends_with(".main.deadletter"))
        .collect();
    let delivered: Vec<_> = records
        .iter()
        .filter(|r| r.topic.ends_with(".main.message"))
        .collect();
    assert_eq!((dead.len(), delivered.len()), (1, 1), "{records:?}");
    assert_eq!(delivered[0].payload, small);
    assert_eq!(dead[0].headers["ce_id"], "777003:7");
    assert_eq!(dead[0].key.as_deref(), Some("-5"));
    let reason = &dead[0].headers["tgrelay-error"];
    assert!(
        reason.contains("too large") && reason.contains("omitted"),
        "{reason}"
    );
}
