//! The relay into the real NATS JetStream on this machine, read back by an
//! independent pull consumer: bodies, contract headers, subjects, deduplication,
//! dead letters, and startup errors.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use support::corpus::{expected_routing, Corpus};
use support::fake_bot_api::FakeBotApi;
use support::nats::{self as jsupport, read_all, unique};
use support::relay::{relay_until_confirmed, token};
use tgrelay::broker::nats::{NatsBroker, NatsSinkConfig, NatsSinkError};
use tgrelay::cloudevent::EnvelopeMode;
use tgrelay::envelope::{BotIdentity, Envelope};
use tgrelay::sink::nats::NatsSink;
use tgrelay::sink::Sink;

#[tokio::test]
async fn updates_land_in_jetstream_byte_identical_with_the_contract_headers() {
    let js = jsupport::jetstream().await;
    let (stream, prefix) = (unique("TGRELAY_T1"), unique("t1"));
    let api = FakeBotApi::start().await;
    let token = token(424242);
    api.add_bot(&token);
    let updates = Corpus::load().mixed(900001, 400, 11);
    api.push_updates(&token, updates.clone());
    let before = SystemTime::now();
    relay_until_confirmed(
        &api,
        &token,
        &jsupport::sink_toml(&stream, &prefix, ""),
        updates.len(),
    )
    .await;

    let stored = read_all(&js, &stream).await;
    assert_eq!(
        stored.len(),
        updates.len(),
        "one message per update, no extra, in update order"
    );
    for (raw, msg) in updates.iter().zip(&stored) {
        let update: serde_json::Value = serde_json::from_slice(raw).unwrap();
        let (kind, chat, _user) = expected_routing(&update);
        let id = format!("424242:{}", update["update_id"]);
        assert_eq!(&msg.payload[..], &raw[..], "body is Telegram's bytes");
        assert_eq!(msg.subject, format!("{prefix}.main.{kind}"));
        let h = &msg.headers;
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-id"], id);
        assert_eq!(h["Nats-Msg-Id"], id);
        assert_eq!(h["ce-source"], "/telegram/bot/424242");
        assert_eq!(h["ce-type"], format!("org.telegram.update.{kind}"));
        assert_eq!(h["Content-Type"], "application/json");
        assert_eq!(
            h.get("ce-subject").cloned(),
            chat.map(|c| c.to_string()),
            "{kind}"
        );
        let time = humantime::parse_rfc3339(&h["ce-time"]).expect("RFC 3339 time");
        assert!(time >= before - Duration::from_secs(1) && h["ce-time"].ends_with('Z'));
    }
    jsupport::delete_stream(&js, &stream).await;
}

#[tokio::test]
async fn structured_mode_publishes_a_cloudevent_whose_data_is_the_update() {
    let js = jsupport::jetstream().await;
    let (stream, prefix) = (unique("TGRELAY_T2"), unique("t2"));
    let api = FakeBotApi::start().await;
    let token = token(5151);
    api.add_bot(&token);
    let updates = Corpus::load().mixed(1, 30, 2);
    api.push_updates(&token, updates.clone());
    let toml = jsupport::sink_toml(&stream, &prefix, "envelope = \"structured\"");
    relay_until_confirmed(&api, &token, &toml, updates.len()).await;

    let stored = read_all(&js, &stream).await;
    assert_eq!(stored.len(), 30);
    for (raw, msg) in updates.iter().zip(&stored) {
        assert_eq!(msg.headers["Content-Type"], "application/cloudevents+json");
        let text = std::str::from_utf8(&msg.payload).unwrap();
        let data = text.split_once(",\"data\":").unwrap().1;
        assert_eq!(
            &data.as_bytes()[..data.len() - 1],
            &raw[..],
            "data member is byte-identical"
        );
        let event: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(msg.headers["Nats-Msg-Id"], event["id"].as_str().unwrap());
    }
    jsupport::delete_stream(&js, &stream).await;
}

fn envelope(bot: &Arc<BotIdentity>, raw: Vec<u8>) -> Envelope {
    Envelope::from_update(bot, Bytes::from(raw), SystemTime::now()).unwrap()
}

async fn sink(stream: &str, prefix: &str, create: bool) -> NatsSink {
    let mut cfg = NatsSinkConfig {
        url: jsupport::url(),
        stream: stream.into(),
        stream_subjects: vec![format!("{prefix}.>")],
        subject: format!("{prefix}.{{bot}}.{{kind}}"),
        dead_letter_subject: format!("{prefix}_dl.{{bot}}.deadletter"),
        ..Default::default()
    };
    cfg.create_stream = create;
    connect(&cfg).await.expect("connects")
}

/// Connects a NATS sink as the relay does: the broker, its stream, the sink on it.
async fn connect(cfg: &NatsSinkConfig) -> Result<NatsSink, NatsSinkError> {
    let broker = NatsBroker::connect(cfg).await?;
    broker.ensure_updates_stream().await?;
    Ok(NatsSink::new(&broker, EnvelopeMode::Binary))
}

#[tokio::test]
async fn a_republished_update_is_dropped_by_the_stream() {
    let js = jsupport::jetstream().await;
    let (stream, prefix) = (unique("TGRELAY_T3"), unique("t3"));
    let sink = sink(&stream, &prefix, true).await;
    let bot = Arc::new(BotIdentity::new("main", 77));
    let batch: Vec<Envelope> = Corpus::load()
        .mixed(1, 10, 3)
        .into_iter()
        .map(|raw| envelope(&bot, raw))
        .collect();
    for _ in 0..3 {
        let outcomes = sink.publish(&batch).await;
        assert!(outcomes.iter().all(|o| o.is_safe()), "{outcomes:?}");
    }
    assert_eq!(
        read_all(&js, &stream).await.len(),
        10,
        "Nats-Msg-Id deduplicates retries"
    );
    jsupport::delete_stream(&js, &stream).await;
}

#[tokio::test]
async fn an_update_too_large_for_the_stream_goes_to_the_dead_letter_subject() {
    let js = jsupport::jetstream().await;
    let (stream, prefix) = (unique("TGRELAY_T4"), unique("t4"));
    let dl_stream = unique("TGRELAY_T4DL");
    jsupport::create_stream(&js, &stream, &prefix, 4096).await;
    jsupport::create_stream(&js, &dl_stream, &format!("{prefix}_dl"), -1).await;
    let sink = sink(&stream, &prefix, false).await;
    let bot = Arc::new(BotIdentity::new("main", 78));
    let text = "x".repeat(10_000);
    let big = format!(r#"{{"update_id":5,"message":{{"chat":{{"id":9}},"text":"{text}"}}}}"#);
    let small = br#"{"update_id":6,"message":{"chat":{"id":9},"text":"hi"}}"#.to_vec();
    let outcomes = sink
        .publish(&[
            envelope(&bot, big.clone().into_bytes()),
            envelope(&bot, small),
        ])
        .await;
    assert!(
        matches!(&outcomes[0], tgrelay::ack::Outcome::DeadLettered { .. }),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], tgrelay::ack::Outcome::Delivered);

    let main = read_all(&js, &stream).await;
    assert_eq!(main.len(), 1);
    let dead = read_all(&js, &dl_stream).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].subject, format!("{prefix}_dl.main.deadletter"));
    assert_eq!(&dead[0].payload[..], big.as_bytes());
    assert_eq!(dead[0].headers["ce-id"], "78:5");
    assert!(
        dead[0].headers["tgrelay-error"].contains("too large"),
        "{:?}",
        dead[0].headers
    );
    jsupport::delete_stream(&js, &stream).await;
    jsupport::delete_stream(&js, &dl_stream).await;
}

#[tokio::test]
async fn a_missing_stream_is_a_clear_startup_error() {
    let stream = unique("TGRELAY_MISSING");
    let cfg = NatsSinkConfig {
        url: jsupport::url(),
        stream: stream.clone(),
        create_stream: false,
        ..Default::default()
    };
    let err = connect(&cfg).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains(&stream) && text.contains("create_stream"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_startup_error() {
    let cfg = NatsSinkConfig {
        url: "nats://127.0.0.1:9".into(),
        ..Default::default()
    };
    let err = connect(&cfg).await.err().expect("refused");
    assert!(
        err.to_string()
            .starts_with("connecting to NATS at nats://127.0.0.1:9"),
        "{err}"
    );
}
