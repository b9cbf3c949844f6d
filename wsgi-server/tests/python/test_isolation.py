"""A slow request never stalls the other connections of its worker: while
one request is held inside the application, the worker's I/O goes on
(health path, static files, other keep-alive connections), other
application threads serve, and with one thread the next request waits in
the queue, not behind a stalled event loop. Also: a thread that has just
answered a keep-alive connection does not keep it to itself.

Nothing here is timed: requests are held by the test (`/hold`, released by
a file) and every wait is for an event, with a generous failure bound."""

import http.client
import threading

import pytest
import requests

from conftest import TEST_APPS, free_port

# Long enough that a server which waited for an idle keep-alive connection
# (or a held request) before serving another would fail the bounds below.
KEEP_ALIVE = "60"
BOUND = 10


def wait_until(what, predicate, timeout=BOUND):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {what}")


def queue_depth(metrics_port):
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=BOUND).text
    line = next(l for l in text.splitlines() if l.startswith("wsgi_server_queue_depth "))
    return int(float(line.split()[1]))


def get(conn, path):
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_held_request_does_not_stall_the_worker(start, tmp_path, threads):
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_bytes(b"static bytes\n")
    metrics_port = free_port()
    server = start("--pythonpath", str(TEST_APPS), "reportapp", "-w", "1",
                   "--threads", str(threads), "--keep-alive", KEEP_ALIVE,
                   "--health-path", "/healthz", "--static-map", f"/s={static}",
                   "--metrics-bind", f"127.0.0.1:{metrics_port}")
    marker = tmp_path / "hold"
    marker.mkdir()
    held = http.client.HTTPConnection("127.0.0.1", server.port, timeout=40)
    # First a quick request on the same connection, so the held one comes
    # after a response the application thread wrote itself.
    assert get(held, "/x")[0] == 200
    result = {}

    def hold():
        try:
            result["held"] = get(held, "/hold?" + str(marker))
        except Exception as error:  # noqa: BLE001 - reported below
            result["error"] = error

    holder = threading.Thread(target=hold)
    holder.start()
    queued = {}
    try:
        wait_until("the request inside the application", lambda: any(marker.glob("entered-*")))
        other = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND)
        # The I/O side answers at once, whatever the application does.
        assert get(other, "/healthz")[0] == 200
        assert get(other, "/s/a.txt") == (200, b"static bytes\n")
        if threads > 1:
            # Another thread serves while the first is held.
            status, body = get(other, "/x")
            assert status == 200, body
        else:
            # The only thread is held: the next request waits in the
            # queue, read and parsed (the server's own gauge says so).
            def queued_request():
                queued["response"] = get(other, "/x")

            waiter = threading.Thread(target=queued_request)
            waiter.start()
            wait_until("the next request queued", lambda: queue_depth(metrics_port) == 1)
            assert "response" not in queued
    finally:
        (marker / "release").touch()
        holder.join(45)
    assert "error" not in result, result
    assert result["held"][0] == 200
    if threads == 1:
        waiter.join(BOUND)
        assert queued["response"][0] == 200
    # The held connection serves on.
    assert get(held, "/x")[0] == 200


def test_an_idle_keep_alive_connection_does_not_hold_the_thread(start):
    # One application thread; a client keeps its connection open after its
    # response and sends nothing more. Other connections are served at
    # once, again and again, not after that connection's keep-alive timeout.
    server = start("--pythonpath", str(TEST_APPS), "reportapp", "-w", "1",
                   "--threads", "1", "--keep-alive", KEEP_ALIVE)
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND)
    assert get(idle, "/x")[0] == 200
    for _ in range(3):
        other = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND)
        assert get(other, "/x")[0] == 200
        other.close()
        # And the idle connection is still served when it speaks again.
        assert get(idle, "/x")[0] == 200
    idle.close()
