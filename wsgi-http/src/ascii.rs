//! Byte scans a word (eight bytes) at a time: the end-of-line search and case-insensitive name comparisons on the per-request path.
//!
//! Safe code only: words are read with `u64::from_le_bytes`; each function
//! answers exactly as its byte-at-a-time counterpart (the tests compare them).

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The eight bytes at `at` as a word (zero past the end, which callers avoid).
fn word(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at.wrapping_add(8))
        .and_then(|eight| <[u8; 8]>::try_from(eight).ok())
        .map_or(0, u64::from_le_bytes)
}

/// The first position of `needle` in `bytes`: `iter().position(|&b| b ==
/// needle)`, a word at a time.
pub(crate) fn find_byte(bytes: &[u8], needle: u8) -> Option<usize> {
    let pattern = ONES * u64::from(needle);
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let x = word(bytes, at) ^ pattern;
        // A byte of `x` is zero where `needle` is; the lowest flagged byte
        // is exact (a borrow only runs upwards from a zero byte).
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == needle)
        .map(|offset| at + offset)
}

/// Up to seven bytes as a zero-padded word: from 4 bytes on, two
/// overlapping 4-byte loads (the shared bytes are equal, so OR keeps them).
fn short_word(bytes: &[u8]) -> u64 {
    let four = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|four| <[u8; 4]>::try_from(four).ok())
            .map_or(0, |four| u64::from(u32::from_le_bytes(four)))
    };
    let len = bytes.len();
    if len >= 4 {
        return four(0) | (four(len - 4) << (8 * (len - 4)));
    }
    let mut word = 0;
    for (index, &b) in bytes.iter().enumerate() {
        word |= u64::from(b) << (8 * index);
    }
    word
}

/// ASCII-lower-cases the letters among eight bytes: a byte gets its 0x20
/// bit when it is in `A..=Z`; others, non-ASCII included, stay.
fn lower_word(x: u64) -> u64 {
    let heptets = x & !HIGHS;
    // Per byte, no carry out (0x7f + 0x3f < 0x100): the high bit says
    // ">= 'A'" and "> 'Z'".
    let at_least_a = heptets + (0x80 - u64::from(b'A')) * ONES;
    let above_z = heptets + (0x80 - u64::from(b'Z') - 1) * ONES;
    let upper = at_least_a & !above_z & !x & HIGHS;
    x | (upper >> 2)
}

/// Whether `name` is `lower` (which is all lower case) ignoring ASCII case:
/// `name.eq_ignore_ascii_case(lower)`, a word at a time.
pub(crate) fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    let len = name.len();
    if len != lower.len() {
        return false;
    }
    if len < 8 {
        return lower_word(short_word(name)) == short_word(lower);
    }
    // Whole words, then the last eight bytes (overlapping the previous word).
    let mut at = 0;
    while at + 8 < len {
        if lower_word(word(name, at)) != word(lower, at) {
            return false;
        }
        at += 8;
    }
    lower_word(word(name, len - 8)) == word(lower, len - 8)
}

/// The high bit of each byte of `x` that is zero (exact per byte).
fn zero_bytes(x: u64) -> u64 {
    !(((x & !HIGHS) + !HIGHS) | x) & HIGHS
}

/// Flags the bytes that may not be in a response field name: anything but
/// visible ASCII, and `:`.
fn name_flags(x: u64) -> u64 {
    let heptets = x & !HIGHS;
    let below_bang = !(heptets + (0x80 - 0x21) * ONES) & !x & HIGHS;
    let del = (heptets + ONES) & HIGHS;
    (x & HIGHS) | below_bang | del | zero_bytes(x ^ (u64::from(b':') * ONES))
}

/// Whether no byte of `bytes` is flagged by `flags`, a word at a time (the
/// last word overlaps the one before; a short slice is padded and the
/// padding's flags are masked off).
fn none_flagged(bytes: &[u8], flags: impl Fn(u64) -> u64) -> bool {
    let len = bytes.len();
    if len < 8 {
        let padding = HIGHS & ((1u64 << (8 * len)) - 1);
        return flags(short_word(bytes)) & padding == 0;
    }
    let mut found = 0;
    let mut at = 0;
    while at + 8 < len {
        found |= flags(word(bytes, at));
        at += 8;
    }
    (found | flags(word(bytes, len - 8))) == 0
}

/// RFC 9110 §5.5: field values (and reason phrases) are HTAB, SP, VCHAR and
/// obs-text; no other control byte.
///
/// Byte by byte through a table: values are mostly shorter than two words,
/// where neither the word-at-a-time check nor the vectorised comparison
/// loop paid off (callgrind: 48 and ~40 instructions a call, against ~20).
pub(crate) fn is_field_text(bytes: &[u8]) -> bool {
    // No early return, so the loop has no branch per byte.
    let mut valid = true;
    for &b in bytes {
        valid &= FIELD_TEXT[usize::from(b)];
    }
    valid
}

/// The bytes of [`is_field_text`].
const FIELD_TEXT: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = byte == 0x09 || (byte >= 0x20 && byte != 0x7f);
        byte += 1;
    }
    table
};

/// Response field names: non-empty visible ASCII without `:`.
pub(crate) fn is_visible_name(name: &[u8]) -> bool {
    !name.is_empty() && none_flagged(name, name_flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn byte_classes() {
        for b in 0..=255u8 {
            let text = b == b'\t' || (b >= b' ' && b != 0x7f);
            let name = b.is_ascii_graphic() && b != b':';
            for at in 0..9 {
                let mut bytes = [b'a'; 9];
                bytes[at] = b;
                for len in at + 1..=9 {
                    assert_eq!(
                        is_field_text(&bytes[..len]),
                        text,
                        "text {b:#x} at {at} of {len}"
                    );
                    assert_eq!(
                        is_visible_name(&bytes[..len]),
                        name,
                        "name {b:#x} at {at} of {len}"
                    );
                }
            }
        }
        assert!(is_field_text(b""));
        assert!(!is_visible_name(b""));
    }

    proptest! {
        #[test]
        fn checks_are_bytewise(bytes in prop::collection::vec(prop::sample::select(vec![b'a', b'\t', 0, 0x1f, 0x7f, 0x80, 0xff, b':', b' ', b'!', b'~']), 0..30)) {
            prop_assert_eq!(is_field_text(&bytes), bytes.iter().all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f)));
            prop_assert_eq!(is_visible_name(&bytes), !bytes.is_empty() && bytes.iter().all(|&b| b.is_ascii_graphic() && b != b':'));
        }

        #[test]
        fn find_byte_is_position(
            bytes in prop::collection::vec(prop::sample::select(vec![b'\n', b'\r', b'a', 0, 0x8a, 0xff, 0x0b, 0x09]), 0..40),
            needle in prop::sample::select(vec![b'\n', b'\r', 0u8, 0xff]),
        ) {
            prop_assert_eq!(find_byte(&bytes, needle), bytes.iter().position(|&b| b == needle));
        }

        #[test]
        fn eq_lower_is_eq_ignore_ascii_case(
            lower in "[a-z0-9_-]{0,30}",
            flips in prop::collection::vec(any::<bool>(), 30),
            noise in prop::option::of((0usize..30, any::<u8>())),
        ) {
            let mut name: Vec<u8> = lower
                .bytes()
                .zip(&flips)
                .map(|(b, &flip)| if flip { b.to_ascii_uppercase() } else { b })
                .collect();
            if let Some((at, byte)) = noise {
                if let Some(slot) = name.get_mut(at) {
                    *slot = byte;
                }
            }
            prop_assert_eq!(eq_lower(&name, lower.as_bytes()), name.eq_ignore_ascii_case(lower.as_bytes()));
        }
    }
}
