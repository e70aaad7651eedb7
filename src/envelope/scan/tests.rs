//! What the scanner accepts, checked against serde_json, and how it reads integers and keys.

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
