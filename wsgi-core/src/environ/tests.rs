//! Data-driven environ cases: a request in, the CGI variables out.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

use super::*;

fn conn() -> ConnInfo {
    ConnInfo::tcp(
        "10.1.2.3:51000".parse::<SocketAddr>().unwrap(),
        "127.0.0.1:8000".parse::<SocketAddr>().unwrap(),
    )
}

fn http(
    target: &str,
    headers: &[(&str, &[u8])],
    conn: &ConnInfo,
    options: &EnvironOptions,
) -> Environ {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let target = Bytes::copy_from_slice(target.as_bytes());
    let environ = Environ::from_http(
        &Method::GET,
        target.clone(),
        Version::HTTP_11,
        &map,
        conn,
        options,
    );
    // The same request through `from_fields`, names in upper case and the
    // values shared with one buffer, and through the HeaderMap walk that
    // `from_fields` replaced: all three must agree to the byte.
    let upper: Vec<(Vec<u8>, &[u8])> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_uppercase().into_bytes(), *value))
        .collect();
    let source = Bytes::from(
        upper
            .iter()
            .flat_map(|(_, value)| value.to_vec())
            .collect::<Vec<u8>>(),
    );
    let mut at = 0;
    let fields: Vec<(&[u8], &[u8])> = upper
        .iter()
        .map(|(name, value)| {
            at += value.len();
            (&name[..], &source[at - value.len()..at])
        })
        .collect();
    let from_fields = Environ::from_fields(
        &Method::GET,
        target.clone(),
        Version::HTTP_11,
        fields.iter().copied(),
        &source,
        conn,
        options,
    );
    assert_eq!(from_fields, environ, "from_fields and from_http differ");
    let reference =
        reference::from_header_map(&Method::GET, target, Version::HTTP_11, &map, conn, options);
    assert_eq!(
        environ, reference,
        "from_http and the HeaderMap walk differ"
    );
    environ
}

/// Asserts that every `KEY=value` of `expect` is in the environ, and that
/// every `!KEY` is absent.
fn check(environ: &Environ, expect: &[&str]) {
    for line in expect {
        if let Some(key) = line.strip_prefix('!') {
            assert_eq!(environ.get(key), None, "{key} must be absent");
            continue;
        }
        let (key, value) = line.split_once('=').unwrap();
        let got = environ
            .get(key)
            .map(|got| String::from_utf8_lossy(got).into_owned());
        assert_eq!(got.as_deref(), Some(value), "{key}");
    }
}

#[test]
fn simple_get() {
    let environ = http(
        "/hello/w%C3%B6rld?q=1&r=%20",
        &[("host", b"example.com:8080"), ("user-agent", b"curl")],
        &conn(),
        &EnvironOptions::default(),
    );
    check(
        &environ,
        &[
            "REQUEST_METHOD=GET",
            "SCRIPT_NAME=",
            "PATH_INFO=/hello/w\u{f6}rld",
            "QUERY_STRING=q=1&r=%20",
            "REQUEST_URI=/hello/w%C3%B6rld?q=1&r=%20",
            "RAW_URI=/hello/w%C3%B6rld?q=1&r=%20",
            "SERVER_PROTOCOL=HTTP/1.1",
            "SERVER_NAME=example.com",
            "SERVER_PORT=8080",
            "REMOTE_ADDR=10.1.2.3",
            "REMOTE_PORT=51000",
            "HTTP_HOST=example.com:8080",
            "HTTP_USER_AGENT=curl",
            "!CONTENT_TYPE",
            "!CONTENT_LENGTH",
        ],
    );
    // Decoded octets, not UTF-8 text: the runtime shows them as latin-1.
    assert_eq!(&environ.path_info[..], "/hello/w\u{f6}rld".as_bytes());
    assert_eq!(environ.url_scheme, UrlScheme::Http);
}

#[test]
fn content_headers_are_not_http_vars() {
    let environ = http(
        "/",
        &[
            ("content-type", b"text/plain"),
            ("content-length", b"5"),
            ("host", b"h"),
        ],
        &conn(),
        &EnvironOptions::default(),
    );
    check(
        &environ,
        &[
            "CONTENT_TYPE=text/plain",
            "CONTENT_LENGTH=5",
            "!HTTP_CONTENT_TYPE",
            "!HTTP_CONTENT_LENGTH",
            "SERVER_PORT=80",
        ],
    );
}

/// RFC 9110 §8.6: a Content-Length list of one repeated value is that value.
#[test]
fn content_length_list_is_one_value() {
    let cases: &[(&[&[u8]], &str)] = &[
        (&[b"5"], "5"),
        (&[b"005"], "005"),
        (&[b"5, 5"], "5"),
        (&[b"5,5,5"], "5"),
        (&[b"5", b"5"], "5"),
        (&[b"5, 5", b"05"], "5"),
        (&[b"0, 0"], "0"),
        // Refused by the codec; kept as sent rather than guessed at.
        (&[b"5, 6"], "5, 6"),
        (&[b"5", b"6"], "5, 6"),
        (&[b"5, x"], "5, x"),
        (&[b"5,"], "5,"),
    ];
    for (lines, expect) in cases {
        let headers: Vec<(&str, &[u8])> =
            lines.iter().map(|line| ("content-length", *line)).collect();
        let environ = http("/", &headers, &conn(), &EnvironOptions::default());
        assert_eq!(
            environ.get("CONTENT_LENGTH"),
            Some(expect.as_bytes()),
            "{lines:?}"
        );
        assert_eq!(environ.get("HTTP_CONTENT_LENGTH"), None);
    }
}

#[test]
fn repeated_headers_are_joined() {
    let environ = http(
        "/",
        &[
            ("accept", b"text/html"),
            ("cookie", b"a=1"),
            ("accept", b"text/plain"),
            ("cookie", b"b=2"),
            ("x-custom-name", b"caf\xe9"),
        ],
        &conn(),
        &EnvironOptions::default(),
    );
    check(
        &environ,
        &["HTTP_ACCEPT=text/html, text/plain", "HTTP_COOKIE=a=1; b=2"],
    );
    assert_eq!(environ.get("HTTP_X_CUSTOM_NAME"), Some(&b"caf\xe9"[..]));
}

#[test]
fn underscore_headers_are_dropped_by_default() {
    let headers: &[(&str, &[u8])] = &[("x_auth", b"spoofed"), ("x-auth", b"real")];
    let environ = http("/", headers, &conn(), &EnvironOptions::default());
    check(&environ, &["HTTP_X_AUTH=real"]);
    let options = EnvironOptions {
        allow_underscore_headers: true,
        ..EnvironOptions::default()
    };
    let environ = http("/", headers, &conn(), &options);
    check(&environ, &["HTTP_X_AUTH=spoofed, real"]);
}

#[test]
fn script_name_from_options_matches_whole_segments() {
    let options = EnvironOptions {
        script_name: Bytes::from_static(b"/app/"),
        ..EnvironOptions::default()
    };
    check(
        &http("/app/x/y", &[], &conn(), &options),
        &["SCRIPT_NAME=/app", "PATH_INFO=/x/y"],
    );
    check(
        &http("/app", &[], &conn(), &options),
        &["SCRIPT_NAME=/app", "PATH_INFO="],
    );
    check(
        &http("/application", &[], &conn(), &options),
        &["SCRIPT_NAME=/app", "PATH_INFO=/application"],
    );
}

#[test]
fn trusted_proxy_headers() {
    let headers: &[(&str, &[u8])] = &[
        ("script_name", b"/flasktodo"),
        ("x-forwarded-proto", b"https"),
        ("host", b"h"),
    ];
    let untrusted = http(
        "/flasktodo/foobar",
        headers,
        &conn(),
        &EnvironOptions::default(),
    );
    check(
        &untrusted,
        &[
            "SCRIPT_NAME=",
            "PATH_INFO=/flasktodo/foobar",
            "SERVER_PORT=80",
        ],
    );
    assert_eq!(untrusted.url_scheme, UrlScheme::Http);

    let trusted_conn = conn().with_trusted_proxy(true);
    let trusted = http(
        "/flasktodo/foobar",
        headers,
        &trusted_conn,
        &EnvironOptions::default(),
    );
    check(
        &trusted,
        &[
            "SCRIPT_NAME=/flasktodo",
            "PATH_INFO=/foobar",
            "SERVER_PORT=443",
            "!HTTP_SCRIPT_NAME",
        ],
    );
    assert_eq!(trusted.url_scheme, UrlScheme::Https);
}

#[test]
fn forwarded_headers_from_trusted_proxies_only() {
    let options = EnvironOptions {
        trusted_proxies: crate::proxy::AllowList::parse("10.0.0.0/8").unwrap(),
        forwarded_remote_addr: true,
        ..EnvironOptions::default()
    };
    let xff: &[(&str, &[u8])] = &[
        ("host", b"h"),
        ("x-forwarded-for", b"6.6.6.6, 203.0.113.7"),
        ("x-forwarded-for", b"10.0.0.5"),
    ];
    // An untrusted peer changes nothing.
    check(
        &http("/", xff, &conn(), &options),
        &["REMOTE_ADDR=10.1.2.3", "REMOTE_PORT=51000", "!PEER_ADDR"],
    );
    let trusted = conn().with_trusted_proxy(true);
    check(
        &http("/", xff, &trusted, &options),
        &[
            "REMOTE_ADDR=203.0.113.7",
            "REMOTE_PORT=",
            "PEER_ADDR=10.1.2.3",
            "PEER_PORT=51000",
        ],
    );
    // Without the option, only the scheme headers are read.
    check(
        &http("/", xff, &trusted, &EnvironOptions::default()),
        &["REMOTE_ADDR=10.1.2.3", "!PEER_ADDR"],
    );
    // RFC 7239 wins over X-Forwarded-For, and gives the scheme and port.
    let forwarded: &[(&str, &[u8])] = &[
        ("host", b"h"),
        ("x-forwarded-for", b"1.1.1.1"),
        (
            "forwarded",
            b"for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https",
        ),
    ];
    let environ = http("/", forwarded, &trusted, &options);
    check(
        &environ,
        &[
            "REMOTE_ADDR=2001:db8::7",
            "REMOTE_PORT=4711",
            "SERVER_PORT=443",
        ],
    );
    assert_eq!(environ.url_scheme, UrlScheme::Https);
    let untrusted = http("/", forwarded, &conn(), &options);
    assert_eq!(untrusted.url_scheme, UrlScheme::Http);
    // An unreadable client (`unknown`) leaves the peer as the address.
    let unknown: &[(&str, &[u8])] = &[("host", b"h"), ("forwarded", b"for=unknown")];
    check(
        &http("/", unknown, &trusted, &options),
        &["REMOTE_ADDR=10.1.2.3", "!PEER_ADDR"],
    );
}

#[test]
fn target_forms() {
    let options = EnvironOptions::default();
    check(
        &http(
            "http://other.example:81/p%2Fq?x=1",
            &[("host", b"ignored")],
            &conn(),
            &options,
        ),
        &[
            "PATH_INFO=/p/q",
            "QUERY_STRING=x=1",
            "SERVER_NAME=other.example",
            "SERVER_PORT=81",
            "HTTP_HOST=other.example:81",
            "REQUEST_URI=http://other.example:81/p%2Fq?x=1",
        ],
    );
    // The Host header is replaced, not joined or kept next to it.
    let absolute = http(
        "http://other.example:81/",
        &[("host", b"ignored"), ("accept", b"*/*")],
        &conn(),
        &options,
    );
    let hosts: Vec<_> = absolute
        .headers
        .iter()
        .filter(|(key, _)| &key[..] == b"HTTP_HOST")
        .collect();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    check(
        &http("http://h", &[], &conn(), &options),
        &[
            "PATH_INFO=/",
            "SERVER_NAME=h",
            "SERVER_PORT=80",
            "HTTP_HOST=h",
        ],
    );
    check(
        &http("http://h?q=1", &[("host", b"x:9")], &conn(), &options),
        &[
            "PATH_INFO=/",
            "QUERY_STRING=q=1",
            "SERVER_NAME=h",
            "SERVER_PORT=80",
            "HTTP_HOST=h",
        ],
    );
    // The URI's scheme gives the default port.
    check(
        &http("HTTPS://h/a", &[("host", b"x:9")], &conn(), &options),
        &[
            "PATH_INFO=/a",
            "SERVER_NAME=h",
            "SERVER_PORT=443",
            "HTTP_HOST=h",
        ],
    );
    check(
        &http("https://[::1]:8443/a", &[("host", b"x")], &conn(), &options),
        &[
            "SERVER_NAME=[::1]",
            "SERVER_PORT=8443",
            "HTTP_HOST=[::1]:8443",
        ],
    );
    check(
        &http("*", &[], &conn(), &options),
        &["PATH_INFO=*", "QUERY_STRING="],
    );
    check(
        &http("/a?b?c", &[("host", b"[::1]:9000")], &conn(), &options),
        &[
            "PATH_INFO=/a",
            "QUERY_STRING=b?c",
            "SERVER_NAME=[::1]",
            "SERVER_PORT=9000",
        ],
    );
    // No Host (HTTP/1.0): the listener's address.
    check(
        &http("/", &[], &conn(), &options),
        &["SERVER_NAME=127.0.0.1", "SERVER_PORT=8000"],
    );
}

#[test]
fn percent_decoding() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"/a%20b", b"/a b"),
        (b"/%41%62", b"/Ab"),
        (b"/100%", b"/100%"),
        (b"/%4", b"/%4"),
        (b"/%zz", b"/%zz"),
        (b"/a+b", b"/a+b"),
        (b"/%00", b"/\0"),
        (b"/%ff%FE", b"/\xff\xfe"),
    ];
    for (input, expect) in cases {
        assert_eq!(
            &percent_decode(input)[..],
            *expect,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
    pairs
        .iter()
        .map(|(key, value)| {
            (
                Bytes::copy_from_slice(key.as_bytes()),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect()
}

#[test]
fn nginx_uwsgi_params() {
    let unix = ConnInfo::unix();
    let environ = Environ::from_cgi_vars(
        vars(&[
            ("QUERY_STRING", "a=1"),
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", "application/json"),
            ("CONTENT_LENGTH", "2"),
            ("REQUEST_URI", "/flasktodo/x%20y?a=1"),
            ("PATH_INFO", "/flasktodo/x y"),
            ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_SCHEME", "https"),
            ("HTTPS", "on"),
            ("REMOTE_ADDR", "192.0.2.7"),
            ("REMOTE_PORT", "40000"),
            ("SERVER_PORT", "443"),
            ("SERVER_NAME", "example.org"),
            ("SCRIPT_NAME", "/flasktodo"),
            ("HTTP_HOST", "example.org"),
            ("UWSGI_FILE", "/tmp/evil.py"),
            ("UWSGI_SCHEME", "https"),
        ]),
        &unix,
        &EnvironOptions::default(),
    )
    .unwrap();
    check(
        &environ,
        &[
            "REQUEST_METHOD=POST",
            "SCRIPT_NAME=/flasktodo",
            "PATH_INFO=/x y",
            "QUERY_STRING=a=1",
            "REQUEST_URI=/flasktodo/x%20y?a=1",
            "CONTENT_TYPE=application/json",
            "CONTENT_LENGTH=2",
            "SERVER_NAME=example.org",
            "SERVER_PORT=443",
            "REMOTE_ADDR=192.0.2.7",
            "REMOTE_PORT=40000",
            "DOCUMENT_ROOT=/usr/share/nginx/html",
            "HTTPS=on",
            "REQUEST_SCHEME=https",
            "HTTP_HOST=example.org",
            "!UWSGI_FILE",
            "!UWSGI_SCHEME",
        ],
    );
    assert_eq!(environ.url_scheme, UrlScheme::Https);
}

/// The block-sharing entry builds the same environ as the owned one, takes
/// `SERVER_NAME`/`SERVER_PORT` from `Host` when the vars leave them empty,
/// and a part outside the block is copied, not refused.
#[test]
fn cgi_block_matches_cgi_vars() {
    let pairs = [
        ("QUERY_STRING", ""),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("REQUEST_URI", "/a?"),
        ("PATH_INFO", "/a"),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("HTTPS", "1"),
        ("REMOTE_ADDR", "192.0.2.7"),
        ("SERVER_PORT", "8080"),
        ("SERVER_NAME", ""),
        ("HTTP_HOST", "h.example:81"),
        ("HTTP_HOST", "other"),
        ("HTTP_X_A", "b"),
        ("UWSGI_FILE", "x"),
        ("X_OTHER", "y"),
    ];
    let block = Bytes::from(
        pairs
            .iter()
            .flat_map(|(key, value)| [key.as_bytes(), value.as_bytes()])
            .collect::<Vec<_>>()
            .concat(),
    );
    let mut at = 0;
    let mut slices = Vec::new();
    for (key, value) in pairs {
        let key_part = &block[at..at + key.len()];
        at += key.len();
        let value_part = &block[at..at + value.len()];
        at += value.len();
        slices.push((key_part, value_part));
    }
    // One part from elsewhere.
    slices.push((&b"HTTP_Y"[..], &b"z"[..]));
    let conn = conn();
    let options = EnvironOptions::default();
    let shared = Environ::from_cgi_block(&block, slices.iter().copied(), &conn, &options).unwrap();
    let mut owned_pairs = vars(&pairs);
    owned_pairs.push((Bytes::from_static(b"HTTP_Y"), Bytes::from_static(b"z")));
    let owned = Environ::from_cgi_vars(owned_pairs, &conn, &options).unwrap();
    assert_eq!(shared, owned);
    check(
        &shared,
        &[
            "SERVER_NAME=h.example",
            "SERVER_PORT=8080",
            "REMOTE_ADDR=192.0.2.7",
            "REMOTE_PORT=51000",
            "HTTPS=1",
            "DOCUMENT_ROOT=/usr/share/nginx/html",
            "X_OTHER=y",
            "HTTP_Y=z",
            "!UWSGI_FILE",
        ],
    );
    assert_eq!(shared.url_scheme, UrlScheme::Https);
}

#[test]
fn cgi_vars_minimal_and_missing_method() {
    let conn = conn();
    let environ = Environ::from_cgi_vars(
        vars(&[
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", "/p%41?q"),
            ("CONTENT_LENGTH", ""),
        ]),
        &conn,
        &EnvironOptions::default(),
    )
    .unwrap();
    check(
        &environ,
        &[
            "PATH_INFO=/pA",
            "SERVER_PROTOCOL=HTTP/1.0",
            "SERVER_NAME=127.0.0.1",
            "SERVER_PORT=8000",
            "REMOTE_ADDR=10.1.2.3",
            "!CONTENT_LENGTH",
        ],
    );
    assert_eq!(
        Environ::from_cgi_vars(
            vars(&[("PATH_INFO", "/")]),
            &conn,
            &EnvironOptions::default()
        ),
        Err(EnvironError::Missing("REQUEST_METHOD"))
    );
}

#[test]
fn from_parts_matches_from_http() {
    let request = http::Request::builder()
        .uri("/x?y=1")
        .header("host", "h:1")
        .body(())
        .unwrap();
    let (parts, ()) = request.into_parts();
    let environ = Environ::from_parts(&parts, &conn(), &EnvironOptions::default());
    check(
        &environ,
        &[
            "PATH_INFO=/x",
            "QUERY_STRING=y=1",
            "SERVER_PORT=1",
            "REQUEST_URI=/x?y=1",
        ],
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn field() -> impl Strategy<Value = (String, Vec<u8>)> {
        (
            prop::sample::select(vec![
                "Host",
                "host",
                "HOST",
                "Cookie",
                "cookie",
                "X_A",
                "x-a",
                "X-A",
                "Content-Length",
                "content-type",
                "Content-Type",
                "Forwarded",
                "X-Forwarded-For",
                "x-forwarded-for",
                "Script_Name",
                "X-Forwarded-Proto",
                "accept",
                "Foo-Bar",
                "foo_bar",
                "X-Forwarded-Ssl",
                "User-Agent",
                "a",
                "B",
                "Te",
                "Sec-Fetch-Mode",
            ]),
            prop::sample::select(vec![
                &b"h"[..],
                b"x.org:81",
                b"[::1]:9",
                b"5",
                b" 5, 5",
                b"1,2",
                b"https",
                b"on",
                b"for=10.0.0.1;proto=https",
                b"10.0.0.2, 192.0.2.7",
                b"/mnt",
                b"",
                b"a=b",
                b"\xe9t\xe9",
            ]),
        )
            .prop_map(|(name, value)| (name.to_owned(), value.to_vec()))
    }

    proptest! {
        /// The word-at-a-time comparison answers as `eq_ignore_ascii_case`.
        #[test]
        fn eq_lower_is_eq_ignore_ascii_case(
            lower in "[a-z_-]{0,30}",
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

        /// `from_fields` on raw pairs (any case, repeats anywhere) builds
        /// exactly what the HeaderMap walk it replaced built.
        #[test]
        fn from_fields_matches_the_header_map_walk(
            fields in prop::collection::vec(field(), 0..10),
            target in prop::sample::select(vec!["/a%2Fb?q", "/mnt/x", "http://t.org/p", "https://t.org:8443", "*"]),
            trusted in any::<bool>(),
            allow_underscore_headers in any::<bool>(),
            forwarded_remote_addr in any::<bool>(),
        ) {
            let options = EnvironOptions {
                allow_underscore_headers,
                forwarded_remote_addr,
                script_name: Bytes::from_static(b"/mnt"),
                trusted_proxies: crate::proxy::AllowList::parse("10.0.0.0/8").unwrap(),
                ..EnvironOptions::default()
            };
            let conn = conn().with_trusted_proxy(trusted);
            let mut map = HeaderMap::new();
            for (name, value) in &fields {
                map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).unwrap());
            }
            let target = Bytes::copy_from_slice(target.as_bytes());
            let reference = reference::from_header_map(&Method::GET, target.clone(), Version::HTTP_11, &map, &conn, &options);
            let pairs: Vec<(&[u8], &[u8])> = fields.iter().map(|(n, v)| (n.as_bytes(), &v[..])).collect();
            let got = Environ::from_fields(&Method::GET, target.clone(), Version::HTTP_11, pairs.iter().copied(), &Bytes::new(), &conn, &options);
            prop_assert_eq!(&got, &reference);
            let got = Environ::from_http(&Method::GET, target, Version::HTTP_11, &map, &conn, &options);
            prop_assert_eq!(&got, &reference);
        }

        #[test]
        fn percent_encoding_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let encoded: String = bytes.iter().map(|byte| format!("%{byte:02X}")).collect();
            prop_assert_eq!(&percent_decode(encoded.as_bytes())[..], &bytes[..]);
        }

        #[test]
        fn any_target_builds_an_environ(target in proptest::collection::vec(any::<u8>(), 0..64)) {
            let environ = Environ::from_http(
                &Method::GET, Bytes::from(target.clone()), Version::HTTP_11,
                &HeaderMap::new(), &conn(), &EnvironOptions::default(),
            );
            prop_assert_eq!(&environ.request_uri[..], &target[..]);
        }
    }
}

/// The environ as it was built before `from_fields`: walking an
/// `http::HeaderMap` (kept as the oracle `from_fields` must match).
mod reference {
    use bytes::{BufMut, Bytes, BytesMut};
    use http::{HeaderMap, Method, Version};

    use super::super::{
        absolute_form_default_port, method_bytes, percent_decode, split_host_port, split_target,
        version_str, ConnInfo, Environ, EnvironOptions, UrlScheme,
    };

    /// Builds the environ of an HTTP/1.x request.
    ///
    /// `target` is the request-target exactly as sent; `headers` are the
    /// request's headers in arrival order.
    pub fn from_header_map(
        method: &Method,
        target: Bytes,
        version: Version,
        headers: &HeaderMap,
        conn: &ConnInfo,
        options: &EnvironOptions,
    ) -> Environ {
        let (path, query, authority) = split_target(&target);
        let mut environ = Environ {
            request_method: method_bytes(method),
            query_string: target.slice_ref(query),
            server_protocol: Bytes::from_static(version_str(version).as_bytes()),
            url_scheme: conn.scheme,
            ..Environ::default()
        };
        (environ.remote_addr, environ.remote_port) = conn.remote().clone();

        let mut script_name = options.script_name.clone();
        // From a trusted proxy: `Forwarded` and `X-Forwarded-For`, read
        // once the loop has seen every line.
        let mut forwarded: Option<String> = None;
        let mut x_forwarded_for: Option<String> = None;
        for name in headers.keys() {
            let mut values = headers.get_all(name).iter();
            let Some(first) = values.next() else { continue };
            let name_str = name.as_str();
            match name_str {
                "content-type" => {
                    environ.content_type = Some(Bytes::copy_from_slice(first.as_bytes()));
                    continue;
                }
                "content-length" => {
                    environ.content_length = Some(content_length_value(first, values));
                    continue;
                }
                // RFC 9112 §3.2.2: with an absolute-form target the origin
                // server "MUST ignore the received Host header field (if
                // any) and instead use the host information of the
                // request-target"; the application sees that as `HTTP_HOST`.
                "host" if !authority.is_empty() => {
                    environ.headers.push((
                        Bytes::from_static(b"HTTP_HOST"),
                        Bytes::copy_from_slice(authority),
                    ));
                    continue;
                }
                _ => {}
            }
            if conn.trusted_proxy {
                // A proxy mounts the app under a prefix with
                // `proxy_set_header SCRIPT_NAME /prefix;` (gunicorn's contract).
                if name_str == "script_name" {
                    script_name = Bytes::copy_from_slice(first.as_bytes());
                    continue;
                }
                if options.secure_scheme_headers.iter().any(|(header, value)| {
                    header == name_str && first.as_bytes().eq_ignore_ascii_case(value.as_bytes())
                }) {
                    environ.url_scheme = UrlScheme::Https;
                }
                let joined = || {
                    headers
                        .get_all(name)
                        .iter()
                        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                match name_str {
                    "forwarded" => forwarded = Some(joined()),
                    "x-forwarded-for" => x_forwarded_for = Some(joined()),
                    _ => {}
                }
            }
            if !options.allow_underscore_headers && name_str.contains('_') {
                continue;
            }
            let separator: &[u8] = if name_str == "cookie" { b"; " } else { b", " };
            let value = match values.next() {
                None => Bytes::copy_from_slice(first.as_bytes()),
                Some(second) => {
                    let mut joined = BytesMut::from(first.as_bytes());
                    for more in std::iter::once(second).chain(values) {
                        joined.put_slice(separator);
                        joined.put_slice(more.as_bytes());
                    }
                    joined.freeze()
                }
            };
            let key = cgi_header_key(name_str);
            // With underscores allowed, `X_A` and `X-A` share one key: join them
            // rather than let the later hide the earlier.
            if options.allow_underscore_headers {
                if let Some((_, existing)) = environ.headers.iter_mut().find(|(k, _)| *k == key) {
                    let mut joined = BytesMut::from(&existing[..]);
                    joined.put_slice(separator);
                    joined.put_slice(&value);
                    *existing = joined.freeze();
                    continue;
                }
            }
            environ.headers.push((key, value));
        }

        let host = if authority.is_empty() {
            headers
                .get(http::header::HOST)
                .map(|value| value.as_bytes())
        } else {
            if !headers.contains_key(http::header::HOST) {
                // HTTP/1.0 may omit Host; the target still names the host.
                environ.headers.push((
                    Bytes::from_static(b"HTTP_HOST"),
                    Bytes::copy_from_slice(authority),
                ));
            }
            Some(authority)
        };
        if conn.trusted_proxy {
            // Before the server port is chosen: `proto=https` changes it.
            environ.apply_forwarded(forwarded.as_deref(), x_forwarded_for.as_deref(), options);
        }
        environ.set_server(host, conn);
        if !authority.is_empty() && split_host_port(authority).1.is_none() {
            // The URI's own scheme gives the default port (`https://h/` is
            // port 443 whatever the listener speaks).
            if let Some(port) = absolute_form_default_port(&target) {
                environ.server_port = Bytes::from_static(port);
            }
        }
        environ.mount(script_name, percent_decode(path));
        environ.request_uri = target;
        environ
    }

    fn cgi_header_key(name: &str) -> Bytes {
        let mut key = BytesMut::with_capacity(5 + name.len());
        key.put_slice(b"HTTP_");
        key.extend(name.bytes().map(|byte| match byte {
            b'-' => b'_',
            other => other.to_ascii_uppercase(),
        }));
        key.freeze()
    }

    fn content_length_value<'a>(
        first: &'a http::HeaderValue,
        mut rest: impl Iterator<Item = &'a http::HeaderValue>,
    ) -> Bytes {
        let second = rest.next();
        if second.is_none() && !first.as_bytes().contains(&b',') {
            return Bytes::copy_from_slice(first.as_bytes());
        }
        let values: Vec<&[u8]> = std::iter::once(first)
            .chain(second)
            .chain(rest)
            .map(http::HeaderValue::as_bytes)
            .collect();
        let mut length: Option<u64> = None;
        let mut same = true;
        for item in values.iter().flat_map(|value| value.split(|&b| b == b',')) {
            let item = item.trim_ascii();
            let parsed = (!item.is_empty() && item.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
                .flatten();
            match (parsed, length) {
                (None, _) => same = false,
                (Some(value), Some(previous)) if value != previous => same = false,
                (Some(value), _) => length = Some(value),
            }
        }
        match (same, length) {
            (true, Some(length)) => Bytes::from(length.to_string()),
            _ => Bytes::from(values.join(&b", "[..])),
        }
    }
}

#[test]
fn known_names_have_the_generic_key() {
    let names = [
        "te",
        "dnt",
        "host",
        "range",
        "accept",
        "cookie",
        "origin",
        "pragma",
        "expect",
        "referer",
        "if-match",
        "if-range",
        "forwarded",
        "user-agent",
        "connection",
        "script_name",
        "x-real-ip",
        "content-type",
        "cache-control",
        "authorization",
        "if-none-match",
        "content-length",
        "accept-charset",
        "sec-fetch-dest",
        "sec-fetch-mode",
        "sec-fetch-site",
        "sec-fetch-user",
        "accept-encoding",
        "accept-language",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-requested-with",
        "if-modified-since",
        "x-forwarded-proto",
        "transfer-encoding",
        "upgrade-insecure-requests",
    ];
    for name in names {
        for name in [name.to_owned(), name.to_ascii_uppercase()] {
            let (_, key) = classify(name.as_bytes()).unwrap_or_else(|| panic!("{name} unknown"));
            let generic = cgi_header_key(name.as_bytes(), &mut BytesMut::new(), 0);
            assert_eq!(key, &generic[..], "{name}");
        }
    }
    assert_eq!(classify(b"x-custom"), None);
    assert_eq!(classify(b"hosts"), None);
}

#[test]
fn peer_strings_render_addresses_and_ports_as_display_does() {
    use std::net::Ipv6Addr;
    for address in [
        "0.0.0.0:0",
        "127.0.0.1:8080",
        "255.255.255.255:65535",
        "10.20.3.4:1",
        "192.168.100.200:40000",
    ] {
        let address: SocketAddr = address.parse().unwrap();
        let (ip, port) = peer_strings(PeerAddr::Tcp(address));
        assert_eq!(ip, address.ip().to_string().as_bytes());
        assert_eq!(port, address.port().to_string().as_bytes());
    }
    let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 443);
    let (ip, port) = peer_strings(PeerAddr::Tcp(v6));
    assert_eq!((&ip[..], &port[..]), (&b"::1"[..], &b"443"[..]));
}
