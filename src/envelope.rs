//! Envelopes: one Telegram update, its routing facts, and Telegram's bytes untouched.
//!
//! An [`Envelope`] never owns a parsed copy of the update: `payload` is a zero-copy
//! slice of the HTTP body Telegram sent, so what a consumer reads is byte-identical
//! to what Telegram wrote. The few facts the relay needs (update id, kind, chat and
//! user ids) are read by [`UpdateHead`] in the same pass that validates the JSON
//! (see [`crate::telegram::reply`] for how a whole getUpdates reply is split).
//! A [`DeadLetter`] carries bytes that are not an update at all.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

pub(crate) mod head;
mod kind;
pub(crate) mod scan;

pub use head::UpdateHead;
pub use kind::UpdateKind;

/// Who an envelope belongs to: the configured bot name and Telegram's bot id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotIdentity {
    /// Configured name (`[bots.<name>]`), used in routing templates as `{bot}`.
    pub name: String,
    /// The number before `:` in the token, used in ids as `{bot_id}`.
    pub id: u64,
    /// CloudEvents `source`, `/telegram/bot/<bot_id>`, made once per bot.
    source: Arc<str>,
}

impl BotIdentity {
    pub fn new(name: impl Into<String>, id: u64) -> BotIdentity {
        BotIdentity {
            name: name.into(),
            id,
            source: Arc::from(format!("/telegram/bot/{id}")),
        }
    }

    /// CloudEvents `source`: `/telegram/bot/<bot_id>`.
    pub fn ce_source(&self) -> Arc<str> {
        Arc::clone(&self.source)
    }
}

/// One update, ready for a sink.
#[derive(Clone)]
pub struct Envelope {
    pub bot: Arc<BotIdentity>,
    pub update_id: i64,
    pub kind: UpdateKind,
    /// The chat the update happened in, when it has one (CloudEvents `subject`).
    pub chat_id: Option<i64>,
    /// The user who caused the update, when known.
    pub user_id: Option<i64>,
    pub received_at: SystemTime,
    /// Telegram's bytes for this one update, exactly as sent.
    pub payload: Bytes,
}

impl Envelope {
    /// Builds an envelope from one update's raw bytes, or says why they are not an update.
    pub fn from_update(
        bot: &Arc<BotIdentity>,
        payload: Bytes,
        received_at: SystemTime,
    ) -> Result<Self, MalformedUpdate> {
        let head = UpdateHead::parse(&payload)?;
        Ok(Self::from_head(bot, head, payload, received_at))
    }

    /// Builds an envelope from a head already read (the getUpdates split reads heads
    /// in its validating pass).
    pub fn from_head(
        bot: &Arc<BotIdentity>,
        head: UpdateHead,
        payload: Bytes,
        received_at: SystemTime,
    ) -> Self {
        Envelope {
            bot: Arc::clone(bot),
            update_id: head.update_id,
            kind: head.kind,
            chat_id: head.chat_id,
            user_id: head.user_id,
            received_at,
            payload,
        }
    }

    /// `<bot_id>:<update_id>`: the same for every publish of this update, so consumers
    /// (and JetStream's `Nats-Msg-Id`) deduplicate on it.
    pub fn id(&self) -> String {
        format!("{}:{}", self.bot.id, self.update_id)
    }

    /// Kafka message key: chat id, else user id, else [`Envelope::id`], so one chat's
    /// updates share a partition and keep their order.
    pub fn partition_key(&self) -> String {
        match (self.chat_id, self.user_id) {
            (Some(chat), _) => chat.to_string(),
            (None, Some(user)) => user.to_string(),
            (None, None) => self.id(),
        }
    }
}

impl fmt::Debug for Envelope {
    // Never prints the payload: it is user content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("bot", &self.bot.name)
            .field("update_id", &self.update_id)
            .field("kind", &self.kind)
            .field("chat_id", &self.chat_id)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

/// Bytes that can never be an update of any route (not an object, no `update_id`):
/// they go to the dead-letter route with the reason, so nothing is dropped silently.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub bot: Arc<BotIdentity>,
    /// Stable id for the bytes (see `envelope::malformed_id`).
    pub id: String,
    pub reason: String,
    pub payload: Bytes,
    pub received_at: SystemTime,
}

/// Bytes that are valid JSON but not an update (no integer `update_id`, not an object).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed update: {reason}")]
pub struct MalformedUpdate {
    pub reason: String,
}

/// A stable identifier for bytes that carry no usable `update_id` (dead-letter id).
pub fn malformed_id(payload: &[u8]) -> String {
    // FNV-1a: stable across runs and processes, so a re-sent malformed update dedups.
    let hash = payload.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("malformed-{hash:016x}")
}
