//! Serving requests through a real embedded CPython: environ, start_response
//! (`exc_info`, `write`), iteration, `close()`, `wsgi.input`,
//! `wsgi.file_wrapper`, errors, and `wsgiref.validate`.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;

fn app(name: &str, source: &str) -> (Arc<wsgi_python::PyApplication>, Arc<TestLog>) {
    let (app, log) = load(name, source);
    (Arc::new(app), log)
}

fn get(path: &str) -> wsgi_core::Environ {
    environ("GET", path)
}

#[test]
fn simple_app_gets_content_length() {
    let (app, log) = app(
        "t_simple",
        r#"
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]
"#,
    );
    let record = serve(&app, get("/"), vec![]);
    assert_eq!(record.status(), 200);
    assert_eq!(record.body_str(), "Hello, World!");
    assert_eq!(record.header("content-length").as_deref(), Some("13"));
    assert_eq!(record.head.as_ref().unwrap().content_length, Some(13));
    assert!(record.finished);
    assert_eq!(record.aborted, None);
    assert_eq!(log.text(), "");
}

/// Heads of every size come out whole and in order, with the reason
/// phrase, each name and value a slice of the head's one buffer.
#[test]
fn response_heads_of_every_size_keep_their_headers() {
    let (app, log) = app(
        "t_head_sizes",
        r#"
def app(environ, start_response):
    count = int(environ["PATH_INFO"][1:])
    headers = [("X-H%d" % i, "v%d-" % i + "\xe9" * i) for i in range(count)]
    start_response("299 Custom Reason", headers)
    return [b"body"]
"#,
    );
    for count in [0usize, 1, 15, 16, 17, 40] {
        let record = serve(&app, get(&format!("/{count}")), vec![]);
        let head = record.head.as_ref().unwrap();
        assert_eq!(
            (head.status, &head.reason[..]),
            (299, &b"Custom Reason"[..])
        );
        let mut expected: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
            .map(|i| {
                let mut value = format!("v{i}-").into_bytes();
                value.extend(std::iter::repeat_n(0xe9u8, i));
                (format!("X-H{i}").into_bytes(), value)
            })
            .collect();
        expected.push((b"Content-Length".to_vec(), b"4".to_vec()));
        let got: Vec<(Vec<u8>, Vec<u8>)> = head
            .headers
            .iter()
            .map(|(name, value)| (name.to_vec(), value.to_vec()))
            .collect();
        assert_eq!(got, expected, "{count} headers");
    }
    assert_eq!(log.text(), "");
}

#[test]
fn several_requests_on_one_thread_keep_thread_locals() {
    let (app, _) = app(
        "t_threadlocal",
        r#"
import threading
local = threading.local()
def app(environ, start_response):
    local.count = getattr(local, "count", 0) + 1
    start_response("200 OK", [])
    return [str(local.count).encode()]
"#,
    );
    let records = serve_all(
        &app,
        (0..3)
            .map(|_| (get("/"), vec![], TestSink::new().0))
            .collect(),
    );
    let bodies: Vec<String> = records
        .iter()
        .map(|record| record.lock().unwrap().body_str())
        .collect();
    assert_eq!(bodies, ["1", "2", "3"]);
}

#[test]
fn environ_keys_and_latin1_values() {
    let (app, _) = app(
        "t_environ",
        r#"
import json, os
def app(environ, start_response):
    start_response("200 OK", [])
    out = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
    out["input_type"] = type(environ["wsgi.input"]).__name__
    out["errors_has_write"] = hasattr(environ["wsgi.errors"], "write")
    out["wrapper_callable"] = callable(environ["wsgi.file_wrapper"])
    out["os_environ_merged"] = any(k in environ for k in ("PATH", "HOME", "PYENV_ROOT"))
    return [json.dumps(out).encode()]
"#,
    );
    let mut environ = environ("POST", "/caf%C3%A9/x?a=1&b=%20");
    environ.path_info = Bytes::from_static(b"/caf\xc3\xa9/x");
    environ.content_type = Some(Bytes::from_static(b"text/plain"));
    environ.content_length = Some(Bytes::from_static(b"0"));
    environ.headers = vec![
        (
            Bytes::from_static(b"HTTP_HOST"),
            Bytes::from_static(b"example.com"),
        ),
        (
            Bytes::from_static(b"HTTP_X_NAME"),
            Bytes::from_static(b"caf\xe9"),
        ),
    ];
    environ.extra = vec![(
        Bytes::from_static(b"DOCUMENT_ROOT"),
        Bytes::from_static(b"/srv"),
    )];
    environ.url_scheme = wsgi_core::UrlScheme::Https;
    let record = serve(&app, environ, vec![]);
    let body = record.body_str();
    let expect = [
        r#""REQUEST_METHOD": "POST""#,
        r#""SCRIPT_NAME": """#,
        // The UTF-8 bytes of "é" as two latin-1 characters (PEP 3333).
        r#""PATH_INFO": "/caf\u00c3\u00a9/x""#,
        r#""QUERY_STRING": "a=1&b=%20""#,
        r#""REQUEST_URI": "/caf%C3%A9/x?a=1&b=%20""#,
        r#""RAW_URI": "/caf%C3%A9/x?a=1&b=%20""#,
        r#""SERVER_PROTOCOL": "HTTP/1.1""#,
        r#""SERVER_NAME": "localhost""#,
        r#""SERVER_PORT": "8000""#,
        r#""REMOTE_ADDR": "127.0.0.1""#,
        r#""REMOTE_PORT": "54321""#,
        r#""CONTENT_TYPE": "text/plain""#,
        r#""CONTENT_LENGTH": "0""#,
        r#""HTTP_HOST": "example.com""#,
        // Byte 0xE9 arrives as 'é'.
        r#""HTTP_X_NAME": "caf\u00e9""#,
        r#""DOCUMENT_ROOT": "/srv""#,
        r#""wsgi.url_scheme": "https""#,
        r#""wsgi.version": [1, 0]"#,
        r#""wsgi.multithread": true"#,
        r#""wsgi.multiprocess": false"#,
        r#""wsgi.run_once": false"#,
        r#""wsgi.input_terminated": true"#,
        r#""SERVER_SOFTWARE": "wsgi-server/"#,
        r#""input_type": "Input""#,
        r#""errors_has_write": true"#,
        r#""wrapper_callable": true"#,
        r#""os_environ_merged": false"#,
    ];
    for needle in expect {
        assert!(body.contains(needle), "{needle} not in {body}");
    }
}

#[test]
fn content_type_and_length_absent_when_not_sent() {
    let (app, _) = app(
        "t_no_ct",
        r#"
def app(environ, start_response):
    start_response("200 OK", [])
    return [repr(("CONTENT_TYPE" in environ, "CONTENT_LENGTH" in environ)).encode()]
"#,
    );
    assert_eq!(serve(&app, get("/"), vec![]).body_str(), "(False, False)");
}

#[test]
fn exc_info_before_the_head_replaces_it() {
    let (app, log) = app(
        "t_excinfo_before",
        r#"
import sys
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise RuntimeError("oops")
    except RuntimeError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"error page"]
"#,
    );
    let record = serve(&app, get("/"), vec![]);
    assert_eq!(record.status(), 500);
    assert_eq!(record.body_str(), "error page");
    assert_eq!(log.text(), "");
}

#[test]
fn exc_info_after_the_head_reraises() {
    let (app, _) = app(
        "t_excinfo_after",
        r#"
import sys
def app(environ, start_response):
    write = start_response("200 OK", [])
    write(b"first;")
    try:
        raise KeyError("original")
    except KeyError as error:
        original = error
        try:
            start_response("500 Error", [], sys.exc_info())
        except KeyError as reraised:
            same = reraised is original and reraised.__traceback__ is not None
            return [b"reraised:" + repr(same).encode()]
    return [b"not reraised"]
"#,
    );
    let record = serve(&app, get("/"), vec![]);
    assert_eq!(record.status(), 200);
    assert_eq!(record.body_str(), "first;reraised:True");
}

#[test]
fn start_response_twice_without_exc_info_raises() {
    let (app, _) = app(
        "t_twice",
        r#"
def app(environ, start_response):
    start_response("200 OK", [])
    try:
        start_response("201 Created", [])
    except AssertionError as error:
        return [str(error).encode()]
    return [b"no error"]
"#,
    );
    let record = serve(&app, get("/"), vec![]);
    assert_eq!(record.status(), 200);
    assert_eq!(
        record.body_str(),
        "start_response called twice without exc_info"
    );
}

#[test]
fn write_callable_sends_before_the_iterable() {
    let (app, _) = app(
        "t_write",
        r#"
def app(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"a")
    write(b"")
    write(b"b")
    try:
        write("text")
    except TypeError:
        write(b"!")
    return [b"c"]
"#,
    );
    let (mut sink, _) = TestSink::new();
    sink.always_wait = true;
    let record = serve_with(&app, get("/"), vec![], sink);
    assert_eq!(record.chunks, ["a", "b", "!", "c"]);
    // The head went out with write(): no Content-Length was invented.
    assert_eq!(record.header("content-length"), None);
    assert_eq!(record.waits, 4);
    assert!(record.finished);
}

#[test]
fn generators_stream_and_delay_the_head() {
    let (app, _) = app(
        "t_generator",
        r#"
def app(environ, start_response):
    def body():
        yield b""
        # PEP 3333: start_response may be called lazily, until the first
        # non-empty chunk.
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"one,"
        yield b""
        yield b"two,"
        yield b"three"
    return body()
"#,
    );
    let (mut sink, _) = TestSink::new();
    sink.always_wait = true;
    let record = serve_with(&app, get("/"), vec![], sink);
    assert_eq!(record.chunks, ["one,", "two,", "three"]);
    assert_eq!(record.header("content-length"), None);
    assert_eq!(record.waits, 3);
    assert!(record.finished);
}

#[test]
fn empty_body_gets_content_length_zero() {
    let (app, _) = app(
        "t_empty",
        r#"
def app(environ, start_response):
    if environ["PATH_INFO"] == "/204":
        start_response("204 No Content", [])
    else:
        start_response("200 OK", [])
    return []
"#,
    );
    let record = serve(&app, get("/"), vec![]);
    assert_eq!(record.header("content-length").as_deref(), Some("0"));
    assert!(record.chunks.is_empty() && record.finished);
    let record = serve(&app, get("/204"), vec![]);
    assert_eq!(record.status(), 204);
    assert_eq!(record.header("content-length"), None);
}

const CLOSING: &str = r#"
events = []

class Body:
    def __init__(self, chunks, fail=False):
        self.chunks = chunks
        self.fail = fail
    def __iter__(self):
        for chunk in self.chunks:
            yield chunk
        if self.fail:
            raise ValueError("failed mid-body")
    def close(self):
        events.append("closed")

def app(environ, start_response):
    start_response("200 OK", [])
    path = environ["PATH_INFO"]
    if path == "/ok":
        return Body([b"a", b"b"])
    if path == "/fail":
        return Body([b"a"], fail=True)
    if path == "/endless":
        return Body(iter(lambda: b"x" * 10, None))
    if path == "/bad-close":
        class BadClose(Body):
            def close(self):
                events.append("bad close")
                raise OSError("close failed")
        return BadClose([b"a"])
"#;

#[test]
fn close_is_called_on_success_error_and_disconnect() {
    let (app, log) = app("t_close", CLOSING);

    let record = serve(&app, get("/ok"), vec![]);
    assert_eq!(record.body_str(), "ab");
    assert_eq!(eval_in("t_close", "events"), "['closed']");

    let record = serve(&app, get("/fail"), vec![]);
    assert_eq!(
        record.aborted.as_deref(),
        Some("ValueError: failed mid-body")
    );
    assert!(!record.finished);
    assert_eq!(eval_in("t_close", "events"), "['closed', 'closed']");
    let text = log.text();
    assert!(text.contains("GET /fail"), "{text}");
    assert!(text.contains("Traceback"), "{text}");
    assert!(text.contains("ValueError: failed mid-body"), "{text}");

    let before = log.text().len();
    let (mut sink, _) = TestSink::new();
    sink.disconnect_after = Some(3);
    let record = serve_with(&app, get("/endless"), vec![], sink);
    assert_eq!(record.chunks.len(), 3);
    assert!(!record.finished);
    assert_eq!(
        eval_in("t_close", "events"),
        "['closed', 'closed', 'closed']"
    );
    assert_eq!(&log.text()[before..], "", "no traceback for a gone client");

    let record = serve(&app, get("/bad-close"), vec![]);
    assert!(record.finished, "an exception in close() is only logged");
    assert!(log.text().contains("OSError: close failed"));
}

#[test]
fn write_to_a_gone_client_stops_the_app_quietly() {
    let (app, log) = app(
        "t_write_gone",
        r#"
seen = []
def app(environ, start_response):
    write = start_response("200 OK", [])
    try:
        for _ in range(100):
            write(b"x")
    except OSError as error:
        seen.append(type(error).__name__)
        raise
    return []
"#,
    );
    let (mut sink, _) = TestSink::new();
    sink.disconnect_after = Some(2);
    let record = serve_with(&app, get("/"), vec![], sink);
    assert_eq!(record.chunks.len(), 2);
    assert_eq!(
        eval_in("t_write_gone", "seen"),
        "['ConnectionAbortedError']"
    );
    assert_eq!(log.text(), "");
}

const INPUT_APP: &str = r#"
kept = []

def app(environ, start_response):
    stream = environ["wsgi.input"]
    how = environ["PATH_INFO"]
    if how == "/read":
        result = [stream.read()]
    elif how == "/read-none":
        result = [stream.read(None)]
    elif how == "/read-n":
        result = []
        while True:
            block = stream.read(4)
            if not block:
                break
            result.append(block)
    elif how == "/readline":
        result = [stream.readline(), stream.readline(), stream.readline(), stream.readline()]
    elif how == "/readline-limit":
        result = [stream.readline(3), stream.readline(3), stream.readline(100), stream.readline(0)]
    elif how == "/readlines":
        result = stream.readlines()
    elif how == "/readlines-hint":
        result = stream.readlines(7)
    elif how == "/iterate":
        result = list(stream)
    elif how == "/keep":
        kept.append(environ)
        result = [stream.read(3)]
    elif how == "/error":
        try:
            stream.read()
        except OSError as error:
            result = [type(error).__name__.encode()]
    start_response("200 OK", [])
    return [repr(result).encode()]
"#;

fn pieces() -> Vec<Piece> {
    vec![
        Piece::Pending,
        Piece::Data(b"line1\nli"),
        Piece::Pending,
        Piece::Data(b"ne2\n"),
        Piece::Data(b"line3"),
        Piece::Pending,
    ]
}

#[test]
fn wsgi_input_reads() {
    let (app, _) = app("t_input", INPUT_APP);
    let cases: &[(&str, &str)] = &[
        ("/read", r"[b'line1\nline2\nline3']"),
        ("/read-none", r"[b'line1\nline2\nline3']"),
        ("/read-n", r"[b'line', b'1\nli', b'ne2\n', b'line', b'3']"),
        ("/readline", r"[b'line1\n', b'line2\n', b'line3', b'']"),
        ("/readline-limit", r"[b'lin', b'e1\n', b'line2\n', b'']"),
        ("/readlines", r"[b'line1\n', b'line2\n', b'line3']"),
        ("/readlines-hint", r"[b'line1\n', b'line2\n']"),
        ("/iterate", r"[b'line1\n', b'line2\n', b'line3']"),
    ];
    for (path, expect) in cases {
        let record = serve(&app, environ("POST", path), pieces());
        assert_eq!(record.body_str(), *expect, "{path}");
    }
}

/// With the body's length known, `read(n)` over several chunks fills one
/// `bytes` object of that size; a length that promises more than the body
/// holds (a cut body) still yields exactly the bytes that came.
#[test]
fn wsgi_input_reads_with_a_known_length() {
    let (app, _) = app("t_input_length", INPUT_APP);
    let cases: &[(u64, &str, &str)] = &[
        (17, "/read", r"[b'line1\nline2\nline3']"),
        (
            17,
            "/read-n",
            r"[b'line', b'1\nli', b'ne2\n', b'line', b'3']",
        ),
        (17, "/readline", r"[b'line1\n', b'line2\n', b'line3', b'']"),
        (1000, "/read", r"[b'line1\nline2\nline3']"),
        (3, "/read", r"[b'line1\nline2\nline3']"),
    ];
    for (length, path, expect) in cases {
        let mut script = vec![Piece::Length(*length)];
        script.extend(pieces());
        let record = serve(&app, environ("POST", path), script);
        assert_eq!(record.body_str(), *expect, "{path} with length {length}");
    }
}

#[test]
fn wsgi_input_after_the_request_reads_nothing() {
    let (app, _) = app("t_input_keep", INPUT_APP);
    let record = serve(&app, environ("POST", "/keep"), vec![Piece::Data(b"abcdef")]);
    assert_eq!(record.body_str(), "[b'abc']");
    assert_eq!(
        eval_in(
            "t_input_keep",
            "(kept[0]['wsgi.input'].read(), kept[0]['wsgi.input'].readline())"
        ),
        "(b'', b'')"
    );
}

/// A thread reuses its `start_response`, `write` and `wsgi.input` objects
/// only while nothing else holds them: ones the application kept stay
/// bound to their finished request, whatever it does with them during the
/// next requests on the same thread, which still get working ones.
#[test]
fn objects_kept_from_an_earlier_request_do_not_reach_the_next_one() {
    let (app, log) = app(
        "t_kept_objects",
        r#"
kept = {}
seen = []

def attempt(action):
    try:
        return repr(action())
    except BaseException as error:
        return type(error).__name__

def app(environ, start_response):
    how = environ["PATH_INFO"]
    if how == "/keep":
        write = start_response("200 OK", [("X-Request", "keep")])
        kept.update(start=start_response, write=write, input=environ["wsgi.input"])
        return [kept["input"].read(2)]
    if how == "/plain":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("X-Request", "plain")])
        return [body]
    # /use: the kept objects, while this request runs.
    seen.append(attempt(lambda: kept["start"]("500 Kept", [("X-Request", "kept")])))
    seen.append(attempt(lambda: kept["write"](b"kept")))
    seen.append(attempt(lambda: kept["input"].read()))
    write = start_response("200 OK", [("X-Request", "use")])
    write(b"own:")
    return [environ["wsgi.input"].read()]
"#,
    );
    let requests = [
        ("/keep", b"abcdef".as_slice()),
        ("/plain", b"second"),
        ("/use", b"third"),
        ("/plain", b"fourth"),
    ]
    .into_iter()
    .map(|(path, body)| {
        (
            environ("POST", path),
            vec![Piece::Data(body)],
            TestSink::new().0,
        )
    })
    .collect();
    let records = serve_all(&app, requests);
    let records: Vec<Record> = records
        .iter()
        .map(|record| std::mem::take(&mut *record.lock().unwrap()))
        .collect();
    let summary: Vec<(u16, Option<String>, String)> = records
        .iter()
        .map(|record| {
            (
                record.status(),
                record.header("x-request"),
                record.body_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (200, Some("keep".to_owned()), "ab".to_owned()),
            (200, Some("plain".to_owned()), "second".to_owned()),
            (200, Some("use".to_owned()), "own:third".to_owned()),
            (200, Some("plain".to_owned()), "fourth".to_owned()),
        ]
    );
    assert_eq!(
        eval_in("t_kept_objects", "seen"),
        "['AssertionError', 'RuntimeError', \"b''\"]"
    );
    assert_eq!(log.text(), "");
}

#[test]
fn wsgi_input_io_error_is_oserror() {
    let (app, log) = app("t_input_error", INPUT_APP);
    let record = serve(
        &app,
        environ("POST", "/error"),
        vec![Piece::Data(b"ab"), Piece::Error],
    );
    assert_eq!(record.body_str(), "[b'ConnectionResetError']");
    assert_eq!(log.text(), "");
}

#[test]
fn invalid_heads_raise_in_the_application() {
    let (app, log) = app(
        "t_invalid_head",
        r#"
def app(environ, start_response):
    attempts = [
        ("200OK", []),
        ("200 OK", [("Bad Name", "x")]),
        ("200 OK", [("X-Evil", "a\r\nSet-Cookie: x")]),
        ("200 OK", [("Connection", "close")]),
        ("200 OK", [("X-Snowman", "\u2603")]),
        (b"200 OK", []),
        ("200 OK", (("X", "y"),)),
        ("200 OK", [("X", b"y")]),
        ("200 OK", [("X", "y", "z")]),
    ]
    seen = []
    for status, headers in attempts:
        try:
            start_response(status, headers)
        except ValueError:
            seen.append("ValueError")
        except TypeError:
            seen.append("TypeError")
        else:
            seen.append("accepted")
    start_response("200 OK", [("X-Latin", "caf\u00e9")])
    return [", ".join(seen).encode()]
"#,
    );
    let record = serve(&app, get("/"), vec![]);
    assert_eq!(
        record.body_str(),
        "ValueError, ValueError, ValueError, ValueError, ValueError, \
         TypeError, TypeError, TypeError, TypeError"
    );
    let head = record.head.unwrap();
    let latin = head
        .headers
        .iter()
        .find(|(name, _)| &name[..] == b"X-Latin")
        .unwrap();
    assert_eq!(&latin.1[..], b"caf\xe9");
    assert_eq!(log.text(), "");
}

/// The records of `requests` served in order on one thread.
fn serve_in_order(
    app: &Arc<wsgi_python::PyApplication>,
    requests: Vec<wsgi_core::Environ>,
) -> Vec<Record> {
    let requests = requests
        .into_iter()
        .map(|environ| (environ, vec![], TestSink::new().0))
        .collect();
    serve_all(app, requests)
        .iter()
        .map(|record| std::mem::take(&mut *record.lock().unwrap()))
        .collect()
}

/// A thread reuses the head of its previous `start_response` when the
/// arguments have the same bytes: every head that differs from it in one
/// byte, one header, or only in a type PEP 3333 refuses, must come out as
/// its own arguments say (or raise as they would alone).
#[test]
fn a_head_like_the_previous_one_is_its_own() {
    let (app, log) = app(
        "t_head_reuse",
        r#"
class S(str):
    pass

SHARED = [("X", "y")]
ATTEMPTS = {
    "valid": ("200 OK", [("X", "y")]),
    "tuple-list": ("200 OK", (("X", "y"),)),
    "bytes-value": ("200 OK", [("X", b"y")]),
    "bytes-name": ("200 OK", [(b"X", "y")]),
    "bytes-status": (b"200 OK", [("X", "y")]),
    "triple": ("200 OK", [("X", "y", "z")]),
    "list-pair": ("200 OK", [["X", "y"]]),
    "non-latin": ("200 OK", [("X", "\u2603")]),
    "other-value": ("200 OK", [("X", "z")]),
    "other-name": ("200 OK", [("Y", "y")]),
    "other-status": ("201 OK", [("X", "y")]),
    "other-reason": ("200 Fine", [("X", "y")]),
    "more": ("200 OK", [("X", "y"), ("X", "y")]),
    "fewer": ("200 OK", []),
    "dup-length": ("200 OK", [("Content-Length", "2"), ("Content-Length", "2")]),
    "subclass": (S("200 OK"), [(S("X"), S("y"))]),
    "latin": ("200 OK", [("X", "\xe9")]),
}

def app(environ, start_response):
    name = environ["PATH_INFO"][1:]
    if name == "shared":
        status, headers = "200 OK", SHARED
    elif name == "shared-changed":
        SHARED[0] = ("X", "w")
        status, headers = "200 OK", SHARED
    else:
        status, headers = ATTEMPTS[name]
    try:
        start_response(status, headers)
    except (TypeError, ValueError) as error:
        start_response("200 OK", [("X-Error", type(error).__name__)])
    return [b"ok"]
"#,
    );
    let mut paths = Vec::new();
    for name in [
        "tuple-list",
        "bytes-value",
        "bytes-name",
        "bytes-status",
        "triple",
        "list-pair",
        "non-latin",
        "other-value",
        "other-name",
        "other-status",
        "other-reason",
        "more",
        "fewer",
        "subclass",
        "latin",
    ] {
        paths.push("valid");
        paths.push(name);
    }
    paths.extend(["dup-length", "dup-length", "shared", "shared-changed"]);
    let records = serve_in_order(
        &app,
        paths.iter().map(|path| get(&format!("/{path}"))).collect(),
    );
    let heads: Vec<String> = records
        .iter()
        .map(|record| {
            let head = record.head.as_ref().unwrap();
            let mut text = format!("{} {}", head.status, String::from_utf8_lossy(&head.reason));
            for (name, value) in &head.headers {
                text.push_str(&format!(
                    "|{}:{}",
                    String::from_utf8_lossy(name),
                    // Latin-1 bytes as their code points.
                    value
                        .iter()
                        .map(|&byte| char::from(byte))
                        .collect::<String>()
                ));
            }
            text
        })
        .collect();
    let valid = "200 OK|X:y|Content-Length:2";
    let mut expected = Vec::new();
    for other in [
        "200 OK|X-Error:TypeError|Content-Length:2",
        "200 OK|X-Error:TypeError|Content-Length:2",
        "200 OK|X-Error:TypeError|Content-Length:2",
        "200 OK|X-Error:TypeError|Content-Length:2",
        "200 OK|X-Error:TypeError|Content-Length:2",
        "200 OK|X-Error:TypeError|Content-Length:2",
        "200 OK|X-Error:UnicodeEncodeError|Content-Length:2",
        "200 OK|X:z|Content-Length:2",
        "200 OK|Y:y|Content-Length:2",
        "201 OK|X:y|Content-Length:2",
        "200 Fine|X:y|Content-Length:2",
        "200 OK|X:y|X:y|Content-Length:2",
        "200 OK|Content-Length:2",
        valid,
        "200 OK|X:\u{e9}|Content-Length:2",
    ] {
        expected.push(valid.to_owned());
        expected.push(other.to_owned());
    }
    expected.extend([
        "200 OK|Content-Length:2".to_owned(),
        "200 OK|Content-Length:2".to_owned(),
        valid.to_owned(),
        "200 OK|X:w|Content-Length:2".to_owned(),
    ]);
    for (index, (got, want)) in heads.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "request {index}: /{}", paths[index]);
    }
    assert_eq!(heads.len(), expected.len());
    assert_eq!(log.text(), "");
}

/// The strings of the fixed keys' values are remembered across requests
/// (ports and paths take turns): each request still sees its own values,
/// whichever strings share a place in the thread's memory of them.
#[test]
fn recent_values_are_each_requests_own() {
    let (app, log) = app(
        "t_recent_values",
        r#"
def app(environ, start_response):
    start_response("200 OK", [])
    keys = ("REMOTE_PORT", "PATH_INFO", "REQUEST_URI", "RAW_URI", "REMOTE_ADDR")
    return ["|".join(environ[key] for key in keys).encode("latin-1")]
"#,
    );
    let mut environs = Vec::new();
    let mut expected = Vec::new();
    for i in 0..400usize {
        let port = (1000 + i * 7919 % 300).to_string();
        let path = if i % 9 == 0 {
            format!("/a-path-longer-than-thirty-two-bytes/{}", i % 4)
        } else {
            format!("/p{}", i * 31 % 50)
        };
        // The same bytes as another key's earlier value, and a latin-1 byte.
        let addr = if i % 2 == 0 {
            port.clone()
        } else {
            format!("10.0.0.{}\u{e9}", i % 7)
        };
        let mut environ = get(&path);
        environ.remote_port = Bytes::from(port.clone());
        environ.remote_addr = Bytes::from(addr.chars().map(|c| c as u8).collect::<Vec<u8>>());
        expected.push(format!("{port}|{path}|{path}|{path}|{addr}"));
        environs.push(environ);
    }
    let records = serve_in_order(&app, environs);
    for (index, (record, want)) in records.iter().zip(&expected).enumerate() {
        let got: String = record.body().iter().map(|&byte| char::from(byte)).collect();
        assert_eq!(&got, want, "request {index}");
    }
    assert_eq!(log.text(), "");
}

/// The thread's template holds the previous request's headers: each
/// request still has exactly its own `HTTP_*` keys and values, whatever
/// the requests before it sent.
#[test]
fn each_request_has_its_own_headers() {
    let (app, log) = app(
        "t_own_headers",
        r#"
def app(environ, start_response):
    start_response("200 OK", [])
    headers = sorted((k, v) for k, v in environ.items() if k.startswith("HTTP_"))
    environ["HTTP_SET_BY_APP"] = "x"
    environ.pop("HTTP_HOST", None)
    return [repr(headers).encode()]
"#,
    );
    let sets: [&[(&str, &str)]; 9] = [
        &[("HTTP_HOST", "a"), ("HTTP_X_ONE", "1")],
        &[("HTTP_HOST", "a")],
        &[("HTTP_X_ONE", "1"), ("HTTP_X_TWO", "2")],
        &[],
        &[("HTTP_HOST", "b"), ("HTTP_X_ONE", "1")],
        &[("HTTP_HOST", "b"), ("HTTP_X_ONE", "one")],
        &[
            ("HTTP_X_TWO", "2"),
            ("HTTP_HOST", "b"),
            ("HTTP_X_ONE", "one"),
        ],
        &[("HTTP_SET_BY_APP", "client"), ("HTTP_HOST", "b")],
        &[("HTTP_HOST", "b")],
    ];
    let requests = sets
        .iter()
        .map(|set| {
            let mut environ = get("/");
            environ.headers = set
                .iter()
                .map(|(name, value)| {
                    (
                        Bytes::copy_from_slice(name.as_bytes()),
                        Bytes::copy_from_slice(value.as_bytes()),
                    )
                })
                .collect();
            environ
        })
        .collect();
    let records = serve_in_order(&app, requests);
    for (index, (record, set)) in records.iter().zip(sets).enumerate() {
        let mut want: Vec<String> = set
            .iter()
            .map(|(name, value)| format!("('{name}', '{value}')"))
            .collect();
        want.sort();
        assert_eq!(
            record.body_str(),
            format!("[{}]", want.join(", ")),
            "request {index}"
        );
    }
    assert_eq!(log.text(), "");
}

/// An application that changes its environ changes its own copy: the next
/// request on the thread has every key and value of its own.
#[test]
fn environ_changes_do_not_reach_the_next_request() {
    let (app, log) = app(
        "t_environ_changes",
        r#"
def app(environ, start_response):
    start_response("200 OK", [])
    seen = repr(sorted((k, v) for k, v in environ.items() if isinstance(v, (str, tuple, bool))))
    environ["PATH_INFO"] = "/changed"
    environ["SCRIPT_NAME"] = "/mounted"
    environ["wsgi.version"] = (9, 9)
    environ["wsgi.url_scheme"] = "gopher"
    environ["HTTP_X_ADDED"] = "added"
    del environ["REMOTE_PORT"]
    del environ["SERVER_SOFTWARE"]
    environ.clear() if environ.get("QUERY_STRING") == "clear" else None
    return [seen.encode()]
"#,
    );
    let requests = vec![
        get("/same"),
        get("/same"),
        get("/same?clear"),
        get("/same?clear"),
        get("/same"),
    ];
    let records = serve_in_order(&app, requests);
    let bodies: Vec<String> = records.iter().map(Record::body_str).collect();
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[2], bodies[3]);
    assert_eq!(bodies[0], bodies[4]);
    for needle in [
        "('PATH_INFO', '/same')",
        "('SCRIPT_NAME', '')",
        "('wsgi.version', (1, 0))",
        "('wsgi.url_scheme', 'http')",
        "('REMOTE_PORT', '54321')",
        "('SERVER_SOFTWARE', 'wsgi-server/",
    ] {
        assert!(bodies[1].contains(needle), "{needle} not in {}", bodies[1]);
    }
    assert!(!bodies[1].contains("HTTP_X_ADDED"), "{}", bodies[1]);
    assert_eq!(log.text(), "");
}

#[test]
fn non_bytes_chunks_abort() {
    let (app, log) = app(
        "t_not_bytes",
        r#"
def app(environ, start_response):
    start_response("200 OK", [])
    return ["text"]
"#,
    );
    let record = serve(&app, get("/"), vec![]);
    assert!(record.head.is_none());
    assert!(record.aborted.is_some());
    assert!(log.text().contains("TypeError"), "{}", log.text());
    assert!(log.text().contains("str"), "{}", log.text());
}

#[test]
fn application_errors_abort_with_a_traceback() {
    let (app, log) = app(
        "t_raises",
        r#"
def app(environ, start_response):
    if environ["PATH_INFO"] == "/no-start":
        return [b"x"]
    if environ["PATH_INFO"] == "/no-start-empty":
        return []
    raise ZeroDivisionError("nope")
"#,
    );
    let record = serve(&app, get("/boom"), vec![]);
    assert!(record.head.is_none());
    assert_eq!(record.aborted.as_deref(), Some("ZeroDivisionError: nope"));
    let text = log.text();
    assert!(text.contains("GET /boom"), "{text}");
    assert!(text.contains("Traceback (most recent call last)"), "{text}");
    assert!(text.contains("ZeroDivisionError: nope"), "{text}");

    for path in ["/no-start", "/no-start-empty"] {
        let record = serve(&app, get(path), vec![]);
        assert!(record.head.is_none(), "{path}");
        assert!(record.aborted.is_some(), "{path}");
    }
    assert!(log.text().contains("start_response"));
}

const FILES: &str = r#"
import io
opened = []

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    path = environ["QUERY_STRING"]
    wrapper = environ["wsgi.file_wrapper"]
    if path:
        f = open(path, "rb")
        f.read(5)
        opened.append(f)
        return wrapper(f)
    return wrapper(io.BytesIO(b"0123456789"), 4)
"#;

#[test]
fn file_wrapper_over_a_regular_file_uses_a_file_region() {
    let (app, _) = app("t_files", FILES);
    let path = app_dir().join("t_files_data.bin");
    std::fs::write(&path, b"0123456789abcdef").unwrap();
    let record = serve(&app, get(&format!("/?{}", path.display())), vec![]);
    assert!(record.chunks.is_empty());
    assert_eq!(record.files.len(), 1);
    let (offset, len, content) = &record.files[0];
    assert_eq!(*offset, 5, "the file's position after f.read(5)");
    assert_eq!(*len, None);
    assert_eq!(
        &content[..],
        b"56789abcdef",
        "the same file, from the offset"
    );
    assert_eq!(record.header("content-length").as_deref(), Some("11"));
    assert!(record.finished);
    assert_eq!(eval_in("t_files", "opened[-1].closed"), "True");
}

#[test]
fn file_wrapper_over_bytesio_iterates_blocks() {
    let (app, _) = app("t_files_bytesio", FILES);
    let record = serve(&app, get("/"), vec![]);
    assert!(record.files.is_empty());
    assert_eq!(record.chunks, ["0123", "4567", "89"]);
    assert!(record.finished);
}

#[test]
fn wsgiref_validator_is_satisfied() {
    let (app, log) = app(
        "t_validated",
        r#"
import warnings
from wsgiref.validate import validator, WSGIWarning
warnings.simplefilter("error", WSGIWarning)

def inner(environ, start_response):
    path = environ["PATH_INFO"]
    stream = environ["wsgi.input"]
    environ["wsgi.errors"].write("")
    environ["wsgi.errors"].writelines([])
    environ["wsgi.errors"].flush()
    if path == "/input":
        body = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
        line = stream.readline()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body, line]
    if path == "/lines":
        lines = stream.readlines()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return lines
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (chunk for chunk in [b"a", b"b", b"c"])
    if path == "/file":
        import io
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"filebody"), 3)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]

app = validator(inner)
"#,
    );
    let mut input = environ("POST", "/input");
    input.content_length = Some(Bytes::from_static(b"5"));
    input.content_type = Some(Bytes::from_static(b"text/plain"));
    let cases: Vec<(wsgi_core::Environ, Vec<Piece>, &str)> = vec![
        (get("/"), vec![], "hello"),
        (
            input,
            vec![
                Piece::Pending,
                Piece::Data(b"hel"),
                Piece::Pending,
                Piece::Data(b"lo"),
            ],
            "hello",
        ),
        (environ("POST", "/lines"), pieces(), "line1\nline2\nline3"),
        (get("/write"), vec![], "written;returned"),
        (get("/stream"), vec![], "abc"),
        (get("/file"), vec![], "filebody"),
    ];
    for (environ, script, expect) in cases {
        let record = serve(&app, environ, script);
        assert_eq!(record.aborted, None, "{}", log.text());
        assert_eq!(record.body_str(), expect);
        assert!(record.finished);
    }
    assert_eq!(log.text(), "");
}
