//! CloudEvents attributes of the wire contract, in both content modes.
//!
//! Binary mode: the body is Telegram's bytes and the attributes travel as headers
//! (each broker binding names them: `ce-id` on NATS, `ce_id` on Kafka). Structured
//! mode (and the file sink): one JSON object whose `data` member is those bytes.

use std::time::SystemTime;

use crate::envelope::{Envelope, UpdateKind};
use crate::sink::DeadLetter;

pub const SPEC_VERSION: &str = "1.0";
pub const DATA_CONTENT_TYPE: &str = "application/json";
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// The attributes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub id: String,
    pub source: String,
    pub ty: String,
    pub time: String,
    /// The chat id, when the update has a chat.
    pub subject: Option<String>,
}

impl Attributes {
    pub fn of(envelope: &Envelope) -> Attributes {
        Self::build(
            envelope.id(),
            envelope.bot.id,
            &envelope.kind,
            envelope.received_at,
            envelope.chat_id,
        )
    }

    /// A dead letter of bytes that are not an update: kind `unknown`, no subject.
    pub fn of_dead_letter(letter: &DeadLetter) -> Attributes {
        Self::build(
            format!("{}:{}", letter.bot.id, letter.id),
            letter.bot.id,
            &UpdateKind::Unknown,
            letter.received_at,
            None,
        )
    }

    fn build(
        id: String,
        bot_id: u64,
        kind: &UpdateKind,
        at: SystemTime,
        chat: Option<i64>,
    ) -> Attributes {
        Attributes {
            id,
            source: format!("/telegram/bot/{bot_id}"),
            ty: format!("org.telegram.update.{kind}"),
            time: humantime::format_rfc3339_millis(at).to_string(),
            subject: chat.map(|c| c.to_string()),
        }
    }

    /// `(name, value)` of every attribute but datacontenttype, for header bindings.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("specversion", SPEC_VERSION),
            ("id", self.id.as_str()),
            ("source", self.source.as_str()),
            ("type", self.ty.as_str()),
            ("time", self.time.as_str()),
        ]
        .into_iter()
        .chain(self.subject.as_deref().map(|s| ("subject", s)))
    }

    /// The structured form: one line of JSON whose `data` is `data`, byte for byte
    /// but for raw line breaks (insignificant whitespace in valid JSON), which become
    /// spaces so the object always fits on one line of a JSON-lines file.
    /// `error` adds the `tgrelayerror` extension attribute (dead letters).
    pub fn structured_json(&self, data: &[u8], error: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 256);
        out.push(b'{');
        for (name, value) in self.pairs() {
            push_member(&mut out, name, value);
        }
        if let Some(error) = error {
            push_member(&mut out, "tgrelayerror", error);
        }
        push_member(&mut out, "datacontenttype", DATA_CONTENT_TYPE);
        out.extend_from_slice(b"\"data\":");
        let start = out.len();
        out.extend_from_slice(data);
        for b in &mut out[start..] {
            if matches!(*b, b'\n' | b'\r') {
                *b = b' ';
            }
        }
        out.push(b'}');
        out
    }
}

fn push_member(out: &mut Vec<u8>, name: &str, value: &str) {
    // Writing JSON into a Vec cannot fail.
    serde_json::to_writer(&mut *out, name).expect("JSON into memory");
    out.push(b':');
    serde_json::to_writer(&mut *out, value).expect("JSON into memory");
    out.push(b',');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use super::*;
    use crate::envelope::BotIdentity;

    fn envelope(json: &'static str) -> Envelope {
        let bot = Arc::new(BotIdentity {
            name: "main".into(),
            id: 123456,
        });
        let at = UNIX_EPOCH + Duration::from_millis(1_763_000_000_123);
        Envelope::from_update(&bot, Bytes::from_static(json.as_bytes()), at).unwrap()
    }

    #[test]
    fn attributes_follow_the_contract() {
        let e = envelope(
            r#"{"update_id":900001,"callback_query":{"from":{"id":7},"message":{"chat":{"id":-42}}}}"#,
        );
        let a = Attributes::of(&e);
        assert_eq!(a.id, "123456:900001");
        assert_eq!(a.source, "/telegram/bot/123456");
        assert_eq!(a.ty, "org.telegram.update.callback_query");
        assert_eq!(a.time, "2025-11-13T02:13:20.123Z");
        assert_eq!(a.subject.as_deref(), Some("-42"));
    }

    #[test]
    fn structured_json_carries_the_bytes_as_data() {
        let raw = "{\"update_id\":1,\n\"poll\":{\"q\":\"\\u00e9\"}}";
        let e = envelope(raw);
        let json = Attributes::of(&e).structured_json(&e.payload, None);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(!text.contains('\n'));
        assert!(
            text.ends_with(",\"data\":{\"update_id\":1, \"poll\":{\"q\":\"\\u00e9\"}}}"),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "org.telegram.update.poll");
        assert!(v.get("subject").is_none());
    }
}
