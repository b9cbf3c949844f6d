//! The response head encoder against the straightforward one it replaced: same bytes, same errors, same keep-alive.

use bytes::{BufMut, BytesMut};
use http::Version;
use proptest::prelude::*;
use wsgi_http::{EncodeError, ResponseEncoder, ResponseHead};

/// The encoder as it was before the one-pass rewrite (kept as the oracle):
/// returns the head's bytes and whether the connection stays open.
fn reference(
    version: Version,
    is_head: bool,
    allow_chunked: bool,
    request_keep_alive: bool,
    head: &ResponseHead<'_>,
) -> Result<(Vec<u8>, bool), EncodeError> {
    if !(200..=999).contains(&head.status) {
        return Err(EncodeError::InvalidStatus(head.status));
    }
    let text = |bytes: &[u8]| {
        bytes
            .iter()
            .all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
    };
    if !text(head.reason) {
        return Err(EncodeError::InvalidHeader);
    }
    let mut app_length: Option<u64> = None;
    let mut app_date = false;
    let mut app_close = false;
    for &(name, value) in head.headers {
        if name.is_empty()
            || !name.iter().all(|&b| b.is_ascii_graphic() && b != b':')
            || !text(value)
        {
            return Err(EncodeError::InvalidHeader);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let length =
                parse_length(value.trim_ascii()).ok_or(EncodeError::InvalidContentLength)?;
            if app_length.is_some_and(|previous| previous != length) {
                return Err(EncodeError::InvalidContentLength);
            }
            app_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"date") {
            app_date = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            app_close |= value
                .split(|&b| b == b',')
                .any(|token| trim(token).eq_ignore_ascii_case(b"close"));
        }
    }
    #[derive(PartialEq)]
    enum Framing {
        NoBody,
        Length(u64),
        Chunked,
        CloseDelimited,
    }
    let framing = if is_head || head.status == 204 || head.status == 304 {
        Framing::NoBody
    } else {
        match app_length.or(head.content_length) {
            Some(length) => Framing::Length(length),
            None if allow_chunked && version == Version::HTTP_11 => Framing::Chunked,
            None => Framing::CloseDelimited,
        }
    };
    let keep_app_length = head.status != 204;
    let server_length = match (app_length, &framing) {
        (None, Framing::Length(expected)) => Some(*expected),
        (None, Framing::NoBody) if is_head => head.content_length,
        _ => None,
    };
    let keep_alive =
        request_keep_alive && !head.close && !app_close && framing != Framing::CloseDelimited;
    let mut dst = BytesMut::new();
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(format!("{}", head.status).as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(head.reason);
    dst.put_slice(b"\r\n");
    let mut length_sent = !keep_app_length;
    for &(name, value) in head.headers {
        let is_length = name.eq_ignore_ascii_case(b"content-length");
        if (is_length && std::mem::replace(&mut length_sent, true))
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"connection")
        {
            continue;
        }
        dst.put_slice(&[name, b": ", value, b"\r\n"].concat());
    }
    if let (Some(date), false) = (head.date, app_date) {
        dst.put_slice(&[&b"Date: "[..], date, b"\r\n"].concat());
    }
    if let Some(length) = server_length {
        dst.put_slice(format!("Content-Length: {length}\r\n").as_bytes());
    }
    if framing == Framing::Chunked {
        dst.put_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if !keep_alive {
        dst.put_slice(b"Connection: close\r\n");
    } else if version == Version::HTTP_10 {
        dst.put_slice(b"Connection: keep-alive\r\n");
    }
    dst.put_slice(b"\r\n");
    Ok((dst.to_vec(), keep_alive))
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn field() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        prop::sample::select(vec![
            &b"Content-Type"[..],
            b"content-length",
            b"Content-Length",
            b"CONTENT-LENGTH",
            b"Date",
            b"Connection",
            b"connection",
            b"Transfer-Encoding",
            b"X-A",
            b"Set-Cookie",
            b"Bad Name",
            b"",
            b"X:Y",
            b"Te",
            b"\x7fX",
            b"\xe9",
        ]),
        prop::sample::select(vec![
            &b"text/plain"[..],
            b"5",
            b" 5 ",
            b"13",
            b"0",
            b"x",
            b"close",
            b"keep-alive, Close",
            b"",
            b"a\tb",
            b"a\rb",
            b"\x00",
            b"\xe9t\xe9",
            b"18446744073709551616",
            b"chunked",
        ]),
    )
        .prop_map(|(name, value)| (name.to_vec(), value.to_vec()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn encode_head_matches_the_reference(
        status in prop::sample::select(vec![99u16, 200, 201, 204, 304, 404, 500, 999, 1000]),
        reason in prop::sample::select(vec![&b"OK"[..], b"", b"Not Found", b"a\nb", b"\xe9"]),
        fields in prop::collection::vec(field(), 0..6),
        date in prop::option::of(Just(&b"Thu, 03 Dec 2026 06:00:00 GMT"[..])),
        content_length in prop::option::of(prop::sample::select(vec![0u64, 5, 13, u64::MAX])),
        close in any::<bool>(),
        http10 in any::<bool>(),
        is_head in any::<bool>(),
        allow_chunked in any::<bool>(),
        request_keep_alive in any::<bool>(),
    ) {
        let pairs: Vec<(&[u8], &[u8])> = fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let head = ResponseHead { status, reason, headers: &pairs, date, content_length, close };
        let version = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
        let expected = reference(version, is_head, allow_chunked, request_keep_alive, &head);
        let mut encoder = ResponseEncoder::new(version, is_head, allow_chunked).with_keep_alive(request_keep_alive);
        let mut out = BytesMut::from(&b"before"[..]);
        let got = encoder.encode_head(&head, &mut out).map(|()| (out[6..].to_vec(), encoder.keep_alive()));
        if got.is_err() {
            prop_assert_eq!(&out[..], b"before", "nothing is written on error");
        }
        prop_assert_eq!(encoder.request_keep_alive(), request_keep_alive);
        if !request_keep_alive {
            // `close` changes nothing in a response the request closes
            // anyway (what the server's direct writes rely on).
            let flipped = ResponseHead { close: !close, ..head };
            let mut other = ResponseEncoder::new(version, is_head, allow_chunked);
            let mut other_out = BytesMut::from(&b"before"[..]);
            let other_got = other
                .encode_head(&flipped, &mut other_out)
                .map(|()| (other_out[6..].to_vec(), other.keep_alive()));
            prop_assert_eq!(&other_got, &got);
        }
        prop_assert_eq!(got, expected);
    }
}
