//! The Bot API gateway on NATS JetStream, tried as a service would: calls published
//! to `<prefix>-out.main` by several producers at once, for many chats, against the
//! fake Bot API keeping Telegram's flood limits (scaled up so that thousands of calls
//! take seconds). Every call must get exactly one result, each chat's calls must reach
//! Telegram in the order published, no limit may be exceeded, a 429 for one chat must
//! not hold up another, and refused calls get the refusal as their result.

mod support;

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use support::fake_bot_api::{FakeBotApi, Fault};
use support::gateway::{self, Call};
use support::{nats, relay};
use tgrelay::app::Relay;

const WAIT: Duration = Duration::from_secs(60);

struct Setup {
    api: FakeBotApi,
    token: String,
    prefix: String,
    js: jetstream::Context,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Setup {
    async fn start(bot_id: u64) -> Setup {
        Setup::start_with(bot_id, "").await
    }

    /// With `extra` settings appended to `[outbound]`.
    async fn start_with(bot_id: u64, extra: &str) -> Setup {
        // The relay's log, shown when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("tgrelay=info")
            .with_test_writer()
            .try_init();
        let api = FakeBotApi::start().await;
        let token = relay::token(bot_id);
        api.add_bot(&token);
        api.sends().set_limits(gateway::fast_limits());
        let prefix = nats::unique("gw");
        let toml = format!(
            "{}{}",
            nats::sink_toml(&format!("{prefix}_UPD"), &prefix, ""),
            gateway::outbound_toml(&prefix, extra)
        );
        let config = relay::config(&api.base_url(), &[("main", &token)], &toml);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Relay::new(config).run(shutdown.clone()));
        let js = nats::jetstream().await;
        // The relay creates the calls' stream once it connected.
        let stream = format!("{prefix}_OUT");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while js.get_stream(&stream).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relay made no stream {stream}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Setup {
            api,
            token,
            prefix,
            js,
            shutdown,
            task,
        }
    }

    fn calls_subject(&self) -> String {
        format!("{}-out.main", self.prefix)
    }

    async fn results(&self, count: usize) -> Vec<gateway::Answer> {
        let subject = format!("{}-out.main.results", self.prefix);
        gateway::results_nats(
            &self.js,
            &format!("{}_OUT", self.prefix),
            &subject,
            count,
            WAIT,
        )
        .await
    }

    async fn publish(&self, method: &str, body: &str, id: &str, reply_to: Option<&str>) {
        let extra: &[(&str, &str)] = match reply_to {
            Some(reply_to) => &[("tg-reply-to", reply_to)],
            None => &[],
        };
        self.publish_with(method, body, id, extra).await
    }

    /// With `extra` headers.
    async fn publish_with(&self, method: &str, body: &str, id: &str, extra: &[(&str, &str)]) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("tg-method", method);
        headers.insert("tg-request-id", id);
        for (name, value) in extra {
            headers.insert(*name, *value);
        }
        let payload = body.to_owned().into_bytes().into();
        self.js
            .publish_with_headers(self.calls_subject(), headers, payload)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        for stream in ["OUT", "OUT_LIMITS", "UPD"] {
            nats::delete_stream(&self.js, &format!("{}_{stream}", self.prefix)).await;
        }
    }
}

#[tokio::test]
async fn a_flood_from_several_producers_gets_one_result_per_call_in_order_within_the_limits() {
    let setup = Setup::start(8101).await;
    let plan = gateway::plan("flood", 60, 40, 15, 4);
    let total: usize = plan.iter().map(Vec::len).sum();
    let producers: Vec<_> = plan
        .iter()
        .cloned()
        .map(|calls| {
            tokio::spawn(gateway::publish_nats(
                setup.js.clone(),
                setup.calls_subject(),
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
    assert_eq!(answers.len(), total);
    setup.stop().await;
}

#[tokio::test]
async fn a_429_for_one_chat_holds_that_chat_only_and_for_as_long_as_asked() {
    let setup = Setup::start(8102).await;
    setup.api.sends().inject_429(&setup.token, "1001", 2);
    let calls = |chat: i64, seqs: std::ops::Range<usize>| -> Vec<Call> {
        seqs.map(|seq| Call {
            id: format!("t:{chat}:{seq}"),
            chat,
            seq,
        })
        .collect()
    };
    let subject = setup.calls_subject();
    gateway::publish_nats(setup.js.clone(), subject.clone(), calls(1001, 0..1)).await;
    gateway::publish_nats(setup.js.clone(), subject.clone(), calls(1002, 0..5)).await;
    gateway::publish_nats(setup.js.clone(), subject, calls(1001, 1..2)).await;
    let answers = setup.results(7).await;
    assert_eq!(answers.len(), 7);
    assert!(
        answers.iter().all(|a| a.body["ok"] == true),
        "a 429 is waited out, never a result"
    );

    let sent = setup.api.sends().sent(&setup.token);
    let order: Vec<String> = sent
        .iter()
        .map(|s| format!("{}/{}", s.params["text"].as_str().unwrap(), s.status))
        .collect();
    let expected = [
        "t:1001:0/429",
        "t:1002:0/200",
        "t:1002:1/200",
        "t:1002:2/200",
        "t:1002:3/200",
        "t:1002:4/200",
        "t:1001:0/200",
        "t:1001:1/200",
    ];
    assert_eq!(order, expected);
    let waited = sent[6].at.duration_since(sent[0].at);
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, asked 2 s"
    );
    assert!(setup.api.sends().flood_refusals(&setup.token).is_empty());
    setup.stop().await;
}

#[tokio::test]
async fn refused_calls_get_the_refusal_as_their_result_and_never_reach_telegram() {
    let setup = Setup::start(8103).await;
    let refused = [
        ("getUpdates", r#"{"offset":424242}"#, "r1"),
        ("deleteWebhook", r#"{"drop_pending_updates":true}"#, "r2"),
        ("LOGOUT", "{}", "r3"),
        ("setMyCommands", r#"{"commands":[]}"#, "r4"),
        ("sendMessage", "not json", "r5"),
        ("sendMessage", "[1]", "r6"),
    ];
    for (method, body, id) in refused {
        setup.publish(method, body, id, None).await;
    }
    let answers = setup.results(refused.len()).await;
    assert_eq!(answers.len(), refused.len());
    for answer in &answers {
        assert_eq!(answer.body["ok"], false, "{answer:?}");
        assert_eq!(answer.body["error_code"], 400, "{answer:?}");
        assert!(answer.body["description"]
            .as_str()
            .unwrap()
            .starts_with("Bad Request: "));
        assert!(answer.headers.contains_key("tgrelay-error"), "{answer:?}");
    }
    assert!(setup.api.sends().sent(&setup.token).is_empty());
    let calls = setup.api.calls(&setup.token);
    assert!(!calls
        .iter()
        .any(|c| c.params.get("offset").is_some_and(|o| o == 424242)));
    assert!(!calls
        .iter()
        .any(|c| c.method == "deleteWebhook" && c.params["drop_pending_updates"] == true));
    setup.stop().await;
}

#[tokio::test]
async fn a_service_waiting_on_its_own_subject_gets_its_answer_there() {
    let setup = Setup::start(8104).await;
    let inbox = format!("_INBOX.{}", setup.prefix);
    let mut replies = setup.js.client().subscribe(inbox.clone()).await.unwrap();
    setup
        .publish(
            "sendMessage",
            r#"{"chat_id":77,"text":"hello"}"#,
            "q1",
            Some(&inbox),
        )
        .await;
    let reply = tokio::time::timeout(WAIT, replies.next())
        .await
        .unwrap()
        .unwrap();
    let answer = gateway::answer(reply.headers.as_ref(), &reply.payload);
    assert_eq!(answer.body["ok"], true);
    assert_eq!(answer.body["result"]["text"], "hello");
    assert_eq!(answer.request_id(), "q1");
    assert_eq!(
        answer.headers.get("tg-method").map(String::as_str),
        Some("sendMessage")
    );
    assert!(answer.headers["ce-id"].starts_with("8104:"), "{answer:?}");
    let ce = |name: &str| answer.headers.get(name).map(String::as_str);
    assert_eq!(ce("ce-specversion"), Some("1.0"));
    assert_eq!(ce("ce-source"), Some("/telegram/bot/8104"));
    assert_eq!(ce("ce-type"), Some("org.telegram.result.sendMessage"));
    assert_eq!(ce("ce-subject"), Some("77"));
    assert_eq!(ce("tg-outcome"), Some("ok"));
    assert!(
        ce("ce-time").is_some_and(|t| humantime::parse_rfc3339(t).is_ok()),
        "{answer:?}"
    );
    setup.stop().await;
}

#[tokio::test]
async fn a_5xx_is_final_for_a_message_unless_the_caller_allows_a_retry() {
    let setup = Setup::start(8105).await;
    setup
        .api
        .inject_on(&setup.token, "sendMessage", Fault::InternalError);
    setup
        .publish("sendMessage", r#"{"chat_id":5,"text":"once"}"#, "t0", None)
        .await;
    let unknown = setup.results(1).await;
    assert_eq!(unknown[0].body["error_code"], 520, "{unknown:?}");
    assert_eq!(unknown[0].headers["tg-outcome"], "unknown");
    for _ in 0..2 {
        setup
            .api
            .inject_on(&setup.token, "sendMessage", Fault::InternalError);
    }
    // One call at a time, so that the first takes both 500s.
    let allow = [("tg-allow-retry", "true")];
    setup
        .publish_with(
            "sendMessage",
            r#"{"chat_id":5,"text":"again"}"#,
            "t1",
            &allow,
        )
        .await;
    let first = setup.results(1).await;
    let again = &first[0].body;
    assert_eq!(
        again["result"]["text"], "again",
        "the third attempt went through"
    );
    assert_eq!(first[0].headers["tg-outcome"], "ok");
    setup
        .publish("sendMessage", r#"{"chat_id":6,"text":""}"#, "t2", None)
        .await;
    let second = setup.results(1).await;
    let bad = &second[0].body;
    assert_eq!(
        (bad["ok"].as_bool(), bad["error_code"].as_i64()),
        (Some(false), Some(400))
    );
    assert_eq!(
        bad["description"], "Bad Request: message text is empty",
        "Telegram's own answer, once"
    );
    assert_eq!(second[0].headers["tg-outcome"], "error");
    let texts: Vec<String> = setup
        .api
        .calls(&setup.token)
        .iter()
        .map(|c| c.method.clone())
        .collect();
    assert_eq!(
        texts.iter().filter(|m| *m == "sendMessage").count(),
        5,
        "{texts:?}"
    );
    let token_id = setup.token.split_once(':').unwrap().1;
    for answer in unknown.iter().chain(&first).chain(&second) {
        assert!(!format!("{answer:?}").contains(token_id), "{answer:?}");
    }
    setup.stop().await;
}

#[tokio::test]
async fn a_message_answered_late_reaches_its_chat_once_and_its_caller_hears_unknown() {
    let setup = Setup::start_with(8106, "call_timeout = \"1s\"\n").await;
    // Four of twelve messages are delivered, and answered after call_timeout.
    for _ in 0..4 {
        setup.api.inject_on(
            &setup.token,
            "sendMessage",
            Fault::AnswerLate(Duration::from_secs(3)),
        );
    }
    let calls: Vec<Call> = (0..12)
        .map(|i| Call {
            id: format!("late:{i}"),
            chat: 2000 + i,
            seq: 0,
        })
        .collect();
    gateway::publish_nats(setup.js.clone(), setup.calls_subject(), calls).await;
    let answers = setup.results(12).await;
    // Anything sent again would have been sent by now (backoff is shorter than this).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = setup.api.sends().sent(&setup.token);
    let mut per_chat = std::collections::BTreeMap::new();
    for s in &sent {
        *per_chat.entry(s.chat.clone().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(per_chat.len(), 12, "{per_chat:?}");
    assert!(
        per_chat.values().all(|n| *n == 1),
        "a chat got a message twice: {per_chat:?}"
    );
    let mut ids: Vec<&str> = answers.iter().map(|a| a.request_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((answers.len(), ids.len()), (12, 12), "one result per call");
    let unknown: Vec<_> = answers
        .iter()
        .filter(|a| a.headers.get("tg-outcome").map(String::as_str) == Some("unknown"))
        .collect();
    assert_eq!(unknown.len(), 4, "{answers:?}");
    assert!(unknown
        .iter()
        .all(|a| a.body["error_code"] == 520 && a.body["ok"] == false));
    let more = gateway::results_nats(
        &setup.js,
        &format!("{}_OUT", setup.prefix),
        &format!("{}-out.main.results", setup.prefix),
        1,
        Duration::from_secs(2),
    )
    .await;
    assert!(more.is_empty(), "a second result: {more:?}");
    setup.stop().await;
}

#[tokio::test]
async fn a_reply_to_naming_the_updates_subject_is_refused_and_nothing_lands_there() {
    let setup = Setup::start(8107).await;
    let updates = format!("{}.main.message", setup.prefix);
    let dead = format!("{}.main.deadletter", setup.prefix);
    let other_calls = format!("{}-out.other", setup.prefix);
    let forged = [
        ("f1", updates.as_str()),
        ("f2", dead.as_str()),
        ("f3", other_calls.as_str()),
        ("f4", "svc.replies"),
    ];
    for (id, reply_to) in forged {
        setup
            .publish(
                "sendMessage",
                r#"{"chat_id":9,"text":"forged"}"#,
                id,
                Some(reply_to),
            )
            .await;
    }
    let answers = setup.results(forged.len()).await;
    assert_eq!(answers.len(), forged.len(), "{answers:?}");
    for answer in &answers {
        assert_eq!(answer.body["error_code"], 400, "{answer:?}");
        assert_eq!(answer.headers["tg-outcome"], "refused");
        assert!(answer.headers["tgrelay-error"].contains("tg-reply-to"));
    }
    assert!(
        setup.api.sends().sent(&setup.token).is_empty(),
        "nothing was sent"
    );
    let stream = setup
        .js
        .get_stream(format!("{}_UPD", setup.prefix))
        .await
        .unwrap();
    let info = stream.get_info().await.unwrap();
    assert_eq!(
        info.state.messages, 0,
        "nothing landed in the updates' stream"
    );
    setup.stop().await;
}

#[tokio::test]
async fn a_long_flood_wait_and_a_passed_deadline_are_answered_at_once_and_never_sent_late() {
    let setup = Setup::start_with(8108, "max_retry_after = \"5s\"\n").await;
    let sends = setup.api.sends();
    sends.inject_429(&setup.token, "3001", 3600);
    sends.inject_429(&setup.token, "3003", 3);
    let text = |chat: i64| format!(r#"{{"chat_id":{chat},"text":"x"}}"#);
    // Paused for an hour: this call and the next to its chat are answered now.
    for id in ["w1", "w2"] {
        setup.publish("sendMessage", &text(3001), id, None).await;
        let answer = &setup.results(1).await[0];
        assert_eq!(answer.request_id(), id);
        assert_eq!(answer.body["error_code"], 429, "{answer:?}");
        let wait = answer.body["parameters"]["retry_after"].as_u64().unwrap();
        assert!((3000..=3600).contains(&wait), "{answer:?}");
        assert_eq!(answer.headers["tg-outcome"], "not_sent");
    }
    // A deadline already passed (Unix seconds), and one that passes while its chat
    // waits out a 429 (RFC 3339).
    let passed = [("tg-deadline", "1000000000")];
    setup
        .publish_with("sendMessage", &text(3002), "d1", &passed)
        .await;
    let soon = std::time::SystemTime::now() + Duration::from_millis(1500);
    let soon = humantime::format_rfc3339_millis(soon).to_string();
    setup
        .publish_with("sendMessage", &text(3003), "d2", &[("tg-deadline", &soon)])
        .await;
    for id in ["d1", "d2"] {
        let answer = &setup.results(1).await[0];
        assert_eq!(answer.request_id(), id);
        assert_eq!(answer.headers["tg-outcome"], "expired", "{answer:?}");
        assert_eq!(answer.body["error_code"], 408);
    }
    let chats: Vec<String> = sends
        .sent(&setup.token)
        .iter()
        .map(|s| format!("{}/{}", s.chat.clone().unwrap(), s.status))
        .collect();
    assert_eq!(
        chats,
        ["3001/429", "3003/429"],
        "nothing sent after its wait or deadline"
    );
    setup.stop().await;
}
