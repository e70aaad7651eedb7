//! The optional headers of a call that change how it is run, read as they came and
//! checked with the call (a malformed one refuses it):
//!
//! - `tg-allow-retry: true`: the relay may send the call again after an attempt that
//!   may have reached Telegram (a timeout, a reset, a 5xx); the caller accepts that
//!   its user may get it twice.
//! - `tg-deadline`: an RFC 3339 time (`2026-12-06T22:30:00Z`, `…+01:00`) or Unix
//!   seconds after which the call is answered as expired, never sent.
//! - `tg-priority`: `interactive` (goes before every bulk call waiting for the bot's
//!   turn) or `bulk`; by default `answer*` and `edit*` calls are interactive.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ALLOW_RETRY: &str = "tg-allow-retry";
pub const DEADLINE: &str = "tg-deadline";
pub const PRIORITY: &str = "tg-priority";

/// The optional headers, as they came.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub allow_retry: Option<String>,
    pub deadline: Option<String>,
    pub priority: Option<String>,
}

impl Options {
    /// Reads them with `header`, which finds a header by name (case-insensitively).
    pub fn read(header: impl Fn(&str) -> Option<String>) -> Options {
        Options {
            allow_retry: header(ALLOW_RETRY),
            deadline: header(DEADLINE),
            priority: header(PRIORITY),
        }
    }

    /// `tg-allow-retry`: absent is false.
    pub fn allow_retry(&self) -> Result<bool, String> {
        match self.allow_retry.as_deref().map(str::trim) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(format!("{ALLOW_RETRY} {v:?} is neither true nor false")),
        }
    }

    /// `tg-priority`: whether the call is interactive; `None` when not given.
    pub fn interactive(&self) -> Result<Option<bool>, String> {
        match self.priority.as_deref().map(str::trim) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("interactive") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("bulk") => Ok(Some(false)),
            Some(v) => Err(format!("{PRIORITY} {v:?} is neither interactive nor bulk")),
        }
    }

    /// `tg-deadline`, when given.
    pub fn deadline(&self) -> Result<Option<SystemTime>, String> {
        self.deadline.as_deref().map(parse_deadline).transpose()
    }
}

/// An RFC 3339 time (fractions and any offset allowed) or Unix seconds.
fn parse_deadline(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    let bad = || format!("{DEADLINE} {text:?} is neither an RFC 3339 time nor Unix seconds");
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && (0.0..1e11).contains(&seconds))
            .then(|| UNIX_EPOCH + Duration::from_secs_f64(seconds))
            .ok_or_else(bad);
    }
    let (local, offset) = split_offset(text).ok_or_else(bad)?;
    let utc = humantime::parse_rfc3339_weak(local).map_err(|_| bad())?;
    let shifted = if offset >= 0 {
        utc.checked_sub(Duration::from_secs(offset.unsigned_abs()))
    } else {
        utc.checked_add(Duration::from_secs(offset.unsigned_abs()))
    };
    shifted.ok_or_else(bad)
}

/// The time without its zone, and the zone's offset east of UTC in seconds.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return Some((local, 0));
    }
    let at = text.len().checked_sub(6)?;
    if !text.is_char_boundary(at) {
        return None;
    }
    let (local, zone) = text.split_at(at);
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = zone[1..].split_once(':')?;
    let minutes = hours.parse::<i64>().ok()? * 60 + minutes.parse::<i64>().ok()?;
    Some((local, sign * minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_deadline_is_read_in_every_form() {
        let cases = [
            ("1796595000", at(1_796_595_000)),
            (
                " 1796595000.5 ",
                at(1_796_595_000) + Duration::from_millis(500),
            ),
            ("2026-12-06T22:30:00Z", at(1_796_596_200)),
            ("2026-12-06T23:30:00+01:00", at(1_796_596_200)),
            ("2026-12-06T21:00:00-01:30", at(1_796_596_200)),
            (
                "2026-12-06T22:30:00.250Z",
                at(1_796_596_200) + Duration::from_millis(250),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_deadline(text), Ok(expected), "{text}");
        }
        for text in [
            "",
            "soon",
            "-5",
            "2026-12-06",
            "2026-12-06T22:30:00+1",
            "1e300",
            "x😀😀",
        ] {
            assert!(parse_deadline(text).is_err(), "{text}");
        }
    }

    #[test]
    fn allow_retry_is_true_or_false() {
        let with = |v: &str| Options {
            allow_retry: Some(v.into()),
            ..Default::default()
        };
        assert_eq!(Options::default().allow_retry(), Ok(false));
        assert_eq!(with("TRUE").allow_retry(), Ok(true));
        assert_eq!(with("false").allow_retry(), Ok(false));
        assert!(with("maybe").allow_retry().is_err());
    }
}
