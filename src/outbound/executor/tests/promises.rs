//! The executor's newer promises, on the same stand-ins: a call that may have
//! reached Telegram is never sent again unless allowed, a stop waits for calls with
//! Telegram, interactive calls overtake bulk ones, and one chat cannot fill the queue.

use super::*;

#[tokio::test]
async fn a_message_that_may_have_reached_telegram_is_never_sent_again_unless_allowed() {
    let second = Duration::from_secs(1);
    let mut h = Harness::start_with(fast(), second, second).await;
    let late = |chat: i64| serde_json::json!({"chat_id": chat, "text": "late"});
    h.publish("sendMessage", late(1), Some("once")).await;
    let allowed = crate::outbound::call::Options {
        allow_retry: Some("true".into()),
        ..Default::default()
    };
    h.publish_with("sendMessage", late(2), Some("retried"), allowed)
        .await;
    let results = h.results(2).await;
    let calls = h.telegram.calls.lock().unwrap().clone();
    h.stop().await;
    assert_eq!(results.len(), 2, "one result per call");
    let sent_to = |chat: &str| calls.iter().filter(|c| c.starts_with(chat)).count();
    assert_eq!(sent_to("1:"), 1, "never sent again on the relay's own");
    assert_eq!(sent_to("2:"), 3, "sent again when the caller allowed it");
    for result in &results {
        let body: Value = serde_json::from_slice(&result.body).unwrap();
        assert_eq!(body["error_code"], 520, "{body}");
        assert_eq!(header(result, "tg-outcome"), Some("unknown"));
    }
}

#[tokio::test]
async fn a_stop_waits_for_a_call_with_telegram_past_the_drain_timeout() {
    // Answered after 2.5 s: inside call_timeout, past drain_timeout.
    let mut h = Harness::start_with(fast(), Duration::from_secs(4), Duration::from_secs(1)).await;
    h.publish(
        "sendMessage",
        serde_json::json!({"chat_id": 3, "text": "late"}),
        None,
    )
    .await;
    while h.telegram.calls.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let memory = Arc::clone(&h.memory);
    let log = h.stop().await;
    assert_eq!(log, ["ack 1"], "answered and acknowledged, not handed over");
    let results = memory.results.lock().unwrap().clone();
    assert_eq!(results.len(), 1);
    assert_eq!(header(&results[0], "tg-outcome"), Some("ok"));
}

#[tokio::test]
async fn an_interactive_call_overtakes_bulk_ones_and_one_chat_cannot_fill_the_queue() {
    // Five calls a second: the bulk calls queue for the bot's turns.
    let mut h = Harness::start_custom(Limits::new(5.0, 100.0, 6000.0), |s| {
        s.max_pending_per_chat = 3;
        s.allow.push("answer*".into());
    })
    .await;
    for chat in 1..=6 {
        h.publish(
            "sendMessage",
            serde_json::json!({"chat_id": chat, "text": "bulk"}),
            None,
        )
        .await;
    }
    for _ in 0..4 {
        h.publish(
            "sendMessage",
            serde_json::json!({"chat_id": -9, "text": "busy"}),
            None,
        )
        .await;
    }
    h.publish(
        "answerCallbackQuery",
        serde_json::json!({"callback_query_id": "q"}),
        None,
    )
    .await;
    let results = h.results(11).await;
    let calls = h.telegram.calls.lock().unwrap().clone();
    h.stop().await;
    let answered_at = calls
        .iter()
        .position(|c| c.ends_with("answerCallbackQuery"));
    assert!(answered_at.is_some_and(|i| i <= 2), "{calls:?}");
    let full: Vec<&Reply> = results
        .iter()
        .filter(|r| header(r, "tg-outcome") == Some("not_sent"))
        .collect();
    assert_eq!(full.len(), 1, "the fourth call of chat -9");
    assert_eq!(calls.iter().filter(|c| c.starts_with("-9:")).count(), 3);
}
