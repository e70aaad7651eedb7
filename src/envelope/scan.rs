//! `Scanner`: a validating JSON scanner over a byte slice, for the one pass that
//! checks an update and reads its routing facts (`head.rs` drives it).
//!
//! It accepts what serde_json accepts when it validates a value it ignores, and adds
//! what JSON text requires and serde_json leaves unchecked there: UTF-8, and no raw
//! control character in any string, keys included. Relayed bytes must be JSON any
//! consumer can read. Hand-written rather than a serde visitor because the visitor's
//! generic machinery, paid on every key of every update, made envelope building cost
//! twice a bare validation pass (docs/benchmarks.md has the figures).

use std::borrow::Cow;
use std::fmt;

/// How many arrays or objects may nest: as deep as serde_json's own reader goes by
/// default (a consumer could not read deeper bytes), and a bound on this recursion.
const MAX_DEPTH: usize = 128;

/// Where and why the bytes are not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    what: &'static str,
    at: usize,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for SyntaxError {}

/// A string token: its raw bytes between the quotes.
#[derive(Clone, Copy)]
pub(crate) struct Str<'a> {
    /// With its quotes, for serde_json to unescape.
    quoted: &'a [u8],
    escaped: bool,
}

impl<'a> Str<'a> {
    /// The string's value as bytes: borrowed unless it had escapes. An escape that is
    /// no text (a lone UTF-16 surrogate) leaves the raw bytes, which match no name.
    pub(crate) fn value(&self) -> Cow<'a, [u8]> {
        let raw = &self.quoted[1..self.quoted.len() - 1];
        if !self.escaped {
            return Cow::Borrowed(raw);
        }
        match serde_json::from_slice::<String>(self.quoted) {
            Ok(text) => Cow::Owned(text.into_bytes()),
            Err(_) => Cow::Borrowed(self.quoted),
        }
    }
}

pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Scanner<'a> {
        Scanner { buf, pos }
    }

    /// The offset of the next unread byte.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn error<T>(&self, what: &'static str) -> Result<T, SyntaxError> {
        Err(SyntaxError { what, at: self.pos })
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.buf.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.buf.get(self.pos).copied()
    }

    /// Checks that nothing but whitespace is left.
    pub(crate) fn end(&mut self) -> Result<(), SyntaxError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => self.error("trailing characters"),
        }
    }

    /// Validates one value; `depth` is how many arrays and objects enclose it.
    pub(crate) fn skip_value(&mut self, depth: usize) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b'{') => self.object(depth, |s, _, depth| s.skip_value(depth)),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(drop),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => self.error("expected a value"),
            None => self.error("EOF while parsing a value"),
        }
    }

    /// Validates an object at the cursor, handing each key to `entry`, which must
    /// consume its value (at the depth it is given).
    pub(crate) fn object(
        &mut self,
        depth: usize,
        mut entry: impl FnMut(&mut Self, Str<'a>, usize) -> Result<(), SyntaxError>,
    ) -> Result<(), SyntaxError> {
        let depth = self.enter(depth)?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            match self.peek() {
                Some(b'"') => {}
                Some(_) => return self.error("expected a key"),
                None => return self.error("EOF while parsing an object"),
            }
            let key = self.string()?;
            if self.peek() != Some(b':') {
                return self.error("expected ':'");
            }
            self.pos += 1;
            entry(self, key, depth)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => return self.error("expected ',' or '}'"),
                None => return self.error("EOF while parsing an object"),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), SyntaxError> {
        let depth = self.enter(depth)?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_value(depth)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => return self.error("expected ',' or ']'"),
                None => return self.error("EOF while parsing a list"),
            }
        }
    }

    /// Steps over an opening `{` or `[`, one level deeper.
    fn enter(&mut self, depth: usize) -> Result<usize, SyntaxError> {
        if depth >= MAX_DEPTH {
            return self.error("recursion limit exceeded");
        }
        self.pos += 1;
        Ok(depth + 1)
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), SyntaxError> {
        if self.buf[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.error("expected a value")
        }
    }

    /// Validates a number. Its value when it is an integer that fits i64, as serde_json
    /// would hand it to a visitor (it reads `-0` and anything with `.` or `e` as floats).
    pub(crate) fn number(&mut self) -> Result<Option<i64>, SyntaxError> {
        let negative = self.buf.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let mut magnitude = Some(0_u64);
        match self.buf.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.buf.get(self.pos) {
                    return self.error("invalid number");
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = self.buf.get(self.pos) {
                    magnitude = magnitude
                        .and_then(|m| m.checked_mul(10))
                        .and_then(|m| m.checked_add(u64::from(d - b'0')));
                    self.pos += 1;
                }
            }
            _ => return self.error("invalid number"),
        }
        let integer = !self.fraction_and_exponent()?;
        Ok(match (integer, negative, magnitude) {
            (true, false, Some(m)) => i64::try_from(m).ok(),
            (true, true, Some(m)) if (1..=1 << 63).contains(&m) => Some((m as i64).wrapping_neg()),
            _ => None,
        })
    }

    /// Steps over `.digits` and `e±digits` when present; whether there were any.
    fn fraction_and_exponent(&mut self) -> Result<bool, SyntaxError> {
        let mut found = false;
        if self.buf.get(self.pos) == Some(&b'.') {
            found = true;
            self.pos += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.buf.get(self.pos) {
            found = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.buf.get(self.pos) {
                self.pos += 1;
            }
            self.digits()?;
        }
        Ok(found)
    }

    fn digits(&mut self) -> Result<(), SyntaxError> {
        if !matches!(self.buf.get(self.pos), Some(b'0'..=b'9')) {
            return self.error("invalid number");
        }
        while let Some(b'0'..=b'9') = self.buf.get(self.pos) {
            self.pos += 1;
        }
        Ok(())
    }

    /// Validates the string at the cursor (on its opening quote).
    pub(crate) fn string(&mut self) -> Result<Str<'a>, SyntaxError> {
        const ONES: u64 = u64::MAX / 255;
        const HIGH: u64 = ONES << 7;
        let start = self.pos;
        self.pos += 1;
        let (mut escaped, mut non_ascii) = (false, false);
        loop {
            // Eight bytes at a time up to the first quote, backslash or control byte
            // (the classic has-zero-byte trick per pattern; the lowest hit is exact).
            while let Some(chunk) = self.buf.get(self.pos..self.pos + 8) {
                let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                let control = word.wrapping_sub(ONES * 0x20) & !word;
                let quote = word ^ (ONES * u64::from(b'"'));
                let quote = quote.wrapping_sub(ONES) & !quote;
                let backslash = word ^ (ONES * u64::from(b'\\'));
                let backslash = backslash.wrapping_sub(ONES) & !backslash;
                // Bytes past the hit may count too: then a valid string is checked
                // for UTF-8 once more than needed, nothing worse.
                non_ascii |= (word & HIGH) != 0;
                let hits = (control | quote | backslash) & HIGH;
                if hits != 0 {
                    self.pos += hits.trailing_zeros() as usize / 8;
                    break;
                }
                self.pos += 8;
            }
            match self.buf.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(&b) if b < 0x20 => return self.error("control character in a string"),
                Some(&b) => {
                    non_ascii |= b >= 0x80;
                    self.pos += 1;
                }
                None => return self.error("EOF while parsing a string"),
            }
        }
        let quoted = &self.buf[start..self.pos];
        if non_ascii && std::str::from_utf8(quoted).is_err() {
            self.pos = start;
            return self.error("invalid UTF-8 in a string");
        }
        Ok(Str { quoted, escaped })
    }

    /// Steps over one escape sequence (the cursor on its backslash).
    fn escape(&mut self) -> Result<(), SyntaxError> {
        match self.buf.get(self.pos + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 2,
            Some(b'u') => {
                let hex = self.buf.get(self.pos + 2..self.pos + 6);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return self.error("invalid \\u escape");
                }
                self.pos += 6;
            }
            Some(_) => return self.error("invalid escape"),
            None => return self.error("EOF while parsing a string"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;
    use serde_json::Value;

    /// What the scanner must accept: what serde_json validates when it ignores a value
    /// (at any depth), text that is UTF-8 with no raw control character inside a
    /// string, and no more than 128 levels of nesting.
    fn oracle_accepts(bytes: &[u8]) -> bool {
        serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
            && std::str::from_utf8(bytes).is_ok()
            && text_and_depth_allowed(bytes)
    }

    fn text_and_depth_allowed(json: &[u8]) -> bool {
        let (mut in_string, mut escaped, mut depth) = (false, false, 0_usize);
        for &b in json {
            if !in_string {
                in_string = b == b'"';
                match b {
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                if depth > MAX_DEPTH {
                    return false;
                }
            } else if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            } else if b < 0x20 {
                return false;
            }
        }
        true
    }

    fn scan_accepts(bytes: &[u8]) -> bool {
        let mut s = Scanner::new(bytes, 0);
        s.skip_value(0).and_then(|()| s.end()).is_ok()
    }

    const SEEDS: &[&str] = &[
        r#"{"update_id":1,"message":{"message_id":5,"from":{"id":7,"is_bot":false,"first_name":"Zoë"},"chat":{"id":-100,"type":"group"},"date":1700000000,"text":"héllo \"there\" \\ \/ \u00e9\ud83d\ude00 ✓","entities":[{"offset":0,"length":5,"type":"bold"}]}}"#,
        r#"{"update_id":9223372036854775807,"poll":{"id":"p","options":[],"total_voter_count":0,"is_closed":true,"x":null,"f":-1.5e-3,"g":0,"h":[[[]]],"i":{}}}"#,
        r#"[1, -0, 0.5, 1E+2, 2e-2, true, false, null, "a\tb", {"k" : [ ] } ]"#,
        "  \"\\u0041\\\"\"  ",
    ];

    /// A deterministic xorshift, so a failure names a reproducible case.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn accepts_exactly_what_serde_json_and_json_text_accept() {
        const INTERESTING: &[u8] = b"\"\\{}[],:0-.eE+u \t\x01\x1f\x7f\xc3\xa9\xff9ntf/";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut accepted = 0;
        for round in 0..40_000 {
            let seed = SEEDS[round % SEEDS.len()].as_bytes();
            let mut bytes = seed.to_vec();
            for _ in 0..1 + next(&mut state) % 3 {
                let at = next(&mut state) as usize % (bytes.len() + 1);
                let byte = INTERESTING[next(&mut state) as usize % INTERESTING.len()];
                match next(&mut state) % 3 {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, byte),
                }
            }
            let expected = oracle_accepts(&bytes);
            assert_eq!(
                scan_accepts(&bytes),
                expected,
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
            accepted += usize::from(expected);
        }
        // Both sides of the line were exercised.
        assert!((2_000..38_000).contains(&accepted), "{accepted} accepted");
    }

    #[test]
    fn the_seeds_and_deep_nesting_match_serde_json() {
        for seed in SEEDS {
            assert!(scan_accepts(seed.as_bytes()), "{seed}");
        }
        for depth in [126, 127, 128, 129] {
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                scan_accepts(nested.as_bytes()),
                oracle_accepts(nested.as_bytes()),
                "depth {depth}"
            );
        }
        for bad in [
            "",
            "01",
            "1.",
            "-",
            "1e",
            "+1",
            ".5",
            "tru",
            "nul",
            "[1,]",
            "{\"a\"}",
            "\"\\x\"",
            "\"\\u12\"",
            "{} {}",
        ] {
            assert!(!scan_accepts(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn integers_are_read_as_serde_json_reads_them() {
        for (text, expected) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("18446744073709551616", None),
            ("-0", None),
            ("1.0", None),
            ("1e3", None),
            ("1e400", None),
        ] {
            let mut s = Scanner::new(text.as_bytes(), 0);
            assert_eq!(s.number().unwrap(), expected, "{text}");
            let via_serde = match serde_json::from_str::<Value>(text) {
                Ok(Value::Number(n)) if n.is_i64() => n.as_i64(),
                _ => None,
            };
            assert_eq!(expected, via_serde, "{text}");
        }
    }

    #[test]
    fn escaped_keys_are_compared_by_their_value() {
        let text = br#""upd\u0061te_id""#;
        let key = Scanner::new(text, 0).string().unwrap();
        assert_eq!(&*key.value(), b"update_id");
        let lone = br#""\ud800x""#;
        let key = Scanner::new(lone, 0).string().unwrap();
        assert_ne!(&*key.value(), b"\xed\xa0\x80x");
    }
}
