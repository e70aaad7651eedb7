//! UTF-8 validation as a shift-based DFA: one table lookup, shift and mask per byte
//! and no data-dependent branch. `std::str::from_utf8` branches on every character's
//! width, and in text that switches between ASCII and other scripts (a Russian or
//! Japanese message, emoji) those branches mispredict often enough to be a visible
//! share of envelope building.
//!
//! Each state is a 6-bit offset into a `u64`; `TABLE[byte]` holds, at each state's
//! offset, the offset of the state that byte leads to. `ERROR` is offset 0 and maps
//! to itself for every byte, so an error sticks.

const ERROR: u64 = 0;
const ACCEPT: u64 = 6;
/// One, two or three continuation bytes (80..=BF) still to come.
const CONT1: u64 = 12;
const CONT2: u64 = 18;
const CONT3: u64 = 24;
/// After E0 (next A0..=BF: no overlong 3-byte form), ED (next 80..=9F: no surrogate),
/// F0 (next 90..=BF: no overlong 4-byte form), F4 (next 80..=8F: nothing past U+10FFFF).
const AFTER_E0: u64 = 30;
const AFTER_ED: u64 = 36;
const AFTER_F0: u64 = 42;
const AFTER_F4: u64 = 48;

const fn transitions(byte: u8) -> u64 {
    let mut row = 0;
    // (A closure cannot run in a const fn.)
    macro_rules! add {
        ($from:expr, $to:expr) => {
            row |= $to << $from
        };
    }
    match byte {
        0x00..=0x7F => add!(ACCEPT, ACCEPT),
        0x80..=0xBF => {
            add!(CONT1, ACCEPT);
            add!(CONT2, CONT1);
            add!(CONT3, CONT2);
            match byte {
                0x80..=0x8F => {
                    add!(AFTER_ED, CONT1);
                    add!(AFTER_F4, CONT2);
                }
                0x90..=0x9F => {
                    add!(AFTER_ED, CONT1);
                    add!(AFTER_F0, CONT2);
                }
                _ => {
                    add!(AFTER_E0, CONT1);
                    add!(AFTER_F0, CONT2);
                }
            }
        }
        0xC2..=0xDF => add!(ACCEPT, CONT1),
        0xE0 => add!(ACCEPT, AFTER_E0),
        0xED => add!(ACCEPT, AFTER_ED),
        0xE1..=0xEF => add!(ACCEPT, CONT2),
        0xF0 => add!(ACCEPT, AFTER_F0),
        0xF1..=0xF3 => add!(ACCEPT, CONT3),
        0xF4 => add!(ACCEPT, AFTER_F4),
        // C0, C1 (overlong 2-byte forms) and F5..=FF never occur.
        _ => add!(ACCEPT, ERROR),
    }
    row
}

static TABLE: [u64; 256] = {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = transitions(byte as u8);
        byte += 1;
    }
    table
};

/// Whether `bytes` are valid UTF-8 (as `std::str::from_utf8(bytes).is_ok()`).
pub(crate) fn is_valid(bytes: &[u8]) -> bool {
    let mut state = ACCEPT;
    for &b in bytes {
        state = (TABLE[b as usize] >> state) & 63;
    }
    state == ACCEPT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agrees(bytes: &[u8]) {
        assert_eq!(
            is_valid(bytes),
            std::str::from_utf8(bytes).is_ok(),
            "{bytes:02x?}"
        );
    }

    #[test]
    fn agrees_with_std_on_every_sequence_of_up_to_three_bytes() {
        agrees(&[]);
        for a in 0..=255u8 {
            agrees(&[a]);
            for b in 0..=255u8 {
                agrees(&[a, b]);
                for c in 0..=255u8 {
                    agrees(&[a, b, c]);
                }
            }
        }
    }

    #[test]
    fn agrees_with_std_on_four_byte_forms_and_mixed_text() {
        // Every lead byte that can start a 4-byte form, with continuation bytes at
        // and around each boundary.
        let edges = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF];
        for lead in 0xF0..=0xF7u8 {
            for &b in &edges {
                for &c in &edges {
                    for &d in &edges {
                        agrees(&[lead, b, c, d]);
                        agrees(&[b'a', lead, b, c, d, b'z']);
                    }
                }
            }
        }
        let text = "Привет 👋 今日は café \u{10FFFF} \u{FFFF} \u{800} \u{7FF} end".as_bytes();
        agrees(text);
        // Every truncation and every single-byte corruption of real text.
        for end in 0..=text.len() {
            agrees(&text[..end]);
        }
        for i in 0..text.len() {
            for byte in [0x00, 0x41, 0x80, 0xBF, 0xC0, 0xE0, 0xED, 0xF0, 0xF4, 0xFF] {
                let mut corrupt = text.to_vec();
                corrupt[i] = byte;
                agrees(&corrupt);
            }
        }
    }
}
