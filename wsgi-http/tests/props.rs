//! Property tests: request heads and chunked bodies round-trip, and arbitrary bytes never panic.

use bytes::BytesMut;
use proptest::prelude::*;
use wsgi_http::{BodyLength, Config, Event, ParseError, ResponseEncoder, ResponseHead, ServerConn};

/// Decodes everything in `pieces` (fed one after another), answering each
/// request so pipelined ones are reached. Stops at the first error.
fn drive(pieces: &[&[u8]]) -> Vec<Event> {
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match conn.decode(&mut buf) {
                Ok(Some(Event::End)) => {
                    events.push(Event::End);
                    let mut out = BytesMut::new();
                    let head = ResponseHead {
                        status: 200,
                        reason: b"OK",
                        headers: &[],
                        date: None,
                        content_length: None,
                        close: false,
                    };
                    conn.encode_head(&head, &mut out).unwrap();
                    conn.encode_data(b"x", &mut out).unwrap();
                    conn.encode_end(&mut out).unwrap();
                    if conn.start_next_cycle().is_err() {
                        return events;
                    }
                }
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(error) => {
                    let _ = error.status();
                    return events;
                }
            }
        }
    }
    let _ = conn.decode_eof(&mut buf);
    events
}

/// Splits `bytes` at the given (sorted, deduplicated) points.
fn split_at<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in cuts {
        pieces.push(&bytes[start..cut]);
        start = cut;
    }
    pieces.push(&bytes[start..]);
    pieces
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_owned()),
        Just("POST".to_owned()),
        Just("DELETE".to_owned()),
        // CONNECT is refused (501): not a method this codec serves.
        "[A-Z][A-Z_!#-]{0,10}".prop_filter("CONNECT", |m| m != "CONNECT"),
    ]
}

/// Targets of every form a server serves (RFC 9112 §3.2); `*` is sent with
/// `OPTIONS` only.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-zA-Z0-9/._~%!$&'()*+,;=:@-]{0,40}(\\?[a-zA-Z0-9=&%/?-]{0,20})?",
        "(http|HTTPS)://[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[a-zA-Z0-9/._~%-]{0,20})?(\\?[a-z0-9=&]{0,10})?",
        Just("*".to_owned()),
    ]
}

/// The first decode error for `pieces`, if any (no response is given, so
/// only the first request counts).
fn first_error(pieces: &[&[u8]]) -> Option<ParseError> {
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match conn.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(error) => return Some(error),
            }
        }
    }
    None
}

fn field() -> impl Strategy<Value = (String, String)> {
    // Values without leading/trailing whitespace (the parser trims OWS).
    ("x-[a-z0-9-]{1,12}", "([!-~]([ \t!-~]{0,30}[!-~])?)?")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn request_heads_round_trip(
        method in method(),
        target in target(),
        http10 in any::<bool>(),
        fields in prop::collection::vec(field(), 0..20),
        points in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let method = if target == "*" { "OPTIONS".to_owned() } else { method };
        let mut wire = format!("{method} {target} HTTP/1.{}\r\nHost: example.com\r\n", if http10 { 0 } else { 1 });
        for (name, value) in &fields {
            wire.push_str(&format!("{name}: {value}\r\n"));
        }
        wire.push_str("\r\n");
        let events = drive(&split_at(wire.as_bytes(), &points));
        prop_assert_eq!(events.len(), 2);
        let Event::Head(head) = &events[0] else { panic!("{events:?}") };
        prop_assert_eq!(head.method.as_str(), method.as_str());
        prop_assert_eq!(&head.target[..], target.as_bytes());
        prop_assert_eq!(head.version, if http10 { http::Version::HTTP_10 } else { http::Version::HTTP_11 });
        prop_assert_eq!(head.body, BodyLength::Empty);
        let mut expected = vec![("host".to_owned(), b"example.com".to_vec())];
        expected.extend(fields.iter().map(|(n, v)| (n.clone(), v.as_bytes().to_vec())));
        // The fields as sent: every line in order, names in their case.
        let raw: Vec<(String, Vec<u8>)> = head
            .headers
            .iter()
            .map(|(n, v)| (String::from_utf8_lossy(n).to_ascii_lowercase(), v.to_vec()))
            .collect();
        prop_assert_eq!(&raw, &expected);
        prop_assert_eq!(head.headers.iter().next().map(|(n, _)| n), Some(&b"Host"[..]));
        // HeaderMap groups repeated names at their first position.
        let mut grouped: Vec<(String, Vec<u8>)> = Vec::new();
        for (name, _) in &expected {
            if grouped.iter().any(|(n, _)| n == name) {
                continue;
            }
            for (n, v) in &expected {
                if n == name {
                    grouped.push((n.clone(), v.clone()));
                }
            }
        }
        let got: Vec<(String, Vec<u8>)> = head
            .headers
            .to_header_map()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        prop_assert_eq!(got, grouped);
    }

    #[test]
    fn targets_outside_visible_ascii_are_refused(
        method in method(),
        before in "/[!-~]{0,20}",
        bad in prop::sample::select(
            (0u8..=0x20).chain(0x7f..=0xff).filter(|b| *b != b'\r' && *b != b'\n').collect::<Vec<u8>>()
        ),
        after in "[!-~]{0,20}",
        points in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let wire = [
            method.as_bytes(), b" ", before.as_bytes(), &[bad], after.as_bytes(),
            b" HTTP/1.1\r\nHost: a\r\n\r\n",
        ].concat();
        let error = first_error(&split_at(&wire, &points));
        prop_assert!(error.is_some(), "accepted {:?}", String::from_utf8_lossy(&wire));
        prop_assert_eq!(error.unwrap().status().as_u16(), 400);
    }

    #[test]
    fn chunked_bodies_round_trip(
        data in prop::collection::vec(any::<u8>(), 0..2000),
        writes in prop::collection::vec(any::<usize>(), 0..10),
        points in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        // Frame the body with our own chunked encoder...
        let mut encoder = ResponseEncoder::new(http::Version::HTTP_11, false, true);
        let mut scratch = BytesMut::new();
        let head = ResponseHead { status: 200, reason: b"", headers: &[], date: None, content_length: None, close: false };
        encoder.encode_head(&head, &mut scratch).unwrap();
        let mut wire = BytesMut::from(&b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..]);
        for piece in split_at(&data, &writes) {
            encoder.encode_data(piece, &mut wire).unwrap();
        }
        encoder.encode_end(&mut wire).unwrap();
        // ...then decode it split anywhere.
        let events = drive(&split_at(&wire, &points));
        let mut body = Vec::new();
        let mut ended = false;
        for event in &events[1..] {
            match event {
                Event::Data(bytes) => {
                    prop_assert!(!bytes.is_empty());
                    prop_assert!(!ended);
                    body.extend_from_slice(bytes);
                }
                Event::End => ended = true,
                Event::Head(_) => prop_assert!(false, "unexpected head"),
            }
        }
        prop_assert!(ended);
        prop_assert_eq!(body, data);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        points in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        drive(&[&bytes]);
        drive(&split_at(&bytes, &points));
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        drive(&bytewise);
    }

    #[test]
    fn near_valid_bytes_never_panic(
        prefix in prop::sample::select(vec![
            &b"GET / HTTP/1.1\r\nHost: a\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.0\r\n",
        ]),
        tail in prop::collection::vec(prop::sample::select(b"0123456789abcdefxX;= \t\r\n:\x00\x7f\xff".to_vec()), 0..200),
        points in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let bytes = [prefix, &tail[..]].concat();
        drive(&[&bytes]);
        drive(&split_at(&bytes, &points));
    }
}
