//! `UpdateHead`: the routing facts of one update, read in the pass that validates it.
//!
//! Every reader here accepts *any* JSON value and only extracts a fact when the
//! value has the expected shape. That matters: a syntax error is the only way this
//! parse can fail, so a response's framing is never lost on an odd update, and an
//! update of a shape we did not expect is relayed, not dropped.
//!
//! Where the facts are (one generic rule, so a kind needs no entry here: kinds added
//! later work too), inside the update's one optional field:
//! - chat: `chat.id` (messages, reactions, members, boosts, `stopped_message_generation`
//!   of Bot API 10.3, ...), else `message.chat.id` (callback_query), else
//!   `voter_chat.id` (poll_answer), else `user_chat_id` (business_connection);
//! - user: `from.id`, else `user.id` (`subscription` of Bot API 10.2 has no chat, so
//!   its user keys it).

use super::scan::{Scanner, SyntaxError};
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
        let not_json = |e: SyntaxError| MalformedUpdate {
            reason: format!("not valid JSON: {e}"),
        };
        let mut scanner = Scanner::new(bytes, 0);
        let raw = RawHead::scan(&mut scanner).map_err(not_json)?;
        scanner.end().map_err(not_json)?;
        raw.into_head()
    }
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
    /// Validates the value at the cursor and reads its facts. Any value passes that is
    /// JSON: an update of a shape we did not expect is relayed (or dead-lettered by
    /// `into_head`), so a syntax error is the only way this fails. The last of
    /// repeated keys wins, as with serde.
    pub(crate) fn scan(s: &mut Scanner<'_>) -> Result<RawHead, SyntaxError> {
        let mut head = RawHead::default();
        head.is_object = s.object_or_skip(0, |s, key, depth| {
            let key = key.value();
            if &*key == b"update_id" {
                head.update_id_seen = true;
                head.update_id = int(s, depth)?;
                return Ok(());
            }
            head.fields += 1;
            if head.fields > 1 {
                return s.skip_value(depth);
            }
            head.kind = Some(match std::str::from_utf8(&key) {
                Ok(name) => UpdateKind::from_field(name),
                Err(_) => UpdateKind::Unknown,
            });
            head.body = Body::scan(s, depth)?;
            Ok::<_, SyntaxError>(())
        })?;
        Ok(head)
    }

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

impl Body {
    /// The facts of any value: none unless it is an object.
    fn scan(s: &mut Scanner<'_>, depth: usize) -> Result<Body, SyntaxError> {
        let mut body = Body::default();
        s.object_or_skip(depth, |s, key, depth| {
            match &*key.value() {
                b"chat" => body.chat = id_of(s, depth)?,
                b"message" => body.message_chat = chat_of(s, depth)?,
                b"voter_chat" => body.voter_chat = id_of(s, depth)?,
                b"user_chat_id" => body.user_chat_id = int(s, depth)?,
                b"from" => body.from = id_of(s, depth)?,
                b"user" => body.user = id_of(s, depth)?,
                _ => s.skip_value(depth)?,
            }
            Ok::<_, SyntaxError>(())
        })?;
        Ok(body)
    }
}

/// The value of `key` in an object, read by `read`; none for any other value.
fn field(
    s: &mut Scanner<'_>,
    depth: usize,
    key: &[u8],
    read: fn(&mut Scanner<'_>, usize) -> Result<Option<i64>, SyntaxError>,
) -> Result<Option<i64>, SyntaxError> {
    let mut found = None;
    s.object_or_skip(depth, |s, k, depth| {
        if *k.value() == *key {
            found = read(s, depth)?;
            Ok(())
        } else {
            s.skip_value(depth)
        }
    })?;
    Ok(found)
}

/// `<value>.id`
fn id_of(s: &mut Scanner<'_>, depth: usize) -> Result<Option<i64>, SyntaxError> {
    field(s, depth, b"id", int)
}

/// `<value>.chat.id`
fn chat_of(s: &mut Scanner<'_>, depth: usize) -> Result<Option<i64>, SyntaxError> {
    field(s, depth, b"chat", id_of)
}

/// An integer that fits i64, or nothing (any other value is skipped, never an error).
fn int(s: &mut Scanner<'_>, depth: usize) -> Result<Option<i64>, SyntaxError> {
    match s.peek() {
        Some(b'-' | b'0'..=b'9') => s.number(),
        _ => s.skip_value(depth).map(|()| None),
    }
}

#[cfg(test)]
mod tests;
