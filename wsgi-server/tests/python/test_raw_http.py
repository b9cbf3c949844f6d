"""Raw-socket HTTP/1.1 against a Python app (examples/apps/pep3333_app.py):
keep-alive, pipelining, chunked uploads, `Expect: 100-continue`, HEAD,
malformed requests and application errors, with exact bytes asserted."""

import time

import pytest

from conftest import APPS
from rawhttp import Conn, chunked, request


@pytest.fixture(scope="module")
def server(module_start):
    return module_start(str(APPS / "pep3333_app.py"), "--threads", "2")


def test_keep_alive_several_requests(server):
    with Conn(server) as conn:
        conn.send(request(b"GET", b"/write"))
        first = conn.read_response()
        conn.send(request(b"POST", b"/echo", body=b"keep me"))
        second = conn.read_response()
        conn.send(request(b"GET", b"/generator?n=2&token=ka"))
        third = conn.read_response()
        conn.send(request(b"GET", b"/write-only"))
        fourth = conn.read_response()
        conn.send(request(b"GET", b"/nope"))
        fifth = conn.read_response()
        assert conn.buffer == b""
    assert (first.status, first.body) == (200, b"part1,part2,part3")
    assert (second.status, second.body) == (200, b"keep me")
    assert (third.status, third.body) == (200, b"line 0\nline 1\n")
    assert (fourth.status, fourth.body) == (200, b"w0;w1;w2;w3;w4;")
    assert (fifth.status, fifth.body) == (404, b"not found: /nope")
    for response in (first, second, third, fourth, fifth):
        assert response.version == b"HTTP/1.1"
        assert response.header("Connection") in (None, b"keep-alive"), response


def test_pipelining_three_requests_in_one_send(server):
    with Conn(server) as conn:
        conn.send(
            request(b"GET", b"/generator?n=1&token=pipe")
            + request(b"POST", b"/echo", body=b"second body")
            + request(b"POST", b"/echo", [b"Transfer-Encoding: chunked"],
                      chunked([b"thi", b"rd"]))
        )
        responses = [conn.read_response() for _ in range(3)]
        assert conn.buffer == b""
    assert [(r.status, r.body) for r in responses] == [
        (200, b"line 0\n"), (200, b"second body"), (200, b"third")]


def test_chunked_upload_echoed(server):
    body = (b"5;name=value\r\nhello\r\n"
            b"1\r\n \r\n"
            b"10\r\n0123456789abcdef\r\n"
            b"0\r\nX-Trailer: yes\r\n\r\n")
    with Conn(server) as conn:
        conn.send(request(b"POST", b"/echo", [b"Transfer-Encoding: chunked"], body))
        response = conn.read_response()
        # The connection stays usable after a chunked body with trailers.
        conn.send(request(b"GET", b"/write"))
        follow = conn.read_response()
    assert (response.status, response.body) == (200, b"hello 0123456789abcdef")
    assert (follow.status, follow.body) == (200, b"part1,part2,part3")


def test_expect_100_continue_sent_when_the_app_reads(server):
    """`/echo-slow` sleeps 0.5 s before reading: the interim response must
    come only then, and before the final one."""
    with Conn(server) as conn:
        sent_at = time.monotonic()
        conn.send(request(b"POST", b"/echo-slow",
                          [b"Expect: 100-continue", b"Content-Length: 11"]))
        interim = conn.read_response(timeout=5)
        interim_at = time.monotonic() - sent_at
        assert interim.status == 100, interim
        assert interim.raw_head == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert interim_at >= 0.4, f"100 Continue after {interim_at:.2f}s, before the app read"
        conn.send(b"hello world")
        final = conn.read_response()
    assert (final.status, final.body) == (200, b"hello world")


def test_expect_100_continue_not_sent_when_the_app_does_not_read(server):
    with Conn(server) as conn:
        conn.send(request(b"POST", b"/write",
                          [b"Expect: 100-continue", b"Content-Length: 5"]))
        response = conn.read_response()
    assert response.status == 200, response
    assert response.body == b"part1,part2,part3"


def test_head_has_no_body(server):
    with Conn(server) as conn:
        conn.send(request(b"HEAD", b"/head"))
        response = conn.read_response(method=b"HEAD")
        assert response.status == 200
        assert response.header("X-Method") == b"HEAD"
        conn.send(request(b"GET", b"/write"))
        follow = conn.read_response()
    assert (follow.status, follow.body) == (200, b"part1,part2,part3")


def test_http10_response_without_length_ends_with_close(server):
    with Conn(server) as conn:
        conn.send(b"GET /write HTTP/1.0\r\nHost: test\r\n\r\n")
        version, status, _reason, headers, _head = conn.read_head()
        rest = conn.read_to_eof()
    assert status == 200
    assert version in (b"HTTP/1.0", b"HTTP/1.1")
    assert not any(name.lower() == b"transfer-encoding" for name, _ in headers), headers
    length = [value for name, value in headers if name.lower() == b"content-length"]
    assert rest == b"part1,part2,part3"
    assert length in ([], [b"17"])


MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "bad-header-line": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    "bad-content-length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "two-content-lengths": (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                            b"Content-Length: 2\r\n\r\nab"),
    "bad-chunk-size": (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\nhello\r\n0\r\n\r\n"),
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_gets_400_and_close(server, name):
    with Conn(server) as conn:
        conn.send(MALFORMED[name])
        response = conn.read_response()
        closed, extra = conn.at_eof(timeout=3)
    assert response.status == 400, response
    assert response.header("Connection") == b"close", response
    assert closed, f"connection still open after the 400; extra bytes {extra!r}"
    assert extra == b""


def test_app_exception_gives_500_then_a_new_connection_is_served(server):
    offset = server.log_size()
    with Conn(server) as conn:
        conn.send(request(b"GET", b"/raise?msg=raw-http-boom-5e6f"))
        response = conn.read_response()
    assert response.status == 500, response
    log = server.wait_for_log("RuntimeError: raw-http-boom-5e6f", offset)
    assert "Traceback (most recent call last)" in log, log
    assert log.count("RuntimeError: raw-http-boom-5e6f") == 1, log
    with Conn(server) as conn:
        conn.send(request(b"GET", b"/write"))
        follow = conn.read_response()
    assert (follow.status, follow.body) == (200, b"part1,part2,part3")
