//! The request journal, on the same stand-ins: what an earlier owner left there is
//! answered from it and never sent again, every call is claimed before it is sent and
//! answered after, and nothing is sent while the journal cannot be written.

use std::sync::atomic::Ordering;

use super::*;
use crate::outbound::answer::{Answered, Outcome};
use crate::outbound::journal::{Found, State};
use crate::outbound::recent::fingerprint;

fn message(chat: i64, text: &str) -> Value {
    serde_json::json!({"chat_id": chat, "text": text})
}

fn left(h: &Harness, key: &str, body: &Value, state: State) {
    let found = Found {
        fingerprint: fingerprint("sendMessage", body.to_string().as_bytes()),
        state,
    };
    h.journal
        .entries
        .lock()
        .unwrap()
        .insert(key.to_owned(), found);
}

#[tokio::test]
async fn a_call_its_earlier_owner_left_started_is_answered_unknown_and_never_sent() {
    let mut h = Harness::start(fast()).await;
    let (once, retried) = (message(1, "once"), message(2, "retried"));
    left(&h, "id:a", &once, State::Started);
    left(&h, "id:b", &retried, State::Started);
    h.publish("sendMessage", once, Some("a")).await;
    let allowed = crate::outbound::call::Options {
        allow_retry: Some("true".into()),
        ..Default::default()
    };
    h.publish_with("sendMessage", retried, Some("b"), allowed)
        .await;
    let results = h.results(2).await;
    let calls = h.telegram.calls.lock().unwrap().clone();
    h.stop().await;
    assert_eq!(
        calls,
        ["2:retried"],
        "only the call allowed to repeat is sent"
    );
    let outcome = |id: &str| {
        let r = results
            .iter()
            .find(|r| header(r, "tg-request-id") == Some(id))
            .unwrap();
        header(r, "tg-outcome").unwrap().to_owned()
    };
    assert_eq!(outcome("a"), "unknown");
    assert_eq!(outcome("b"), "ok");
}

#[tokio::test]
async fn a_call_its_earlier_owner_answered_gets_that_answer_and_a_reused_id_is_refused() {
    let mut h = Harness::start(fast()).await;
    let first = message(1, "first");
    let answered = Answered {
        body: Bytes::from_static(br#"{"ok":true,"result":{"message_id":7}}"#),
        relay_error: None,
        outcome: Outcome::Ok,
    };
    left(&h, "id:a", &first, State::Answered(answered.clone()));
    h.publish("sendMessage", first, Some("a")).await;
    h.publish("sendMessage", message(1, "another"), Some("a"))
        .await;
    let results = h.results(2).await;
    let calls = h.telegram.calls.lock().unwrap().clone();
    h.stop().await;
    assert!(calls.is_empty(), "nothing sent: {calls:?}");
    let mut outcomes: Vec<_> = results
        .iter()
        .map(|r| (header(r, "tg-outcome").unwrap(), r.body.clone()))
        .collect();
    outcomes.sort();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0], ("ok", answered.body));
    assert_eq!(outcomes[1].0, "refused");
}

#[tokio::test]
async fn every_call_sent_is_journaled_with_its_final_answer_and_nothing_else_is() {
    let mut h = Harness::start(fast()).await;
    h.publish("sendMessage", message(1, "with id"), Some("x"))
        .await;
    h.publish("sendMessage", message(2, "without"), None).await;
    h.publish(
        "deleteStickerSet",
        serde_json::json!({"name": "s"}),
        Some("refused"),
    )
    .await;
    h.results(3).await;
    let journal = Arc::clone(&h.journal);
    h.stop().await;
    let entries = journal.entries.lock().unwrap().clone();
    let mut keys: Vec<_> = entries.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["ce:1:2", "id:x"], "the refused call is not kept");
    for found in entries.values() {
        assert!(
            matches!(&found.state, State::Answered(a) if a.outcome == Outcome::Ok),
            "{found:?}"
        );
    }
}

#[tokio::test]
async fn nothing_is_sent_while_the_journal_cannot_be_written() {
    let mut h = Harness::start_custom(fast(), |s| s.max_attempts = 100).await;
    h.journal.down.store(true, Ordering::SeqCst);
    h.publish("sendMessage", message(1, "held"), Some("h"))
        .await;
    // Several claims fail meanwhile (the first retry is within a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(h.telegram.calls.lock().unwrap().is_empty());
    assert!(h.memory.results.lock().unwrap().is_empty());
    h.journal.down.store(false, Ordering::SeqCst);
    let results = h.results(1).await;
    let calls = h.telegram.calls.lock().unwrap().clone();
    h.stop().await;
    assert_eq!(calls, ["1:held"]);
    assert_eq!(header(&results[0], "tg-outcome"), Some("ok"));
}

#[tokio::test]
async fn a_call_given_back_unsent_is_cleared_from_the_journal_for_its_next_owner() {
    // A 429 for its chat holds the call; the stop gives it back.
    let mut h = Harness::start(fast()).await;
    h.publish("sendMessage", message(4, "flood"), Some("f"))
        .await;
    while h.telegram.calls.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let journal = Arc::clone(&h.journal);
    let log = h.stop().await;
    assert_eq!(log, ["release 1"]);
    assert!(journal.entries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_call_whose_journal_stays_away_is_answered_not_sent() {
    let mut h = Harness::start_custom(fast(), |s| s.max_attempts = 2).await;
    h.journal.down.store(true, Ordering::SeqCst);
    h.publish("sendMessage", message(1, "never"), Some("n"))
        .await;
    let results = h.results(1).await;
    let calls = h.telegram.calls.lock().unwrap().clone();
    h.stop().await;
    assert!(calls.is_empty(), "not sent: {calls:?}");
    assert_eq!(header(&results[0], "tg-outcome"), Some("not_sent"));
    let body: Value = serde_json::from_slice(&results[0].body).unwrap();
    assert_eq!(body["error_code"], 503, "{body}");
}
