//! A service's side of the Bot API gateway in tests: calls planned over many chats
//! (users and groups), published to NATS or Kafka by several producers, results read
//! back with an independent consumer, and the checks every gateway test makes
//! against the fake Bot API's own record of what it was sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde_json::{json, Value};

use super::fake_bot_api::FakeBotApi;

/// One planned call: sendMessage to `chat`, its text the call's id.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub chat: i64,
    /// Its place among its chat's calls.
    pub seq: usize,
}

impl Call {
    pub fn body(&self) -> String {
        json!({ "chat_id": self.chat, "text": self.id }).to_string()
    }
}

/// `producers` lists of calls to `users` private chats and `groups` groups, `per_chat`
/// each; a producer owns whole chats, so each chat's calls are published in order.
pub fn plan(
    tag: &str,
    users: usize,
    groups: usize,
    per_chat: usize,
    producers: usize,
) -> Vec<Vec<Call>> {
    let chats: Vec<i64> = (0..users as i64)
        .map(|i| 1000 + i)
        .chain((0..groups as i64).map(|i| -100_000 - i))
        .collect();
    let mut lists = vec![Vec::new(); producers];
    for seq in 0..per_chat {
        for (i, chat) in chats.iter().enumerate() {
            lists[i % producers].push(Call {
                id: format!("{tag}:{chat}:{seq}"),
                chat: *chat,
                seq,
            });
        }
    }
    lists
}

/// `[outbound]` for a test: calls on `<prefix>-out.{bot}`, limits fast enough for
/// thousands of calls in seconds (the fake is set to the same ones), `extra` appended.
pub fn outbound_toml(prefix: &str, extra: &str) -> String {
    format!(
        "[outbound]\nenabled = true\nsubject = \"{prefix}-out.{{bot}}\"\nresults = \"{prefix}-out.{{bot}}.results\"\n\
         stream = \"{prefix}_OUT\"\nstream_subjects = [\"{prefix}-out.>\"]\nconsumer = \"{prefix}-{{bot}}\"\n\
         group = \"{prefix}-{{bot}}\"\nbot_rate = 200\nchat_rate = 10\ngroup_chat_rate = 120\nack_wait = \"2s\"\n{extra}"
    )
}

/// The fake's limits matching `outbound_toml`'s.
pub fn fast_limits() -> super::fake_bot_api::FloodLimits {
    super::fake_bot_api::FloodLimits {
        bot_per_second: 200,
        chat_per_second: 10,
        group_per_minute: 120,
    }
}

/// A result as a service reads it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl Answer {
    pub fn request_id(&self) -> &str {
        self.headers.get("tg-request-id").map_or("", String::as_str)
    }
}

/// Publishes calls to JetStream in order, each with its id as `tg-request-id` and
/// `Nats-Msg-Id`, awaiting each PubAck.
pub async fn publish_nats(js: jetstream::Context, subject: String, calls: Vec<Call>) {
    for call in calls {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("tg-method", "sendMessage");
        headers.insert("tg-request-id", call.id.as_str());
        headers.insert("Nats-Msg-Id", call.id.as_str());
        js.publish_with_headers(subject.clone(), headers, call.body().into())
            .await
            .expect("publish")
            .await
            .expect("PubAck");
    }
}

/// Reads (and acknowledges) results on `subject` of `stream` until `count` came or
/// `within` passed, with a consumer of its own, deleted afterwards (a work-queue stream
/// refuses a second consumer on the same subjects).
pub async fn results_nats(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    count: usize,
    within: Duration,
) -> Vec<Answer> {
    let stream = js.get_stream(stream).await.expect("the calls' stream");
    let name = super::nats::unique("results");
    let reader = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subject.to_owned(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("a results consumer");
    let mut messages = reader.messages().await.expect("messages");
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < count {
        let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, messages.next()).await else {
            break;
        };
        message.double_ack().await.expect("ack");
        out.push(answer(message.headers.as_ref(), &message.payload));
    }
    drop(messages);
    stream
        .delete_consumer(&name)
        .await
        .expect("the results consumer deleted");
    out
}

pub fn answer(headers: Option<&async_nats::HeaderMap>, payload: &[u8]) -> Answer {
    let headers = headers
        .iter()
        .flat_map(|h| h.iter())
        .map(|(name, values)| (name.to_string(), values[0].to_string()))
        .collect();
    Answer {
        headers,
        body: serde_json::from_slice(payload).expect("a result is JSON"),
    }
}

/// What the fake was sent, per chat: the sequence numbers of the calls it took, in
/// order of arrival (only the calls it answered 200).
pub fn sent_per_chat(api: &FakeBotApi, token: &str) -> BTreeMap<i64, Vec<usize>> {
    let mut chats: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for sent in api
        .sends()
        .sent(token)
        .into_iter()
        .filter(|s| s.status == 200)
    {
        let text = sent.params["text"].as_str().unwrap_or_default().to_owned();
        let mut parts = text.rsplitn(3, ':');
        let seq = parts.next().and_then(|s| s.parse().ok());
        let chat = parts.next().and_then(|c| c.parse().ok());
        if let (Some(seq), Some(chat)) = (seq, chat) {
            chats.entry(chat).or_default().push(seq);
        }
    }
    chats
}

/// Every planned call reached the fake, each chat's in the order published; returns
/// how many calls were sent more than once (a run without a crash must have none).
pub fn check_sent(api: &FakeBotApi, token: &str, plan: &[Vec<Call>]) -> usize {
    check_sent_except(api, token, plan, &HashSet::new())
}

/// As `check_sent`, but the calls in `excused` (answered as unknown: their owner died
/// while they were with Telegram) may have not reached the fake at all.
pub fn check_sent_except(
    api: &FakeBotApi,
    token: &str,
    plan: &[Vec<Call>],
    excused: &HashSet<String>,
) -> usize {
    let per_chat = sent_per_chat(api, token);
    let mut expected: BTreeMap<i64, Vec<&Call>> = BTreeMap::new();
    for call in plan.iter().flatten() {
        expected.entry(call.chat).or_default().push(call);
    }
    let mut repeated = 0;
    for (chat, calls) in &mut expected {
        calls.sort_by_key(|c| c.seq);
        let seqs = per_chat.get(chat).cloned().unwrap_or_default();
        // A call sent again (after a crash) comes again in order: the first sending of
        // each call is in order, and every call was sent.
        let mut first = Vec::new();
        for seq in &seqs {
            if !first.contains(seq) {
                first.push(*seq);
            }
        }
        let must: Vec<usize> = calls
            .iter()
            .filter(|c| !excused.contains(&c.id) || first.contains(&c.seq))
            .map(|c| c.seq)
            .collect();
        assert_eq!(first, must, "chat {chat}: sent {seqs:?}");
        repeated += seqs.len() - first.len();
    }
    let refused = api.sends().flood_refusals(token);
    assert!(
        refused.is_empty(),
        "the fake refused {} calls for flood: {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
    repeated
}

/// Every planned call got a successful result; returns how many came more than once.
pub fn check_results(plan: &[Vec<Call>], answers: &[Answer]) -> usize {
    check_results_after_crash(plan, answers, 0).0
}

/// As `check_results`, after an owner died: up to `max_unknown` calls (those it had
/// with Telegram) may be answered as unknown instead. Returns how many results came
/// more than once, and the ids answered as unknown.
pub fn check_results_after_crash(
    plan: &[Vec<Call>],
    answers: &[Answer],
    max_unknown: usize,
) -> (usize, HashSet<String>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut unknown = HashSet::new();
    for answer in answers {
        if answer.headers.get("tg-outcome").map(String::as_str) == Some("unknown") {
            assert_eq!(answer.body["error_code"], 520, "{answer:?}");
            unknown.insert(answer.request_id().to_owned());
        } else {
            assert_eq!(answer.body["ok"], true, "{answer:?}");
        }
        assert!(answer.headers.contains_key("ce-id"), "{answer:?}");
        *seen.entry(answer.request_id()).or_default() += 1;
    }
    assert!(
        unknown.len() <= max_unknown,
        "{} calls answered as unknown: {unknown:?}",
        unknown.len()
    );
    let missing: Vec<&str> = plan
        .iter()
        .flatten()
        .map(|c| c.id.as_str())
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} calls without a result, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    (seen.values().map(|n| n - 1).sum(), unknown)
}

/// Produces calls to Kafka in order, keyed by chat, each with its id as `tg-request-id`.
pub async fn publish_kafka(brokers: String, topic: String, calls: Vec<Call>) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("a producer");
    for call in calls {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "tg-method",
                value: Some("sendMessage"),
            })
            .insert(Header {
                key: "tg-request-id",
                value: Some(call.id.as_str()),
            });
        let key = call.chat.to_string();
        let body = call.body();
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&body)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("produced");
    }
}

/// Every result on Kafka topic `topic` so far, once at least `count` are there (or
/// `within` passed).
pub async fn results_kafka(
    brokers: &str,
    topic: &str,
    count: usize,
    within: Duration,
) -> Vec<Answer> {
    let deadline = tokio::time::Instant::now() + within;
    let prefix = topic
        .rsplit_once('.')
        .map_or(topic, |(head, _)| head)
        .to_owned();
    loop {
        let (brokers, prefix) = (brokers.to_owned(), prefix.clone());
        let records =
            tokio::task::spawn_blocking(move || super::kafka::read_prefix_at(&brokers, &prefix))
                .await
                .unwrap();
        let answers: Vec<Answer> = records
            .iter()
            .filter(|r| r.topic == topic)
            .map(|r| Answer {
                headers: r.headers.clone(),
                body: serde_json::from_slice(&r.payload).expect("a result is JSON"),
            })
            .collect();
        if answers.len() >= count || tokio::time::Instant::now() >= deadline {
            return answers;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
