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

    /// The bytes from `start` up to the cursor.
    pub(crate) fn slice(&self, start: usize) -> &'a [u8] {
        &self.buf[start..self.pos]
    }

    pub(crate) fn error<T>(&self, what: &'static str) -> Result<T, SyntaxError> {
        Err(self.fail(what))
    }

    fn fail(&self, what: &'static str) -> SyntaxError {
        SyntaxError { what, at: self.pos }
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
            Some(b'[') => self.array(depth, |s, depth| s.skip_value(depth)),
            Some(b'"') => self.string().map(drop),
            Some(b'-' | b'0'..=b'9') => self.skip_number().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => self.error("expected a value"),
            None => self.error("EOF while parsing a value"),
        }
    }

    /// Validates an object at the cursor (on its `{`), handing each key to `entry`,
    /// which must consume its value (at the depth it is given).
    pub(crate) fn object<E: From<SyntaxError>>(
        &mut self,
        depth: usize,
        mut entry: impl FnMut(&mut Self, Str<'a>, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(depth) = self.enter(depth, b'}')? else {
            return Ok(());
        };
        loop {
            match self.peek() {
                Some(b'"') => {}
                Some(_) => return Err(self.fail("expected a key").into()),
                None => return Err(self.fail("EOF while parsing an object").into()),
            }
            let key = self.string()?;
            if self.peek() != Some(b':') {
                return Err(self.fail("expected ':'").into());
            }
            self.pos += 1;
            entry(self, key, depth)?;
            if !self.next_entry(b'}', "expected ',' or '}'", "EOF while parsing an object")? {
                return Ok(());
            }
        }
    }

    /// [`Scanner::object`] when the value at the cursor is an object (then true);
    /// any other value is validated and skipped (false).
    pub(crate) fn object_or_skip<E: From<SyntaxError>>(
        &mut self,
        depth: usize,
        entry: impl FnMut(&mut Self, Str<'a>, usize) -> Result<(), E>,
    ) -> Result<bool, E> {
        if self.peek() != Some(b'{') {
            self.skip_value(depth)?;
            return Ok(false);
        }
        self.object(depth, entry)?;
        Ok(true)
    }

    /// Validates an array at the cursor (on its `[`), handing each element to `item`,
    /// which must consume it.
    /// Its loop mirrors `object`'s, sharing its steps but not a loop behind a closure:
    /// that shared loop, run for every value, cost 7 % of envelope building.
    pub(crate) fn array<E: From<SyntaxError>>(
        &mut self,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(depth) = self.enter(depth, b']')? else {
            return Ok(());
        };
        loop {
            item(self, depth)?;
            if !self.next_entry(b']', "expected ',' or ']'", "EOF while parsing a list")? {
                return Ok(());
            }
        }
    }

    /// Steps over an opening `{` or `[`, one level deeper; `None` when the container is
    /// empty, its `close` stepped over too.
    #[inline(always)]
    fn enter(&mut self, depth: usize, close: u8) -> Result<Option<usize>, SyntaxError> {
        if depth >= MAX_DEPTH {
            return self.error("recursion limit exceeded");
        }
        self.pos += 1;
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(None);
        }
        Ok(Some(depth + 1))
    }

    /// After an entry: steps over `,` (true: another entry follows) or `close` (false).
    #[inline(always)]
    fn next_entry(
        &mut self,
        close: u8,
        expected: &'static str,
        eof: &'static str,
    ) -> Result<bool, SyntaxError> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            Some(_) => self.error(expected),
            None => self.error(eof),
        }
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
        let start = self.pos;
        if !self.skip_number()? {
            return Ok(None);
        }
        let token = self.slice(start);
        let (negative, digits) = match token.split_first() {
            Some((b'-', digits)) => (true, digits),
            _ => (false, token),
        };
        let magnitude = digits.iter().try_fold(0_u64, |m, &d| {
            m.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        Ok(match (negative, magnitude) {
            (false, Some(m)) => i64::try_from(m).ok(),
            (true, Some(m)) if (1..=1 << 63).contains(&m) => Some((m as i64).wrapping_neg()),
            _ => None,
        })
    }

    /// Validates a number; whether it is an integer (no fraction, no exponent). Most
    /// numbers of an update are skipped: their digits need checking, not accumulating.
    #[inline(always)]
    fn skip_number(&mut self) -> Result<bool, SyntaxError> {
        if self.buf.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.buf.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.buf.get(self.pos) {
                    return self.error("invalid number");
                }
            }
            Some(b'1'..=b'9') => {
                self.pos += 1;
                while let Some(b'0'..=b'9') = self.buf.get(self.pos) {
                    self.pos += 1;
                }
            }
            _ => return self.error("invalid number"),
        }
        Ok(!self.fraction_and_exponent()?)
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
        if non_ascii && !utf8::is_valid(quoted) {
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

mod utf8;

#[cfg(test)]
mod tests;
