//! What one attempt's outcome means for its call: a final answer to publish, a wait
//! Telegram asked for, or a failure. Telegram's 4xx other than 429 are final (a bad
//! request stays bad); a 429 is never final. A failure says whether the request may
//! have reached Telegram: only a connection that never opened proves it did not; a
//! timeout, a reset or a 5xx came after the request was written, and Telegram may
//! have done what it asked (the executor then sends it again only when it may).

use std::time::Duration;

use bytes::Bytes;

use super::super::call::relay_answer;
use crate::telegram::{ErrorClass, RawReply, TelegramError};

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Publish this answer; `ok` when Telegram did what was asked. `relay_error`:
    /// Telegram's answer was no Bot API reply, so the body is the relay's.
    Final {
        body: Bytes,
        ok: bool,
        relay_error: Option<String>,
    },
    /// A 429: wait this long. `whole_bot` when it came from something in front of the
    /// Bot API (a proxy's page), which limits the bot as a whole.
    RetryAfter { wait: Duration, whole_bot: bool },
    /// Try again later; if attempts run out, publish `give_up`. `reached`: the
    /// request may have reached Telegram.
    Transient {
        reason: String,
        give_up: GiveUp,
        reached: bool,
    },
}

/// What a call's result is when its attempts run out.
#[derive(Debug, Clone, PartialEq)]
pub struct GiveUp {
    pub body: Bytes,
    pub relay_error: Option<String>,
}

pub fn verdict(outcome: &Result<RawReply, TelegramError>) -> Verdict {
    let reply = match outcome {
        Ok(reply) => reply,
        Err(error) => return no_answer(error),
    };
    let Some(error) = &reply.error else {
        let body = reply.body.clone();
        return Verdict::Final {
            body,
            ok: true,
            relay_error: None,
        };
    };
    if let ErrorClass::RetryAfter(wait) = error.class() {
        let whole_bot = matches!(error, TelegramError::BadReply { .. });
        return Verdict::RetryAfter { wait, whole_bot };
    }
    let (code, answer) = match error {
        TelegramError::Api { error_code, .. } => (*error_code, told(reply)),
        _ => (i64::from(reply.status), not_a_reply(reply)),
    };
    if !(400..500).contains(&code) {
        return Verdict::Transient {
            reason: error.to_string(),
            give_up: answer,
            reached: true,
        };
    }
    let GiveUp { body, relay_error } = answer;
    Verdict::Final {
        body,
        ok: false,
        relay_error,
    }
}

/// No answer at all (refused, reset, timed out): worth another attempt; the request
/// may have reached Telegram unless the connection never opened.
fn no_answer(error: &TelegramError) -> Verdict {
    let said = |prefix| matches!(error, TelegramError::Transport { message, .. } if message.starts_with(prefix));
    let timed_out = said("timed out");
    let reached = !said("could not connect");
    let code = if timed_out { 504 } else { 502 };
    let reason = format!("no answer from the Bot API: {error}");
    let give_up = GiveUp {
        body: relay_answer(code, &format!("Bad Gateway: {reason}")),
        relay_error: Some(reason.clone()),
    };
    Verdict::Transient {
        reason,
        give_up,
        reached,
    }
}

/// Telegram's error answer, passed on untouched.
fn told(reply: &RawReply) -> GiveUp {
    GiveUp {
        body: reply.body.clone(),
        relay_error: None,
    }
}

/// An answer that is no Bot API reply (a proxy's page): the relay says what came back,
/// in the reply's shape.
fn not_a_reply(reply: &RawReply) -> GiveUp {
    let what = format!(
        "the Bot API answered HTTP {} with a body that is no Bot API reply",
        reply.status
    );
    let code = Some(reply.status).filter(|c| *c >= 400).unwrap_or(502);
    GiveUp {
        body: relay_answer(code, &what),
        relay_error: Some(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    async fn outcome(status: u16, body: &'static str) -> Result<RawReply, TelegramError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move || async move {
            (axum::http::StatusCode::from_u16(status).unwrap(), body)
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        let api = crate::telegram::BotApi::new(
            crate::telegram::BotApi::http_client(),
            &format!("http://{addr}"),
            Secret::new("1:T"),
        );
        api.call_raw(
            "sendMessage",
            Bytes::from_static(b"{}"),
            Duration::from_secs(5),
        )
        .await
    }

    #[tokio::test]
    async fn each_answer_gets_its_verdict() {
        let ok = r#"{"ok":true,"result":{"message_id":1}}"#;
        assert!(
            matches!(verdict(&outcome(200, ok).await), Verdict::Final { ok: true, ref body, .. } if body == ok)
        );

        let bad = r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#;
        assert!(
            matches!(verdict(&outcome(400, bad).await), Verdict::Final { ok: false, ref body, relay_error: None } if body == bad)
        );
        let blocked = r#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#;
        assert!(matches!(
            verdict(&outcome(403, blocked).await),
            Verdict::Final { ok: false, .. }
        ));

        let flood = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 5","parameters":{"retry_after":5}}"#;
        assert_eq!(
            verdict(&outcome(429, flood).await),
            Verdict::RetryAfter {
                wait: Duration::from_secs(5),
                whole_bot: false
            }
        );
        assert!(matches!(
            verdict(&outcome(429, "<html>slow down</html>").await),
            Verdict::RetryAfter {
                whole_bot: true,
                ..
            }
        ));

        let internal = r#"{"ok":false,"error_code":500,"description":"Internal Server Error"}"#;
        match verdict(&outcome(500, internal).await) {
            Verdict::Transient { give_up, .. } => {
                assert_eq!(give_up.body, internal, "Telegram's own body")
            }
            other => panic!("{other:?}"),
        }
        match verdict(&outcome(502, "<html>502 Bad Gateway</html>").await) {
            Verdict::Transient { give_up, .. } => {
                let parsed: serde_json::Value = serde_json::from_slice(&give_up.body).unwrap();
                assert_eq!(
                    (parsed["ok"].as_bool(), parsed["error_code"].as_i64()),
                    (Some(false), Some(502))
                );
                assert!(give_up.relay_error.is_some());
            }
            other => panic!("{other:?}"),
        }
        match verdict(&outcome(413, "<html>too large</html>").await) {
            Verdict::Final {
                ok: false,
                body,
                relay_error: Some(_),
            } => assert!(body.starts_with(b"{\"")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_answer_is_worth_another_attempt_and_only_a_refused_connection_left_nothing() {
        let error = TelegramError::Transport {
            method: "x",
            message: "timed out: deadline".into(),
        };
        match verdict(&Err(error)) {
            Verdict::Transient {
                give_up, reached, ..
            } => {
                let parsed: serde_json::Value = serde_json::from_slice(&give_up.body).unwrap();
                assert_eq!(parsed["error_code"], 504);
                assert!(reached);
            }
            other => panic!("{other:?}"),
        }
        for (message, may_have) in [
            ("could not connect: connection refused", false),
            ("request failed: connection reset", true),
        ] {
            let error = TelegramError::Transport {
                method: "x",
                message: message.into(),
            };
            assert!(
                matches!(verdict(&Err(error)), Verdict::Transient { reached, .. } if reached == may_have),
                "{message}"
            );
        }
    }
}
