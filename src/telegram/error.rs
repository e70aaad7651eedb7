//! `TelegramError`: what can go wrong talking to the Bot API, with the token scrubbed.

use std::time::Duration;

use crate::secret::Secret;

/// A failed Bot API call. No variant ever holds the request URL (it contains the token).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TelegramError {
    /// The Bot API answered `ok: false`.
    #[error("{method}: Telegram answered {error_code}: {description}")]
    Api {
        method: &'static str,
        error_code: i64,
        description: String,
        retry_after: Option<u64>,
        migrate_to_chat_id: Option<i64>,
    },
    /// An answer that is not a Bot API reply (a proxy's HTML error page, say).
    #[error("{method}: HTTP {status} with a body that is not a Bot API reply: {snippet}")]
    BadReply {
        method: &'static str,
        status: u16,
        /// A 429's `Retry-After` header, in whole seconds.
        retry_after: Option<u64>,
        snippet: String,
    },
    /// No answer: connection refused or reset, timeout, TLS failure.
    #[error("{method}: {message}")]
    Transport {
        method: &'static str,
        message: String,
    },
}

/// The wait after a 429 that names none (no `retry_after`, no `Retry-After` header):
/// something throttles the bot without saying for how long. A short retry would keep
/// hitting it (and Telegram lengthens the flood wait of a client that ignores it); a
/// wait of 30 s or more would outlive inline queries, which expire after 30 s. 10 s
/// is a few calls a minute and leaves an inline query time to be relayed.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 429, whatever its body: wait this long (never less), then try again.
    RetryAfter(Duration),
    /// 409: another getUpdates caller, or a webhook is set.
    Conflict,
    /// 401/403/404: the token is wrong or revoked; retrying cannot help.
    Unauthorized,
    /// Anything else: back off and try again.
    Transient,
}

impl TelegramError {
    pub fn class(&self) -> ErrorClass {
        match self {
            TelegramError::Api {
                error_code: 429,
                retry_after,
                ..
            }
            | TelegramError::BadReply {
                status: 429,
                retry_after,
                ..
            } => {
                ErrorClass::RetryAfter(retry_after.map_or(DEFAULT_RETRY_AFTER, Duration::from_secs))
            }
            TelegramError::Api {
                error_code: 409, ..
            } => ErrorClass::Conflict,
            TelegramError::Api {
                error_code: 401 | 403 | 404,
                ..
            } => ErrorClass::Unauthorized,
            _ => ErrorClass::Transient,
        }
    }

    /// A short, bounded label for metrics: the HTTP status the call got (a Bot API
    /// error's `error_code` is the status it answers with; an answer that is not a Bot
    /// API reply keeps its own), or `transport` when no answer came. Digits only, so
    /// `code=~"5.."` selects every server error and never `transport`.
    pub fn code_label(&self) -> String {
        match self {
            TelegramError::Api { error_code, .. } => error_code.to_string(),
            TelegramError::BadReply { status, .. } => status.to_string(),
            TelegramError::Transport { .. } => "transport".to_owned(),
        }
    }

    pub(crate) fn transport(method: &'static str, err: reqwest::Error, token: &Secret) -> Self {
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else {
            "request failed"
        };
        // reqwest puts the URL (and so the token) in its message; drop it, then scrub
        // the whole source chain in case a lower layer repeats it.
        let err = err.without_url();
        let mut message = format!("{kind}: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        TelegramError::Transport {
            method,
            message: token.scrub(&message),
        }
    }

    pub(crate) fn bad_reply(
        method: &'static str,
        status: u16,
        retry_after: Option<u64>,
        body: &[u8],
        token: &Secret,
    ) -> Self {
        let text = String::from_utf8_lossy(&body[..body.len().min(160)]);
        let snippet: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        TelegramError::BadReply {
            method,
            status,
            retry_after,
            snippet: token.scrub(snippet.trim()),
        }
    }
}
