//! What the relay reads of a call's body, and nothing more (the body goes to Telegram
//! as it came): where the call lands (its chat, the inline message it edits, the
//! business connection it goes through), how many messages Telegram counts for it,
//! and whether it is a paid broadcast.

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::limiter::ChatKey;

/// Telegram's counts: an album of up to 10 items, up to 100 forwarded or copied messages.
const MAX_WEIGHT: u32 = 100;

/// A call's body, as far as the relay reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub chat: Option<ChatKey>,
    pub inline_message: Option<String>,
    pub business_connection: Option<String>,
    /// Messages Telegram counts for it: an album's items, the ids forwarded or copied; 1 else.
    pub weight: u32,
    /// `allow_paid_broadcast: true`.
    pub paid: bool,
}

/// Reads a JSON object body; an error when the body is not an object.
pub fn head(body: &[u8]) -> Result<Head, String> {
    #[derive(Deserialize)]
    struct Raw {
        chat_id: Option<ChatId>,
        inline_message_id: Option<Text>,
        business_connection_id: Option<Text>,
        media: Option<Many>,
        message_ids: Option<Many>,
        allow_paid_broadcast: Option<Flag>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ChatId {
        Id(i64),
        Text(String),
        Other(IgnoredAny),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Other(IgnoredAny),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Many {
        List(Vec<IgnoredAny>),
        Other(IgnoredAny),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Other(IgnoredAny),
    }
    let not_object = || "the body is not a JSON object of the method's parameters".to_owned();
    // serde reads a struct from an array too; the Bot API takes objects only.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(not_object());
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|_| not_object())?;
    let text = |t: Option<Text>| match t {
        Some(Text::Text(t)) if !t.is_empty() => Some(t),
        _ => None,
    };
    let count = |m: &Option<Many>| match m {
        Some(Many::List(items)) => Some(items.len() as u32),
        _ => None,
    };
    let weight = count(&raw.media).or(count(&raw.message_ids)).unwrap_or(1);
    Ok(Head {
        chat: match raw.chat_id {
            Some(ChatId::Id(id)) => Some(ChatKey::Id(id)),
            Some(ChatId::Text(text)) => match text.strip_prefix('@') {
                Some(name) => Some(ChatKey::Username(name.to_ascii_lowercase())),
                None => text.trim().parse().ok().map(ChatKey::Id),
            },
            // Telegram will refuse it; the call still counts against the bot.
            Some(ChatId::Other(_)) | None => None,
        },
        inline_message: text(raw.inline_message_id),
        business_connection: text(raw.business_connection_id),
        weight: weight.clamp(1, MAX_WEIGHT),
        paid: matches!(raw.allow_paid_broadcast, Some(Flag::Bool(true))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn albums_and_batches_count_as_their_messages() {
        let album = head(br#"{"chat_id":1,"media":[{},{},{}]}"#).unwrap();
        assert_eq!(album.weight, 3);
        let ids: Vec<u32> = (0..100).collect();
        let body = serde_json::json!({"chat_id":1,"from_chat_id":2,"message_ids":ids});
        assert_eq!(head(body.to_string().as_bytes()).unwrap().weight, 100);
        assert_eq!(head(br#"{"chat_id":1,"media":"x"}"#).unwrap().weight, 1);
        assert_eq!(head(br#"{"chat_id":1}"#).unwrap().weight, 1);
    }

    #[test]
    fn inline_messages_business_connections_and_paid_broadcasts_are_read() {
        let h = head(br#"{"inline_message_id":"AbC","text":"x"}"#).unwrap();
        assert_eq!((h.chat, h.inline_message.as_deref()), (None, Some("AbC")));
        let h = head(br#"{"business_connection_id":"b1","chat_id":5}"#).unwrap();
        assert_eq!(h.business_connection.as_deref(), Some("b1"));
        assert!(
            head(br#"{"chat_id":5,"allow_paid_broadcast":true}"#)
                .unwrap()
                .paid
        );
        assert!(
            !head(br#"{"chat_id":5,"allow_paid_broadcast":"true"}"#)
                .unwrap()
                .paid
        );
    }
}
