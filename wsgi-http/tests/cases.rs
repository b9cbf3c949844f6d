//! Table-driven decoder and encoder cases through the public API, each decode case run whole, byte by byte, and with trailing bytes.

use bytes::BytesMut;
use wsgi_http::{
    BodyLength, Config, EncodeError, Event, ParseError, ResponseEncoder, ResponseHead, ServerConn,
};

/// Renders events compactly; consecutive `Data` are merged so that every
/// way of splitting the input gives the same rendering.
fn render(events: &mut Vec<String>, event: Result<Event, ParseError>) {
    let text = match event {
        Ok(Event::Head(head)) => {
            let mut text = format!(
                "{} {} {:?} {:?}",
                head.method,
                String::from_utf8_lossy(&head.target),
                head.version,
                head.body
            );
            if head.keep_alive {
                text.push_str(" ka");
            }
            if head.expect_continue {
                text.push_str(" expect");
            }
            text
        }
        Ok(Event::Data(data)) => {
            assert!(!data.is_empty(), "Data events are never empty");
            let data = String::from_utf8_lossy(&data).into_owned();
            if let Some(last) = events.last_mut() {
                if let Some(previous) = last.strip_prefix("data:") {
                    *last = format!("data:{previous}{data}");
                    return;
                }
            }
            format!("data:{data}")
        }
        Ok(Event::End) => "end".to_owned(),
        Err(error) => error.status().as_str().to_owned(),
    };
    events.push(text);
}

/// Feeds `pieces` one after another, decoding until `Ok(None)` after each.
/// After an `End`, answers with an empty response and starts the next cycle
/// only if more events are expected. Returns the events and the leftover.
fn run(config: &Config, pieces: &[&[u8]], expected: &[&str]) -> (Vec<String>, BytesMut) {
    let mut conn = ServerConn::new(config.clone());
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut failed = false;
    for piece in pieces {
        buf.extend_from_slice(piece);
        while !failed {
            match conn.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(event)) => {
                    let end = matches!(event, Event::End);
                    render(&mut events, Ok(event));
                    if end && events.len() < expected.len() {
                        let head = ResponseHead {
                            status: 200,
                            reason: b"OK",
                            headers: &[],
                            date: None,
                            content_length: Some(0),
                            close: false,
                        };
                        let mut out = BytesMut::new();
                        conn.encode_head(&head, &mut out).unwrap();
                        conn.encode_end(&mut out).unwrap();
                        if conn.start_next_cycle().is_err() {
                            events.push("closed".to_owned());
                            failed = true;
                        }
                    }
                }
                Err(error) => {
                    render(&mut events, Err(error));
                    // The error sticks.
                    assert_eq!(conn.decode(&mut buf), Err(error));
                    failed = true;
                }
            }
        }
    }
    (events, buf)
}

const TRAILING: &[u8] = b"GARBAGE \x00\xff\r\n";

fn check(input: &[u8], expected: &[&str]) {
    check_with(&Config::default(), input, expected);
}

fn check_with(config: &Config, input: &[u8], expected: &[&str]) {
    let name = String::from_utf8_lossy(input);
    let (whole, rest) = run(config, &[input], expected);
    assert_eq!(whole, expected, "whole: {name:?}");
    let complete = expected.last() == Some(&"end");
    if complete {
        assert!(rest.is_empty(), "whole left {rest:?}: {name:?}");
    }

    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let (bytewise, rest) = run(config, &bytes, expected);
    assert_eq!(bytewise, expected, "byte by byte: {name:?}");
    if complete {
        assert!(rest.is_empty(), "byte by byte left {rest:?}: {name:?}");
    }

    if complete {
        let (trailing, rest) = run(config, &[input, TRAILING], expected);
        assert_eq!(trailing, expected, "with trailing bytes: {name:?}");
        assert_eq!(&rest[..], TRAILING, "trailing bytes untouched: {name:?}");
        // Every strict prefix is incomplete: no error, not all ends.
        let ends = expected.iter().filter(|e| **e == "end").count();
        for len in 0..input.len() {
            let (events, _) = run(config, &[&input[..len]], expected);
            let prefix_ends = events.iter().filter(|e| *e == "end").count();
            assert!(
                prefix_ends < ends && events.iter().all(|e| !e.starts_with(['4', '5'])),
                "prefix {len} of {name:?} gave {events:?}"
            );
        }
    }
}

// ---------------------------------------------------------------- valid

#[test]
fn simple_requests() {
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        &["GET / HTTP/1.1 Empty ka", "end"],
    );
    check(
        b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n",
        &["HEAD /x HTTP/1.1 Empty ka", "end"],
    );
    check(
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        &["OPTIONS * HTTP/1.1 Empty ka", "end"],
    );
    check(
        b"GET http://example.com/a?b HTTP/1.1\r\nHost: ignored\r\n\r\n",
        &["GET http://example.com/a?b HTTP/1.1 Empty ka", "end"],
    );
    check(
        b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n",
        &["PURGE /x HTTP/1.1 Empty ka", "end"],
    );
    // Bare LF line endings are accepted in the head (RFC 9112 §2.2 MAY).
    check(
        b"GET / HTTP/1.1\nHost: a\n\n",
        &["GET / HTTP/1.1 Empty ka", "end"],
    );
    // Empty header values, obs-text and HTAB in values are fine.
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-E:\r\nX-T: a\tb\xe9\r\n\r\n",
        &["GET / HTTP/1.1 Empty ka", "end"],
    );
}

#[test]
fn leading_empty_lines() {
    // RFC 9112 §2.2: ignore at least one empty line before the request line.
    check(
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        &["GET / HTTP/1.1 Empty ka", "end"],
    );
    check(
        b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        &["GET / HTTP/1.1 Empty ka", "end"],
    );
}

#[test]
fn http10_and_keep_alive() {
    check(b"GET / HTTP/1.0\r\n\r\n", &["GET / HTTP/1.0 Empty", "end"]);
    check(
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        &["GET / HTTP/1.0 Empty ka", "end"],
    );
    check(
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive, foo\r\n\r\n",
        &["GET / HTTP/1.0 Empty ka", "end"],
    );
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        &["GET / HTTP/1.1 Empty", "end"],
    );
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, CLOSE\r\n\r\n",
        &["GET / HTTP/1.1 Empty", "end"],
    );
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        &["GET / HTTP/1.1 Empty", "end"],
    );
}

#[test]
fn content_length_bodies() {
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        &["POST / HTTP/1.1 Known(5) ka", "data:hello", "end"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        &["POST / HTTP/1.1 Known(0) ka", "end"],
    );
    // Identical repeats are one value (RFC 9112 §6.3 rule 5, RFC 9110 §8.6).
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
        &["POST / HTTP/1.1 Known(5) ka", "data:hello", "end"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        &["POST / HTTP/1.1 Known(5) ka", "data:hello", "end"],
    );
    // The same decimal value, written differently.
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,05\r\n\r\nhello",
        &["POST / HTTP/1.1 Known(5) ka", "data:hello", "end"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc",
        &["POST / HTTP/1.1 Known(3) ka", "data:abc", "end"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 00003\r\n\r\nabc",
        &["POST / HTTP/1.1 Known(3) ka", "data:abc", "end"],
    );
    check(
        b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
        &["POST / HTTP/1.0 Known(2)", "data:hi", "end"],
    );
}

#[test]
fn chunked_bodies() {
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        &["POST / HTTP/1.1 Chunked ka", "data:hello", "end"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        &["POST / HTTP/1.1 Chunked ka", "end"],
    );
    // Extensions (with quoted strings and BWS) are ignored; hex in any case.
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n\
          A;name=value;q=\"a b\"\r\n0123456789\r\n1 ; x\r\n!\r\n00;last\r\n\r\n",
        &["POST / HTTP/1.1 Chunked ka", "data:0123456789!", "end"],
    );
    // Trailers are parsed and kept.
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-Other: y\r\n\r\n",
        &["POST / HTTP/1.1 Chunked ka", "data:abc", "end"],
    );
    // Transfer-Encoding as a list across lines, empty elements ignored.
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
        &["POST / HTTP/1.1 Chunked ka", "end"],
    );
}

#[test]
fn trailers_are_exposed() {
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(
        &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: 1\r\nX-A: 2\r\n\r\nNEXT"[..],
    );
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::Head(_)))));
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::End))));
    let trailers = conn.take_trailers().unwrap();
    assert_eq!(
        trailers.get_all("x-a").iter().collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert_eq!(&buf[..], b"NEXT");
    assert_eq!(conn.decode(&mut buf), Ok(None), "paused");
}

#[test]
fn pipelined_requests() {
    check(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\
          POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nyo\r\n0\r\n\r\n\
          GET /4 HTTP/1.1\r\nHost: a\r\n\r\n",
        &[
            "GET /1 HTTP/1.1 Empty ka",
            "end",
            "POST /2 HTTP/1.1 Known(2) ka",
            "data:hi",
            "end",
            "POST /3 HTTP/1.1 Chunked ka",
            "data:yo",
            "end",
            "GET /4 HTTP/1.1 Empty ka",
            "end",
        ],
    );
    // An extra CRLF after a POST body (old browsers) is tolerated.
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        &["POST / HTTP/1.1 Known(1) ka", "data:x", "end", "GET / HTTP/1.1 Empty ka", "end"],
    );
    // A request that does not allow keep-alive ends the connection.
    check(
        b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
        &["GET /1 HTTP/1.0 Empty", "end", "closed"],
    );
}

#[test]
fn skipped_body_bytes() {
    // Body bytes the server takes from the socket itself: the codec counts
    // them and goes on after them.
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhi"[..]);
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::Head(_)))));
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::Data(data))) if &data[..] == b"hi"));
    assert!(!conn.skip_body(0), "nothing to skip");
    assert!(!conn.skip_body(4), "past the body");
    assert!(conn.skip_body(2));
    assert!(conn.skip_body(1));
    assert!(!conn.skip_body(1), "the body is all counted");
    assert_eq!(conn.decode(&mut buf), Ok(Some(Event::End)));
    let head = ResponseHead {
        status: 200,
        reason: b"OK",
        headers: &[],
        date: None,
        content_length: Some(0),
        close: false,
    };
    let mut out = BytesMut::new();
    conn.encode_head(&head, &mut out).unwrap();
    conn.encode_end(&mut out).unwrap();
    conn.start_next_cycle().unwrap();
    buf.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(
        matches!(conn.decode(&mut buf), Ok(Some(Event::Head(head))) if head.path() == b"/next")
    );
    // Only a body of known length.
    let mut conn = ServerConn::new(Config::default());
    let mut buf =
        BytesMut::from(&b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..]);
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::Head(_)))));
    assert!(!conn.skip_body(1));
    // Nor before a head.
    assert!(!ServerConn::new(Config::default()).skip_body(1));
}

#[test]
fn expect_continue() {
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx",
        &["POST / HTTP/1.1 Known(1) ka expect", "data:x", "end"],
    );
    // No body, or HTTP/1.0: ignored (RFC 9110 §10.1.1).
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        &["GET / HTTP/1.1 Empty ka", "end"],
    );
    check(
        b"POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx",
        &["POST / HTTP/1.0 Known(1)", "data:x", "end"],
    );

    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-Continue\r\n\r\n"[..],
    );
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::Head(_)))));
    assert!(conn.wants_100_continue());
    assert_eq!(
        conn.decode(&mut buf),
        Ok(None),
        "never sends anything by itself"
    );
    let mut out = BytesMut::new();
    conn.encode_continue(&mut out);
    assert_eq!(&out[..], b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(!conn.wants_100_continue());
    conn.encode_continue(&mut out);
    assert_eq!(out.len(), 25, "only once");
}

#[test]
fn final_response_while_client_waits_for_100_closes() {
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n"[..],
    );
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::Head(_)))));
    let mut out = BytesMut::new();
    let head = ResponseHead {
        status: 417,
        reason: b"Expectation Failed",
        headers: &[],
        date: None,
        content_length: Some(0),
        close: false,
    };
    conn.encode_head(&head, &mut out).unwrap();
    assert!(out.ends_with(b"Connection: close\r\n\r\n"));
    conn.encode_end(&mut out).unwrap();
    assert!(!conn.keep_alive());
    assert_eq!(conn.start_next_cycle(), Err(EncodeError::ConnectionClosed));
}

#[test]
fn head_accessors() {
    let head = |input: &[u8]| {
        let mut conn = ServerConn::new(Config::default());
        match conn.decode(&mut BytesMut::from(input)) {
            Ok(Some(Event::Head(head))) => head,
            other => panic!("{other:?}"),
        }
    };
    let h = head(b"GET /a/b?x=1&y=%20#frag HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
    assert_eq!(h.path(), b"/a/b");
    assert_eq!(h.query(), b"x=1&y=%20");
    assert_eq!(h.host(), Some(&b"example.com:8080"[..]));
    assert_eq!(h.target, &b"/a/b?x=1&y=%20#frag"[..]);
    let h = head(b"GET http://other.org?q HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(h.path(), b"/");
    assert_eq!(h.query(), b"q");
    assert_eq!(
        h.host(),
        Some(&b"other.org"[..]),
        "RFC 9112 §3.2.2: the target's authority wins"
    );
    let h = head(b"GET https://other.org/p/q?r HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((h.path(), h.query()), (&b"/p/q"[..], &b"r"[..]));
    let h = head(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.path(), b"*");
    let h = head(b"GET /p HTTP/1.0\r\n\r\n");
    assert_eq!(
        (h.path(), h.query(), h.host()),
        (&b"/p"[..], &b""[..], None)
    );
    // Headers keep order and duplicates.
    let h = head(b"GET / HTTP/1.1\r\nHost: a\r\nX-B: 1\r\nx-a: 2\r\nX-B: 3\r\n\r\n");
    assert_eq!(h.headers.get_all("x-b").collect::<Vec<_>>(), [b"1", b"3"]);
    assert_eq!(h.headers.get("X-A"), Some(&b"2"[..]));
    assert!(h.headers.contains("HOST") && !h.headers.contains("x-c"));
    let names: Vec<&[u8]> = h.headers.iter().map(|(name, _)| name).collect();
    assert_eq!(names, [&b"Host"[..], b"X-B", b"x-a", b"X-B"]);
    // The HeaderMap view: lower-case names, repeats grouped at their first
    // position, values sharing the head's buffer.
    let map = h.headers.to_header_map();
    assert_eq!(map.keys().collect::<Vec<_>>(), ["host", "x-b", "x-a"]);
    assert_eq!(map.get_all("x-b").iter().collect::<Vec<_>>(), ["1", "3"]);
    assert_eq!(h.body, BodyLength::Empty);
}

// ---------------------------------------------------------------- refusals

#[test]
fn refused_request_lines() {
    check(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", &["505"]);
    check(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", &["505"]);
    check(b"GET / HTTP/0.9\r\n\r\n", &["505"]);
    check(b"GET / HTTX/1.1\r\nHost: a\r\n\r\n", &["400"]);
    check(b"GET / http/1.1\r\nHost: a\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", &["400"]);
    check(b"GET /\r\nHost: a\r\n\r\n", &["400"]);
    check(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", &["400"]);
    check(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", &["400"]);
    check(b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", &["400"]);
    check(b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", &["400"]);
    check(b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", &["400"]);
    check(b"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.1\rHost: a\r\n\r\n", &["400"]);
    check(b"\r\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &["400"]);
}

/// RFC 9112 §3.2: each request-target form with the methods it goes with,
/// and bytes outside visible ASCII.
#[test]
fn request_target_forms() {
    let request = |method: &str, target: &[u8]| {
        [
            method.as_bytes(),
            b" ",
            target,
            b" HTTP/1.1\r\nHost: a\r\n\r\n",
        ]
        .concat()
    };
    let accepted: &[(&str, &[u8])] = &[
        // origin-form (§3.2.1), with characters outside the URI grammar
        // that clients send unescaped.
        ("GET", b"/"),
        ("GET", b"//a"),
        ("GET", b"/a?b=%20&c"),
        ("GET", b"/a|b?{\"c\"}^`<>\\"),
        ("OPTIONS", b"/"),
        // asterisk-form (§3.2.4), OPTIONS only.
        ("OPTIONS", b"*"),
        // absolute-form (§3.2.2), any method.
        ("GET", b"http://example.com"),
        ("GET", b"http://example.com/a?b"),
        ("POST", b"HTTPS://example.com:8443?q"),
        ("OPTIONS", b"http://[::1]:80/x"),
        ("DELETE", b"http://a/b#frag"),
    ];
    for (method, target) in accepted {
        let head = format!(
            "{method} {} HTTP/1.1 Empty ka",
            String::from_utf8_lossy(target)
        );
        check(&request(method, target), &[&head, "end"]);
    }
    let refused: &[(&str, &[u8], &str)] = &[
        // Not one of the forms.
        ("GET", b"a/b", "400"),
        ("GET", b"?a", "400"),
        ("GET", b"#a", "400"),
        // asterisk-form with another method, or not alone.
        ("GET", b"*", "400"),
        ("POST", b"*", "400"),
        ("OPTIONS", b"*a", "400"),
        ("OPTIONS", b"**", "400"),
        ("OPTIONS", b"*/", "400"),
        // authority-form without CONNECT.
        ("GET", b"example.com:80", "400"),
        ("OPTIONS", b"example.com:80", "400"),
        // absolute-form: other schemes, no host, userinfo (RFC 9110 §4.2).
        ("GET", b"ftp://a/", "400"),
        ("GET", b"1http://a/", "400"),
        ("GET", b"://a/", "400"),
        ("GET", b"http:///p", "400"),
        ("GET", b"http://", "400"),
        ("GET", b"http://?q", "400"),
        ("GET", b"http://:80/", "400"),
        ("GET", b"http://user@a/", "400"),
        ("GET", b"http://a\"b/", "400"),
        ("GET", b"http:/a", "400"),
        // CONNECT is 501 when well formed (RFC 9110 §9.1), 400 otherwise.
        ("CONNECT", b"example.com:443", "501"),
        ("CONNECT", b"[::1]:443", "501"),
        ("CONNECT", b"example.com", "400"),
        ("CONNECT", b"example.com:", "400"),
        ("CONNECT", b":443", "400"),
        ("CONNECT", b"a:44x", "400"),
        ("CONNECT", b"/", "400"),
        ("CONNECT", b"*", "400"),
        ("CONNECT", b"http://a:443/", "400"),
        ("CONNECT", b"a@b:443", "400"),
        // Bytes outside visible ASCII (httparse passes 0x80-0xFF).
        ("GET", b"/caf\xc3\xa9", "400"),
        ("GET", b"/\x80", "400"),
        ("GET", b"/\xff?a", "400"),
        ("GET", b"/?\xe9", "400"),
        ("GET", b"http://h\xe9/", "400"),
        ("OPTIONS", b"*\xff", "400"),
        ("CONNECT", b"\xe9:443", "400"),
        ("GET", b"/a\x01b", "400"),
        ("GET", b"/a\x1bb", "400"),
        ("GET", b"/a\x7fb", "400"),
        ("GET", b"/a\tb", "400"),
        ("GET", b"/a b", "400"),
        ("GET", b"/a\x0bb", "400"),
        ("GET", b"/a\x0cb", "400"),
    ];
    for (method, target, status) in refused {
        check(&request(method, target), &[status]);
    }
}

#[test]
fn refused_header_fields() {
    // Obsolete line folding (RFC 9112 §5.2).
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
        &["400"],
    );
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n",
        &["400"],
    );
    check(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", &["400"]);
    // Whitespace between name and colon (RFC 9112 §5.1).
    check(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", &["400"]);
    // Bare CR, NUL, other controls, DEL.
    check(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", &["400"]);
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
        &["400"],
    );
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n",
        &["400"],
    );
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n",
        &["400"],
    );
    check(b"GET / HTTP/1.1\r\nHost: a\r\nX-\x00: b\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", &["400"]);
}

#[test]
fn refused_hosts() {
    check(b"GET / HTTP/1.1\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", &["400"]);
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nHOST: b\r\n\r\n",
        &["400"],
    );
    check(
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        &["400"],
    );
    // The absolute-form does not stand in for Host (RFC 9112 §3.2).
    check(b"GET http://a/ HTTP/1.1\r\n\r\n", &["400"]);
    check(
        b"GET http://a/ HTTP/1.0\r\n\r\n",
        &["GET http://a/ HTTP/1.0 Empty", "end"],
    );
    check(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", &["400"]);
    check(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", &["400"]);
    // An empty Host is valid (RFC 9112 §3.2).
    check(
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        &["GET / HTTP/1.1 Empty ka", "end"],
    );
}

/// RFC 9110 §5.3: Content-Type is a singleton; a second one, in any case,
/// even with the same value, is refused.
#[test]
fn refused_content_type() {
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx",
        &["POST / HTTP/1.1 Known(1) ka", "data:x", "end"],
    );
    for fields in [
        &b"Content-Type: text/plain\r\nContent-Type: text/plain\r\n"[..],
        b"Content-Type: text/plain\r\ncontent-type: application/json\r\n",
        b"Content-Type: a\r\nX: b\r\nCONTENT-TYPE: a\r\n",
        b"Content-Type:\r\nContent-Type: a\r\n",
    ] {
        let input = [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"[..],
            fields,
            b"\r\nx",
        ]
        .concat();
        check(&input, &["400"]);
    }
}

#[test]
fn refused_content_length() {
    for value in [
        &b"-1"[..],
        b"+1",
        b"1 2",
        b"",
        b"0x10",
        b"1.0",
        b"abc",
        b"1,2",
        b"1,",
        b",1",
        b"18446744073709551616",
        b"99999999999999999999999",
    ] {
        let mut input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ".to_vec();
        input.extend_from_slice(value);
        input.extend_from_slice(b"\r\n\r\n");
        check(&input, &["400"]);
    }
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        &["400"],
    );
    // RFC 9110 §8.6: a list of values that differ, in one line or several.
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
        &["400"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 6\r\n\r\n",
        &["400"],
    );
    // u64::MAX itself parses (and is then only bounded by max_body_size).
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n",
        &["POST / HTTP/1.1 Known(18446744073709551615) ka"],
    );
}

#[test]
fn refused_transfer_encoding() {
    // Not ending in chunked (RFC 9112 §6.3 rule 4).
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        &["400"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        &["400"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
        &["400"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        &["400"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n",
        &["400"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
        &["400"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
        &["400"],
    );
    // Other codings before chunked: well framed but unsupported (501).
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        &["501"],
    );
    // On HTTP/1.0 (RFC 9112 §6.1).
    check(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        &["400"],
    );
    // Together with Content-Length (RFC 9112 §6.1: we refuse).
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        &["400"],
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        &["400"],
    );
}

const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

fn chunked(body: &[u8]) -> Vec<u8> {
    [CHUNKED, body].concat()
}

#[test]
fn refused_chunk_framing() {
    let head = "POST / HTTP/1.1 Chunked ka";
    for body in [
        &b"x\r\n"[..],
        b"\r\n",
        b";ext\r\n",
        b"-1\r\n",
        b"+1\r\n",
        b"0x1\r\n",
        b"10000000000000000\r\n",
        b"00000000000000001\r\n",
        b"1 1\r\n",
        b"1\n",
        b"1\r\r\n",
        b"1;a\nb\r\n",
        b"1;a\x00\r\n",
        b"1;a\rb\r\n",
    ] {
        check(&chunked(body), &[head, "400"]);
    }
    // Missing or different CRLF after chunk data.
    check(&chunked(b"1\r\naXX"), &[head, "data:a", "400"]);
    check(&chunked(b"1\r\na\n0\r\n\r\n"), &[head, "data:a", "400"]);
    check(&chunked(b"1\r\na\r0\r\n\r\n"), &[head, "data:a", "400"]);
    check(&chunked(b"2\r\nabc\r\n"), &[head, "data:ab", "400"]);
    // Trailer section: bare LF, obs-fold, bad fields.
    check(&chunked(b"0\r\n\n"), &[head, "400"]);
    check(&chunked(b"0\r\nX: a\n\r\n"), &[head, "400"]);
    check(&chunked(b"0\r\nX: a\r\n b\r\n\r\n"), &[head, "400"]);
    check(&chunked(b"0\r\nX : a\r\n\r\n"), &[head, "400"]);
    check(&chunked(b"0\r\nX: a\x00\r\n\r\n"), &[head, "400"]);
    check(&chunked(b"0\r\nNoColon\r\n\r\n"), &[head, "400"]);
    // 16 hex digits are the most accepted.
    check(
        &chunked(b"0000000000000001\r\nx\r\n0\r\n\r\n"),
        &[head, "data:x", "end"],
    );
}

#[test]
fn limits() {
    // Request line: 414, even before the line is complete.
    // The default is gunicorn's `limit_request_line`, 4094 bytes.
    assert_eq!(wsgi_http::DEFAULT_MAX_REQUEST_LINE, 4094);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(4200));
    check(long_target.as_bytes(), &["414"]);
    check(&long_target.as_bytes()[..4200], &["414"]);
    let exact = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(4094 - 14));
    let exact_head = format!("GET /{} HTTP/1.1 Empty ka", "a".repeat(4094 - 14));
    check(exact.as_bytes(), &[&exact_head, "end"]);
    let over = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(4094 - 13));
    check(over.as_bytes(), &["414"]);

    // Header count: 431.
    let many = |n: usize| {
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 1..n {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    };
    check(&many(100), &["GET / HTTP/1.1 Empty ka", "end"]);
    check(&many(101), &["431"]);
    let config = Config {
        max_headers: 200,
        ..Config::default()
    };
    check_with(&config, &many(150), &["GET / HTTP/1.1 Empty ka", "end"]);

    // Header line length: 431, before the line ends.
    let field = |n: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(n - 3)
        )
    };
    check(field(8190).as_bytes(), &["GET / HTTP/1.1 Empty ka", "end"]);
    check(field(8191).as_bytes(), &["431"]);
    check(&field(9000).as_bytes()[..8300], &["431"]);

    // Head size: 431.
    let config = Config {
        max_head_size: 64,
        ..Config::default()
    };
    check_with(
        &config,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: 0123456789012345678901234567\r\n\r\n",
        &["GET / HTTP/1.1 Empty ka", "end"],
    );
    check_with(
        &config,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: 01234567890123456789012345678\r\n\r\n",
        &["431"],
    );
    check_with(&config, &[b'\n'; 65], &["431"]);

    // Body size: 413 at head time for Content-Length, when crossed for chunked.
    let config = Config {
        max_body_size: Some(5),
        ..Config::default()
    };
    check_with(
        &config,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        &["POST / HTTP/1.1 Known(5) ka", "data:hello", "end"],
    );
    check_with(
        &config,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n",
        &["413"],
    );
    check_with(
        &config,
        &chunked(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        &["POST / HTTP/1.1 Chunked ka", "data:abcde", "end"],
    );
    check_with(
        &config,
        &chunked(b"3\r\nabc\r\n3\r\n"),
        &["POST / HTTP/1.1 Chunked ka", "data:abc", "413"],
    );
    check_with(
        &config,
        &chunked(b"ffffffffffffffff\r\n"),
        &["POST / HTTP/1.1 Chunked ka", "413"],
    );

    // Chunk extensions: 400.
    let config = Config {
        max_chunk_extension: 8,
        ..Config::default()
    };
    check_with(
        &config,
        &chunked(b"1;abcdef\r\nx\r\n0\r\n\r\n"),
        &["POST / HTTP/1.1 Chunked ka", "data:x", "end"],
    );
    check_with(
        &config,
        &chunked(b"1;abcdefgh\r\nx\r\n0\r\n\r\n"),
        &["POST / HTTP/1.1 Chunked ka", "400"],
    );
    check_with(
        &config,
        &chunked(b"1        ;\r\nx\r\n0\r\n\r\n"),
        &["POST / HTTP/1.1 Chunked ka", "400"],
    );

    // Trailers: 400.
    let config = Config {
        max_trailer_size: 16,
        ..Config::default()
    };
    check_with(
        &config,
        &chunked(b"0\r\nX: 012345678\r\n\r\n"),
        &["POST / HTTP/1.1 Chunked ka", "end"],
    );
    check_with(
        &config,
        &chunked(b"0\r\nX: 0123456789\r\n\r\n"),
        &["POST / HTTP/1.1 Chunked ka", "400"],
    );
    check_with(
        &config,
        &chunked(b"0\r\nX: 0123456789012345678"),
        &["POST / HTTP/1.1 Chunked ka", "400"],
    );
}

#[test]
fn error_kinds_and_statuses() {
    let kind = |input: &[u8]| {
        let mut conn = ServerConn::new(Config::default());
        let mut buf = BytesMut::from(input);
        loop {
            match conn.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(error) => return Some(error),
            }
        }
    };
    assert_eq!(
        kind(b"GET / HTTP/3.0\r\n\r\n"),
        Some(ParseError::UnsupportedVersion)
    );
    assert_eq!(
        kind(b"GET / HTTP/1.1\r\n\r\n"),
        Some(ParseError::MissingHost)
    );
    assert_eq!(
        kind(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
        Some(ParseError::ObsFold)
    );
    assert_eq!(
        kind(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        Some(ParseError::HeaderName)
    );
    assert_eq!(
        kind(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"),
        Some(ParseError::HeaderValue)
    );
    assert_eq!(
        kind(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Some(ParseError::TransferEncodingAndContentLength)
    );
    assert_eq!(
        kind(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
        Some(ParseError::ConnectNotSupported)
    );
    assert_eq!(
        kind(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
        Some(ParseError::Target)
    );
    assert_eq!(
        kind(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\nContent-Type: a\r\n\r\n"),
        Some(ParseError::RepeatedContentType)
    );
    assert_eq!(kind(&chunked(b"z\r\n")), Some(ParseError::ChunkSize));
    assert_eq!(kind(&chunked(b"1\r\nxy")), Some(ParseError::ChunkDataEnd));
    for (error, status) in [
        (ParseError::RequestLineTooLong, 414),
        (ParseError::TooManyHeaders, 431),
        (ParseError::HeaderFieldTooLong, 431),
        (ParseError::HeadTooLarge, 431),
        (ParseError::PayloadTooLarge, 413),
        (ParseError::UnsupportedVersion, 505),
        (ParseError::UnsupportedTransferCoding, 501),
        (ParseError::ConnectNotSupported, 501),
        (ParseError::Target, 400),
        (ParseError::RepeatedContentType, 400),
        (ParseError::ChunkExtensionTooLong, 400),
        (ParseError::TrailersTooLarge, 400),
        (ParseError::Incomplete, 400),
    ] {
        assert_eq!(error.status().as_u16(), status, "{error:?}");
    }
}

#[test]
fn decode_eof() {
    let eof = |input: &[u8]| {
        let mut conn = ServerConn::new(Config::default());
        let mut buf = BytesMut::from(input);
        let mut events = Vec::new();
        loop {
            match conn.decode_eof(&mut buf) {
                Ok(Some(event)) => render(&mut events, Ok(event)),
                Ok(None) => break,
                Err(error) => {
                    render(&mut events, Err(error));
                    break;
                }
            }
        }
        events
    };
    assert!(eof(b"").is_empty());
    assert!(
        eof(b"\r\n\r\n").is_empty(),
        "only empty lines: a clean close"
    );
    assert_eq!(
        eof(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        ["GET / HTTP/1.1 Empty ka", "end"]
    );
    assert_eq!(eof(b"GET / HTTP/1.1\r\nHost: a\r\n"), ["400"]);
    assert_eq!(eof(b"G"), ["400"]);
    assert_eq!(
        eof(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel"),
        ["POST / HTTP/1.1 Known(5) ka", "data:hel", "400"]
    );
    assert_eq!(
        eof(&chunked(b"3\r\nabc\r\n")),
        ["POST / HTTP/1.1 Chunked ka", "data:abc", "400"]
    );
    // Paused after End with a partial pipelined request: not an error yet.
    assert_eq!(
        eof(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET"),
        ["GET / HTTP/1.1 Empty ka", "end"]
    );
}

// ---------------------------------------------------------------- the cycle

fn response<'a>(status: u16, headers: &'a [(&'a [u8], &'a [u8])]) -> ResponseHead<'a> {
    ResponseHead {
        status,
        reason: b"OK",
        headers,
        date: None,
        content_length: None,
        close: false,
    }
}

#[test]
fn a_response_encoded_elsewhere_continues_the_cycle() {
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(
        &b"HEAD /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
    );
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::Head(_)))));
    assert_eq!(conn.decode(&mut buf), Ok(Some(Event::End)));
    // The prepared encoder knows the request: HEAD, keep-alive.
    let mut encoder = conn.prepare_encoder().unwrap();
    let mut out = BytesMut::new();
    let head = ResponseHead {
        content_length: Some(5),
        ..response(200, &[])
    };
    encoder.encode_head(&head, &mut out).unwrap();
    let frame = encoder.frame_data(5).unwrap();
    assert_eq!(frame.len, 0, "no body for HEAD");
    encoder.encode_end(&mut out).unwrap();
    assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    conn.adopt_encoder(encoder);
    assert_eq!(
        conn.encode_head(&head, &mut out),
        Err(EncodeError::HeadAlreadySent)
    );
    assert_eq!(
        conn.prepare_encoder().err(),
        Some(EncodeError::HeadAlreadySent)
    );
    assert!(conn.keep_alive());
    conn.start_next_cycle().unwrap();
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::Head(_)))));

    // A client still waiting for 100: the response closes the connection.
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n"[..],
    );
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::Head(_)))));
    let mut encoder = conn.prepare_encoder().unwrap();
    encoder
        .encode_head(
            &ResponseHead {
                content_length: Some(0),
                ..response(200, &[])
            },
            &mut out,
        )
        .unwrap();
    assert!(!encoder.keep_alive());
    conn.adopt_encoder(encoder);
    assert!(!conn.wants_100_continue(), "answered");
    assert!(!conn.keep_alive());
}

#[test]
fn paused_until_next_cycle() {
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(
        &b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
    );
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::Head(_)))));
    assert!(matches!(conn.decode(&mut buf), Ok(Some(Event::End))));
    let pipelined = buf.clone();
    assert_eq!(conn.decode(&mut buf), Ok(None));
    assert_eq!(buf, pipelined, "paused: pipelined bytes untouched");
    assert_eq!(
        conn.start_next_cycle(),
        Err(EncodeError::NotFinished),
        "response not sent"
    );
    let mut out = BytesMut::new();
    conn.encode_head(&response(200, &[]), &mut out).unwrap();
    assert_eq!(
        conn.start_next_cycle(),
        Err(EncodeError::NotFinished),
        "response not ended"
    );
    conn.encode_data(b"x", &mut out).unwrap();
    conn.encode_end(&mut out).unwrap();
    assert!(conn.keep_alive());
    conn.start_next_cycle().unwrap();
    match conn.decode(&mut buf) {
        Ok(Some(Event::Head(head))) => assert_eq!(head.target, "/2"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn keep_alive_decisions() {
    let cycle = |request: &[u8], head: ResponseHead<'_>| {
        let mut conn = ServerConn::new(Config::default());
        let mut buf = BytesMut::from(request);
        while let Ok(Some(_)) = conn.decode(&mut buf) {}
        let mut out = BytesMut::new();
        conn.encode_head(&head, &mut out).unwrap();
        let _ = conn.encode_end(&mut out);
        (conn.keep_alive(), conn.start_next_cycle().is_ok())
    };
    let get11 = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let get10 = b"GET / HTTP/1.0\r\n\r\n";
    let get10ka = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let length = ResponseHead {
        content_length: Some(0),
        ..response(200, &[])
    };
    assert_eq!(cycle(get11, length), (true, true));
    assert_eq!(cycle(get11, response(200, &[])), (true, true), "chunked");
    assert_eq!(
        cycle(
            get11,
            ResponseHead {
                close: true,
                ..length
            }
        ),
        (false, false)
    );
    assert_eq!(
        cycle(get11, response(200, &[(b"Connection", b"close")])),
        (false, false)
    );
    assert_eq!(cycle(get10, length), (false, false));
    assert_eq!(cycle(get10ka, length), (true, true));
    assert_eq!(
        cycle(get10ka, response(200, &[])),
        (false, false),
        "close-delimited"
    );
    assert_eq!(
        cycle(get11, response(200, &[(b"Content-Length", b"5")])),
        (false, false),
        "short body"
    );
}

#[test]
fn error_response_before_any_head() {
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(&b"BAD\x00 / HTTP/1.1\r\n\r\n"[..]);
    let error = conn.decode(&mut buf).unwrap_err();
    assert_eq!(error.status(), 400);
    let mut out = BytesMut::new();
    conn.encode_head(
        &ResponseHead {
            content_length: Some(0),
            ..response(400, &[])
        },
        &mut out,
    )
    .unwrap();
    conn.encode_end(&mut out).unwrap();
    assert_eq!(
        &out[..],
        b"HTTP/1.1 400 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert!(!conn.keep_alive());
    assert_eq!(conn.start_next_cycle(), Err(EncodeError::ConnectionClosed));
}

// ---------------------------------------------------------------- encoding

/// Encodes a response to `request` with `body` pieces; returns the bytes
/// and the result of `encode_end`.
fn encode(
    request: &[u8],
    head: ResponseHead<'_>,
    body: &[&[u8]],
) -> (String, Result<(), EncodeError>) {
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(request);
    while let Ok(Some(_)) = conn.decode(&mut buf) {}
    let mut out = BytesMut::new();
    conn.encode_head(&head, &mut out).unwrap();
    for piece in body {
        conn.encode_data(piece, &mut out).unwrap();
    }
    let end = conn.encode_end(&mut out);
    (String::from_utf8(out.to_vec()).unwrap(), end)
}

const GET11: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
const HEAD11: &[u8] = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n";
const GET10: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
const GET10KA: &[u8] = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";

/// Request, response head, body writes, expected bytes.
type EncodeCase<'a> = (&'a [u8], ResponseHead<'a>, &'a [&'a [u8]], &'a str);

#[test]
fn encode_responses() {
    let ct: &[(&[u8], &[u8])] = &[(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")];
    let cases: &[EncodeCase<'_>] = &[
        (
            GET11,
            response(200, ct),
            &[b"hel", b"lo"],
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        ),
        // Extra bytes beyond Content-Length are dropped.
        (GET11, response(200, ct), &[b"hello world"], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"),
        // The server's length when the app gave none.
        (
            GET11,
            ResponseHead { content_length: Some(2), ..response(200, &[]) },
            &[b"hi"],
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        ),
        // The app's length wins over the server's.
        (
            GET11,
            ResponseHead { content_length: Some(99), ..response(200, &[(b"content-length", b"2")]) },
            &[b"hi"],
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
        ),
        // Chunked; empty writes produce no chunk.
        (
            GET11,
            response(200, &[(b"X-A", b"b")]),
            &[b"hello", b"", b"0123456789abcdefg"],
            "HTTP/1.1 200 OK\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n11\r\n0123456789abcdefg\r\n0\r\n\r\n",
        ),
        // HEAD: no body, the app's Content-Length kept.
        (HEAD11, response(200, ct), &[b"hello"], "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"),
        (HEAD11, response(200, &[]), &[b"hello"], "HTTP/1.1 200 OK\r\n\r\n"),
        // 204: never Content-Length or Transfer-Encoding.
        (GET11, response(204, &[(b"Content-Length", b"0")]), &[b"x"], "HTTP/1.1 204 OK\r\n\r\n"),
        (GET11, ResponseHead { content_length: Some(1), ..response(204, &[]) }, &[], "HTTP/1.1 204 OK\r\n\r\n"),
        // 304: the app's Content-Length is kept, nothing added.
        (GET11, response(304, &[(b"ETag", b"\"x\"")]), &[], "HTTP/1.1 304 OK\r\nETag: \"x\"\r\n\r\n"),
        (GET11, response(304, &[(b"Content-Length", b"7")]), &[], "HTTP/1.1 304 OK\r\nContent-Length: 7\r\n\r\n"),
        // HTTP/1.0: close-delimited, or keep-alive with a length.
        (GET10, response(200, &[]), &[b"hi"], "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhi"),
        (
            GET10KA,
            ResponseHead { content_length: Some(2), ..response(200, &[]) },
            &[b"hi"],
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi",
        ),
        (GET10KA, response(200, &[]), &[b"hi"], "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhi"),
        (
            GET10,
            ResponseHead { content_length: Some(2), ..response(200, &[]) },
            &[b"hi"],
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        ),
        // Date passed in, unless the app sent one.
        (
            GET11,
            ResponseHead { date: Some(b"Sun, 06 Nov 1994 08:49:37 GMT"), content_length: Some(0), ..response(200, &[]) },
            &[],
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            GET11,
            ResponseHead { date: Some(b"server"), content_length: Some(0), ..response(200, &[(b"date", b"app")]) },
            &[],
            "HTTP/1.1 200 OK\r\ndate: app\r\nContent-Length: 0\r\n\r\n",
        ),
        // Close requested; the app's hop-by-hop headers are not copied.
        (
            GET11,
            ResponseHead { close: true, content_length: Some(0), ..response(500, &[(b"Connection", b"keep-alive")]) },
            &[],
            "HTTP/1.1 500 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        (
            GET11,
            response(200, &[(b"Transfer-Encoding", b"gzip")]),
            &[b"x"],
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        ),
        // The request asked to close.
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            response(200, &[]),
            &[b"x"],
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        ),
        (GET11, ResponseHead { reason: b"", content_length: Some(0), ..response(999, &[]) }, &[], "HTTP/1.1 999 \r\nContent-Length: 0\r\n\r\n"),
        // The same Content-Length twice: one field on the wire, the first
        // (RFC 9110 §8.6), for a body, for HEAD and for 304.
        (
            GET11,
            response(200, &[(b"Content-Length", b"2"), (b"X", b"y"), (b"content-length", b"02")]),
            &[b"hi"],
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\n\r\nhi",
        ),
        (
            HEAD11,
            response(200, &[(b"Content-Length", b"2"), (b"Content-Length", b"2")]),
            &[],
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        ),
        (
            GET11,
            response(304, &[(b"Content-Length", b"7"), (b"Content-Length", b" 7")]),
            &[],
            "HTTP/1.1 304 OK\r\nContent-Length: 7\r\n\r\n",
        ),
    ];
    for (request, head, body, expected) in cases {
        let (bytes, end) = encode(request, *head, body);
        assert_eq!(bytes, *expected);
        assert_eq!(end, Ok(()), "{expected:?}");
    }
}

#[test]
fn short_body_is_an_error() {
    let (bytes, end) = encode(
        GET11,
        response(200, &[(b"Content-Length", b"5")]),
        &[b"abc"],
    );
    assert_eq!(bytes, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc");
    assert_eq!(
        end,
        Err(EncodeError::ShortBody {
            expected: 5,
            sent: 3
        })
    );
}

#[test]
fn encoder_misuse() {
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(GET11);
    while let Ok(Some(_)) = conn.decode(&mut buf) {}
    let mut out = BytesMut::new();
    assert_eq!(
        conn.encode_data(b"x", &mut out),
        Err(EncodeError::HeadNotSent)
    );
    assert_eq!(conn.encode_end(&mut out), Err(EncodeError::HeadNotSent));
    for (head, error) in [
        (response(100, &[]), EncodeError::InvalidStatus(100)),
        (response(1000, &[]), EncodeError::InvalidStatus(1000)),
        (response(99, &[]), EncodeError::InvalidStatus(99)),
        (
            ResponseHead {
                reason: b"O\r\nX: y",
                ..response(200, &[])
            },
            EncodeError::InvalidHeader,
        ),
        (
            response(200, &[(b"X", b"a\nb")]),
            EncodeError::InvalidHeader,
        ),
        (response(200, &[(b"X:", b"a")]), EncodeError::InvalidHeader),
        (response(200, &[(b"", b"a")]), EncodeError::InvalidHeader),
        (
            response(200, &[(b"Content-Length", b"x")]),
            EncodeError::InvalidContentLength,
        ),
        (
            response(200, &[(b"Content-Length", b"-1")]),
            EncodeError::InvalidContentLength,
        ),
        (
            response(200, &[(b"Content-Length", b"1"), (b"Content-Length", b"2")]),
            EncodeError::InvalidContentLength,
        ),
        (
            response(200, &[(b"Content-Length", b"1, 1")]),
            EncodeError::InvalidContentLength,
        ),
    ] {
        assert_eq!(conn.encode_head(&head, &mut out), Err(error));
        assert!(out.is_empty(), "nothing written on error");
    }
    conn.encode_head(&response(200, &[]), &mut out).unwrap();
    assert_eq!(
        conn.encode_head(&response(200, &[]), &mut out),
        Err(EncodeError::HeadAlreadySent)
    );
    conn.encode_end(&mut out).unwrap();
    assert_eq!(
        conn.encode_data(b"x", &mut out),
        Err(EncodeError::AlreadyEnded)
    );
    assert_eq!(conn.encode_end(&mut out), Err(EncodeError::AlreadyEnded));
}

#[test]
fn frames_for_writev() {
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(GET11);
    while let Ok(Some(_)) = conn.decode(&mut buf) {}
    let mut out = BytesMut::new();
    conn.encode_head(&response(200, &[]), &mut out).unwrap();
    let frame = conn.frame_data(0x1234_5678_9abc).unwrap();
    assert_eq!(frame.prefix.as_ref(), b"123456789abc\r\n");
    assert_eq!((frame.len, frame.suffix), (0x1234_5678_9abc, &b"\r\n"[..]));
    let frame = conn.frame_data(u64::MAX).unwrap();
    assert_eq!(frame.prefix.as_ref(), b"ffffffffffffffff\r\n");
    let frame = conn.frame_data(0).unwrap();
    assert_eq!(
        (frame.prefix.as_ref(), frame.len, frame.suffix),
        (&b""[..], 0, &b""[..])
    );

    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::from(GET11);
    while let Ok(Some(_)) = conn.decode(&mut buf) {}
    conn.encode_head(
        &ResponseHead {
            content_length: Some(10),
            ..response(200, &[])
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(conn.frame_data(4).unwrap().len, 4);
    assert_eq!(
        conn.frame_data(100).unwrap().len,
        6,
        "truncated to what Content-Length allows"
    );
    assert_eq!(conn.frame_data(1).unwrap().len, 0);
    assert_eq!(conn.frame_data(1).unwrap().prefix.as_ref(), b"");
}

#[test]
fn standalone_encoder_for_uwsgi() {
    // uwsgi replies: plain HTTP/1.x, never chunked, closed afterwards.
    let mut encoder = ResponseEncoder::new(http::Version::HTTP_11, false, false);
    let mut out = BytesMut::new();
    encoder
        .encode_head(&response(200, &[(b"Content-Type", b"text/html")]), &mut out)
        .unwrap();
    encoder.encode_data(b"<p>", &mut out).unwrap();
    encoder.encode_end(&mut out).unwrap();
    assert_eq!(
        &out[..],
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<p>"
    );
    assert!(!encoder.keep_alive());
    assert!(encoder.is_done());

    let mut encoder = ResponseEncoder::new(http::Version::HTTP_11, true, false);
    let mut out = BytesMut::new();
    encoder
        .encode_head(&response(200, &[(b"Content-Length", b"3")]), &mut out)
        .unwrap();
    encoder.encode_data(b"<p>", &mut out).unwrap();
    encoder.encode_end(&mut out).unwrap();
    assert_eq!(
        &out[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
    );
}
