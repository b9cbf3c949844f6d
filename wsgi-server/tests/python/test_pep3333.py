"""PEP 3333 end to end: examples/apps/pep3333_app.py (wrapped in
`wsgiref.validate.validator`) served by the binary. Besides each route's exact
answer, every test checks that no validator complaint (AssertionError,
WSGIWarning, an unclosed iterator) reached the server's log."""

import io
import re
import json
import time
from pathlib import Path

import pytest
import requests

import conftest
from conftest import APPS, free_port
from rawhttp import Conn, chunked, request

APP_FILE = APPS / "pep3333_app.py"
VALIDATOR_MARKERS = ("AssertionError", "WSGIWarning", "garbage collected without being closed")
# The last line `/errors` writes to wsgi.errors.
LOG_MARKER = "pep3333-errors: writelines 2\n"


@pytest.fixture(scope="module")
def server(module_start):
    metrics_port = free_port()
    server = module_start(str(APP_FILE), "--threads", "4",
                          "--metrics-bind", f"127.0.0.1:{metrics_port}")
    server.metrics_port = metrics_port
    return server


def settled_log(server, offset):
    """The log since `offset` once every request so far is over and all it
    logged is written (conftest.settled_log: the server's gauges, then a
    wsgi.errors marker)."""
    return conftest.settled_log(server, offset, "/errors", LOG_MARKER)


@pytest.fixture(autouse=True)
def no_validator_errors(server):
    offset = server.log_size()
    yield
    text = settled_log(server, offset)
    for marker in VALIDATOR_MARKERS:
        assert marker not in text, f"validator complaint {marker!r} in the server log:\n{text}"


def get(server, path, **kwargs):
    return requests.get(server.url + path, timeout=10, **kwargs)


def post(server, path, **kwargs):
    return requests.post(server.url + path, timeout=10, **kwargs)


# -- environ -----------------------------------------------------------------


def test_environ_keys(server):
    with Conn(server) as conn:
        conn.send(
            b"GET /env%69ron?a=1&b=%20x HTTP/1.1\r\n"
            + b"Host: 127.0.0.1:%d\r\n" % server.port
            + b""
            b"X-Custom: hello\r\n"
            b"X-Multi: a\r\n"
            b"X-Multi: b\r\n"
            b"Cookie: c1=1\r\n"
            b"Cookie: c2=2\r\n"
            b"X_Under: dropped\r\n"
            b"\r\n"
        )
        response = conn.read_response()
    assert response.status == 200, response
    environ = json.loads(response.body)
    expected = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/environ",
        "QUERY_STRING": "a=1&b=%20x",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(server.port),
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:%d" % server.port,
        "HTTP_X_CUSTOM": "hello",
        "HTTP_X_MULTI": "a, b",
        "HTTP_COOKIE": "c1=1; c2=2",
        "wsgi.url_scheme": "http",
        "wsgi.version": [1, 0],
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "has_file_wrapper": True,
        "environ_type": "dict",
    }
    got = {key: environ.get(key) for key in expected}
    assert got == expected
    assert environ["REMOTE_PORT"].isdigit()
    assert environ["RAW_URI"] == environ["REQUEST_URI"] == "/env%69ron?a=1&b=%20x"
    assert "HTTP_X_UNDER" not in environ and "HTTP_X-UNDER" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ and "HTTP_CONTENT_TYPE" not in environ
    assert environ.get("CONTENT_LENGTH", "") in ("", "0")


def test_environ_body_headers(server):
    response = post(server, "/environ", data=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    environ = response.json()
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert environ["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in environ


# -- wsgi.input --------------------------------------------------------------

BODY = b"line one\nline two\n\nlast without newline"
PARTS = [b"li", b"ne one\nline t", b"wo\n", b"\nlast without", b" newline"]


def send_body(server, path, framing, body=BODY, parts=PARTS):
    if framing == "length":
        return post(server, path, data=body)
    return post(server, path, data=iter(parts))  # requests sends an iterator chunked


def readlines_of(body, limit=None):
    stream = io.BytesIO(body)
    lines = []
    for _ in range(10000):
        line = stream.readline(limit) if limit else stream.readline()
        if not line:
            return lines
        lines.append(line.decode("latin-1"))
    raise AssertionError("too many lines")


FRAMINGS = ["length", "chunked"]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_input_read_all(server, framing):
    response = send_body(server, "/input/read-all", framing)
    assert response.status_code == 200
    assert response.json() == {"data": BODY.decode("latin-1")}


def test_input_read_all_empty(server):
    response = post(server, "/input/read-all")
    assert response.status_code == 200
    assert response.json() == {"data": ""}


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("n", [1, 7, 100])
def test_input_read_n(server, framing, n):
    response = send_body(server, "/input/read-n?n=%d" % n, framing)
    assert response.status_code == 200
    expected = [BODY[i:i + n].decode("latin-1") for i in range(0, len(BODY), n)]
    assert response.json() == {"chunks": expected}


@pytest.mark.parametrize("framing", FRAMINGS)
def test_input_read_n_binary(server, framing):
    body = bytes(range(256)) * 400  # 102400 bytes, every byte value
    parts = [body[i:i + 3001] for i in range(0, len(body), 3001)]
    response = send_body(server, "/input/read-n?n=1000", framing, body=body, parts=parts)
    assert response.status_code == 200
    chunks = response.json()["chunks"]
    assert [len(chunk) for chunk in chunks] == [1000] * 102 + [400]
    assert "".join(chunks).encode("latin-1") == body


@pytest.mark.parametrize("framing", FRAMINGS)
def test_input_readline(server, framing):
    response = send_body(server, "/input/readline", framing)
    assert response.status_code == 200
    assert response.json() == {
        "lines": ["line one\n", "line two\n", "\n", "last without newline"]
    }


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("limit", [1, 5, 9])
def test_input_readline_limit(server, framing, limit):
    response = send_body(server, "/input/readline-limit?limit=%d" % limit, framing)
    assert response.status_code == 200
    assert response.json() == {"lines": readlines_of(BODY, limit)}


@pytest.mark.parametrize("framing", FRAMINGS)
def test_input_readlines(server, framing):
    response = send_body(server, "/input/readlines", framing)
    assert response.status_code == 200
    assert response.json() == {"lines": readlines_of(BODY)}


@pytest.mark.parametrize("framing", FRAMINGS)
def test_input_readlines_hint(server, framing):
    response = send_body(server, "/input/readlines-hint?hint=10", framing)
    assert response.status_code == 200
    got = response.json()
    # PEP 3333: the server may ignore the hint, but no line may be lost.
    assert got["first"], got
    assert got["first"] + got["rest"] == readlines_of(BODY)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_input_iteration(server, framing):
    response = send_body(server, "/input/iter", framing)
    assert response.status_code == 200
    assert response.json() == {"lines": readlines_of(BODY)}


@pytest.mark.parametrize("framing", FRAMINGS)
def test_input_mixed_calls(server, framing):
    body = b"abcdef\nghij\nkl"
    parts = [b"ab", b"cdef", b"\ng", b"hij\nk", b"l"]
    response = send_body(server, "/input/mixed", framing, body=body, parts=parts)
    assert response.status_code == 200
    assert response.json() == {"steps": ["", "abc", "def\n", "gh", "ij\nkl", "", ""]}


# -- start_response, write() and the iterable --------------------------------


def test_write_callable_then_iterable(server):
    response = get(server, "/write")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain"
    assert response.content == b"part1,part2,part3"


def test_write_callable_only(server):
    response = get(server, "/write-only")
    assert response.status_code == 200
    assert response.content == b"w0;w1;w2;w3;w4;"


def test_exc_info_before_head_gives_the_apps_500(server):
    response = get(server, "/exc-info")
    assert response.status_code == 500
    assert response.headers["X-App-Error"] == "handled"
    assert response.headers["Content-Type"] == "text/plain"
    assert response.content == b"the app's own error page: caught by the app"


def test_exc_info_after_head_reraises_and_cuts_the_response(server):
    offset = server.log_size()
    with Conn(server) as conn:
        conn.send(request(b"GET", b"/exc-info-late"))
        version, status, _reason, headers, _head = conn.read_head()
        assert status == 200
        rest = conn.read_to_eof()
    # The body started; the response must end without a clean end, so the
    # client can tell it is truncated (no final 0-chunk).
    assert b"partial body;" in rest
    assert not rest.endswith(b"0\r\n\r\n"), rest
    assert b"must not be reached" not in rest
    log = server.wait_for_log("LookupError: late failure", offset)
    assert "LookupError: late failure" in log, log


def test_generator_response_and_close(server):
    response = get(server, "/generator?n=3&token=gen-ok")
    assert response.status_code == 200
    assert response.content == b"line 0\nline 1\nline 2\n"
    assert get(server, "/closed?token=gen-ok").json() == {"closed": True, "chunks": 3}


def test_close_called_when_client_disconnects_mid_stream(server):
    offset = server.log_size()
    conn = Conn(server)
    conn.send(request(b"GET", b"/endless?token=gone"))
    _version, status, _reason, _headers, _head = conn.read_head()
    assert status == 200
    received = len(conn.buffer)
    for _ in range(100):
        if received >= 200_000:
            break
        received += len(conn.sock.recv(65536))
    conn.close()
    record = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        record = get(server, "/closed?token=gone").json()
        if record.get("closed"):
            break
        time.sleep(0.05)
    assert record.get("closed") is True, record
    assert record["chunks"] < 4000, record
    log = settled_log(server, offset)
    assert "Traceback" not in log, log


def test_file_wrapper(server):
    response = get(server, "/file-wrapper")
    assert response.status_code == 200
    assert response.content == APP_FILE.read_bytes()


def test_file_wrapper_without_fileno(server):
    response = get(server, "/file-wrapper-bytesio")
    assert response.status_code == 200
    assert response.content == b"0123456789" * 1000


def test_file_wrapper_unwrapped_uses_whole_file(server):
    response = get(server, "/raw/file-wrapper")
    assert response.status_code == 200
    data = APP_FILE.read_bytes()
    assert response.headers.get("Content-Length") == str(len(data))
    assert response.content == data


def test_latin1_headers(server):
    with Conn(server) as conn:
        conn.send(request(b"GET", b"/latin1", [b"X-Echo: caf\xe9 \xff"]))
        response = conn.read_response()
    assert response.status == 200
    assert response.header("X-Latin1") == b"caf\xe9 \xf1 \xfc"
    assert json.loads(response.body) == {"x-echo": "caf\u00e9 \u00ff",
                                         "codepoints": [99, 97, 102, 233, 32, 255]}


def test_wsgi_errors_reach_the_log(server):
    offset = server.log_size()
    response = get(server, "/errors")
    assert response.status_code == 200
    log = server.wait_for_log("writelines 2", offset)
    for line in ("pep3333-errors: write\n", "pep3333-errors: writelines 1\n",
                 "pep3333-errors: writelines 2\n"):
        assert line in log, log


def test_app_exception_gives_500_and_traceback(server):
    offset = server.log_size()
    response = get(server, "/raise?msg=pep3333-raise-7f3a")
    assert response.status_code == 500
    log = server.wait_for_log("RuntimeError: pep3333-raise-7f3a", offset)
    assert "Traceback (most recent call last)" in log, log
    assert "RuntimeError: pep3333-raise-7f3a" in log, log
    assert get(server, "/write").status_code == 200


def test_iterable_exception_before_first_chunk_gives_500(server):
    offset = server.log_size()
    response = get(server, "/raise-in-iter?msg=pep3333-iter-91b2")
    assert response.status_code == 500
    log = server.wait_for_log("RuntimeError: pep3333-iter-91b2", offset)
    assert "RuntimeError: pep3333-iter-91b2" in log, log


def test_non_bytes_chunk_gives_500(server):
    offset = server.log_size()
    response = get(server, "/raw/not-bytes")
    assert response.status_code == 500
    assert b"a str, not bytes" not in response.content
    log = server.wait_for_log("str", offset)
    assert "/raw/not-bytes" in log, log


def test_invalid_headers_raise_in_the_app(server):
    response = get(server, "/raw/invalid-headers")
    assert response.status_code == 200
    assert "Injected" not in response.headers
    assert response.json() == {
        "newline-in-value": "ValueError",
        "colon-in-name": "ValueError",
        "space-in-name": "ValueError",
        "non-latin1-value": "ValueError",
        "bad-status": "ValueError",
        "int-value": "TypeError",
    }


def test_unknown_route_404(server):
    response = get(server, "/nope")
    assert response.status_code == 404
    assert response.content == b"not found: /nope"


def worker_pids(master_pid):
    """The pids of the master's children (its workers)."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    return {int(pid) for pid in children.split()}


def test_application_error_log_line_is_gunicorn_format(server):
    """The line announcing an application error carries the log's
    `[date] [pid] [ERROR]` prefix, as gunicorn's "Error handling request"."""
    offset = server.log_size()
    assert get(server, "/raise?msg=pep3333-format-c4d1").status_code == 500
    log = server.wait_for_log("RuntimeError: pep3333-format-c4d1", offset)
    first = log.splitlines()[0] if log else ""
    # The worker that served the request logs it (a child of the master).
    match = re.match(
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(\d+)\] \[ERROR\] .*/raise",
        first,
    )
    assert match, log
    assert int(match.group(1)) in worker_pids(server.pid), (match.group(1), server.pid)


def test_close_called_when_the_iterable_fails_mid_body(server):
    offset = server.log_size()
    with Conn(server) as conn:
        conn.send(request(b"GET", b"/generator?n=5&fail_after=2&token=gen-fail"))
        _version, status, _reason, _headers, _head = conn.read_head()
        rest = conn.read_to_eof()
    assert status == 200
    assert b"line 0\n" in rest and b"line 1\n" in rest and b"line 2" not in rest
    assert not rest.endswith(b"0\r\n\r\n"), rest  # truncated, not a clean end
    assert get(server, "/closed?token=gen-fail").json() == {"closed": True, "chunks": 2}
    log = server.wait_for_log("iterable failed after 2 chunks", offset)
    assert "RuntimeError: iterable failed after 2 chunks" in log, log
