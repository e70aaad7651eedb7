//! Where `UpdateHead` finds its facts, and what it calls malformed.

use super::*;

fn head(json: &str) -> Result<UpdateHead, MalformedUpdate> {
    UpdateHead::parse(json.as_bytes())
}

#[test]
fn facts_are_found_where_the_bot_api_puts_them() {
    let cases: &[(&str, &str, Option<i64>, Option<i64>)] = &[
        (
            r#"{"update_id":1,"message":{"message_id":5,"from":{"id":7},"chat":{"id":-100}}}"#,
            "message",
            Some(-100),
            Some(7),
        ),
        (
            r#"{"update_id":1,"callback_query":{"id":"q","from":{"id":7},"message":{"chat":{"id":42}}}}"#,
            "callback_query",
            Some(42),
            Some(7),
        ),
        (
            r#"{"update_id":1,"message_reaction":{"chat":{"id":3},"user":{"id":9}}}"#,
            "message_reaction",
            Some(3),
            Some(9),
        ),
        (
            r#"{"update_id":1,"poll_answer":{"poll_id":"p","voter_chat":{"id":-5}}}"#,
            "poll_answer",
            Some(-5),
            None,
        ),
        (
            r#"{"update_id":1,"business_connection":{"user":{"id":8},"user_chat_id":8}}"#,
            "business_connection",
            Some(8),
            Some(8),
        ),
        (
            r#"{"update_id":1,"inline_query":{"id":"i","from":{"id":11},"query":""}}"#,
            "inline_query",
            None,
            Some(11),
        ),
        (
            r#"{"update_id":1,"poll":{"id":"p","options":[]}}"#,
            "poll",
            None,
            None,
        ),
        (
            r#"{"update_id":1,"subscription":{"user":{"id":12},"invoice_payload":"p","state":"active"}}"#,
            "subscription",
            None,
            Some(12),
        ),
        (
            r#"{"update_id":1,"stopped_message_generation":{"chat":{"id":13},"message_thread_id":2,"draft_id":4}}"#,
            "stopped_message_generation",
            Some(13),
            None,
        ),
        (
            r#"{"update_id":1,"story_reaction":{"chat":{"id":6}}}"#,
            "story_reaction",
            Some(6),
            None,
        ),
    ];
    for (json, kind, chat, user) in cases {
        let h = head(json).unwrap();
        assert_eq!(
            (h.kind.as_str(), h.chat_id, h.user_id),
            (*kind, *chat, *user),
            "{json}"
        );
    }
}

#[test]
fn zero_or_several_fields_are_unknown() {
    let none = head(r#"{"update_id":3}"#).unwrap();
    assert_eq!((none.kind, none.chat_id), (UpdateKind::Unknown, None));
    let two = head(r#"{"update_id":3,"message":{"chat":{"id":1}},"poll":{}}"#).unwrap();
    assert_eq!((two.kind, two.chat_id), (UpdateKind::Unknown, None));
}

#[test]
fn odd_shapes_are_not_errors() {
    let h =
        head(r#"{"message":{"chat":"x","from":{"id":1.5},"message":[1]},"update_id":9}"#).unwrap();
    assert_eq!((h.update_id, h.chat_id, h.user_id), (9, None, None));
    let escaped = head(r#"{"\u0075pdate_id":4,"mess\u0061ge":{"chat":{"id":2}}}"#).unwrap();
    assert_eq!(
        (escaped.update_id, escaped.kind, escaped.chat_id),
        (4, UpdateKind::Message, Some(2))
    );
    // Numbers past f64's range are JSON; where a fact is read they are just no fact
    // (serde_json's reader refused them, which failed a whole getUpdates reply).
    let huge =
        head(r#"{"update_id":5,"message":{"chat":{"id":1e400},"from":{"id":-1E-400}}}"#).unwrap();
    assert_eq!(
        (huge.update_id, huge.chat_id, huge.user_id),
        (5, None, None)
    );
    assert_eq!(
        head(r#"{"update_id":1e400}"#).unwrap_err().reason,
        "update_id is not a 64-bit integer"
    );
}

#[test]
fn not_an_update_is_malformed_with_a_reason() {
    for (json, reason) in [
        ("[1]", "an update must be a JSON object"),
        (r#"{"message":{}}"#, "update_id is missing"),
        (r#"{"update_id":"1"}"#, "update_id is not a 64-bit integer"),
        (r#"{"update_id":1e3}"#, "update_id is not a 64-bit integer"),
        (
            r#"{"update_id":18446744073709551615}"#,
            "update_id is not a 64-bit integer",
        ),
    ] {
        assert_eq!(head(json).unwrap_err().reason, reason, "{json}");
    }
    assert!(head(r#"{"update_id":1"#)
        .unwrap_err()
        .reason
        .starts_with("not valid JSON"));
    assert!(head(r#"{"update_id":1} x"#)
        .unwrap_err()
        .reason
        .starts_with("not valid JSON"));
}

#[test]
fn text_that_is_not_json_text_is_malformed() {
    let not_json = |bytes: &[u8]| {
        UpdateHead::parse(bytes)
            .unwrap_err()
            .reason
            .starts_with("not valid JSON")
    };
    // Broken UTF-8 in a value the head skips, and a raw line break inside a key.
    assert!(not_json(
        b"{\"update_id\":1,\"message\":{\"text\":\"\xe3\xe3\xb9\"}}"
    ));
    assert!(not_json(
        b"{\"update_id\":1,\"message\":{\"chat\":{\"i\nd\":5}}}"
    ));
    // Far into a long body, where it is read in whole chunks.
    let long = format!(
        "{{\"update_id\":1,\"message\":{{\"text\":\"{}\",\"a\tb\":1,\"chat\":{{\"id\":5}}}}}}",
        "x".repeat(200)
    );
    assert!(not_json(long.as_bytes()));
    // Whitespace between tokens is fine.
    assert!(UpdateHead::parse(b"{\n\t\"update_id\" :\r\n 1}").is_ok());
}
