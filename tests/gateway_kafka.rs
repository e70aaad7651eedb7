//! The Bot API gateway on Kafka, tried as a service would: calls produced to
//! `<prefix>-out.main` keyed by chat, by several producers at once, against the fake
//! Bot API keeping Telegram's flood limits (scaled up). Every call gets exactly one
//! result on `<prefix>-out.main.results`, keyed by chat, each chat's calls reach
//! Telegram in order, no limit is exceeded, and refused calls get the refusal.

mod support;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use support::fake_bot_api::FakeBotApi;
use support::gateway::{self, Call};
use support::{kafka, nats, relay};
use tgrelay::app::Relay;

const WAIT: Duration = Duration::from_secs(90);

struct Setup {
    api: FakeBotApi,
    token: String,
    prefix: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Setup {
    async fn start(bot_id: u64) -> Setup {
        let api = FakeBotApi::start().await;
        let token = relay::token(bot_id);
        api.add_bot(&token);
        api.sends().set_limits(gateway::fast_limits());
        let prefix = nats::unique("gwk");
        let toml = format!(
            "{}{}",
            kafka::sink_toml(&prefix, ""),
            gateway::outbound_toml(&prefix, "")
        );
        let config = relay::config(&api.base_url(), &[("main", &token)], &toml);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Relay::new(config).run(shutdown.clone()));
        Setup {
            api,
            token,
            prefix,
            shutdown,
            task,
        }
    }

    fn topic(&self) -> String {
        format!("{}-out.main", self.prefix)
    }

    async fn results(&self, count: usize) -> Vec<gateway::Answer> {
        let topic = format!("{}.results", self.topic());
        gateway::results_kafka(&kafka::brokers(), &topic, count, WAIT).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_flood_from_several_producers_gets_one_result_per_call_in_order_within_the_limits() {
    let setup = Setup::start(8201).await;
    let plan = gateway::plan("kflood", 40, 20, 10, 3);
    let total: usize = plan.iter().map(Vec::len).sum();
    // The relay creates the topics once it connected.
    let producers: Vec<_> = plan
        .iter()
        .cloned()
        .map(|calls| {
            tokio::spawn(gateway::publish_kafka(
                kafka::brokers(),
                setup.topic(),
                calls,
            ))
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }
    let answers = setup.results(total).await;
    assert_eq!(
        gateway::check_results(&plan, &answers),
        0,
        "no call answered twice"
    );
    assert_eq!(
        gateway::check_sent(&setup.api, &setup.token, &plan),
        0,
        "no call sent twice"
    );
    for answer in &answers {
        for attribute in ["id", "specversion", "source", "type", "time", "subject"] {
            let dash = answer.headers.get(&format!("ce-{attribute}"));
            assert!(dash.is_some(), "{answer:?}");
            assert_eq!(
                dash,
                answer.headers.get(&format!("ce_{attribute}")),
                "{answer:?}"
            );
        }
        assert_eq!(answer.headers["ce_type"], "org.telegram.result.sendMessage");
    }
    setup.stop().await;
}

#[tokio::test]
async fn refused_calls_and_a_429_get_what_they_should() {
    let setup = Setup::start(8202).await;
    setup.api.sends().inject_429(&setup.token, "2001", 1);
    let ok: Vec<Call> = (0..3)
        .map(|seq| Call {
            id: format!("k:2001:{seq}"),
            chat: 2001,
            seq,
        })
        .collect();
    gateway::publish_kafka(kafka::brokers(), setup.topic(), ok.clone()).await;
    {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", kafka::brokers())
            .create()
            .unwrap();
        let topic = setup.topic();
        for (method, id) in [("close", "r1"), ("getUpdates", "r2")] {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "tg-method",
                    value: Some(method),
                })
                .insert(Header {
                    key: "tg-request-id",
                    value: Some(id),
                });
            let record = FutureRecord::to(&topic)
                .key("x")
                .payload("{}")
                .headers(headers);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .unwrap();
        }
    }
    let answers = setup.results(5).await;
    assert_eq!(answers.len(), 5, "{answers:?}");
    for answer in &answers {
        let refused = answer.request_id().starts_with('r');
        assert_eq!(answer.body["ok"], !refused, "{answer:?}");
        if refused {
            assert_eq!(answer.body["error_code"], 400);
        }
    }
    let texts: Vec<String> = setup
        .api
        .sends()
        .sent(&setup.token)
        .iter()
        .map(|s| format!("{}/{}", s.params["text"].as_str().unwrap(), s.status))
        .collect();
    assert_eq!(
        texts,
        [
            "k:2001:0/429",
            "k:2001:0/200",
            "k:2001:1/200",
            "k:2001:2/200"
        ]
    );
    setup.stop().await;
}

#[tokio::test]
async fn a_reply_to_naming_an_updates_topic_is_refused_and_nothing_lands_there() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let setup = Setup::start(8203).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka::brokers())
        .create()
        .unwrap();
    let updates = format!("{}.main.message", setup.prefix);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "tg-method",
            value: Some("sendMessage"),
        })
        .insert(Header {
            key: "tg-request-id",
            value: Some("forged"),
        })
        .insert(Header {
            key: "tg-reply-to",
            value: Some(updates.as_str()),
        });
    let topic = setup.topic();
    let record = FutureRecord::to(&topic)
        .key("9")
        .payload(r#"{"chat_id":9,"text":"forged"}"#)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .unwrap();
    let answers = setup.results(1).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].headers["tg-outcome"], "refused", "{answers:?}");
    assert!(setup.api.sends().sent(&setup.token).is_empty());
    let prefix = setup.prefix.clone();
    let landed = tokio::task::spawn_blocking(move || kafka::read_prefix(&prefix))
        .await
        .unwrap();
    assert!(
        landed.is_empty(),
        "in the updates' topics: {}",
        landed.len()
    );
    setup.stop().await;
}
