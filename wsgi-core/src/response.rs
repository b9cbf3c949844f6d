//! PEP 3333 response-head validation: the status line and headers an
//! application gives `start_response`, checked before anything reaches the wire.

use bytes::Bytes;

use crate::error::HeadError;

/// A validated response head, in the application's order and case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code, 100 to 999.
    pub status: u16,
    /// The reason phrase as the application wrote it (may be empty).
    pub reason: Bytes,
    /// Header (name, value) pairs, validated by [`validate_header`]; at most
    /// one `Content-Length` when built by [`ResponseHead::new`].
    pub headers: Vec<(Bytes, Bytes)>,
    /// The application's `Content-Length`, parsed.
    pub content_length: Option<u64>,
}

impl ResponseHead {
    /// Validates a status line such as `b"200 OK"` and a list of headers.
    /// `Content-Length` given twice with the same value is kept once (the
    /// first); RFC 9110 §8.6 allows a recipient to collapse such a list,
    /// but a client or proxy that does not may refuse the response.
    ///
    /// # Errors
    /// [`HeadError`] naming the first offending part;
    /// [`HeadError::ConflictingContentLength`] for two different lengths,
    /// which no framing can honour (RFC 9110 §8.6).
    pub fn new(status_line: &[u8], headers: Vec<(Bytes, Bytes)>) -> Result<Self, HeadError> {
        let (status, reason) = parse_status(status_line)?;
        let reason = Bytes::copy_from_slice(reason);
        ResponseHead::checked(status, reason, headers)
    }

    /// [`ResponseHead::new`] for a status line the caller holds as `Bytes`:
    /// the reason phrase is a slice of it, not a copy.
    ///
    /// # Errors
    /// As [`ResponseHead::new`].
    pub fn from_shared(
        status_line: &Bytes,
        headers: Vec<(Bytes, Bytes)>,
    ) -> Result<Self, HeadError> {
        let (status, reason) = parse_status(status_line)?;
        let reason = status_line.slice_ref(reason);
        ResponseHead::checked(status, reason, headers)
    }

    fn checked(
        status: u16,
        reason: Bytes,
        mut headers: Vec<(Bytes, Bytes)>,
    ) -> Result<Self, HeadError> {
        let mut content_length = None;
        let mut duplicate_length = false;
        for (name, value) in &headers {
            validate_header(name, value)?;
            if is_content_length(name) {
                let length = parse_content_length(value)?;
                match content_length {
                    Some(previous) if previous != length => {
                        return Err(HeadError::ConflictingContentLength(previous, length))
                    }
                    Some(_) => duplicate_length = true,
                    None => content_length = Some(length),
                }
            }
        }
        if duplicate_length {
            let mut seen = false;
            headers.retain(|(name, _)| {
                !is_content_length(name) || !std::mem::replace(&mut seen, true)
            });
        }
        Ok(ResponseHead {
            status,
            reason,
            headers,
            content_length,
        })
    }

    /// Whether the application set this header (names compare ignoring case).
    pub fn has_header(&self, name: &[u8]) -> bool {
        self.headers
            .iter()
            .any(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
    }
}

/// Splits `"NNN Reason"` into its code and reason phrase.
///
/// PEP 3333 asks for "a status code and a reason phrase, separated by a single
/// space"; like gunicorn we also accept a bare `"NNN"`. The reason follows
/// RFC 9112 §4: `*( HTAB / SP / VCHAR / obs-text )`.
///
/// # Errors
/// [`HeadError::InvalidStatus`].
pub fn parse_status(line: &[u8]) -> Result<(u16, &[u8]), HeadError> {
    let invalid = || HeadError::InvalidStatus(String::from_utf8_lossy(line).into_owned());
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) || line[0] == b'0' {
        return Err(invalid());
    }
    let code = line[..3]
        .iter()
        .fold(0u16, |acc, digit| acc * 10 + u16::from(digit - b'0'));
    let reason = match line.get(3) {
        None => &line[3..],
        Some(b' ') => &line[4..],
        Some(_) => return Err(invalid()),
    };
    if has_forbidden_in_text(reason) {
        return Err(invalid());
    }
    Ok((code, reason))
}

/// Checks one response header against PEP 3333 and RFC 9110.
///
/// # Errors
/// A name that is not a token, a value with control characters, or a
/// hop-by-hop header.
pub fn validate_header(name: &[u8], value: &[u8]) -> Result<(), HeadError> {
    if name.is_empty() || !is_token(name) {
        return Err(HeadError::InvalidHeaderName(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    // RFC 9110 §5.5: field-value = *field-content; CR, LF and NUL are never
    // allowed (they split or truncate the head: response splitting).
    if has_forbidden_in_text(value) {
        return Err(HeadError::InvalidHeaderValue {
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    if is_hop_by_hop(name) {
        return Err(HeadError::HopByHop(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    Ok(())
}

/// The hop-by-hop headers PEP 3333 forbids to applications (RFC 2616 §13.5.1,
/// the list PEP 3333 refers to; `wsgiref.util.is_hop_by_hop`).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // Dispatch on the length first: most names are not 2, 7, 8, 10, 14, 17
    // or 19 bytes long, and those that are meet one comparison.
    let candidate: &[u8] = match name.len() {
        2 => b"te",
        7 => b"upgrade",
        8 => b"trailers",
        10 => match name[0] | 0x20 {
            b'c' => b"connection",
            _ => b"keep-alive",
        },
        17 => b"transfer-encoding",
        18 => b"proxy-authenticate",
        19 => b"proxy-authorization",
        _ => return false,
    };
    name.eq_ignore_ascii_case(candidate)
}

fn is_content_length(name: &[u8]) -> bool {
    // Two overlapping words instead of fourteen byte comparisons: it is
    // asked of every header of every response.
    const NAME: &[u8; 14] = b"content-length";
    const FOLD: [u8; 14] = letter_fold(NAME);
    name.len() == 14
        && word(name, 0) | word(&FOLD, 0) == word(NAME, 0)
        && word(name, 6) | word(&FOLD, 6) == word(NAME, 6)
}

/// 0x20 at each lowercase letter of `lower`, 0 elsewhere: ORed into a name,
/// it folds exactly the letters (an upper- or lowercase letter ORed with
/// 0x20 gives that lowercase letter, and no other byte does), while the
/// other bytes must match as they are.
const fn letter_fold<const N: usize>(lower: &[u8; N]) -> [u8; N] {
    let mut fold = [0u8; N];
    let mut index = 0;
    while index < N {
        if lower[index].is_ascii_lowercase() {
            fold[index] = 0x20;
        }
        index += 1;
    }
    fold
}

/// Eight bytes of `bytes` from `at` (the caller checked the length).
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    let trimmed = value.trim_ascii();
    let invalid = || HeadError::InvalidContentLength(String::from_utf8_lossy(value).into_owned());
    if trimmed.is_empty() || !trimmed.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    trimmed.iter().try_fold(0u64, |acc, digit| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(digit - b'0')))
            .ok_or_else(invalid)
    })
}

/// Byte classes for header validation, one table lookup per byte.
const TOKEN: u8 = 1;
const FORBIDDEN_IN_TEXT: u8 = 2;

const BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        // RFC 9110 §5.6.2 `tchar`.
        if b.is_ascii_alphanumeric() {
            table[byte] |= TOKEN;
        }
        // Control characters other than HTAB, and DEL.
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            table[byte] |= FORBIDDEN_IN_TEXT;
        }
        byte += 1;
    }
    let tchar_symbols = b"!#$%&'*+-.^_`|~";
    let mut index = 0;
    while index < tchar_symbols.len() {
        table[tchar_symbols[index] as usize] |= TOKEN;
        index += 1;
    }
    table
};

/// Whether every byte is an RFC 9110 §5.6.2 `tchar` (one table lookup per
/// byte, without a branch per byte).
fn is_token(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(TOKEN, |class, &byte| class & BYTE_CLASS[usize::from(byte)])
        == TOKEN
}

/// Control characters other than HTAB, and DEL.
fn is_forbidden_in_text(byte: u8) -> bool {
    BYTE_CLASS[usize::from(byte)] & FORBIDDEN_IN_TEXT != 0
}

/// Whether `bytes` holds a control character other than HTAB, or DEL;
/// eight bytes at a time (long values: cookies, URLs, policies).
fn has_forbidden_in_text(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let word = word(chunk, 0);
        // A byte below 0x20 (exact: "hasless" of Bit Twiddling Hacks), or
        // a byte equal to 0x7f; a word with either (HTAB is allowed) is
        // looked at byte by byte.
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
        let delete = (word ^ (ONES * 0x7f)).wrapping_sub(ONES) & !(word ^ (ONES * 0x7f)) & HIGH;
        if control | delete != 0 && chunk.iter().any(|&byte| is_forbidden_in_text(byte)) {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&byte| is_forbidden_in_text(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: &str, headers: &[(&str, &str)]) -> Result<ResponseHead, HeadError> {
        let headers = headers
            .iter()
            .map(|(name, value)| {
                (
                    Bytes::copy_from_slice(name.as_bytes()),
                    Bytes::copy_from_slice(value.as_bytes()),
                )
            })
            .collect();
        ResponseHead::new(status.as_bytes(), headers)
    }

    #[test]
    fn statuses() {
        let cases: &[(&str, Option<(u16, &str)>)] = &[
            ("200 OK", Some((200, "OK"))),
            ("404 Not Found", Some((404, "Not Found"))),
            (
                "599 Custom reason, with words",
                Some((599, "Custom reason, with words")),
            ),
            ("204", Some((204, ""))),
            ("200 ", Some((200, ""))),
            ("099 Low", None),
            ("20 OK", None),
            ("2000 OK", None),
            ("200OK", None),
            ("abc OK", None),
            ("200 OK\r\nX: injected", None),
            ("200 O\0K", None),
            ("", None),
        ];
        for (input, expect) in cases {
            let got = parse_status(input.as_bytes())
                .ok()
                .map(|(code, reason)| (code, String::from_utf8(reason.to_vec()).unwrap()));
            let expect = expect.map(|(code, reason)| (code, reason.to_owned()));
            assert_eq!(got, expect, "status {input:?}");
        }
    }

    #[test]
    fn headers() {
        assert!(head("200 OK", &[("Content-Type", "text/plain"), ("X-A", "b\tc")]).is_ok());
        let refused: &[(&str, &str)] = &[
            ("Bad Name", "x"),
            ("", "x"),
            ("X:Y", "x"),
            ("X-Evil", "a\r\nSet-Cookie: x"),
            ("X-Evil", "a\nb"),
            ("X-Evil", "a\0b"),
            ("Connection", "close"),
            ("transfer-encoding", "chunked"),
            ("Keep-Alive", "timeout=5"),
            ("Upgrade", "websocket"),
            ("Content-Length", "-1"),
            ("Content-Length", "1 2"),
            ("Content-Length", "99999999999999999999999"),
        ];
        for (name, value) in refused {
            assert!(
                head("200 OK", &[(name, value)]).is_err(),
                "{name}: {value:?} must be refused"
            );
        }
    }

    #[test]
    fn hop_by_hop_names() {
        let hop = [
            "connection",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailers",
            "transfer-encoding",
            "upgrade",
        ];
        for name in hop {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
            assert!(is_hop_by_hop(name.to_uppercase().as_bytes()), "{name}");
        }
        // Same lengths and first letters as hop-by-hop names, but not them.
        for name in [
            "tx",
            "upgrad3",
            "trailer",
            "connectio",
            "connexion!",
            "keep-alivf",
            "Content-Length",
            "transfer-encodinx",
            "proxy-authorizatio",
            "",
            "x",
        ] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn content_length_is_parsed() {
        let parsed = head("200 OK", &[("content-length", " 13 ")]).unwrap();
        assert_eq!(parsed.content_length, Some(13));
        assert!(parsed.has_header(b"Content-Length"));
        assert!(!parsed.has_header(b"Date"));
    }

    /// The word-at-a-time checks agree with the byte-by-byte definitions
    /// for every byte value at every position (first word, second word,
    /// the remainder).
    #[test]
    fn word_checks_match_the_byte_checks() {
        for length in [1usize, 7, 8, 9, 16, 17] {
            for position in 0..length {
                for byte in 0..=255u8 {
                    let mut value = vec![b'a'; length];
                    value[position] = byte;
                    let forbidden = (byte < 0x20 && byte != b'\t') || byte == 0x7f;
                    assert_eq!(has_forbidden_in_text(&value), forbidden, "{value:?}");
                    let token = byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
                    assert_eq!(is_token(&value), token, "{value:?}");
                }
            }
        }
        assert!(!has_forbidden_in_text(b""));
        assert!(!has_forbidden_in_text(b"a\tb\tc\td\te\tf\x80\xff"));
    }

    #[test]
    fn content_length_names() {
        for name in [
            "content-length",
            "Content-Length",
            "CONTENT-LENGTH",
            "cOnTeNt-LeNgTh",
        ] {
            assert!(is_content_length(name.as_bytes()), "{name}");
        }
        let mut near: Vec<Vec<u8>> = [
            "content_length",
            "content-lengt",
            "content-lengths",
            "contentmlength",
            "",
        ]
        .iter()
        .map(|name| name.as_bytes().to_vec())
        .collect();
        // Every single-byte change of the name, but for the letters' case.
        for position in 0..14 {
            for byte in 0..=255u8 {
                let mut name = b"content-length".to_vec();
                if name[position].eq_ignore_ascii_case(&byte) {
                    continue;
                }
                name[position] = byte;
                near.push(name);
            }
        }
        for name in near {
            assert!(!is_content_length(&name), "{name:?}");
        }
    }

    #[test]
    fn from_shared_slices_the_reason() {
        let line = Bytes::from_static(b"404 Not Found");
        let head = ResponseHead::from_shared(&line, Vec::new()).unwrap();
        assert_eq!((head.status, &head.reason[..]), (404, &b"Not Found"[..]));
        assert_eq!(head.reason.as_ptr(), line[4..].as_ptr());
        assert!(ResponseHead::from_shared(&Bytes::from_static(b"200 O\nK"), Vec::new()).is_err());
    }

    #[test]
    fn repeated_content_length() {
        // Identical values: one header stays, the first, in its place.
        let parsed = head(
            "200 OK",
            &[
                ("Content-Length", "5"),
                ("X-A", "1"),
                ("content-length", " 5"),
                ("CONTENT-LENGTH", "05"),
            ],
        )
        .unwrap();
        assert_eq!(parsed.content_length, Some(5));
        assert_eq!(
            parsed.headers,
            [
                (
                    Bytes::from_static(b"Content-Length"),
                    Bytes::from_static(b"5")
                ),
                (Bytes::from_static(b"X-A"), Bytes::from_static(b"1")),
            ]
        );
        // Different values: refused, whichever order.
        for (first, second) in [("5", "6"), ("6", "5"), ("0", "1")] {
            let error = head(
                "200 OK",
                &[("Content-Length", first), ("Content-Length", second)],
            )
            .unwrap_err();
            assert_eq!(
                error,
                HeadError::ConflictingContentLength(
                    first.parse().unwrap(),
                    second.parse().unwrap()
                )
            );
        }
    }

    #[test]
    fn latin1_values_pass() {
        let value = Bytes::from_static(b"caf\xe9");
        assert!(ResponseHead::new(b"200 OK", vec![(Bytes::from_static(b"X-Name"), value)]).is_ok());
    }
}
