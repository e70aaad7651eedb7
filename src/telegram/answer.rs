//! `Answer`: one HTTP answer of the Bot API, read whole, and the `TelegramError` a
//! failed one becomes.
//!
//! A 429 keeps the wait it asks for wherever it says it: the body's `retry_after`
//! (rounded up to whole seconds), else the `Retry-After` header, which a proxy in
//! front of the Bot API may send with a body that is no Bot API reply at all. With
//! neither, `ErrorClass` falls back to a conservative default; a 429 is never a short
//! transient backoff.

use bytes::Bytes;

use super::reply::{self, Failure};
use super::TelegramError;
use crate::secret::Secret;

/// What came back for one call.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    /// On a 429 only: the `Retry-After` header in whole seconds, rounded up.
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

impl Answer {
    /// Reads the status, a 429's `Retry-After` and the whole body.
    pub(crate) async fn read(response: reqwest::Response) -> Result<Answer, reqwest::Error> {
        let status = response.status().as_u16();
        let header = response.headers().get(reqwest::header::RETRY_AFTER);
        let retry_after = retry_after(status, header.and_then(|v| v.to_str().ok()));
        let body = response.bytes().await?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// The error for a Bot API reply with `ok: false`. A body without `error_code`
    /// takes the HTTP status, so a bare `{"ok":false}` 429 is still a 429.
    pub(crate) fn failed(
        &self,
        method: &'static str,
        failure: Failure,
        token: &Secret,
    ) -> TelegramError {
        let error_code = match failure.error_code {
            0 => i64::from(self.status),
            code => code,
        };
        TelegramError::Api {
            method,
            error_code,
            description: token.scrub(&failure.description),
            retry_after: failure.parameters.retry_after.or(self.retry_after),
            migrate_to_chat_id: failure.parameters.migrate_to_chat_id,
        }
    }

    /// The error for a body that is not a Bot API reply (a proxy's HTML page, say).
    pub(crate) fn not_a_reply(&self, method: &'static str, token: &Secret) -> TelegramError {
        TelegramError::bad_reply(method, self.status, self.retry_after, &self.body, token)
    }
}

/// The `Retry-After` header's seconds, read on a 429 only: elsewhere (a 502 or 503
/// page) the answer is a transient failure with a backoff of its own.
fn retry_after(status: u16, header: Option<&str>) -> Option<u64> {
    header.filter(|_| status == 429).and_then(header_seconds)
}

/// `Retry-After` as delay-seconds (a fraction is rounded up). An HTTP-date, or
/// anything else, is no number: the caller's default applies.
fn header_seconds(value: &str) -> Option<u64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(reply::seconds_rounded_up)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::ErrorClass;
    use super::*;
    use crate::telegram::DEFAULT_RETRY_AFTER;

    const JSON_429_7: &str = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#;
    const JSON_429_FRACTION: &str = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1.5","parameters":{"retry_after":1.5}}"#;
    const JSON_429_TINY: &str =
        r#"{"ok":false,"error_code":429,"description":"x","parameters":{"retry_after":0.2}}"#;
    const JSON_429_BARE: &str =
        r#"{"ok":false,"error_code":429,"description":"Too Many Requests"}"#;
    const HTML_429: &str = "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n<center><h1>429 Too Many Requests</h1></center>\r\n</body>\r\n</html>\r\n";

    /// The class of an answer, read the way getUpdates reads it and the way every
    /// other method does; both must agree.
    fn class(status: u16, header: Option<&str>, body: &str) -> ErrorClass {
        let answer = Answer {
            status,
            retry_after: retry_after(status, header),
            body: Bytes::copy_from_slice(body.as_bytes()),
        };
        let token = Secret::new("1:T");
        let updates = match reply::parse_updates(&answer.body) {
            Ok(Ok(_)) => panic!("{body} is not a failure"),
            Ok(Err(failure)) => answer.failed("getUpdates", failure, &token),
            Err(_) => answer.not_a_reply("getUpdates", &token),
        };
        let other = match reply::parse::<bool>(&answer.body) {
            Ok(Ok(_)) => panic!("{body} is not a failure"),
            Ok(Err(failure)) => answer.failed("getMe", failure, &token),
            Err(_) => answer.not_a_reply("getMe", &token),
        };
        assert_eq!(updates.class(), other.class(), "{status} {header:?} {body}");
        updates.class()
    }

    #[test]
    fn every_429_is_honoured_with_the_wait_it_asks_for() {
        let secs = |s| ErrorClass::RetryAfter(Duration::from_secs(s));
        let default = ErrorClass::RetryAfter(DEFAULT_RETRY_AFTER);
        let cases: &[(u16, Option<&str>, &str, ErrorClass)] = &[
            (429, None, JSON_429_7, secs(7)),
            (429, Some("30"), JSON_429_7, secs(7)),
            (429, None, JSON_429_FRACTION, secs(2)),
            (429, Some("5"), JSON_429_TINY, secs(1)),
            (429, Some("4"), JSON_429_BARE, secs(4)),
            (429, None, JSON_429_BARE, default),
            (429, Some("3"), r#"{"ok":false}"#, secs(3)),
            (
                429,
                None,
                r#"{"ok":false,"parameters":{"retry_after":"soon"}}"#,
                default,
            ),
            (
                429,
                None,
                r#"{"ok":false,"parameters":{"retry_after":-3}}"#,
                default,
            ),
            (429, Some("5"), HTML_429, secs(5)),
            (429, Some(" 2.5 "), "garbage", secs(3)),
            (429, None, HTML_429, default),
            (
                429,
                Some("Wed, 21 Oct 2026 07:28:00 GMT"),
                HTML_429,
                default,
            ),
            (429, Some("-1"), "", default),
            (429, Some("NaN"), "", default),
            (200, None, JSON_429_7, secs(7)),
        ];
        for (status, header, body, want) in cases {
            assert_eq!(
                class(*status, *header, body),
                *want,
                "{status} {header:?} {body}"
            );
        }
    }

    #[test]
    fn other_failures_keep_their_class() {
        let html_502 = "<html><head><title>502 Bad Gateway</title></head></html>";
        let cases: &[(u16, Option<&str>, &str, ErrorClass)] = &[
            (502, Some("5"), html_502, ErrorClass::Transient),
            (
                500,
                None,
                r#"{"ok":false,"error_code":500,"description":"Internal"}"#,
                ErrorClass::Transient,
            ),
            (
                409,
                None,
                r#"{"ok":false,"error_code":409,"description":"Conflict"}"#,
                ErrorClass::Conflict,
            ),
            (
                401,
                None,
                r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
                ErrorClass::Unauthorized,
            ),
            (404, None, r#"{"ok":false}"#, ErrorClass::Unauthorized),
        ];
        for (status, header, body, want) in cases {
            assert_eq!(
                class(*status, *header, body),
                *want,
                "{status} {header:?} {body}"
            );
        }
    }

    #[test]
    fn the_header_is_delay_seconds_rounded_up() {
        assert_eq!(header_seconds("120"), Some(120));
        assert_eq!(header_seconds("0.001"), Some(1));
        assert_eq!(header_seconds("0"), Some(0));
        assert_eq!(header_seconds(""), None);
        assert_eq!(header_seconds("inf"), None);
    }
}
