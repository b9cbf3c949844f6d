"""Request bodies are read on the I/O side before the application is
called (`--body-buffer-size`, `--body-buffer-memory`), so slow clients hold
no application thread; `--stream-request-body` streams them as they come.

Every trickling client here is a raw socket that sends a head declaring a
100 kB body and then a few bytes; the loops over them are bounded in count,
and waits are bounded by generous timeouts that only fail a test."""

import hashlib
import json
import socket
import tempfile
import time
from pathlib import Path

import pytest

from conftest import TEST_APPS
from rawhttp import Conn, request
from rawhttp import chunked as chunked_body

APP = ("--pythonpath", str(TEST_APPS), "bodyapp")
DECLARED = 100_000


def open_trickles(server, count, first_bytes=b"x", declared=DECLARED):
    """`count` connections, each with a POST /len head declaring `declared`
    bytes and then `first_bytes` of it (the rest never comes)."""
    head = (f"POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: {declared}\r\n\r\n").encode()
    trickles = []
    try:
        for _ in range(count):
            sock = socket.create_connection((server.host, server.port), timeout=5)
            sock.sendall(head)
            # The server may stop reading (its budget spent): send what the
            # kernel takes, never block on it.
            sock.setblocking(False)
            try:
                sock.send(first_bytes)
            except BlockingIOError:
                pass
            trickles.append(sock)
    except BaseException:
        close_all(trickles)
        raise
    return trickles


def worker_rss_kib(server):
    """VmRSS of the server's only worker (the master's child), in KiB."""
    children = open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()
    assert len(children) == 1, children
    with open(f"/proc/{children[0]}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def close_all(socks):
    for sock in socks:
        sock.close()


def still_open(sock):
    """The server has not answered or closed this connection."""
    try:
        sock.recv(1)  # an answer, or b"" for a close
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.mark.parametrize("declared", [DECLARED, 5 * 1024 * 1024], ids=["memory", "spooled"])
def test_trickling_uploads_hold_no_application_thread(start, declared):
    # 64 clients that declared a body (100 kB: buffered in memory; 5 MiB:
    # spooled to a file) and send a byte now and then, against 4
    # application threads: a server that called the application at the
    # head would have all 4 threads blocked reading and 60 requests queued
    # (the queue holds 64), and a fresh request would wait for them.
    server = start(*APP, "--threads", "4")
    trickles = open_trickles(server, 64, declared=declared)
    try:
        for sock in trickles:  # one more byte each: they are live uploads
            sock.send(b"y")
        with Conn(server, timeout=10) as conn:
            conn.send(request(b"GET", b"/"))
            response = conn.read_response()
        assert (response.status, response.body) == (200, b"ok")
        assert all(still_open(sock) for sock in trickles)
    finally:
        close_all(trickles)


def test_a_thousand_trickling_uploads_stay_within_the_memory_budget(start):
    # Each client sends 60 kB of its 100 kB body at once, then nothing. A
    # server buffering without a budget would hold ~60 MB; with a 4 MiB
    # budget the rest waits in the kernel's socket buffers, unread. Allowed
    # growth: the budget plus 24 KiB a connection (measured: 17; its head and write
    # buffers, its task).
    budget = 4 * 1024 * 1024
    count = 1000
    server = start(*APP, "--threads", "4", "--body-buffer-memory", str(budget))
    baseline = worker_rss_kib(server)
    trickles = open_trickles(server, count, first_bytes=b"z" * 60_000)
    try:
        peak = 0
        for _ in range(30):  # ~3 s of samples, bounded
            peak = max(peak, worker_rss_kib(server))
            time.sleep(0.1)
        # The server still answers.
        with Conn(server, timeout=10) as conn:
            conn.send(request(b"GET", b"/"))
            assert conn.read_response().status == 200
        allowed_kib = budget // 1024 + count * 24
        assert peak - baseline < allowed_kib, (
            f"RSS grew {peak - baseline} KiB over {baseline} KiB with {count} uploads; "
            f"allowed {allowed_kib} KiB")
        print(f"baseline {baseline} KiB, peak {peak} KiB, allowed growth {allowed_kib} KiB")
    finally:
        close_all(trickles)


def test_streaming_when_asked_the_application_reads_before_the_body_is_complete(start):
    server = start(*APP, "--stream-request-body")
    with Conn(server, timeout=10) as conn:
        conn.send(b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nA")
        # The answer comes while 99 bytes are still unsent.
        response = conn.read_response()
        assert (response.status, response.body) == (200, b"A")


def test_a_buffered_body_is_whole_before_the_application_reads(start):
    server = start(*APP)
    with Conn(server, timeout=10) as conn:
        conn.send(b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nA")
        # Nothing before the rest: the application has not been called.
        assert conn.at_eof(timeout=0.5) == (False, b"")
        conn.send(b"B" * 99)
        response = conn.read_response()
        assert (response.status, response.body) == (200, b"A")


@pytest.mark.parametrize("stream", [False, True])
def test_expect_100_continue(start, stream):
    # Buffered: 100 Continue when buffering starts, even for a route that
    # never reads. Streamed: when the application first reads.
    server = start(*APP, *(("--stream-request-body",) if stream else ()))
    with Conn(server, timeout=10) as conn:
        conn.send(b"POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert conn.read_response(method=b"POST").status == 100
        conn.send(b"hello")
        response = conn.read_response(method=b"POST")
        assert (response.status, response.body) == (200, b"5")
    with Conn(server, timeout=10) as conn:
        conn.send(b"POST /ignores HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        if stream:
            # Never read: no 100, the answer at once, and a close (the client
            # may or may not send the body now).
            response = conn.read_response(method=b"POST")
            assert (response.status, response.header("connection")) == (200, b"close")
        else:
            assert conn.read_response(method=b"POST").status == 100
            conn.send(b"hello")
            response = conn.read_response(method=b"POST")
            assert (response.status, response.body, response.header("connection")) == (200, b"ok", None)


def test_a_body_that_stalls_while_buffering_gets_408(start):
    server = start(*APP, "--body-timeout", "1")
    with Conn(server, timeout=10) as conn:
        conn.send(b"POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        response = conn.read_response(method=b"POST")
        assert response.status == 408


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_past_the_buffer_size_is_read_from_an_unlinked_file(start, chunked):
    server = start(*APP, "--body-buffer-size", "65536")
    body = bytes(range(256)) * 1024  # 256 KiB
    with Conn(server, timeout=20) as conn:
        if chunked:
            pieces = [body[at:at + 10_000] for at in range(0, len(body), 10_000)]
            conn.send(request(b"POST", b"/spool", [b"Transfer-Encoding: chunked"])
                      + chunked_body(pieces))
        else:
            conn.send(request(b"POST", b"/spool", body=body))
        response = conn.read_response(method=b"POST")
    assert response.status == 200, response
    report = json.loads(response.body)
    assert report["length"] == len(body)
    assert report["deleted"], "no unlinked file open while the application read the body"
    assert not list(Path(tempfile.gettempdir()).glob("wsgi-server-body-*"))


def test_streaming_asked_for_one_route(start):
    # --stream-request-body-path: the per-route opt-in. /first streams (the
    # answer comes while 99 bytes are unsent); /len on the same server is
    # still read whole first.
    server = start(*APP, "--stream-request-body-path", "/first")
    with Conn(server, timeout=10) as conn:
        conn.send(b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nA")
        response = conn.read_response()
        assert (response.status, response.body) == (200, b"A")
    with Conn(server, timeout=10) as conn:
        conn.send(b"POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nA")
        conn.send(b"B" * 99)
        response = conn.read_response(method=b"POST")
        assert (response.status, response.body) == (200, b"100")


def upload_body(size):
    """`size` bytes of lines of varied length, none of them alike."""
    lines, total, number = [], 0, 0
    while total < size:
        line = b"%d:" % number + b"y" * (number % 97) + b"\n"
        lines.append(line)
        total += len(line)
        number += 1
    return b"".join(lines)[:size]


@pytest.mark.parametrize("how", ["read", "chunks-65536", "chunks-1000", "lines", "readline-300"])
def test_a_body_already_in_the_socket_reads_whole(start, how):
    # A head and a 200 kB body sent in one piece: when the head is read the
    # rest of the body is in the socket, and the application thread receives
    # it from there itself (`Exchange::leave_in_socket`), straight into
    # `read`'s `bytes` object or a piece at a time for the other reads.
    server = start(*APP)
    body = upload_body(200_000)
    expected = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "after": 0}
    with Conn(server, timeout=10) as conn:
        for _ in range(3):
            conn.send(request(b"POST", b"/digest?" + how.encode(), body=body))
            response = conn.read_response(method=b"POST")
            assert (response.status, json.loads(response.body)) == (200, expected)
        # A request of a pipelined pair behind a body in the socket.
        conn.send(request(b"POST", b"/digest?" + how.encode(), body=body)
                  + request(b"GET", b"/len"))
        response = conn.read_response(method=b"POST")
        assert (response.status, json.loads(response.body)) == (200, expected)
        response = conn.read_response()
        assert (response.status, response.body) == (200, b"0")


@pytest.mark.parametrize("route", [b"/digest?part-10", b"/digest?part-30000", b"/ignores"])
def test_what_the_application_leaves_of_a_body_in_the_socket_is_discarded(start, route):
    # The codec counted the body left in the socket as read: what the
    # application does not read must go before the next head is parsed,
    # whether the next request came with the body or after the answer.
    server = start(*APP)
    body = upload_body(100_000)
    with Conn(server, timeout=10) as conn:
        for pipelined in (False, True, False):
            conn.send(request(b"POST", route, body=body)
                      + (request(b"GET", b"/len") if pipelined else b""))
            response = conn.read_response(method=b"POST")
            assert response.status == 200, response
            if route != b"/ignores":
                read = int(route.split(b"-")[1])
                assert json.loads(response.body) == {
                    "length": read, "sha256": hashlib.sha256(body[:read]).hexdigest(), "after": 0}
            if not pipelined:
                conn.send(request(b"GET", b"/len"))
            response = conn.read_response()
            assert (response.status, response.body, response.header("connection")) == (200, b"0", None)
