//! The executor against memory brokers and a small Bot API stand-in that records each
//! call: order per chat, one result per call, 429 scopes, refusals, duplicates, and
//! what a stop gives back.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use futures::future::BoxFuture;
use serde_json::Value;

use super::*;
use crate::outbound::broker::{Delivery, LimitsStore, PublishError, Results};
use crate::outbound::call::Reply;
use crate::outbound::call::Request;
use crate::outbound::journal::MemoryJournal;
use crate::secret::Secret;
use bytes::Bytes;

type Log = Arc<Mutex<Vec<String>>>;

struct Settle(String, Log);

impl Delivery for Settle {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), String>> {
        self.1.lock().unwrap().push(format!("ack {}", self.0));
        Box::pin(async { Ok(()) })
    }
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.1.lock().unwrap().push(format!("release {}", self.0));
        Box::pin(async {})
    }
}

#[derive(Default)]
struct Memory {
    results: Mutex<Vec<Reply>>,
    snapshot: Mutex<Option<Vec<u8>>>,
}

impl Results for Memory {
    fn publish<'a>(&'a self, reply: &'a Reply) -> BoxFuture<'a, Result<(), PublishError>> {
        self.results.lock().unwrap().push(reply.clone());
        Box::pin(async { Ok(()) })
    }
}

impl LimitsStore for Memory {
    fn load(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        let saved = self.snapshot.lock().unwrap().clone();
        Box::pin(async move { Ok(saved) })
    }
    fn save(&self, snapshot: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        *self.snapshot.lock().unwrap() = Some(snapshot);
        Box::pin(async { Ok(()) })
    }
}

/// The Bot API stand-in: records `<chat>:<text>` per call, answers 429 (retry after
/// one second) to the first call whose text is `flood`.
#[derive(Clone, Default)]
struct Telegram {
    calls: Log,
    flooded: Arc<Mutex<bool>>,
}

async fn answer(
    State(t): State<Telegram>,
    Path((_, method)): Path<(String, String)>,
    body: String,
) -> (axum::http::StatusCode, String) {
    let params: Value = serde_json::from_str(&body).unwrap_or_default();
    let text = params["text"].as_str().unwrap_or(&method).to_owned();
    t.calls
        .lock()
        .unwrap()
        .push(format!("{}:{text}", params["chat_id"]));
    if text == "late" {
        // Sent, and answered after the relay's call_timeout.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    if text == "flood" && !std::mem::replace(&mut *t.flooded.lock().unwrap(), true) {
        let body = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1","parameters":{"retry_after":1}}"#;
        return (axum::http::StatusCode::TOO_MANY_REQUESTS, body.into());
    }
    (
        axum::http::StatusCode::OK,
        format!(r#"{{"ok":true,"result":{{"text":"{text}"}}}}"#),
    )
}

struct Harness {
    telegram: Telegram,
    memory: Arc<Memory>,
    journal: Arc<MemoryJournal>,
    log: Log,
    intake: mpsc::Sender<Taken>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    next: u64,
}

impl Harness {
    async fn start(limits: Limits) -> Harness {
        Harness::start_with(limits, Duration::from_secs(5), Duration::from_secs(5)).await
    }

    async fn start_with(
        limits: Limits,
        call_timeout: Duration,
        drain_timeout: Duration,
    ) -> Harness {
        Harness::start_custom(limits, |s| {
            s.call_timeout = call_timeout;
            s.drain_timeout = drain_timeout;
        })
        .await
    }

    async fn start_custom(limits: Limits, custom: impl FnOnce(&mut Settings)) -> Harness {
        let telegram = Telegram::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/{token}/{method}", axum::routing::post(answer))
            .with_state(telegram.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let memory = Arc::new(Memory::default());
        let journal = Arc::new(MemoryJournal::default());
        let settings = Settings {
            allow: vec!["send*".into()],
            limits,
            replies: crate::outbound::reply_to::ReplyPolicy::new(
                &crate::outbound::OutboundConfig {
                    subject: "out.{bot}".into(),
                    results: "out.{bot}.results".into(),
                    ..Default::default()
                },
                "main",
                1,
            ),
            results_route: "out.main.results".into(),
            concurrency: 8,
            max_pending: 100,
            max_pending_per_chat: 100,
            call_timeout: Duration::from_secs(5),
            max_attempts: 3,
            max_retry_after: Duration::from_secs(5),
            dedup_window: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(5),
        };
        let mut settings = settings;
        custom(&mut settings);
        let executor = Executor::new(Parts {
            bot: Arc::new(BotIdentity::new("main", 1)),
            api: BotApi::new(BotApi::http_client(), &url, Secret::new("1:T")),
            settings,
            results: memory.clone(),
            store: memory.clone(),
            journal: journal.clone(),
            metrics: Arc::new(OutboundMetrics::new(&prometheus::Registry::new())),
            relay_metrics: Arc::new(Metrics::new()),
            lease: Lease::unbounded(),
        });
        let (intake, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(executor.run(rx, stop.clone()));
        Harness {
            telegram,
            memory,
            journal,
            log: Log::default(),
            intake,
            stop,
            task,
            next: 0,
        }
    }

    async fn publish(&mut self, method: &str, body: Value, request_id: Option<&str>) {
        self.publish_with(method, body, request_id, Default::default())
            .await
    }

    async fn publish_with(
        &mut self,
        method: &str,
        body: Value,
        request_id: Option<&str>,
        options: crate::outbound::call::Options,
    ) {
        self.next += 1;
        let request = Request {
            method: Some(method.into()),
            request_id: request_id.map(str::to_owned),
            reply_to: None,
            broker_id: self.next.to_string(),
            body: Bytes::from(body.to_string()),
            published: None,
            options,
        };
        let delivery = Box::new(Settle(self.next.to_string(), self.log.clone()));
        self.intake.send(Taken { request, delivery }).await.unwrap();
    }

    async fn results(&self, count: usize) -> Vec<Reply> {
        for _ in 0..1000 {
            if self.memory.results.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.memory.results.lock().unwrap().clone()
    }

    async fn stop(self) -> Vec<String> {
        self.stop.cancel();
        self.task.await.unwrap();
        self.log.lock().unwrap().clone()
    }
}

fn fast() -> Limits {
    Limits::new(1000.0, 100.0, 6000.0)
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn each_call_gets_one_result_and_each_chat_its_order() {
    let mut h = Harness::start(fast()).await;
    for i in 0..10 {
        for chat in [1, -2, 3] {
            h.publish(
                "sendMessage",
                serde_json::json!({"chat_id": chat, "text": i.to_string()}),
                None,
            )
            .await;
        }
    }
    let results = h.results(30).await;
    let calls = h.telegram.calls.lock().unwrap().clone();
    let log = h.stop().await;
    assert_eq!(results.len(), 30);
    for chat in ["1", "-2", "3"] {
        let texts: Vec<String> = calls
            .iter()
            .filter_map(|c| c.strip_prefix(&format!("{chat}:")))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            texts,
            (0..10).map(|i| i.to_string()).collect::<Vec<_>>(),
            "chat {chat}"
        );
    }
    let mut acked: Vec<u64> = log
        .iter()
        .filter_map(|l| l.strip_prefix("ack ")?.parse().ok())
        .collect();
    acked.sort();
    assert_eq!(acked, (1..=30).collect::<Vec<_>>(), "{log:?}");
    let ids: std::collections::BTreeSet<&str> =
        results.iter().filter_map(|r| header(r, "ce-id")).collect();
    assert_eq!(ids.len(), 30);
    assert!(results
        .iter()
        .all(|r| r.route == "out.main.results" && r.body.starts_with(br#"{"ok":true"#)));
}

#[tokio::test]
async fn a_429_pauses_its_chat_only() {
    let mut h = Harness::start(fast()).await;
    h.publish(
        "sendMessage",
        serde_json::json!({"chat_id": 1, "text": "flood"}),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..5 {
        h.publish(
            "sendMessage",
            serde_json::json!({"chat_id": 2, "text": i.to_string()}),
            None,
        )
        .await;
    }
    h.publish(
        "sendMessage",
        serde_json::json!({"chat_id": 1, "text": "after"}),
        None,
    )
    .await;
    let results = h.results(7).await;
    let calls = h.telegram.calls.lock().unwrap().clone();
    h.stop().await;
    assert_eq!(results.len(), 7);
    // Chat 2 went on while chat 1 waited; chat 1 kept its order after the wait.
    let expected = [
        "1:flood", "2:0", "2:1", "2:2", "2:3", "2:4", "1:flood", "1:after",
    ];
    assert_eq!(calls, expected);
    assert!(
        results.iter().all(|r| r.body.starts_with(br#"{"ok":true"#)),
        "the 429 is no result"
    );
}

#[tokio::test]
async fn refused_and_repeated_calls_get_answers_without_a_second_send() {
    let mut h = Harness::start(fast()).await;
    h.publish("getUpdates", serde_json::json!({}), Some("a"))
        .await;
    h.publish("sendMessage", serde_json::json!([1, 2]), Some("b"))
        .await;
    // Paid broadcasts need a budget this bot has not got.
    h.publish(
        "sendMessage",
        serde_json::json!({"chat_id": 7, "text": "$", "allow_paid_broadcast": true}),
        Some("p"),
    )
    .await;
    h.publish(
        "sendMessage",
        serde_json::json!({"chat_id": 5, "text": "once"}),
        Some("c"),
    )
    .await;
    let first = h.results(4).await;
    h.publish(
        "sendMessage",
        serde_json::json!({"chat_id": 5, "text": "once"}),
        Some("c"),
    )
    .await;
    h.results(5).await;
    // The id of a refused call may be used again; an id answered by Telegram may
    // not name another call.
    h.publish(
        "sendMessage",
        serde_json::json!({"chat_id": 6, "text": "now valid"}),
        Some("b"),
    )
    .await;
    h.publish(
        "sendMessage",
        serde_json::json!({"chat_id": 5, "text": "other"}),
        Some("c"),
    )
    .await;
    let results = h.results(7).await;
    let calls = h.telegram.calls.lock().unwrap().clone();
    let log = h.stop().await;
    assert_eq!(calls, ["5:once", "6:now valid"]);
    assert_eq!(log.iter().filter(|l| l.starts_with("ack")).count(), 7);
    let by_id = |id: &str| {
        results
            .iter()
            .filter(|r| header(r, "tg-request-id") == Some(id))
            .collect::<Vec<_>>()
    };
    for id in ["a", "b", "p"] {
        let refused = by_id(id);
        let body: Value = serde_json::from_slice(&refused[0].body).unwrap();
        assert_eq!(
            (body["ok"].as_bool(), body["error_code"].as_i64()),
            (Some(false), Some(400))
        );
        assert!(header(refused[0], "tgrelay-error").is_some());
    }
    let thrice = by_id("c");
    assert_eq!(thrice.len(), 3);
    assert_eq!(thrice[0].body, thrice[1].body);
    assert_ne!(header(thrice[0], "ce-id"), header(thrice[1], "ce-id"));
    assert_eq!(header(thrice[1], "tg-outcome"), Some("ok"));
    assert_eq!(header(thrice[2], "tg-outcome"), Some("refused"));
    assert!(header(thrice[2], "tgrelay-error")
        .unwrap()
        .contains("different call"));
    assert_eq!(header(by_id("b")[1], "tg-outcome"), Some("ok"));
    assert_eq!(first.len(), 4);
}

#[tokio::test]
async fn a_stop_gives_back_what_was_not_sent_in_order() {
    // One message per second per chat: the first goes, the rest wait.
    let mut h = Harness::start(Limits::new(1000.0, 1.0, 20.0)).await;
    for i in 0..5 {
        h.publish(
            "sendMessage",
            serde_json::json!({"chat_id": 9, "text": i.to_string()}),
            None,
        )
        .await;
    }
    h.results(1).await;
    let log = h.stop().await;
    assert_eq!(
        log,
        ["ack 1", "release 2", "release 3", "release 4", "release 5"]
    );
}

#[tokio::test]
async fn the_limiter_memory_is_saved_for_the_next_owner() {
    let mut h = Harness::start(Limits::new(1000.0, 1.0, 20.0)).await;
    h.publish(
        "sendMessage",
        serde_json::json!({"chat_id": -9, "text": "x"}),
        None,
    )
    .await;
    h.results(1).await;
    let memory = Arc::clone(&h.memory);
    h.stop().await;
    let saved: crate::outbound::snapshot::Snapshot =
        serde_json::from_slice(memory.snapshot.lock().unwrap().as_ref().unwrap()).unwrap();
    assert!(saved.last);
    assert_eq!(saved.chats.len(), 1);
    assert_eq!(saved.chats[0].chat, "-9");
}

mod journal;
mod promises;
