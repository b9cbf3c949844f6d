//! Table-driven decoder cases. Each case runs three ways: fed whole, fed one
//! byte at a time, and fed whole with trailing bytes that must be left
//! untouched. Inputs are built by hand here, not by the crate's encoder, so
//! an encoder bug cannot hide a decoder bug.

use bytes::BytesMut;
use wsgi_uwsgi::{encode_vars, Config, Decoder, Event, ParseError, RequestHead, DEFAULT_MAX_VARS};

/// An event with the body pieces merged, so runs that split the input
/// differently compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Head {
        m1: u8,
        m2: u8,
        vars: Vec<(Vec<u8>, Vec<u8>)>,
        cl: u64,
    },
    Body(Vec<u8>),
    End,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Ev>,
    error: Option<ParseError>,
}

fn ok(events: Vec<Ev>) -> Outcome {
    Outcome {
        events,
        error: None,
    }
}

fn err(error: ParseError) -> Outcome {
    err_after(vec![], error)
}

fn err_after(events: Vec<Ev>, error: ParseError) -> Outcome {
    Outcome {
        events,
        error: Some(error),
    }
}

fn head(m2: u8, vars: &[(&str, &str)], cl: u64) -> Ev {
    head_bytes(
        m2,
        vars.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        cl,
    )
}

fn head_bytes<'a>(m2: u8, vars: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, cl: u64) -> Ev {
    Ev::Head {
        m1: 0,
        m2,
        vars: vars
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
        cl,
    }
}

fn body(b: &str) -> Ev {
    Ev::Body(b.as_bytes().to_vec())
}

/// Hand-built packet: header, then the pairs, with u16 LE lengths.
fn packet(m1: u8, m2: u8, vars: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in vars {
        block.extend_from_slice(&(k.len() as u16).to_le_bytes());
        block.extend_from_slice(k);
        block.extend_from_slice(&(v.len() as u16).to_le_bytes());
        block.extend_from_slice(v);
    }
    let mut out = vec![m1];
    out.extend_from_slice(&(block.len() as u16).to_le_bytes());
    out.push(m2);
    out.extend_from_slice(&block);
    out
}

fn str_packet(vars: &[(&str, &str)]) -> Vec<u8> {
    let vars: Vec<(&[u8], &[u8])> = vars
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    packet(0, 0, &vars)
}

fn with_body(mut packet: Vec<u8>, body: &str) -> Vec<u8> {
    packet.extend_from_slice(body.as_bytes());
    packet
}

fn to_ev(head: &RequestHead) -> Ev {
    assert_eq!(head.vars.len(), head.vars.iter().len());
    Ev::Head {
        m1: head.modifier1,
        m2: head.modifier2,
        vars: head
            .vars
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
        cl: head.content_length,
    }
}

/// Feeds `input` in pieces of `chunk` bytes (0 = all at once), then signals
/// EOF; returns the outcome and whatever was left in the buffer.
fn run(config: Config, input: &[u8], chunk: usize) -> (Outcome, BytesMut) {
    let mut decoder = Decoder::new(config);
    let mut buf = BytesMut::new();
    let mut events: Vec<Ev> = Vec::new();
    let chunk = if chunk == 0 {
        input.len().max(1)
    } else {
        chunk
    };
    let mut pieces: Vec<(&[u8], bool)> = input.chunks(chunk).map(|c| (c, false)).collect();
    pieces.push((&[], true));
    for (piece, eof) in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            let result = if eof {
                decoder.decode_eof(&mut buf)
            } else {
                decoder.decode(&mut buf)
            };
            match result {
                Ok(Some(Event::Head(h))) => events.push(to_ev(&h)),
                Ok(Some(Event::Data(d))) => {
                    assert!(!d.is_empty(), "empty Data event");
                    match events.last_mut() {
                        Some(Ev::Body(b)) => b.extend_from_slice(&d),
                        _ => events.push(Ev::Body(d.to_vec())),
                    }
                }
                Ok(Some(Event::End)) => {
                    events.push(Ev::End);
                    assert!(decoder.is_done());
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(buf.len(), before, "a failing call consumed bytes");
                    assert_eq!(decoder.decode(&mut buf), Err(e), "error not sticky");
                    assert_eq!(decoder.decode_eof(&mut buf), Err(e), "error not sticky");
                    return (
                        Outcome {
                            events,
                            error: Some(e),
                        },
                        buf,
                    );
                }
            }
        }
    }
    (ok(events), buf)
}

const TRAILER: &[u8] = b"GET / HTTP/1.1\r\n\r\n\x00\x01";

fn check(input: &[u8], expect: Outcome) {
    check_with(Config::default(), input, expect);
}

fn check_with(config: Config, input: &[u8], expect: Outcome) {
    let (whole, rest) = run(config, input, 0);
    assert_eq!(whole, expect, "fed whole");
    if expect.error.is_none() {
        assert!(rest.is_empty(), "fed whole: left {rest:?}");
    }

    let (bytewise, _) = run(config, input, 1);
    assert_eq!(bytewise, expect, "fed one byte at a time");

    // An outcome decided by EOF (a cut request, or no request at all) would
    // change once more bytes follow; only finished outcomes are re-run.
    let finished = match expect.error {
        Some(e) => !matches!(
            e,
            ParseError::Incomplete | ParseError::IncompleteBody { .. }
        ),
        None => expect.events.last() == Some(&Ev::End),
    };
    if finished {
        let mut trailing = input.to_vec();
        trailing.extend_from_slice(TRAILER);
        let (outcome, rest) = run(config, &trailing, 0);
        assert_eq!(outcome, expect, "with trailing bytes");
        assert!(rest.ends_with(TRAILER), "trailing bytes eaten: {rest:?}");
        if expect.error.is_none() {
            assert_eq!(&rest[..], TRAILER, "trailing bytes touched");
        }
    }
}

/// Every strict prefix of the packet's header and vars is "need more", and
/// consumes nothing; every strict prefix of the whole request ends in an
/// EOF error.
fn check_prefixes(input: &[u8]) {
    let packet_len = 4 + usize::from(u16::from_le_bytes([input[1], input[2]]));
    for n in 0..input.len() {
        let mut buf = BytesMut::from(&input[..n]);
        let mut decoder = Decoder::default();
        let first = decoder.decode(&mut buf);
        if n < packet_len {
            assert_eq!(first, Ok(None), "prefix of {n} bytes");
            assert_eq!(buf.len(), n, "prefix of {n} bytes consumed");
        } else {
            assert!(matches!(first, Ok(Some(Event::Head(_)))), "prefix {n}");
        }
        let mut last = Ok(None);
        for _ in 0..4 {
            last = decoder.decode_eof(&mut buf);
            if last.is_err() {
                break;
            }
        }
        let cut = match last {
            Err(ParseError::Incomplete | ParseError::IncompleteBody { .. }) => true,
            Ok(None) => n == 0,
            _ => false,
        };
        assert!(cut, "prefix of {n} bytes at EOF gave {last:?}");
    }
}

// The vars nginx's stock `uwsgi_params` sends, in its order, then the client
// headers. `HTTPS` is `if_not_empty`, so plain HTTP requests lack it; the
// others are sent even when empty.
const NGINX_GET: &[(&str, &str)] = &[
    ("QUERY_STRING", "q=rust&page=2"),
    ("REQUEST_METHOD", "GET"),
    ("CONTENT_TYPE", ""),
    ("CONTENT_LENGTH", ""),
    ("REQUEST_URI", "/search?q=rust&page=2"),
    ("PATH_INFO", "/search"),
    ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REQUEST_SCHEME", "http"),
    ("REMOTE_ADDR", "203.0.113.7"),
    ("REMOTE_PORT", "51234"),
    ("SERVER_PORT", "80"),
    ("SERVER_NAME", "example.com"),
    ("HTTP_HOST", "example.com"),
    ("HTTP_USER_AGENT", "curl/8.5.0"),
    ("HTTP_ACCEPT", "*/*"),
];

const NGINX_POST: &[(&str, &str)] = &[
    ("QUERY_STRING", ""),
    ("REQUEST_METHOD", "POST"),
    ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
    ("CONTENT_LENGTH", "7"),
    ("REQUEST_URI", "/login"),
    ("PATH_INFO", "/login"),
    ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
    ("SERVER_PROTOCOL", "HTTP/2.0"),
    ("REQUEST_SCHEME", "https"),
    ("HTTPS", "on"),
    ("REMOTE_ADDR", "2001:db8::1"),
    ("REMOTE_PORT", "40000"),
    ("SERVER_PORT", "443"),
    ("SERVER_NAME", "example.com"),
    ("HTTP_HOST", "example.com"),
    ("HTTP_CONTENT_TYPE", "application/x-www-form-urlencoded"),
    ("HTTP_CONTENT_LENGTH", "7"),
    ("HTTP_COOKIE", "a=1; b=2"),
];

#[test]
fn nginx_get() {
    check(
        &str_packet(NGINX_GET),
        ok(vec![head(0, NGINX_GET, 0), Ev::End]),
    );
}

#[test]
fn nginx_post_with_body() {
    check(
        &with_body(str_packet(NGINX_POST), "a=1&b=2"),
        ok(vec![head(0, NGINX_POST, 7), body("a=1&b=2"), Ev::End]),
    );
}

#[test]
fn prefixes_are_need_more() {
    check_prefixes(&str_packet(NGINX_GET));
    check_prefixes(&with_body(str_packet(NGINX_POST), "a=1&b=2"));
    check_prefixes(&[0, 0, 0, 0]);
    check_prefixes(&str_packet(&[("K", "")]));
}

#[test]
fn empty_vars_block() {
    check(&[0, 0, 0, 0], ok(vec![head(0, &[], 0), Ev::End]));
}

#[test]
fn no_input_at_all_is_a_clean_close() {
    check(b"", ok(vec![]));
}

#[test]
fn modifier2_is_passed_through() {
    check(
        &packet(0, 9, &[(b"A", b"b")]),
        ok(vec![head(9, &[("A", "b")], 0), Ev::End]),
    );
}

#[test]
fn values_may_be_empty_and_not_utf8() {
    let vars: &[(&[u8], &[u8])] = &[
        (b"HTTP_X_LATIN1", b"caf\xe9"),
        (b"E", b""),
        (b"\xff", b"\x00"),
    ];
    check(
        &packet(0, 0, vars),
        ok(vec![head_bytes(0, vars.iter().copied(), 0), Ev::End]),
    );
}

#[test]
fn duplicate_keys_are_kept_and_last_wins() {
    let input = str_packet(&[("HTTP_X", "1"), ("HTTP_X", "2")]);
    check(
        &input,
        ok(vec![
            head(0, &[("HTTP_X", "1"), ("HTTP_X", "2")], 0),
            Ev::End,
        ]),
    );
    let Ok(Some(Event::Head(h))) = Decoder::default().decode(&mut BytesMut::from(&input[..]))
    else {
        panic!()
    };
    assert_eq!(h.var(b"HTTP_X"), Some(&b"2"[..]));
}

#[test]
fn vars_block_of_exactly_65535_bytes() {
    // 2 + 1 + 2 + 65530 = 65535.
    let value = vec![b'v'; 65530];
    let input = packet(0, 0, &[(b"K", &value)]);
    assert_eq!(&input[1..3], &[0xff, 0xff]);
    check(
        &input,
        ok(vec![head_bytes(0, [(&b"K"[..], &value[..])], 0), Ev::End]),
    );
    // Cookies and JWTs are what push real blocks up: many headers.
    let cookie = "c".repeat(60_000);
    let vars = [
        ("HTTP_COOKIE", cookie.as_str()),
        ("HTTP_AUTHORIZATION", "Bearer x"),
    ];
    check(&str_packet(&vars), ok(vec![head(0, &vars, 0), Ev::End]));
}

#[test]
fn vars_too_large_is_refused_before_the_block_arrives() {
    let value = vec![b'v'; 4092];
    let input = packet(0, 0, &[(b"K", &value)]); // 4097-byte block
    let config = Config {
        max_vars_size: 4096,
        ..Config::default()
    };
    let e = ParseError::VarsTooLarge {
        size: 4097,
        limit: 4096,
    };
    check_with(config, &input, err(e));
    // Only the first three header bytes are needed to know.
    check_with(config, &input[..3], err(e));
    let fits = packet(0, 0, &[(b"K", &value[..4091])]);
    check_with(
        config,
        &fits,
        ok(vec![
            head_bytes(0, [(&b"K"[..], &value[..4091])], 0),
            Ev::End,
        ]),
    );
}

#[test]
fn short_header() {
    check(&[0], err(ParseError::Incomplete));
    check(&[0, 5], err(ParseError::Incomplete));
    check(&[0, 5, 0], err(ParseError::Incomplete));
}

#[test]
fn eof_inside_vars_block() {
    let input = str_packet(NGINX_GET);
    check(&input[..input.len() - 1], err(ParseError::Incomplete));
    check(&input[..5], err(ParseError::Incomplete));
}

#[test]
fn block_not_exactly_filled() {
    // One stray byte where a key length should start.
    check(&[0, 1, 0, 0, 7], err(ParseError::TruncatedVars));
    // A complete pair, then half a length.
    check(
        &[0, 7, 0, 0, 1, 0, b'A', 1, 0, b'x', 3],
        err(ParseError::TruncatedVars),
    );
    // A key with no value length after it.
    check(&[0, 3, 0, 0, 1, 0, b'A'], err(ParseError::TruncatedVars));
    check(&[0, 4, 0, 0, 1, 0, b'A', 0], err(ParseError::TruncatedVars));
}

#[test]
fn lengths_overrunning_the_block() {
    check(
        &[0, 4, 0, 0, 0xff, 0xff, b'A', b'B'],
        err(ParseError::VarOverrun),
    );
    check(&[0, 3, 0, 0, 2, 0, b'A'], err(ParseError::VarOverrun));
    check(
        &[0, 7, 0, 0, 1, 0, b'A', 3, 0, b'x', b'y'],
        err(ParseError::VarOverrun),
    );
    // The value would run into what follows the block (here, the body).
    check(
        &[0, 6, 0, 0, 1, 0, b'A', 2, 0, b'x', b'y', b'z'],
        err(ParseError::VarOverrun),
    );
}

#[test]
fn zero_length_key() {
    check(&[0, 4, 0, 0, 0, 0, 0, 0], err(ParseError::EmptyKey));
    check(&[0, 5, 0, 0, 0, 0, 1, 0, b'v'], err(ParseError::EmptyKey));
    let mut input = str_packet(&[("A", "1")]);
    input[1] += 4;
    input.extend_from_slice(&[0, 0, 0, 0]);
    check(&input, err(ParseError::EmptyKey));
}

#[test]
fn too_many_vars() {
    let config = Config {
        max_vars: 3,
        ..Config::default()
    };
    let three = [("A", ""), ("B", ""), ("C", "")];
    check_with(
        config,
        &str_packet(&three),
        ok(vec![head(0, &three, 0), Ev::End]),
    );
    let four = [("A", ""), ("B", ""), ("C", ""), ("D", "")];
    check_with(
        config,
        &str_packet(&four),
        err(ParseError::TooManyVars { limit: 3 }),
    );

    let keys: Vec<String> = (0..=DEFAULT_MAX_VARS).map(|i| format!("K{i}")).collect();
    let vars: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_bytes(), &b""[..])).collect();
    check(
        &packet(0, 0, &vars),
        err(ParseError::TooManyVars { limit: 1000 }),
    );
    let vars = &vars[..DEFAULT_MAX_VARS];
    check(
        &packet(0, 0, vars),
        ok(vec![head_bytes(0, vars.iter().copied(), 0), Ev::End]),
    );
}

#[test]
fn wrong_modifier() {
    for m1 in [5, 7, 30, 100, 255] {
        let e = ParseError::UnsupportedModifier { modifier1: m1 };
        check(&packet(m1, 0, &[(b"A", b"b")]), err(e));
        // Decided by the first byte alone.
        check(&[m1], err(e));
    }
    // Someone speaking HTTP to the uwsgi socket.
    check(
        b"GET / HTTP/1.1\r\n\r\n",
        err(ParseError::UnsupportedModifier { modifier1: b'G' }),
    );
}

#[test]
fn invalid_content_length() {
    for bad in [
        "abc",
        "-1",
        "+1",
        " 5",
        "5 ",
        "0x5",
        "1e3",
        "18446744073709551616",
    ] {
        check(
            &str_packet(&[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", bad)]),
            err(ParseError::InvalidContentLength),
        );
    }
    // Repeated with different values: whoever reads the other one would
    // frame the body differently.
    check(
        &str_packet(&[("CONTENT_LENGTH", "1"), ("CONTENT_LENGTH", "2")]),
        err(ParseError::InvalidContentLength),
    );
    check(
        &str_packet(&[("CONTENT_LENGTH", "1"), ("CONTENT_LENGTH", "")]),
        err(ParseError::InvalidContentLength),
    );
}

#[test]
fn content_length_forms() {
    let same = [("CONTENT_LENGTH", "2"), ("CONTENT_LENGTH", "002")];
    check(
        &with_body(str_packet(&same), "hi"),
        ok(vec![head(0, &same, 2), body("hi"), Ev::End]),
    );
    let zero = [("CONTENT_LENGTH", "0")];
    check(&str_packet(&zero), ok(vec![head(0, &zero, 0), Ev::End]));
    let max = [("CONTENT_LENGTH", "18446744073709551615")];
    check(
        &with_body(str_packet(&max), "abc"),
        err_after(
            vec![head(0, &max, u64::MAX), body("abc")],
            ParseError::IncompleteBody {
                remaining: u64::MAX - 3,
            },
        ),
    );
}

#[test]
fn body_too_large() {
    let config = Config {
        max_body_size: Some(10),
        ..Config::default()
    };
    let eleven = [("CONTENT_LENGTH", "11")];
    check_with(
        config,
        &with_body(str_packet(&eleven), "0123456789a"),
        err(ParseError::BodyTooLarge {
            content_length: 11,
            limit: 10,
        }),
    );
    let ten = [("CONTENT_LENGTH", "10")];
    check_with(
        config,
        &with_body(str_packet(&ten), "0123456789"),
        ok(vec![head(0, &ten, 10), body("0123456789"), Ev::End]),
    );
}

#[test]
fn eof_inside_body() {
    let vars = [("CONTENT_LENGTH", "5")];
    check(
        &with_body(str_packet(&vars), "abc"),
        err_after(
            vec![head(0, &vars, 5), body("abc")],
            ParseError::IncompleteBody { remaining: 2 },
        ),
    );
    check(
        &str_packet(&vars),
        err_after(
            vec![head(0, &vars, 5)],
            ParseError::IncompleteBody { remaining: 5 },
        ),
    );
}

#[test]
fn body_split_across_reads_is_zero_copy_and_stops_at_its_end() {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::from(&str_packet(NGINX_POST)[..]);
    buf.extend_from_slice(b"a=1");
    let Ok(Some(Event::Head(h))) = decoder.decode(&mut buf) else {
        panic!()
    };
    assert_eq!(h.content_length, 7);
    assert_eq!(decoder.remaining_body(), Some(7));
    let ptr = buf.as_ptr();
    let Ok(Some(Event::Data(d))) = decoder.decode(&mut buf) else {
        panic!()
    };
    assert_eq!((&d[..], d.as_ptr()), (&b"a=1"[..], ptr));
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert!(decoder.is_reading_body());

    buf.extend_from_slice(b"&b=2NEXT");
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Event::Data("&b=2".into())))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Event::End)));
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(decoder.decode_eof(&mut buf), Ok(None));
    assert_eq!(&buf[..], b"NEXT");
}

#[test]
fn vars_are_slices_of_one_block() {
    let mut buf = BytesMut::from(&str_packet(NGINX_GET)[..]);
    let Ok(Some(Event::Head(h))) = Decoder::default().decode(&mut buf) else {
        panic!()
    };
    let block = h.vars.as_bytes().as_ptr_range();
    for (k, v) in h.vars.iter_bytes() {
        assert!(block.contains(&k.as_ptr()));
        assert!(v.is_empty() || block.contains(&v.as_ptr()));
    }
    let host = h.vars.get_bytes(b"HTTP_HOST").unwrap();
    assert_eq!(host, "example.com");
    assert!(block.contains(&host.as_ptr()));
}

#[test]
fn head_helpers() {
    let mut buf = BytesMut::from(&with_body(str_packet(NGINX_POST), "a=1&b=2")[..]);
    let Ok(Some(Event::Head(h))) = Decoder::default().decode(&mut buf) else {
        panic!()
    };
    assert_eq!(h.method(), Some(&b"POST"[..]));
    assert_eq!(h.request_uri(), Some(&b"/login"[..]));
    assert_eq!(h.path_info(), Some(&b"/login"[..]));
    assert_eq!(h.query_string(), Some(&b""[..]));
    assert_eq!(h.server_protocol(), Some(&b"HTTP/2.0"[..]));
    assert_eq!(
        h.content_type(),
        Some(&b"application/x-www-form-urlencoded"[..])
    );
    assert_eq!(h.host(), Some(&b"example.com"[..]));
    assert_eq!(h.remote_addr(), Some(&b"2001:db8::1"[..]));
    assert_eq!(h.remote_port(), Some(&b"40000"[..]));
    assert_eq!(h.server_name(), Some(&b"example.com"[..]));
    assert_eq!(h.server_port(), Some(&b"443"[..]));
    assert_eq!(h.scheme(), Some(&b"https"[..]));
    assert_eq!(h.var(b"HTTP_COOKIE"), Some(&b"a=1; b=2"[..]));
    assert_eq!(h.var(b"NOPE"), None);
}

#[test]
fn scheme_sources() {
    let scheme = |vars: &[(&str, &str)]| {
        let mut buf = BytesMut::from(&str_packet(vars)[..]);
        let Ok(Some(Event::Head(h))) = Decoder::default().decode(&mut buf) else {
            panic!()
        };
        h.scheme().map(<[u8]>::to_vec)
    };
    assert_eq!(scheme(&[]), None);
    assert_eq!(scheme(&[("HTTPS", "on")]).as_deref(), Some(&b"https"[..]));
    assert_eq!(scheme(&[("HTTPS", "ON")]).as_deref(), Some(&b"https"[..]));
    assert_eq!(scheme(&[("HTTPS", "off")]).as_deref(), Some(&b"http"[..]));
    assert_eq!(scheme(&[("HTTPS", "")]).as_deref(), Some(&b"http"[..]));
    assert_eq!(
        scheme(&[("REQUEST_SCHEME", "http"), ("HTTPS", "on")]).as_deref(),
        Some(&b"http"[..])
    );
    assert_eq!(
        scheme(&[("REQUEST_SCHEME", "http"), ("UWSGI_SCHEME", "https")]).as_deref(),
        Some(&b"https"[..])
    );
    assert_eq!(
        scheme(&[("REQUEST_SCHEME", ""), ("HTTPS", "on")]).as_deref(),
        Some(&b"https"[..])
    );
}

#[test]
fn status_hints() {
    assert_eq!(
        ParseError::BodyTooLarge {
            content_length: 2,
            limit: 1
        }
        .status_hint(),
        413
    );
    assert_eq!(ParseError::TooManyVars { limit: 1 }.status_hint(), 431);
    assert_eq!(
        ParseError::VarsTooLarge { size: 2, limit: 1 }.status_hint(),
        431
    );
    assert_eq!(ParseError::EmptyKey.status_hint(), 400);
    assert_eq!(
        ParseError::UnsupportedModifier { modifier1: 7 }.to_string(),
        "unsupported uwsgi modifier1 7 (only 0, WSGI, is accepted)"
    );
}

#[test]
fn encoder_matches_hand_built_packets() {
    let mut dst = BytesMut::new();
    encode_vars(NGINX_GET.iter().copied(), &mut dst).unwrap();
    assert_eq!(&dst[..], &str_packet(NGINX_GET)[..]);
    let mut dst = BytesMut::new();
    encode_vars(std::iter::empty::<(&[u8], &[u8])>(), &mut dst).unwrap();
    assert_eq!(&dst[..], &[0, 0, 0, 0]);
}
