//! Tests of the test support itself: the fake Bot API must behave as Telegram
//! documents it (otherwise relay tests against it prove nothing), and the corpus
//! must produce well-formed updates of every kind with the routing facts the
//! wire contract assigns them.
//!
//! These run on tokio's default current-thread runtime: once a long poll shows up
//! in `calls`, its handler has reached its first wait, which makes "the older
//! poller" well defined in the conflict test. Webhook tests deliver to a small
//! receiver in the test that records what it gets and answers as scripted.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use support::corpus::{expected_routing, Corpus};
use support::fake_bot_api::{FakeBotApi, Fault, WebhookTiming};
use tokio::task::JoinHandle;

const TOKEN: &str = "123456:AAE-abc_def";
const CONFLICT_OTHER_POLLER: &str =
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
const MESSAGE_KINDS: [&str; 7] = [
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
    "guest_message",
];

/// A plain HTTP client for the fake; no proxy, so CI proxy settings cannot interfere.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

/// Status, Content-Type, Retry-After and body of one answer.
struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("answer is JSON")
    }
}

impl Client {
    fn new(fake: &FakeBotApi) -> Client {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Client {
            http,
            base: fake.base_url(),
        }
    }

    fn url(&self, token: &str, method: &str) -> String {
        format!("{}/bot{token}/{method}", self.base)
    }

    /// POSTs `params` as a JSON body and parses the JSON answer.
    async fn call(&self, token: &str, method: &str, params: Value) -> (u16, Value) {
        let answer = self
            .post_json(token, method, params)
            .await
            .expect("HTTP answer");
        (answer.status, answer.json())
    }

    async fn post_json(
        &self,
        token: &str,
        method: &str,
        params: Value,
    ) -> Result<Answer, reqwest::Error> {
        let request = self
            .http
            .post(self.url(token, method))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&params).expect("params serialize"));
        send(request).await
    }

    async fn post_form(&self, token: &str, method: &str, form: &str) -> Answer {
        let request = self
            .http
            .post(self.url(token, method))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        send(request).await.expect("HTTP answer")
    }

    async fn get(&self, token: &str, method_and_query: &str) -> Answer {
        send(self.http.get(self.url(token, method_and_query)))
            .await
            .expect("HTTP answer")
    }

    async fn get_updates(&self, params: Value) -> (u16, Value) {
        self.call(TOKEN, "getUpdates", params).await
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await?.to_vec();
    Ok(Answer {
        status,
        content_type,
        retry_after,
        body,
    })
}

async fn started() -> (FakeBotApi, Client) {
    let fake = FakeBotApi::start().await;
    fake.add_bot(TOKEN);
    let client = Client::new(&fake);
    (fake, client)
}

/// A minimal update of `kind` whose body has a chat, as most kinds do.
fn update_of(kind: &str, id: i64) -> Vec<u8> {
    format!(r#"{{"update_id":{id},"{kind}":{{"message_id":{id},"date":1750000000,"chat":{{"id":-1001234567890,"type":"supergroup","title":"t"}},"text":"hi"}}}}"#)
        .into_bytes()
}

fn messages(ids: std::ops::RangeInclusive<i64>) -> Vec<Vec<u8>> {
    ids.map(|id| update_of("message", id)).collect()
}

fn result_ids(body: &Value) -> Vec<i64> {
    body["result"]
        .as_array()
        .expect("result is an array")
        .iter()
        .map(|u| u["update_id"].as_i64().expect("update_id"))
        .collect()
}

/// Waits until the fake has received `count` calls for TOKEN (they arrive from spawned tasks).
async fn wait_for_calls(fake: &FakeBotApi, count: usize) {
    while fake.calls(TOKEN).len() < count {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn statuses(fake: &FakeBotApi) -> Vec<u16> {
    fake.calls(TOKEN).iter().map(|c| c.status).collect()
}

#[tokio::test]
async fn get_me_answers_with_the_bot_id() {
    let (fake, client) = started().await;
    let answer = client.get(TOKEN, "getMe").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type, "application/json");
    let body = answer.json();
    assert_eq!(body["ok"], true);
    assert_eq!(body["result"]["id"], 123456);
    assert_eq!(body["result"]["is_bot"], true);
    assert_eq!(body["result"]["username"], "fake_123456_bot");
    assert_eq!(fake.calls(TOKEN)[0].method, "getMe");
}

#[tokio::test]
async fn unknown_token_is_unauthorized_and_still_recorded() {
    let (fake, client) = started().await;
    let (status, body) = client.call("999:nope", "getUpdates", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
    let calls = fake.calls("999:nope");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].status, 401);
}

#[tokio::test]
async fn unknown_method_is_not_found() {
    let (_fake, client) = started().await;
    let (status, body) = client.call(TOKEN, "sendTelepathy", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 404, "description": "Not Found"})
    );
}

#[tokio::test]
async fn offset_confirms_and_is_recorded() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=5));

    let (status, body) = client.get_updates(json!({})).await;
    assert_eq!((status, result_ids(&body)), (200, vec![1, 2, 3, 4, 5]));
    assert!(
        fake.confirmed(TOKEN).is_empty(),
        "no offset confirms nothing"
    );

    let (_, body) = client.get_updates(json!({"offset": 3})).await;
    assert_eq!(result_ids(&body), vec![3, 4, 5]);
    assert_eq!(fake.confirmed(TOKEN), vec![1, 2]);
    assert_eq!(fake.pending(TOKEN), vec![3, 4, 5]);

    let (_, body) = client.get_updates(json!({"offset": 6})).await;
    assert_eq!(result_ids(&body), Vec::<i64>::new());
    assert_eq!(fake.confirmed(TOKEN), vec![1, 2, 3, 4, 5]);
    assert!(fake.forgotten(TOKEN).is_empty());

    let calls = fake.calls(TOKEN);
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1].params["offset"], 3);
    assert!(calls
        .iter()
        .all(|c| c.method == "getUpdates" && c.status == 200));
}

#[tokio::test]
async fn negative_offset_forgets_all_but_the_last_updates() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=5));
    let (_, body) = client.get_updates(json!({"offset": -2})).await;
    assert_eq!(result_ids(&body), vec![4, 5]);
    assert_eq!(fake.forgotten(TOKEN), vec![1, 2, 3]);
    assert!(
        fake.confirmed(TOKEN).is_empty(),
        "forgotten is not confirmed"
    );
    assert_eq!(fake.pending(TOKEN), vec![4, 5]);
}

#[tokio::test]
async fn limit_is_clamped_to_1_through_100() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=150));
    for (params, expected) in [
        (json!({}), 100),
        (json!({"limit": 0}), 100),
        (json!({"limit": 500}), 100),
        (json!({"limit": 7}), 7),
        (json!({"limit": -3}), 1),
        (json!({"limit": "20"}), 20),
    ] {
        let (_, body) = client.get_updates(params.clone()).await;
        assert_eq!(result_ids(&body).len(), expected, "{params}");
    }
}

#[tokio::test]
async fn long_poll_answers_when_an_update_is_pushed() {
    let (fake, client) = started().await;
    let poller = client.clone();
    let poll = tokio::spawn(async move { poller.get_updates(json!({"timeout": 30})).await });
    wait_for_calls(&fake, 1).await;
    assert_eq!(fake.calls(TOKEN)[0].status, 0, "still held");
    fake.push_updates(TOKEN, messages(1..=1));
    let (status, body) = poll.await.expect("poll task");
    assert_eq!((status, result_ids(&body)), (200, vec![1]));
}

#[tokio::test]
async fn long_poll_expires_with_an_empty_result() {
    let (_fake, client) = started().await;
    let started = Instant::now();
    let (status, body) = client.get_updates(json!({"timeout": 1})).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"ok": true, "result": []}));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "held for the timeout"
    );
}

#[tokio::test]
async fn allowed_updates_is_sticky_and_defaults_exclude_three_kinds() {
    let (fake, client) = started().await;
    fake.push_updates(
        TOKEN,
        vec![update_of("message", 1), update_of("callback_query", 2)],
    );
    let (_, body) = client
        .get_updates(json!({"allowed_updates": ["message"]}))
        .await;
    assert_eq!(result_ids(&body), vec![1]);
    assert_eq!(
        fake.forgotten(TOKEN),
        vec![2],
        "a kind not allowed is dropped"
    );

    // Absent: the last list still applies (sent here in a query string).
    fake.push_updates(
        TOKEN,
        vec![update_of("callback_query", 3), update_of("message", 4)],
    );
    let answer = client.get(TOKEN, "getUpdates?offset=2").await;
    assert_eq!(result_ids(&answer.json()), vec![4]);
    assert_eq!(fake.forgotten(TOKEN), vec![2, 3]);

    // An empty list (a JSON string in a form body) restores the default.
    let kinds = [
        "chat_member",
        "poll",
        "message_reaction",
        "message_reaction_count",
    ];
    fake.push_updates(
        TOKEN,
        (5..).zip(kinds).map(|(id, k)| update_of(k, id)).collect(),
    );
    let answer = client
        .post_form(TOKEN, "getUpdates", "offset=5&allowed_updates=%5B%5D")
        .await;
    assert_eq!(result_ids(&answer.json()), vec![6]);
    assert_eq!(fake.forgotten(TOKEN), vec![2, 3, 5, 7, 8]);

    // Asked for explicitly, an excluded kind is delivered.
    fake.push_updates(TOKEN, vec![update_of("chat_member", 9)]);
    let query = "getUpdates?offset=7&allowed_updates=%5B%22chat_member%22%5D";
    assert_eq!(result_ids(&client.get(TOKEN, query).await.json()), vec![9]);
    assert_eq!(fake.confirmed(TOKEN), vec![1, 4, 6]);
}

#[tokio::test]
async fn a_second_poller_terminates_the_older_one() {
    let (fake, client) = started().await;
    let older = client.clone();
    let older = tokio::spawn(async move { older.get_updates(json!({"timeout": 30})).await });
    wait_for_calls(&fake, 1).await;
    let (status, body) = client.get_updates(json!({"timeout": 0})).await;
    assert_eq!((status, body["ok"].clone()), (200, json!(true)));
    let (status, body) = older.await.expect("older poll task");
    assert_eq!(status, 409);
    assert_eq!(body["description"], CONFLICT_OTHER_POLLER);
    assert_eq!(
        statuses(&fake),
        vec![409, 200],
        "statuses in order of arrival"
    );
}

#[tokio::test]
async fn get_updates_conflicts_with_an_active_webhook() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=2));
    fake.set_webhook_url(TOKEN, Some("https://example.com/hook"));
    let (status, body) = client.get_updates(json!({"offset": 2})).await;
    assert_eq!(status, 409);
    assert_eq!(body["description"], "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first");
    assert!(fake.confirmed(TOKEN).is_empty(), "a 409 confirms nothing");

    let (_, info) = client.call(TOKEN, "getWebhookInfo", json!({})).await;
    assert_eq!(info["result"]["url"], "https://example.com/hook");
    assert_eq!(info["result"]["pending_update_count"], 2);

    let (_, body) = client.call(TOKEN, "deleteWebhook", json!({})).await;
    assert_eq!(
        body,
        json!({"ok": true, "result": true, "description": "Webhook was deleted"})
    );
    let (_, body) = client.call(TOKEN, "deleteWebhook", json!({})).await;
    assert_eq!(body["description"], "Webhook is already deleted");
    let (status, body) = client.get_updates(json!({})).await;
    assert_eq!((status, result_ids(&body)), (200, vec![1, 2]));
}

#[tokio::test]
async fn set_webhook_keeps_its_params_and_delete_can_drop_pending() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=3));
    // Nothing listens there, so the updates stay queued.
    let url = closed_port_url().await;
    let form = format!(
        "url={}&secret_token=s3cr3t&allowed_updates=%5B%22message%22%2C%22poll%22%5D",
        url.replace(':', "%3A").replace('/', "%2F")
    );
    let answer = client.post_form(TOKEN, "setWebhook", &form).await;
    assert_eq!(
        answer.json(),
        json!({"ok": true, "result": true, "description": "Webhook was set"})
    );
    let params = fake.webhook_params(TOKEN);
    assert_eq!(params["url"], url.as_str());
    assert_eq!(params["secret_token"], "s3cr3t");

    let (_, info) = client.call(TOKEN, "getWebhookInfo", json!({})).await;
    assert_eq!(
        info["result"]["allowed_updates"],
        json!(["message", "poll"])
    );
    assert_eq!(info["result"]["has_custom_certificate"], false);

    let (_, body) = client
        .call(
            TOKEN,
            "deleteWebhook",
            json!({"drop_pending_updates": true}),
        )
        .await;
    assert_eq!(body["description"], "Webhook was deleted");
    assert_eq!(fake.forgotten(TOKEN), vec![1, 2, 3]);
    assert!(fake.pending(TOKEN).is_empty());
    let (_, info) = client.call(TOKEN, "getWebhookInfo", json!({})).await;
    assert_eq!(info["result"]["url"], "");
}

#[tokio::test]
async fn too_many_requests_carries_retry_after_and_confirms_nothing() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=2));
    fake.inject(TOKEN, Fault::TooManyRequests { retry_after: 3 });
    let (status, body) = client.get_updates(json!({"offset": 2})).await;
    assert_eq!(status, 429);
    let expected = json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3", "parameters": {"retry_after": 3}});
    assert_eq!(body, expected);
    assert!(fake.confirmed(TOKEN).is_empty());
    let (_, body) = client.get_updates(json!({"offset": 2})).await;
    assert_eq!(result_ids(&body), vec![2]);
    assert_eq!(fake.confirmed(TOKEN), vec![1]);
}

#[tokio::test]
async fn the_odd_429s_of_a_proxy_confirm_nothing() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=2));
    fake.inject(
        TOKEN,
        Fault::TooManyRequestsFraction {
            retry_after_ms: 1500,
        },
    );
    fake.inject(
        TOKEN,
        Fault::TooManyRequestsHtml {
            retry_after: Some(3),
        },
    );
    fake.inject(TOKEN, Fault::TooManyRequestsHtml { retry_after: None });
    let (status, body) = client.get_updates(json!({"offset": 2})).await;
    assert_eq!(status, 429);
    assert_eq!(body["parameters"]["retry_after"], json!(1.5));
    for header in [Some("3"), None] {
        let answer = client.get(TOKEN, "getUpdates?offset=2").await;
        assert_eq!(
            (answer.status, answer.retry_after.as_deref()),
            (429, header)
        );
        assert!(answer.content_type.starts_with("text/html"));
        let text = String::from_utf8(answer.body).expect("utf-8");
        assert!(
            text.contains("<title>429 Too Many Requests</title>"),
            "{text}"
        );
    }
    assert!(fake.confirmed(TOKEN).is_empty());
    let (_, body) = client.get_updates(json!({"offset": 2})).await;
    assert_eq!(result_ids(&body), vec![2]);
    assert_eq!(statuses(&fake), vec![429, 429, 429, 200]);
}

#[tokio::test]
async fn bad_gateway_is_an_html_page() {
    let (fake, client) = started().await;
    fake.inject(TOKEN, Fault::BadGatewayHtml);
    let answer = client.get(TOKEN, "getUpdates").await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.content_type.starts_with("text/html"),
        "{}",
        answer.content_type
    );
    let body = String::from_utf8(answer.body).expect("utf-8");
    assert!(body.contains("<title>502 Bad Gateway</title>") && body.contains("nginx"));
    assert_eq!(statuses(&fake), vec![502]);
}

#[tokio::test]
async fn json_error_faults_answer_like_telegram() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=1));
    let cases = [
        (Fault::InternalError, 500, "Internal Server Error"),
        (Fault::Unauthorized, 401, "Unauthorized"),
        (Fault::Conflict, 409, CONFLICT_OTHER_POLLER),
    ];
    for (fault, code, description) in cases {
        fake.inject(TOKEN, fault);
        let (status, body) = client.get_updates(json!({"offset": 2})).await;
        assert_eq!(status, code);
        assert_eq!(
            body,
            json!({"ok": false, "error_code": code, "description": description})
        );
    }
    assert!(
        fake.confirmed(TOKEN).is_empty(),
        "faulted calls confirm nothing"
    );
}

#[tokio::test]
async fn faults_apply_one_per_call_in_order() {
    let (fake, client) = started().await;
    fake.inject(TOKEN, Fault::InternalError);
    fake.inject(TOKEN, Fault::BadGatewayHtml);
    for _ in 0..3 {
        let _ = client.get(TOKEN, "getUpdates").await;
    }
    assert_eq!(statuses(&fake), vec![500, 502, 200]);
}

#[tokio::test]
async fn reset_closes_the_connection_without_an_answer() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=1));
    fake.inject(TOKEN, Fault::Reset);
    let outcome = client
        .post_json(TOKEN, "getUpdates", json!({"offset": 2}))
        .await;
    assert!(
        outcome.is_err(),
        "expected a transport error, got an answer"
    );
    assert_eq!(statuses(&fake), vec![0], "no HTTP status was sent");
    assert!(fake.confirmed(TOKEN).is_empty());
    let (status, body) = client.get_updates(json!({})).await;
    assert_eq!(
        (status, result_ids(&body)),
        (200, vec![1]),
        "the fake serves on"
    );
}

#[tokio::test]
async fn delay_answers_normally_after_the_delay() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=2));
    fake.inject(TOKEN, Fault::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let (status, body) = client.get_updates(json!({"offset": 2})).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!((status, result_ids(&body)), (200, vec![2]));
    assert_eq!(
        fake.confirmed(TOKEN),
        vec![1],
        "a delayed call applies its offset"
    );
}

#[tokio::test]
async fn served_updates_are_byte_identical() {
    let (fake, client) = started().await;
    let corpus = Corpus::load();
    let updates = corpus.mixed(1, 60, 7);
    fake.push_updates(TOKEN, updates.clone());
    // Every kind, including those excluded by default and the future one.
    let mut kinds = corpus.kinds();
    kinds.push("story_reaction".to_owned());
    let body = serde_json::to_vec(&json!({"allowed_updates": kinds})).expect("params");
    let request = client.http.post(client.url(TOKEN, "getUpdates"));
    let answer = send(
        request
            .header("content-type", "application/json")
            .body(body),
    )
    .await
    .expect("HTTP answer");
    let mut expected = b"{\"ok\":true,\"result\":[".to_vec();
    expected.extend_from_slice(&updates.join(&b","[..]));
    expected.extend_from_slice(b"]}");
    assert!(
        answer.body == expected,
        "served bytes differ from the pushed ones"
    );
}

#[tokio::test]
async fn items_that_are_not_updates_are_served_as_is() {
    let (fake, client) = started().await;
    let odd = br#"{"update_id":"three","message":{}}"#.to_vec();
    fake.push_updates(
        TOKEN,
        vec![
            update_of("message", 1),
            odd.clone(),
            update_of("message", 4),
        ],
    );
    let answer = client.get(TOKEN, "getUpdates").await;
    assert!(answer.body.windows(odd.len()).any(|w| w == odd.as_slice()));
    assert_eq!(
        fake.pending(TOKEN),
        vec![1, 4],
        "only real update ids are listed"
    );
    // The item counts as having the id before it, so confirming 1 confirms it too.
    let (_, body) = client.get_updates(json!({"offset": 2})).await;
    assert_eq!(result_ids(&body), vec![4]);
    assert_eq!(fake.confirmed(TOKEN), vec![1]);
}

#[tokio::test]
async fn shutdown_ends_pending_long_polls_and_refuses_new_calls() {
    let (fake, client) = started().await;
    let poller = client.clone();
    let poll = tokio::spawn(async move {
        poller
            .post_json(TOKEN, "getUpdates", json!({"timeout": 30}))
            .await
    });
    wait_for_calls(&fake, 1).await;
    fake.shutdown();
    assert!(
        poll.await.expect("poll task").is_err(),
        "the held request ends without an answer"
    );
    let after = client.post_json(TOKEN, "getMe", json!({})).await;
    assert!(after.is_err(), "nothing listens any more");
}

#[tokio::test]
async fn wait_for_confirmed_sees_confirmations() {
    let (fake, client) = started().await;
    fake.push_updates(TOKEN, messages(1..=3));
    assert!(
        !fake
            .wait_for_confirmed(TOKEN, 1, Duration::from_millis(50))
            .await
    );
    client.get_updates(json!({"offset": 3})).await;
    assert!(
        fake.wait_for_confirmed(TOKEN, 2, Duration::from_secs(5))
            .await
    );
}

#[test]
fn every_kind_generates_well_formed_updates_of_about_1_kb() {
    let corpus = Corpus::load();
    let kinds = corpus.kinds();
    assert!(kinds.len() >= 27, "Bot API 10.3 has 27 update kinds");
    let mut total = 0;
    let mut count = 0;
    for kind in &kinds {
        for seed in 0..40 {
            let bytes = corpus.update(kind, 1000 + seed as i64, seed);
            let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{kind} seed {seed}: {e}\n{}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            let fields: Vec<&String> = value.as_object().expect("object").keys().collect();
            assert_eq!(fields.len(), 2, "{kind}: {fields:?}");
            assert_eq!(value["update_id"], 1000 + seed as i64);
            assert!(value[kind.as_str()].is_object(), "{kind}");
            total += bytes.len();
            count += 1;
        }
    }
    let mean = total / count;
    println!("mean update size: {mean} bytes over {count} updates");
    assert!(
        (700..=1500).contains(&mean),
        "mean update size {mean} bytes"
    );
}

#[test]
fn generation_is_deterministic() {
    let corpus = Corpus::load();
    assert_eq!(
        corpus.update("message", 5, 9),
        corpus.update("message", 5, 9)
    );
    assert_eq!(corpus.mixed(1, 120, 4), corpus.mixed(1, 120, 4));
    let variants: std::collections::HashSet<Vec<u8>> = (0..10)
        .map(|seed| corpus.update("message", 5, seed))
        .collect();
    assert!(variants.len() > 5, "seeds vary the update");
}

#[test]
fn generated_bytes_carry_what_a_reserializer_would_change() {
    let corpus = Corpus::load();
    let all: Vec<u8> = corpus.mixed(1, 500, 11).concat();
    let text = String::from_utf8(all).expect("utf-8");
    for needle in [
        r"\u00e9",
        r"\ud83d",
        r"\/",
        "Привет",
        "-100",
        "1e-7",
        "2.50E+2",
    ] {
        assert!(text.contains(needle), "no {needle:?} in 500 updates");
    }
}

#[test]
fn routing_finds_the_chat_of_message_kinds_and_callback_queries() {
    let corpus = Corpus::load();
    for kind in MESSAGE_KINDS.iter().chain(&["callback_query"]) {
        for seed in 0..20 {
            let update: Value =
                serde_json::from_slice(&corpus.update(kind, 1, seed)).expect("json");
            let (routed_kind, chat, user) = expected_routing(&update);
            assert_eq!(routed_kind, *kind);
            assert!(chat.is_some(), "{kind} seed {seed}: no chat in {update}");
            let channel = kind.ends_with("channel_post");
            assert_eq!(
                user.is_some(),
                !channel,
                "{kind} seed {seed}: user {user:?}"
            );
        }
    }
}

#[test]
fn routing_of_poll_answers_reactions_and_business_connections() {
    let corpus = Corpus::load();
    for seed in 0..20 {
        let answer: Value =
            serde_json::from_slice(&corpus.update("poll_answer", 1, seed)).expect("json");
        let (_, chat, user) = expected_routing(&answer);
        assert!(
            chat.is_some() != user.is_some(),
            "voter_chat or user: {answer}"
        );
        let reaction: Value =
            serde_json::from_slice(&corpus.update("message_reaction", 1, seed)).expect("json");
        let (_, chat, user) = expected_routing(&reaction);
        assert!(chat.is_some() && user.is_some(), "{reaction}");
        let connection: Value =
            serde_json::from_slice(&corpus.update("business_connection", 1, seed)).expect("json");
        let (_, chat, user) = expected_routing(&connection);
        assert_eq!(
            chat,
            connection["business_connection"]["user_chat_id"].as_i64()
        );
        assert!(user.is_some());
    }
    let inline: Value = serde_json::from_slice(&corpus.update("inline_query", 1, 0)).expect("json");
    assert_eq!(
        expected_routing(&inline).1,
        None,
        "inline queries have no chat"
    );
}

#[test]
fn mixed_cycles_through_kinds_with_a_future_kind_every_50th() {
    let corpus = Corpus::load();
    let kinds = corpus.kinds();
    let updates = corpus.mixed(1000, 200, 3);
    let routed: Vec<(String, Option<i64>, Option<i64>)> = updates
        .iter()
        .map(|bytes| expected_routing(&serde_json::from_slice(bytes).expect("json")))
        .collect();
    for (i, bytes) in updates.iter().enumerate() {
        let value: Value = serde_json::from_slice(bytes).expect("json");
        assert_eq!(value["update_id"], 1000 + i as i64);
    }
    for (i, (kind, chat, user)) in routed.iter().enumerate() {
        if i % 50 == 49 {
            assert_eq!(kind, "story_reaction");
            assert!(chat.is_some() && user.is_some());
        }
    }
    let seen: std::collections::HashSet<&String> = routed.iter().map(|(k, _, _)| k).collect();
    assert!(kinds.iter().all(|k| seen.contains(k)), "every kind appears");
}

#[test]
fn routing_of_malformed_shapes_is_unknown() {
    let unknown = ("unknown".to_owned(), None, None);
    assert_eq!(expected_routing(&json!({"update_id": 1})), unknown);
    let two = json!({"update_id": 1, "message": {"chat": {"id": 5}}, "poll": {}});
    assert_eq!(expected_routing(&two), unknown);
    assert_eq!(expected_routing(&json!([1, 2])), unknown);
    let future = json!({"update_id": 1, "story_reaction": {"chat": {"id": -5}, "user": {"id": 7}}});
    assert_eq!(
        expected_routing(&future),
        ("story_reaction".to_owned(), Some(-5), Some(7))
    );
}

// Webhook delivery.

const SECRET: &str = "s3cr3t";
const SERVICE_UNAVAILABLE: &str = "Wrong response from the webhook: 503 Service Unavailable";

/// How the receiver answers one request: after `hold`, with `status` and maybe `Retry-After`.
#[derive(Debug, Clone, Copy)]
struct Scripted {
    status: u16,
    retry_after: Option<u64>,
    hold: Duration,
}

impl Scripted {
    fn status(status: u16) -> Scripted {
        Scripted {
            status,
            retry_after: None,
            hold: Duration::ZERO,
        }
    }

    fn ok_after(hold: Duration) -> Scripted {
        Scripted {
            hold,
            ..Scripted::status(200)
        }
    }
}

/// The receiver's script: given an update id and how often it came before, the answer.
type Script = dyn Fn(i64, usize) -> Scripted + Send + Sync;

/// One request as the receiver got it.
struct Received {
    body: Vec<u8>,
    update_id: i64,
    chat: Option<i64>,
    secret: Option<String>,
    content_type: String,
}

/// What the receiver saw, including the most requests it had in flight at once.
#[derive(Default)]
struct Log {
    requests: Vec<Received>,
    in_flight: usize,
    max_in_flight: usize,
    per_chat: HashMap<i64, usize>,
    max_per_chat: usize,
}

struct ReceiverState {
    log: Mutex<Log>,
    script: Box<Script>,
}

impl ReceiverState {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A webhook endpoint on 127.0.0.1, standing in for the relay.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    server: JoinHandle<()>,
}

impl Receiver {
    async fn start(script: impl Fn(i64, usize) -> Scripted + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let state = Arc::new(ReceiverState {
            log: Mutex::default(),
            script: Box::new(script),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, state, server }
    }

    fn count(&self) -> usize {
        self.state.log().requests.len()
    }

    /// Update ids in order of arrival, retries included.
    fn ids(&self) -> Vec<i64> {
        self.state
            .log()
            .requests
            .iter()
            .map(|r| r.update_id)
            .collect()
    }

    async fn wait_for_requests(&self, count: usize) {
        while self.count() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Leaves the in-flight counts when the request ends, answered or cut off.
struct InFlight {
    state: Arc<ReceiverState>,
    chat: Option<i64>,
}

impl InFlight {
    fn enter(state: &Arc<ReceiverState>, log: &mut Log, chat: Option<i64>) -> InFlight {
        log.in_flight += 1;
        log.max_in_flight = log.max_in_flight.max(log.in_flight);
        if let Some(chat) = chat {
            let n = log.per_chat.entry(chat).or_default();
            *n += 1;
            log.max_per_chat = log.max_per_chat.max(*n);
        }
        InFlight {
            state: Arc::clone(state),
            chat,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut log = self.state.log();
        log.in_flight -= 1;
        if let Some(n) = self.chat.and_then(|c| log.per_chat.get_mut(&c)) {
            *n -= 1;
        }
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let update: Value = serde_json::from_slice(&body).expect("a webhook body is JSON");
    let update_id = update["update_id"].as_i64().expect("update_id");
    let chat = expected_routing(&update).1;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (answer, _in_flight) = {
        let mut log = state.log();
        let before = log
            .requests
            .iter()
            .filter(|r| r.update_id == update_id)
            .count();
        log.requests.push(Received {
            body: body.to_vec(),
            update_id,
            chat,
            secret: header("x-telegram-bot-api-secret-token"),
            content_type: header("content-type").unwrap_or_default(),
        });
        let in_flight = InFlight::enter(&state, &mut log, chat);
        ((state.script)(update_id, before), in_flight)
    };
    tokio::time::sleep(answer.hold).await;
    let status = axum::http::StatusCode::from_u16(answer.status).expect("status");
    let mut response = (status, "").into_response();
    if let Some(seconds) = answer.retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().expect("header"));
    }
    response
}

/// A fake with fast retries (50 ms doubling up to 500 ms) and a receiver following `script`.
async fn hooked(
    script: impl Fn(i64, usize) -> Scripted + Send + Sync + 'static,
) -> (FakeBotApi, Client, Receiver) {
    let (fake, client) = started().await;
    fake.set_webhook_timing(WebhookTiming {
        answer_timeout: Duration::from_secs(5),
        first_retry: Duration::from_millis(50),
        max_retry: Duration::from_millis(500),
    });
    (fake, client, Receiver::start(script).await)
}

async fn set_webhook(client: &Client, params: Value) {
    let (status, body) = client.call(TOKEN, "setWebhook", params).await;
    assert_eq!((status, body["ok"].clone()), (200, json!(true)), "{body}");
}

/// A URL nothing listens on: the port was free a moment ago.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    format!("http://{addr}/hook")
}

fn in_chat(id: i64, chat: i64) -> Vec<u8> {
    format!(r#"{{"update_id":{id},"message":{{"message_id":{id},"date":1750000000,"chat":{{"id":{chat},"type":"private"}},"text":"hi"}}}}"#)
        .into_bytes()
}

async fn wait_for_deliveries(fake: &FakeBotApi, count: usize) {
    while fake.deliveries(TOKEN).len() < count {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn webhook_delivers_every_update_byte_identical_with_the_secret() {
    let (fake, client, receiver) = hooked(|_, _| Scripted::status(200)).await;
    let corpus = Corpus::load();
    let updates = corpus.mixed(1, 60, 7);
    let mut kinds = corpus.kinds();
    kinds.push("story_reaction".to_owned());
    // Half queued before setWebhook, half pushed while it is set.
    fake.push_updates(TOKEN, updates[..30].to_vec());
    let params = json!({"url": receiver.url, "secret_token": SECRET, "allowed_updates": kinds});
    set_webhook(&client, params).await;
    fake.push_updates(TOKEN, updates[30..].to_vec());

    assert!(
        fake.wait_for_confirmed(TOKEN, 60, Duration::from_secs(20))
            .await
    );
    let mut received: Vec<Vec<u8>> = {
        let log = receiver.state.log();
        for request in &log.requests {
            assert_eq!(request.secret.as_deref(), Some(SECRET));
            assert_eq!(request.content_type, "application/json");
        }
        log.requests.iter().map(|r| r.body.clone()).collect()
    };
    let mut expected = updates;
    received.sort();
    expected.sort();
    assert!(
        received == expected,
        "delivered bytes differ from the pushed ones"
    );
    assert!(fake.pending(TOKEN).is_empty());
    let deliveries = fake.deliveries(TOKEN);
    assert_eq!(deliveries.len(), 60);
    assert!(deliveries.iter().all(|d| d.status == Some(200)));
}

#[tokio::test]
async fn webhook_retries_on_schedule_and_confirms_only_on_a_2xx() {
    let (fake, client, receiver) = hooked(|_, before| match before {
        0 | 1 => Scripted::status(503),
        2 => Scripted {
            retry_after: Some(1),
            ..Scripted::status(503)
        },
        _ => Scripted::ok_after(Duration::from_millis(300)),
    })
    .await;
    fake.push_updates(TOKEN, messages(1..=1));
    set_webhook(&client, json!({"url": receiver.url})).await;

    receiver.wait_for_requests(4).await;
    assert!(
        fake.confirmed(TOKEN).is_empty(),
        "not confirmed before the 2xx"
    );
    assert_eq!(fake.pending(TOKEN), vec![1]);
    assert!(
        fake.wait_for_confirmed(TOKEN, 1, Duration::from_secs(5))
            .await
    );
    let deliveries = fake.deliveries(TOKEN);
    let statuses: Vec<Option<u16>> = deliveries.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(503), Some(200)]);
    let retry_after: Vec<Option<u64>> = deliveries.iter().map(|d| d.retry_after).collect();
    assert_eq!(retry_after, [None, None, Some(1), None]);
    let floors = [50, 100, 1000].map(Duration::from_millis);
    for (pair, floor) in deliveries.windows(2).zip(floors) {
        let waited = pair[1].started - pair[0].finished;
        assert!(
            waited >= floor,
            "waited {waited:?}, expected at least {floor:?}"
        );
    }
    assert_eq!(receiver.ids(), vec![1, 1, 1, 1]);
}

#[tokio::test]
async fn webhook_sends_one_update_per_chat_at_a_time_in_order() {
    // Update 4 fails once: its chat's later updates must wait for its retry.
    let (fake, client, receiver) = hooked(|id, before| {
        if id == 4 && before == 0 {
            Scripted::status(503)
        } else {
            Scripted::ok_after(Duration::from_millis(20))
        }
    })
    .await;
    let updates = (1..=18).map(|id| in_chat(id, 100 + id % 3)).collect();
    fake.push_updates(TOKEN, updates);
    set_webhook(&client, json!({"url": receiver.url})).await;

    assert!(
        fake.wait_for_confirmed(TOKEN, 18, Duration::from_secs(10))
            .await
    );
    let log = receiver.state.log();
    assert_eq!(
        log.max_per_chat, 1,
        "two updates of one chat were in flight"
    );
    for chat in 100..103 {
        let ids: Vec<i64> = log
            .requests
            .iter()
            .filter(|r| r.chat == Some(chat))
            .map(|r| r.update_id)
            .collect();
        assert!(ids.is_sorted(), "chat {chat} got {ids:?}");
    }
    assert_eq!(times_received(&log, 4), 2, "update 4 was retried once");
    let confirmed = fake.confirmed(TOKEN);
    for chat in 100..103 {
        let order: Vec<i64> = confirmed
            .iter()
            .copied()
            .filter(|id| 100 + id % 3 == chat)
            .collect();
        assert!(order.is_sorted(), "chat {chat} confirmed {order:?}");
    }
}

fn times_received(log: &Log, update_id: i64) -> usize {
    log.requests
        .iter()
        .filter(|r| r.update_id == update_id)
        .count()
}

#[tokio::test]
async fn webhook_runs_chats_in_parallel_up_to_max_connections() {
    let (fake, client, receiver) =
        hooked(|_, _| Scripted::ok_after(Duration::from_millis(100))).await;
    fake.push_updates(TOKEN, (1..=12).map(|id| in_chat(id, id)).collect());
    set_webhook(&client, json!({"url": receiver.url, "max_connections": 3})).await;
    assert_eq!(fake.webhook_info(TOKEN)["max_connections"], 3);

    assert!(
        fake.wait_for_confirmed(TOKEN, 12, Duration::from_secs(10))
            .await
    );
    assert_eq!(
        receiver.state.log().max_in_flight,
        3,
        "chats go in parallel, never beyond max_connections"
    );
}

#[tokio::test]
async fn webhook_answer_timeout_is_a_failure() {
    let (fake, client, receiver) = hooked(|_, before| match before {
        0 => Scripted::ok_after(Duration::from_secs(3)),
        _ => Scripted::status(200),
    })
    .await;
    let timeout = Duration::from_millis(300);
    fake.set_webhook_timing(WebhookTiming {
        answer_timeout: timeout,
        first_retry: Duration::from_millis(50),
        max_retry: Duration::from_millis(500),
    });
    fake.push_updates(TOKEN, messages(1..=1));
    set_webhook(&client, json!({"url": receiver.url})).await;

    assert!(
        fake.wait_for_confirmed(TOKEN, 1, Duration::from_secs(5))
            .await
    );
    let deliveries = fake.deliveries(TOKEN);
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].status, None, "no answer in time");
    assert!(deliveries[0].finished - deliveries[0].started >= timeout);
    assert_eq!(deliveries[1].status, Some(200));
    assert_eq!(receiver.ids(), vec![1, 1]);
    let info = fake.webhook_info(TOKEN);
    assert_eq!(info["last_error_message"], "Read timeout expired");
}

#[tokio::test]
async fn webhook_info_reports_pending_updates_and_the_last_error() {
    let (fake, client, receiver) = hooked(|_, _| Scripted::status(503)).await;
    fake.push_updates(TOKEN, messages(1..=3));
    let before = unix_now();
    set_webhook(&client, json!({"url": receiver.url})).await;
    wait_for_deliveries(&fake, 2).await;

    let (_, answer) = client.call(TOKEN, "getWebhookInfo", json!({})).await;
    let info = &answer["result"];
    assert_eq!(*info, fake.webhook_info(TOKEN));
    assert_eq!(info["url"], receiver.url.as_str());
    assert_eq!(info["pending_update_count"], 3);
    assert_eq!(info["max_connections"], 40);
    assert_eq!(info["has_custom_certificate"], false);
    assert_eq!(info["last_error_message"], SERVICE_UNAVAILABLE);
    let date = info["last_error_date"].as_u64().expect("last_error_date");
    assert!((before..=unix_now()).contains(&date));
    assert!(
        receiver.ids().iter().all(|&id| id == 1),
        "one chat: only its first update is tried"
    );

    // A new URL where nothing listens: a connection error, and no status.
    set_webhook(&client, json!({"url": closed_port_url().await})).await;
    let failed = fake.deliveries(TOKEN).len();
    wait_for_deliveries(&fake, failed + 1).await;
    let last = fake.deliveries(TOKEN).pop().expect("a delivery");
    assert_eq!(last.status, None);
    assert_eq!(
        fake.webhook_info(TOKEN)["last_error_message"],
        "Connection refused"
    );
    assert_eq!(fake.webhook_info(TOKEN)["pending_update_count"], 3);
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test]
async fn delete_webhook_stops_delivery_and_keeps_the_queue() {
    let (fake, client, receiver) = hooked(|_, _| Scripted::status(503)).await;
    fake.push_updates(TOKEN, vec![in_chat(1, 10), in_chat(2, 20)]);
    set_webhook(&client, json!({"url": receiver.url})).await;
    wait_for_deliveries(&fake, 4).await;

    let (_, body) = client.call(TOKEN, "deleteWebhook", json!({})).await;
    assert_eq!(body["description"], "Webhook was deleted");
    // A request cut off by the delete may still be on its way.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (seen, recorded) = (receiver.count(), fake.deliveries(TOKEN).len());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), seen, "no request after deleteWebhook");
    assert_eq!(fake.deliveries(TOKEN).len(), recorded);
    assert_eq!(fake.pending(TOKEN), vec![1, 2]);
    let (status, body) = client.get_updates(json!({})).await;
    assert_eq!((status, result_ids(&body)), (200, vec![1, 2]));
}

#[tokio::test]
async fn webhook_leaves_out_kinds_not_allowed() {
    let (fake, client, receiver) = hooked(|_, _| Scripted::status(200)).await;
    let kinds = ["message", "chat_member", "edited_message"];
    fake.push_updates(
        TOKEN,
        (1..).zip(kinds).map(|(id, k)| update_of(k, id)).collect(),
    );
    set_webhook(&client, json!({"url": receiver.url})).await;
    assert!(
        fake.wait_for_confirmed(TOKEN, 2, Duration::from_secs(5))
            .await
    );
    assert_eq!(receiver.ids(), vec![1, 3]);
    assert_eq!(fake.confirmed(TOKEN), vec![1, 3]);
    assert_eq!(fake.forgotten(TOKEN), vec![2]);
}

#[tokio::test]
async fn multipart_set_webhook_with_a_certificate_starts_delivery() {
    let (fake, client, receiver) = hooked(|_, _| Scripted::status(200)).await;
    let certificate = "-----BEGIN CERTIFICATE-----\r\nMIIBfake\r\n-----END CERTIFICATE-----\r\n";
    let boundary = "----tgrelay7d9f";
    let mut body = String::new();
    for (name, value) in [
        ("url", receiver.url.as_str()),
        ("secret_token", SECRET),
        ("max_connections", "5"),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"certificate\"; filename=\"cert.pem\"\r\nContent-Type: application/x-pem-file\r\n\r\n{certificate}\r\n--{boundary}--\r\n"));
    let request = client
        .http
        .post(client.url(TOKEN, "setWebhook"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body);
    let answer = send(request).await.expect("HTTP answer");
    assert_eq!(
        answer.json(),
        json!({"ok": true, "result": true, "description": "Webhook was set"})
    );
    let params = fake.webhook_params(TOKEN);
    assert_eq!(params["url"], receiver.url.as_str());
    assert_eq!(params["secret_token"], SECRET);
    assert_eq!(params["max_connections"], "5");
    let uploaded = format!("<uploaded {} bytes>", certificate.len());
    assert_eq!(params["certificate"], uploaded.as_str());
    let info = fake.webhook_info(TOKEN);
    assert_eq!(info["has_custom_certificate"], true);
    assert_eq!(info["max_connections"], 5);

    fake.push_updates(TOKEN, messages(1..=1));
    assert!(
        fake.wait_for_confirmed(TOKEN, 1, Duration::from_secs(5))
            .await
    );
    let log = receiver.state.log();
    assert_eq!(log.requests[0].secret.as_deref(), Some(SECRET));
}

#[tokio::test]
async fn set_webhook_rejects_a_malformed_secret() {
    let (fake, client) = started().await;
    let params = json!({"url": "http://127.0.0.1:9/hook", "secret_token": "not secret!"});
    let (status, body) = client.call(TOKEN, "setWebhook", params).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["description"],
        "Bad Request: secret token contains unallowed characters"
    );
    assert_eq!(fake.webhook_params(TOKEN), Value::Null);
    assert_eq!(fake.webhook_info(TOKEN)["url"], "");
}

#[tokio::test]
async fn webhook_ip_address_replaces_name_resolution() {
    let (fake, client, receiver) = hooked(|_, _| Scripted::status(200)).await;
    // `.invalid` never resolves: only the given address can reach the receiver.
    let url = receiver.url.replace("127.0.0.1", "relay.invalid");
    let params = json!({"url": url, "ip_address": "127.0.0.1"});
    set_webhook(&client, params).await;
    assert_eq!(fake.webhook_info(TOKEN)["ip_address"], "127.0.0.1");
    fake.push_updates(TOKEN, messages(1..=1));
    assert!(
        fake.wait_for_confirmed(TOKEN, 1, Duration::from_secs(5))
            .await
    );
    assert_eq!(receiver.ids(), vec![1]);
}

#[tokio::test]
async fn only_set_webhook_starts_delivery_and_dropping_the_fake_stops_it() {
    let (fake, client, receiver) = hooked(|_, _| Scripted::status(503)).await;
    fake.push_updates(TOKEN, messages(1..=1));
    fake.set_webhook_url(TOKEN, Some(&receiver.url));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.count(), 0, "a URL set outside gets nothing");

    set_webhook(&client, json!({"url": receiver.url})).await;
    receiver.wait_for_requests(2).await;
    fake.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = receiver.count();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), seen, "no request after the fake is gone");
}
