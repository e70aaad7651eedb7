//! The answer a call gets, and what became of it (its `tg-outcome`): Telegram's own
//! answer, or one the relay makes in the same shape (a refusal, an unknown outcome,
//! an expired deadline, a wait longer than allowed).

use std::time::Duration;

use bytes::Bytes;

use super::options::ALLOW_RETRY;

/// What became of a call, as its result's `tg-outcome` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Telegram answered `ok: true`.
    Ok,
    /// Telegram answered an error: the call was not done.
    Error,
    /// The relay refused the call; it never reached Telegram.
    Refused,
    /// Not sent, and the caller may send it again: no attempt could reach Telegram,
    /// Telegram asked to wait longer than allowed, or the chat had too many calls waiting.
    NotSent,
    /// An attempt may have reached Telegram and no answer said what became of it;
    /// the relay does not send it again (unless the caller allowed it).
    Unknown,
    /// Its `tg-deadline` passed before it could be sent; it was not sent.
    Expired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
            Outcome::NotSent => "not_sent",
            Outcome::Unknown => "unknown",
            Outcome::Expired => "expired",
        }
    }

    /// The outcome `as_str` named.
    pub fn parse(name: &str) -> Option<Outcome> {
        [
            Outcome::Ok,
            Outcome::Error,
            Outcome::Refused,
            Outcome::NotSent,
            Outcome::Unknown,
            Outcome::Expired,
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
    }

    /// Whether a call repeated with the same id gets this answer again instead of
    /// being run: Telegram's answers, and an unknown outcome (running it again could
    /// send it twice). Refusals and give-ups are not final: a repeat may succeed.
    pub fn is_final(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Error | Outcome::Unknown)
    }
}

/// The `error_code` of a result whose outcome is unknown: no HTTP status Telegram
/// answers with, so a service can tell it from any of Telegram's answers.
pub const UNKNOWN_CODE: u16 = 520;

/// The answer a call gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub body: Bytes,
    /// Set when the relay made the answer (a refusal, a give-up).
    pub relay_error: Option<String>,
    pub outcome: Outcome,
}

impl Answered {
    /// A refusal: the call never reached Telegram.
    pub fn refused(why: &str) -> Answered {
        Answered {
            body: relay_answer(400, &format!("Bad Request: {why}")),
            relay_error: Some(why.to_owned()),
            outcome: Outcome::Refused,
        }
    }

    /// Its deadline passed before it could be sent.
    pub fn expired() -> Answered {
        let why = "tg-deadline passed before the call could be sent; it was not sent";
        Answered {
            body: relay_answer(408, &format!("Request Timeout: {why}")),
            relay_error: Some(why.to_owned()),
            outcome: Outcome::Expired,
        }
    }

    /// Telegram asked to wait longer than `outbound.max_retry_after`: not sent, and
    /// answered like Telegram's 429, with how long is left to wait.
    pub fn flood_wait(retry_after: Duration) -> Answered {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let why = format!(
            "Telegram asked to wait {seconds} s more, longer than outbound.max_retry_after; not sent"
        );
        let body = serde_json::json!({
            "ok": false,
            "error_code": 429,
            "description": format!("Too Many Requests: retry after {seconds}"),
            "parameters": { "retry_after": seconds },
        });
        Answered {
            body: Bytes::from(body.to_string()),
            relay_error: Some(why),
            outcome: Outcome::NotSent,
        }
    }

    /// Its chat has `cap` calls waiting already: not sent; the caller may send it later.
    pub fn lane_full(cap: usize) -> Answered {
        let why = format!(
            "{cap} calls of this chat are waiting already (outbound.max_pending_per_chat); not sent"
        );
        Answered {
            body: relay_answer(429, &format!("Too Many Requests: {why}")),
            relay_error: Some(why),
            outcome: Outcome::NotSent,
        }
    }

    /// The call may have reached Telegram; `reason` says what happened instead of an answer.
    pub fn unknown(reason: &str) -> Answered {
        let why = format!(
            "the call may have reached Telegram but no answer said so ({reason}); \
             it is not sent again (set {ALLOW_RETRY}: true to allow that)"
        );
        Answered {
            body: relay_answer(UNKNOWN_CODE, &format!("Outcome Unknown: {why}")),
            relay_error: Some(why),
            outcome: Outcome::Unknown,
        }
    }
}

/// A Bot API error answer made by the relay.
pub fn relay_answer(error_code: u16, description: &str) -> Bytes {
    let body =
        serde_json::json!({ "ok": false, "error_code": error_code, "description": description });
    Bytes::from(body.to_string())
}
