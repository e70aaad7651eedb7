//! The fake Bot API's sending side behaves as the Bot API documents it, so that the
//! gateway's tests can trust it: messages get ids growing per chat, edits and deletes
//! need a message that exists, and a call over a flood limit is answered 429 with a
//! `retry_after` that is enough.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::fake_bot_api::{FakeBotApi, FloodLimits};
use support::relay::token;

async fn call(api: &FakeBotApi, token: &str, method: &str, params: Value) -> (u16, Value) {
    let url = format!("{}/bot{token}/{method}", api.base_url());
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(params.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn messages_get_ids_per_chat_and_edits_and_deletes_need_one() {
    let api = FakeBotApi::start().await;
    let token = token(7001);
    api.add_bot(&token);
    api.sends().set_limits(FloodLimits {
        bot_per_second: 1000,
        chat_per_second: 1000,
        group_per_minute: 1000,
    });
    let mut ids = Vec::new();
    for chat in [5, 5, -9, 5] {
        let (status, body) = call(
            &api,
            &token,
            "sendMessage",
            json!({"chat_id": chat, "text": "hi"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["chat"]["id"], chat);
        assert_eq!(body["result"]["text"], "hi");
        ids.push(body["result"]["message_id"].as_i64().unwrap());
    }
    assert_eq!(ids, [1, 2, 1, 3]);
    let (status, body) = call(
        &api,
        &token,
        "sendMessage",
        json!({"chat_id": "-9", "text": ""}),
    )
    .await;
    assert_eq!(
        (status, body["description"].as_str()),
        (400, Some("Bad Request: message text is empty"))
    );

    let (status, _) = call(
        &api,
        &token,
        "editMessageText",
        json!({"chat_id": 5, "message_id": 2, "text": "new"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &api,
        &token,
        "deleteMessage",
        json!({"chat_id": 5, "message_id": 2}),
    )
    .await;
    assert_eq!((status, &body["result"]), (200, &json!(true)));
    let (status, body) = call(
        &api,
        &token,
        "deleteMessage",
        json!({"chat_id": 5, "message_id": 2}),
    )
    .await;
    assert_eq!((status, body["error_code"].as_i64()), (400, Some(400)));
    let (status, _) = call(
        &api,
        &token,
        "answerCallbackQuery",
        json!({"callback_query_id": "q"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&api, &token, "sendSomethingElse", json!({"chat_id": 5})).await;
    assert_eq!(status, 404);
    assert_eq!(
        api.sends().sent(&token).len(),
        9,
        "every send-side call is recorded"
    );
}

#[tokio::test]
async fn a_call_over_a_limit_gets_a_429_that_waits_long_enough() {
    let api = FakeBotApi::start().await;
    let token = token(7002);
    api.add_bot(&token);
    // One per second in a chat (the default): the second at once is refused.
    let (status, _) = call(
        &api,
        &token,
        "sendMessage",
        json!({"chat_id": 1, "text": "a"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &api,
        &token,
        "sendMessage",
        json!({"chat_id": 1, "text": "b"}),
    )
    .await;
    assert_eq!(status, 429);
    let wait = body["parameters"]["retry_after"].as_u64().unwrap();
    assert_eq!(wait, 1);
    // Another chat is not limited by it; a chat action is not a message.
    let (status, _) = call(
        &api,
        &token,
        "sendMessage",
        json!({"chat_id": 2, "text": "c"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &api,
        &token,
        "sendChatAction",
        json!({"chat_id": 1, "action": "typing"}),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, _) = call(
        &api,
        &token,
        "sendMessage",
        json!({"chat_id": 1, "text": "b"}),
    )
    .await;
    assert_eq!(
        status, 200,
        "after retry_after the chat takes a message again"
    );
    let refused = api.sends().flood_refusals(&token);
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].flood, refused[0].chat.as_deref()),
        (Some("chat"), Some("1"))
    );
}

#[tokio::test]
async fn a_group_takes_its_window_and_the_bot_its_second() {
    let api = FakeBotApi::start().await;
    let token = token(7003);
    api.add_bot(&token);
    api.sends().set_limits(FloodLimits {
        bot_per_second: 5,
        chat_per_second: 100,
        group_per_minute: 3,
    });
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            call(
                &api,
                &token,
                "sendMessage",
                json!({"chat_id": "@news", "text": "x"}),
            )
            .await
            .0,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let (_, body) = call(
        &api,
        &token,
        "sendMessage",
        json!({"chat_id": "@news", "text": "x"}),
    )
    .await;
    assert!(
        body["parameters"]["retry_after"].as_u64().unwrap() >= 59,
        "{body}"
    );
    // The bot had 3 calls in this second: 2 more, then refused (refusals do not count).
    let mut statuses = Vec::new();
    for chat in 10..13 {
        statuses.push(
            call(
                &api,
                &token,
                "sendMessage",
                json!({"chat_id": chat, "text": "x"}),
            )
            .await
            .0,
        );
    }
    assert_eq!(statuses, [200, 200, 429]);
    let floods: Vec<&str> = api
        .sends()
        .flood_refusals(&token)
        .iter()
        .filter_map(|s| s.flood)
        .collect();
    assert_eq!(floods, ["group", "group", "bot"]);
}

#[tokio::test]
async fn an_injected_429_hits_its_chat_once() {
    let api = FakeBotApi::start().await;
    let token = token(7004);
    api.add_bot(&token);
    api.sends().inject_429(&token, "42", 3);
    let (status, body) = call(
        &api,
        &token,
        "sendMessage",
        json!({"chat_id": 42, "text": "x"}),
    )
    .await;
    assert_eq!(
        (status, body["parameters"]["retry_after"].as_u64()),
        (429, Some(3))
    );
    let (status, _) = call(
        &api,
        &token,
        "sendMessage",
        json!({"chat_id": 43, "text": "x"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        api.sends().flood_refusals(&token).is_empty(),
        "an injected 429 is no limit exceeded"
    );
}
