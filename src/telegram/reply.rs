//! Reading Bot API replies, and splitting a getUpdates reply into per-update byte slices.
//!
//! The split walks the reply's framing (`{`, keys, `[`, `,`) by hand. Each update is
//! validated once by the envelope scanner, which reads its routing facts in that same
//! pass and says where it ended, so its bytes are a zero-copy slice of the body:
//! nothing is re-serialized. The other values are validated by the same scanner and
//! then read by serde_json.

use bytes::Bytes;
use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;

use crate::envelope::head::RawHead;
use crate::envelope::scan::{Scanner, SyntaxError};
use crate::envelope::{MalformedUpdate, UpdateHead};

/// One update of a getUpdates reply: its exact bytes and what they say.
#[derive(Debug, Clone)]
pub struct RawUpdate {
    pub bytes: Bytes,
    pub head: Result<UpdateHead, MalformedUpdate>,
}

/// The `ok: false` part of a reply.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct Failure {
    #[serde(default)]
    pub error_code: i64,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameters: Parameters,
}

/// `ResponseParameters`: why a request failed and what to do about it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct Parameters {
    pub migrate_to_chat_id: Option<i64>,
    /// Whole seconds, rounded up; see [`retry_after`].
    #[serde(default, deserialize_with = "retry_after")]
    pub retry_after: Option<u64>,
}

/// `retry_after` is documented as an Integer, but a server in front of the Bot API
/// may write `1.5`: any non-negative number counts, rounded up, so the wait is never
/// shorter than asked. Any other value is no wait at all (not a broken reply): the
/// caller falls back to the `Retry-After` header, then to its default.
fn retry_after<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(value.and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_f64().and_then(seconds_rounded_up))
    }))
}

/// Seconds as a whole number, rounded up; none for a negative or non-finite value.
pub(crate) fn seconds_rounded_up(seconds: f64) -> Option<u64> {
    // `as` saturates: an absurd value waits long, it does not wrap.
    (seconds.is_finite() && seconds >= 0.0).then(|| seconds.ceil() as u64)
}

/// A reply that is not a Bot API reply at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAReply(pub String);

/// Reads a reply of any method but getUpdates.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<Result<T, Failure>, NotAReply> {
    #[derive(Deserialize)]
    struct Reply<T> {
        ok: bool,
        result: Option<T>,
        #[serde(flatten)]
        failure: Failure,
    }
    let reply: Reply<T> =
        serde_json::from_slice(body).map_err(|e| NotAReply(format!("not a Bot API reply: {e}")))?;
    match (reply.ok, reply.result) {
        (true, Some(result)) => Ok(Ok(result)),
        (true, None) => Err(NotAReply("ok without a result".into())),
        (false, _) => Ok(Err(reply.failure)),
    }
}

/// Reads a getUpdates reply: the updates as zero-copy slices of `body`, in order.
pub fn parse_updates(body: &Bytes) -> Result<Result<Vec<RawUpdate>, Failure>, NotAReply> {
    // Like any syntax error, text that is not JSON text (not UTF-8, a raw control
    // character in a string) fails the whole reply: the scanner checks every value.
    let mut s = Scanner::new(body, 0);
    let mut ok = None;
    let mut updates = None;
    let mut failure = Failure::default();
    if s.peek() != Some(b'{') {
        return Err(not_a_reply("expected '{' at byte 0"));
    }
    s.object(0, |s, key, _| {
        match &*key.value() {
            b"ok" => ok = Some(value::<bool>(s)?),
            b"result" => updates = Some(split(s, body)?),
            b"error_code" => failure.error_code = value(s)?,
            b"description" => failure.description = value(s)?,
            b"parameters" => failure.parameters = value(s)?,
            _ => s.skip_value(0)?,
        }
        Ok::<_, NotAReply>(())
    })?;
    s.end()?;
    match (ok, updates) {
        (Some(true), Some(updates)) => Ok(Ok(updates)),
        (Some(false), _) => Ok(Err(failure)),
        _ => Err(NotAReply("not a getUpdates reply: no ok/result".into())),
    }
}

fn not_a_reply(e: impl std::fmt::Display) -> NotAReply {
    NotAReply(format!("not a Bot API reply: {e}"))
}

impl From<SyntaxError> for NotAReply {
    fn from(e: SyntaxError) -> NotAReply {
        not_a_reply(e)
    }
}

/// Validates the value at the cursor, moves past it and deserializes it. Each value
/// counts its nesting from itself, as it would if read alone.
fn value<'a, T: Deserialize<'a>>(s: &mut Scanner<'a>) -> Result<T, NotAReply> {
    s.skip_ws();
    let start = s.pos();
    s.skip_value(0)?;
    serde_json::from_slice(s.slice(start)).map_err(not_a_reply)
}

/// Splits the `result` array into updates, each a slice of `body` read by the head
/// scanner (from depth 0, as a webhook body is).
fn split(s: &mut Scanner<'_>, body: &Bytes) -> Result<Vec<RawUpdate>, NotAReply> {
    if s.peek() != Some(b'[') {
        return Err(not_a_reply(format!("expected '[' at byte {}", s.pos())));
    }
    // getUpdates returns at most 100 updates: one allocation, no regrowth.
    let mut updates = Vec::with_capacity(100);
    s.array(0, |s, _| {
        s.skip_ws();
        let start = s.pos();
        let head = RawHead::scan(s)?;
        updates.push(RawUpdate {
            bytes: body.slice(start..s.pos()),
            head: head.into_head(),
        });
        Ok::<_, NotAReply>(())
    })?;
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(body: &str) -> Vec<RawUpdate> {
        parse_updates(&Bytes::copy_from_slice(body.as_bytes()))
            .expect("a reply")
            .expect("ok")
    }

    #[test]
    fn a_reply_that_is_not_json_text_is_not_a_reply() {
        for body in [
            &b"{\"ok\":true,\"result\":[{\"update_id\":1,\"a\rb\":{}}]}"[..],
            b"{\"ok\":true,\"result\":[{\"update_id\":1,\"message\":{\"text\":\"\xff\"}}]}",
        ] {
            assert!(parse_updates(&Bytes::copy_from_slice(body)).is_err());
        }
    }

    #[test]
    fn updates_are_exact_slices_of_the_body() {
        let a =
            r#"{"update_id":1,"message":{"text":"\u00e9\/ \"x\"","chat":{"id":-5},"n":1.50E+2}}"#;
        let b = "{ \"update_id\" : 2 , \"poll\" : { } }";
        let body = format!("{{\"ok\":true,\"result\":[{a}, \n{b}]}}");
        let updates = split(&body);
        assert_eq!(updates.len(), 2);
        assert_eq!(&updates[0].bytes[..], a.as_bytes());
        assert_eq!(&updates[1].bytes[..], b.as_bytes());
        assert_eq!(updates[0].head.as_ref().unwrap().chat_id, Some(-5));
    }

    #[test]
    fn key_order_and_unknown_keys_do_not_matter() {
        let updates = split(r#"{"result":[{"update_id":7}],"extra":{"a":[1]},"ok":true}"#);
        assert_eq!(updates[0].head.as_ref().unwrap().update_id, 7);
        assert!(split(r#"{"ok":true,"result":[]}"#).is_empty());
    }

    #[test]
    fn a_malformed_update_keeps_its_bytes_and_its_neighbours() {
        let updates =
            split(r#"{"ok":true,"result":[{"update_id":1},{"nope":true},{"update_id":3}]}"#);
        assert_eq!(updates.len(), 3);
        assert_eq!(&updates[1].bytes[..], br#"{"nope":true}"#);
        assert!(updates[1].head.is_err());
        assert_eq!(updates[2].head.as_ref().unwrap().update_id, 3);
    }

    #[test]
    fn failures_carry_their_parameters() {
        let body = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#;
        let failure = parse_updates(&Bytes::from(body)).unwrap().unwrap_err();
        assert_eq!(
            (failure.error_code, failure.parameters.retry_after),
            (429, Some(7))
        );
        let failure = parse::<bool>(body.as_bytes()).unwrap().unwrap_err();
        assert_eq!(failure.description, "Too Many Requests: retry after 7");
    }

    #[test]
    fn retry_after_is_read_in_whole_seconds_rounded_up() {
        let read = |value: &str| {
            let body = format!(
                r#"{{"ok":false,"error_code":429,"parameters":{{"retry_after":{value}}}}}"#
            );
            let failure = parse::<bool>(body.as_bytes()).unwrap().unwrap_err();
            let in_updates = parse_updates(&Bytes::from(body)).unwrap().unwrap_err();
            assert_eq!(failure, in_updates, "{value}");
            failure.parameters.retry_after
        };
        for (value, seconds) in [
            ("7", Some(7)),
            ("1.5", Some(2)),
            ("0.01", Some(1)),
            ("2.0", Some(2)),
            ("3e0", Some(3)),
            ("0", Some(0)),
            ("-1", None),
            ("-0.5", None),
            ("\"5\"", None),
            ("null", None),
            ("{}", None),
            ("1e30", Some(u64::MAX)),
        ] {
            assert_eq!(read(value), seconds, "{value}");
        }
    }

    #[test]
    fn garbage_is_not_a_reply() {
        for body in [
            "<html><body>502 Bad Gateway</body></html>",
            "",
            r#"{"ok":true,"result":[{"update_id":1}"#,
            r#"{"ok":true,"result":[{"update_id":1},]}"#,
            r#"{"ok":true,"result":{}}"#,
            r#"{"ok":true}"#,
            r#"{"ok":true,"result":[]} {}"#,
        ] {
            assert!(parse_updates(&Bytes::from(body)).is_err(), "{body:?}");
        }
    }
}
