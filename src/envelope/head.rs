//! `UpdateHead`: the routing facts of one update, read in the pass that validates it.
//!
//! Every visitor here accepts *any* JSON value and only extracts a fact when the
//! value has the expected shape. That matters: a syntax error is the only way this
//! parse can fail, so a response's framing is never lost on an odd update, and an
//! update of a shape we did not expect is relayed, not dropped.
//!
//! Where the facts are (one generic rule, so kinds added later work too), inside
//! the update's one optional field:
//! - chat: `chat.id`, else `message.chat.id` (callback_query), else `voter_chat.id`
//!   (poll_answer), else `user_chat_id` (business_connection);
//! - user: `from.id`, else `user.id`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{MalformedUpdate, UpdateKind};

/// The facts of an update that routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateHead {
    pub update_id: i64,
    pub kind: UpdateKind,
    pub chat_id: Option<i64>,
    pub user_id: Option<i64>,
}

impl UpdateHead {
    /// Reads the head of one update given as a whole JSON document (a webhook body).
    pub fn parse(bytes: &[u8]) -> Result<UpdateHead, MalformedUpdate> {
        let not_json = |e: &dyn fmt::Display| MalformedUpdate {
            reason: format!("not valid JSON: {e}"),
        };
        check_text(bytes).map_err(|e| not_json(&e))?;
        let raw: RawHead = serde_json::from_slice(bytes).map_err(|e| not_json(&e))?;
        raw.into_head()
    }
}

/// Checks what JSON requires of its text and serde_json does not check in what it reads
/// as bytes or skips (the keys and ignored values here): UTF-8, and no raw control
/// character inside a string. Relayed bytes must be JSON any consumer can read, and a
/// raw line break in a key would be rewritten by the structured CloudEvent.
pub(crate) fn check_text(json: &[u8]) -> Result<(), &'static str> {
    if std::str::from_utf8(json).is_err() {
        return Err("not UTF-8");
    }
    // Compact JSON, as Telegram sends it, has no control byte at all.
    if !has_control_byte(json) {
        return Ok(());
    }
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if !in_string {
            in_string = b == b'"';
        } else if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            in_string = false;
        } else if b < 0x20 {
            return Err("control character inside a string");
        }
    }
    Ok(())
}

/// Whether any byte is below 0x20; branch-free over 64-byte chunks so it vectorizes.
fn has_control_byte(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(64);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |seen, &b| seen | (b < 0x20)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20)
}

/// What the lenient pass found; [`RawHead::into_head`] decides whether it is an update.
#[derive(Debug, Default)]
pub(crate) struct RawHead {
    is_object: bool,
    update_id: Option<i64>,
    update_id_seen: bool,
    kind: Option<UpdateKind>,
    fields: usize,
    body: Body,
}

impl RawHead {
    pub(crate) fn into_head(self) -> Result<UpdateHead, MalformedUpdate> {
        let malformed = |reason: &str| MalformedUpdate {
            reason: reason.to_owned(),
        };
        if !self.is_object {
            return Err(malformed("an update must be a JSON object"));
        }
        let update_id = match (self.update_id, self.update_id_seen) {
            (Some(id), _) => id,
            (None, true) => return Err(malformed("update_id is not a 64-bit integer")),
            (None, false) => return Err(malformed("update_id is missing")),
        };
        let (kind, body) = match (self.fields, self.kind) {
            (1, Some(kind)) => (kind, self.body),
            _ => (UpdateKind::Unknown, Body::default()),
        };
        Ok(UpdateHead {
            update_id,
            kind,
            chat_id: body
                .chat
                .or(body.message_chat)
                .or(body.voter_chat)
                .or(body.user_chat_id),
            user_id: body.from.or(body.user),
        })
    }
}

/// Fields of the update's optional field that locate its chat and user.
#[derive(Debug, Default)]
struct Body {
    chat: Option<i64>,
    message_chat: Option<i64>,
    voter_chat: Option<i64>,
    user_chat_id: Option<i64>,
    from: Option<i64>,
    user: Option<i64>,
}

/// Implements the visit methods for every non-map, non-integer JSON value as "no facts here".
macro_rules! lenient_other {
    ($out:ty) => {
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$out, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(<$out>::default())
        }
    };
}

/// Implements the visit methods for every non-map JSON value as "no facts here".
macro_rules! lenient_non_map {
    ($out:ty) => {
        lenient_other!($out);
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$out, E> {
            Ok(<$out>::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$out, E> {
            Ok(<$out>::default())
        }
    };
}

impl<'de> Deserialize<'de> for RawHead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HeadVisitor)
    }
}

struct HeadVisitor;

impl<'de> Visitor<'de> for HeadVisitor {
    type Value = RawHead;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Telegram update")
    }

    lenient_non_map!(RawHead);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHead, A::Error> {
        let mut head = RawHead {
            is_object: true,
            ..RawHead::default()
        };
        while let Some(Key(key)) = map.next_key()? {
            if &*key == b"update_id" {
                head.update_id_seen = true;
                head.update_id = map.next_value::<Int>()?.0;
                continue;
            }
            head.fields += 1;
            if head.fields == 1 {
                head.kind = Some(match std::str::from_utf8(&key) {
                    Ok(name) => UpdateKind::from_field(name),
                    Err(_) => UpdateKind::Unknown,
                });
                head.body = map.next_value()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(head)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    lenient_non_map!(Body);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut body = Body::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                b"chat" => body.chat = map.next_value::<IdOf>()?.0,
                b"message" => body.message_chat = map.next_value::<ChatOf>()?.0,
                b"voter_chat" => body.voter_chat = map.next_value::<IdOf>()?.0,
                b"user_chat_id" => body.user_chat_id = map.next_value::<Int>()?.0,
                b"from" => body.from = map.next_value::<IdOf>()?.0,
                b"user" => body.user = map.next_value::<IdOf>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(body)
    }
}

/// Generates a lenient wrapper that looks for one key of an object and reads it as `$inner`.
macro_rules! field_of {
    ($name:ident, $key:literal, $inner:ty) => {
        #[derive(Default)]
        struct $name(Option<i64>);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("any JSON value")
                    }
                    lenient_non_map!($name);
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let mut found = None;
                        while let Some(Key(key)) = map.next_key()? {
                            if &*key == $key {
                                found = map.next_value::<$inner>()?.0;
                            } else {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                        Ok($name(found))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

field_of!(IdOf, b"id", Int);
field_of!(ChatOf, b"chat", IdOf);

/// An integer that fits i64, or nothing (any other value is skipped, never an error).
#[derive(Default)]
struct Int(Option<i64>);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            lenient_other!(Int);
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(Some(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(i64::try_from(v).ok()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Int, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Int(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object key as raw bytes, borrowed from the input unless it had escapes. Keys are
/// compared as bytes: serde_json then skips the UTF-8 check it does for strings, which
/// is most of the cost of reading keys.
struct Key<'de>(Cow<'de, [u8]>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.as_bytes().to_owned())))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests;
