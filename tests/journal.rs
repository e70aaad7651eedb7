//! The gateway's request journal on the real brokers. On NATS two replicas racing to
//! claim one call (twins that both believe they own the bot) get it once between
//! them; an answer written by one is what the other finds; a call forgotten can be
//! claimed again. On Kafka a new owner replays what its predecessor wrote: answers,
//! calls started and not answered, and calls forgotten.

mod support;

use bytes::Bytes;
use tgrelay::broker::kafka::{KafkaBroker, KafkaSinkConfig};
use tgrelay::broker::nats::{NatsBroker, NatsSinkConfig};
use tgrelay::outbound::answer::{Answered, Outcome};
use tgrelay::outbound::journal::{Found, Journal, State};
use tgrelay::outbound::kafka::KafkaOutbound;
use tgrelay::outbound::nats::NatsOutbound;
use tgrelay::outbound::OutboundConfig;

fn outbound(prefix: &str) -> OutboundConfig {
    OutboundConfig {
        enabled: true,
        subject: format!("{prefix}-out.{{bot}}"),
        results: format!("{prefix}-out.{{bot}}.results"),
        stream: format!("{prefix}_OUT"),
        stream_subjects: vec![format!("{prefix}-out.>")],
        ..Default::default()
    }
}

fn answered(text: &str) -> Answered {
    Answered {
        body: Bytes::from(format!(r#"{{"ok":true,"result":{{"text":"{text}"}}}}"#)),
        relay_error: None,
        outcome: Outcome::Ok,
    }
}

/// A replica's journal of bot 7: a connection of its own.
async fn nats_replica(prefix: &str) -> std::sync::Arc<tgrelay::outbound::nats::NatsJournal> {
    let sink = NatsSinkConfig {
        url: support::nats::url(),
        stream: format!("{prefix}_UPD"),
        stream_subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    };
    let broker = NatsBroker::connect(&sink).await.expect("NATS");
    let out = NatsOutbound::connect(&broker, &outbound(prefix))
        .await
        .expect("the gateway's streams and bucket");
    out.journal(7)
}

#[tokio::test]
async fn on_nats_two_replicas_racing_for_one_call_claim_it_once() {
    let prefix = support::nats::unique("jrn");
    let (a, b) = (nats_replica(&prefix).await, nats_replica(&prefix).await);
    let mut won = [0, 0];
    for i in 0..50 {
        let key = format!("id:{i}");
        let (x, y) = tokio::join!(a.begin(&key, 1), b.begin(&key, 1));
        let (x, y) = (x.expect("a claim"), y.expect("a claim"));
        assert!(x.is_none() != y.is_none(), "claimed once: {x:?} {y:?}");
        won[usize::from(y.is_none())] += 1;
        let lost = x.or(y).unwrap();
        assert_eq!(
            lost,
            Found {
                fingerprint: 1,
                state: State::Started
            }
        );
    }
    eprintln!("claims won: {won:?}");
    a.answer("id:0", 1, &answered("first")).await.unwrap();
    let found = b.begin("id:0", 1).await.unwrap().expect("answered");
    assert_eq!(found.state, State::Answered(answered("first")));
    a.forget("id:1").await.unwrap();
    assert_eq!(b.begin("id:1", 1).await.unwrap(), None, "claimed again");
    let js = support::nats::jetstream().await;
    for stream in ["OUT", "OUT_LIMITS", "UPD"] {
        support::nats::delete_stream(&js, &format!("{prefix}_{stream}")).await;
    }
    js.delete_key_value(format!("{prefix}_OUT_REQUESTS"))
        .await
        .unwrap();
}

#[tokio::test]
async fn on_kafka_a_new_owner_reads_what_its_predecessor_journaled() {
    let prefix = support::nats::unique("jrk");
    let sink = KafkaSinkConfig {
        brokers: support::kafka::brokers(),
        topic: format!("{prefix}.{{bot}}.{{kind}}"),
        dead_letter_topic: format!("{prefix}.{{bot}}.deadletter"),
        replication_factor: 1,
        create_topics: true,
        ..Default::default()
    };
    let config = outbound(&prefix);
    let calls = format!("{prefix}-out.main");
    let owner = async || {
        let broker = KafkaBroker::connect(&sink).await.expect("Kafka");
        let out = KafkaOutbound::connect(&broker, &config, &[("main".into(), 1)])
            .await
            .expect("the gateway's topics");
        let journal = out.journal(&calls);
        journal.load().await.expect("replayed");
        journal
    };
    let first = owner().await;
    for key in ["answered", "started", "forgotten"] {
        assert_eq!(first.begin(key, 2).await.unwrap(), None);
    }
    first.answer("answered", 2, &answered("a")).await.unwrap();
    first.forget("forgotten").await.unwrap();
    drop(first);

    let next = owner().await;
    let found = |state| {
        Some(Found {
            fingerprint: 2,
            state,
        })
    };
    assert_eq!(
        next.begin("answered", 2).await.unwrap(),
        found(State::Answered(answered("a")))
    );
    assert_eq!(
        next.begin("started", 2).await.unwrap(),
        found(State::Started)
    );
    assert_eq!(
        next.begin("forgotten", 2).await.unwrap(),
        None,
        "claimed again"
    );
}
