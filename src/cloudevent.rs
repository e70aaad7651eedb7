//! CloudEvents attributes of the wire contract, in both content modes.
//!
//! Binary mode: the body is Telegram's bytes and the attributes travel as headers
//! (each broker binding names them: `ce-id` on NATS, `ce_id` on Kafka). Structured
//! mode (and the file sink): one JSON object whose `data` member is those bytes.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::envelope::{DeadLetter, Envelope, UpdateKind};

pub const SPEC_VERSION: &str = "1.0";
pub const DATA_CONTENT_TYPE: &str = "application/json";
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// CloudEvents content mode of a message: attributes in headers, or all in the body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvelopeMode {
    #[default]
    Binary,
    Structured,
}

/// A CloudEvents attribute carried in headers, with its name in each binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    SpecVersion,
    Id,
    Source,
    Type,
    Time,
    Subject,
}

impl Attr {
    pub const ALL: [Attr; 6] = [
        Attr::SpecVersion,
        Attr::Id,
        Attr::Source,
        Attr::Type,
        Attr::Time,
        Attr::Subject,
    ];

    /// The attribute's name (structured mode).
    pub fn name(self) -> &'static str {
        self.names().0
    }

    /// Header name in the NATS binding (`ce-id`).
    pub fn nats_header(self) -> &'static str {
        self.names().1
    }

    /// Header name in the Kafka binding (`ce_id`).
    pub fn kafka_header(self) -> &'static str {
        self.names().2
    }

    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Attr::SpecVersion => ("specversion", "ce-specversion", "ce_specversion"),
            Attr::Id => ("id", "ce-id", "ce_id"),
            Attr::Source => ("source", "ce-source", "ce_source"),
            Attr::Type => ("type", "ce-type", "ce_type"),
            Attr::Time => ("time", "ce-time", "ce_time"),
            Attr::Subject => ("subject", "ce-subject", "ce_subject"),
        }
    }
}

/// The attributes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub id: String,
    pub source: Arc<str>,
    pub ty: Cow<'static, str>,
    pub time: Arc<str>,
    /// The chat id, when the update has a chat.
    pub subject: Option<String>,
}

impl Attributes {
    pub fn of(envelope: &Envelope) -> Attributes {
        Attributes {
            id: envelope.id(),
            source: envelope.bot.ce_source(),
            ty: envelope.kind.ce_type(),
            time: rfc3339(envelope.received_at),
            subject: envelope.chat_id.map(|c| c.to_string()),
        }
    }

    /// A dead letter of bytes that are not an update: kind `unknown`, no subject.
    pub fn of_dead_letter(letter: &DeadLetter) -> Attributes {
        Attributes {
            id: format!("{}:{}", letter.bot.id, letter.id),
            source: letter.bot.ce_source(),
            ty: UpdateKind::Unknown.ce_type(),
            time: rfc3339(letter.received_at),
            subject: None,
        }
    }

    /// Every attribute but datacontenttype with its value, for header bindings.
    pub fn pairs(&self) -> impl Iterator<Item = (Attr, &str)> {
        [
            (Attr::SpecVersion, SPEC_VERSION),
            (Attr::Id, self.id.as_str()),
            (Attr::Source, &*self.source),
            (Attr::Type, &*self.ty),
            (Attr::Time, &*self.time),
        ]
        .into_iter()
        .chain(self.subject.as_deref().map(|s| (Attr::Subject, s)))
    }

    /// The structured form: one line of JSON whose `data` is `data`, byte for byte
    /// but for raw line breaks (insignificant whitespace in valid JSON), which become
    /// spaces so the object always fits on one line of a JSON-lines file.
    /// `error` adds the `tgrelayerror` extension attribute (dead letters).
    pub fn structured_json(&self, data: &[u8], error: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 256);
        out.push(b'{');
        for (attr, value) in self.pairs() {
            push_member(&mut out, attr.name(), value);
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

/// RFC 3339 UTC with milliseconds. Every update of a batch shares one receive time,
/// so the last one formatted is kept and reused.
fn rfc3339(at: SystemTime) -> Arc<str> {
    thread_local! {
        static LAST: RefCell<Option<(SystemTime, Arc<str>)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((time, text)) if *time == at => Arc::clone(text),
            _ => {
                let text: Arc<str> = Arc::from(humantime::format_rfc3339_millis(at).to_string());
                *last = Some((at, Arc::clone(&text)));
                text
            }
        }
    })
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
        let bot = Arc::new(BotIdentity::new("main", 123456));
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
        assert_eq!(&*a.source, "/telegram/bot/123456");
        assert_eq!(a.ty, "org.telegram.update.callback_query");
        assert_eq!(&*a.time, "2025-11-13T02:13:20.123Z");
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
