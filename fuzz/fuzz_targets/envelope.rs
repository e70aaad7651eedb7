//! Envelope building, from a getUpdates reply (polling) and from one update (webhook).
//!
//! The input is read three ways: as a whole getUpdates reply, as one webhook body, and,
//! when it is one JSON value, as an item framed into a reply between two good updates.
//! Beyond "no panic", what must hold is what the relay promises: an update's bytes are
//! an untouched slice of what Telegram sent, every item of `result` comes out (a bad one
//! as a malformed item, never dropped, never taking its neighbours with it), and the
//! polling split and the webhook read agree on every update.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tgrelay::envelope::{malformed_id, BotIdentity, Envelope, MalformedUpdate, UpdateHead};
use tgrelay::telegram::reply::parse_updates;
use tgrelay::telegram::RawUpdate;

const BOT_ID: u64 = 123_456;
static BOT: LazyLock<Arc<BotIdentity>> =
    LazyLock::new(|| Arc::new(BotIdentity::new("main", BOT_ID)));

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok(Ok(updates)) = parse_updates(&body) {
        check_split(&body, &updates);
        compare_with_serde_json(&body, &updates);
    }
    check_update(&body, UpdateHead::parse(data));
    // One JSON value, strictly valid (surrogate escapes in pairs, say).
    if serde_json::from_slice::<Value>(data).is_ok() {
        check_framed(data);
    }
});

/// Every update is a non-empty slice of the reply itself (zero-copy), in order, and
/// reads the same alone, as a webhook body, as it did inside the reply.
fn check_split(body: &Bytes, updates: &[RawUpdate]) {
    let whole = body.as_ptr_range();
    let mut end = whole.start;
    for update in updates {
        let part = update.bytes.as_ptr_range();
        assert!(!update.bytes.is_empty(), "an empty update");
        assert!(
            part.start >= end && part.end <= whole.end,
            "not an in-order slice of the reply"
        );
        end = part.end;
        assert_eq!(
            UpdateHead::parse(&update.bytes),
            update.head,
            "polling and webhook disagree"
        );
        check_update(&update.bytes, update.head.clone());
    }
}

/// serde_json, reading the same reply its own way, finds as many items, equal ones.
fn compare_with_serde_json(body: &[u8], updates: &[RawUpdate]) {
    assert!(
        std::str::from_utf8(body).is_ok(),
        "a reply that is not UTF-8"
    );
    let reply: Value = match serde_json::from_slice(body) {
        Ok(reply) => reply,
        Err(e) => return assert_tolerated(&e),
    };
    let items = reply["result"].as_array().expect("a result array");
    assert_eq!(items.len(), updates.len(), "items lost or invented");
    for (item, update) in items.iter().zip(updates) {
        let alone: Value = serde_json::from_slice(&update.bytes).expect("an item alone");
        assert_eq!(&alone, item);
    }
}

/// The few ways serde_json's `Value` is stricter than JSON's grammar, where the relay's
/// lenient pass is not: nesting counted from the reply rather than from the update,
/// numbers beyond f64's range, and UTF-16 surrogate escapes without their pair.
fn assert_tolerated(e: &serde_json::Error) {
    let message = e.to_string();
    assert!(
        [
            "recursion limit exceeded",
            "number out of range",
            "lone leading surrogate",
            "unexpected end of hex escape"
        ]
        .iter()
        .any(|m| message.starts_with(m)),
        "accepted what serde_json rejects: {message}"
    );
}

/// One update's bytes and the verdict on them: an envelope that carries exactly those
/// bytes and a usable id, or a malformed item with a reason and a stable dead-letter id.
fn check_update(bytes: &Bytes, head: Result<UpdateHead, MalformedUpdate>) {
    // Whatever is relayed must be text a consumer can decode: JSON is UTF-8.
    if head.is_ok() {
        assert!(
            std::str::from_utf8(bytes).is_ok(),
            "relayed bytes are not UTF-8"
        );
    }
    match Envelope::from_update(&BOT, bytes.clone(), SystemTime::UNIX_EPOCH) {
        Ok(envelope) => {
            let head = head.expect("an envelope for a malformed update");
            assert_eq!(envelope.payload, *bytes);
            assert_eq!(
                envelope.payload.as_ptr(),
                bytes.as_ptr(),
                "the payload was copied"
            );
            assert_eq!(
                (
                    envelope.update_id,
                    &envelope.kind,
                    envelope.chat_id,
                    envelope.user_id
                ),
                (head.update_id, &head.kind, head.chat_id, head.user_id)
            );
            assert!(!envelope.kind.as_str().is_empty());
            assert_eq!(envelope.id(), format!("{BOT_ID}:{}", head.update_id));
            let key = envelope.partition_key();
            let expected = (head.chat_id.or(head.user_id)).map(|id| id.to_string());
            assert_eq!(key, expected.unwrap_or_else(|| envelope.id()));
            // serde_json reads it as JSON too, with the same update_id (both take the
            // last of duplicate keys).
            match serde_json::from_slice::<Value>(bytes) {
                Ok(value) => assert_eq!(value["update_id"].as_i64(), Some(head.update_id)),
                Err(e) => assert_tolerated(&e),
            }
        }
        Err(malformed) => {
            assert_eq!(
                head.as_ref().err(),
                Some(&malformed),
                "two verdicts on the same bytes"
            );
            assert!(!malformed.reason.is_empty());
            let id = malformed_id(bytes);
            assert!(id.starts_with("malformed-") && id.len() == "malformed-".len() + 16);
            if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
                assert_eq!(
                    value.get("update_id").and_then(Value::as_i64),
                    None,
                    "{malformed}"
                );
            }
        }
    }
}

/// Any one JSON value, as an item between two good updates, is exactly one item, with
/// its own bytes, and leaves its neighbours intact.
fn check_framed(item: &[u8]) {
    let mut reply =
        br#"{"ok":true,"result":[{"update_id":1,"message":{"chat":{"id":5}}},"#.to_vec();
    reply.extend_from_slice(item);
    reply.extend_from_slice(br#",{"update_id":2}]}"#);
    let updates = parse_updates(&Bytes::from(reply))
        .expect("a reply")
        .expect("ok");
    assert_eq!(updates.len(), 3, "items lost or invented");
    assert_eq!(
        updates[0].head.as_ref().map(|h| (h.update_id, h.chat_id)),
        Ok((1, Some(5)))
    );
    assert_eq!(updates[2].head.as_ref().map(|h| h.update_id), Ok(2));
    assert_eq!(&updates[1].bytes[..], trim_json_whitespace(item));
    assert_eq!(updates[1].head, UpdateHead::parse(item));
}

fn trim_json_whitespace(bytes: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t');
    let start = bytes.iter().position(|b| !ws(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !ws(b)).map_or(start, |i| i + 1);
    &bytes[start..end]
}
