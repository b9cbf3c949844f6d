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
import time

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


# -- a connection alone on its worker is lent to an application thread -------


def listener_refused(port):
    """Whether nothing listens on `port` any more."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=BOUND).close()
        return False
    except ConnectionRefusedError:
        return True


def worker_pid(master_pid):
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as children:
        pids = [int(pid) for pid in children.read().split()]
    assert len(pids) == 1, pids
    return pids[0]


def io_thread_switches(pid):
    """Context switches of the worker's I/O thread (its main thread)."""
    with open(f"/proc/{pid}/task/{pid}/status") as status:
        return sum(int(line.split()[1]) for line in status
                   if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))


def test_a_lone_connection_is_served_by_its_application_thread(start, tmp_path):
    # One client alone on a worker: after its second request the I/O
    # thread lends the connection to the application thread, which reads
    # and answers the next requests itself (one wake-up per request, not
    # two). Counted, not timed: 300 requests wake the I/O thread far less
    # than 300 times. Then every kind of request and response on that same
    # connection: those the thread cannot answer alone go back to the I/O
    # thread at the point they are found, and nothing is lost.
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_bytes(b"static bytes\n")
    server = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1", "--threads", "2",
                   "--health-path", "/healthz", "--static-map", f"/s={static}")
    worker = worker_pid(server.pid)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND)
    for _ in range(3):
        assert get(conn, "/") == (200, b"hello")
    before = io_thread_switches(worker)
    for _ in range(300):
        assert get(conn, "/") == (200, b"hello")
    woken = io_thread_switches(worker) - before
    # Without the lending it is ~1.7 per request (a read and the periodic
    # ticks); the ticks (10 a second) are what remains with it.
    assert woken < 150, f"the I/O thread was woken {woken} times for 300 requests"

    def after_lent(path, method="GET", body=None, headers=None):
        # Two plain requests first, so the connection is lent again.
        assert get(conn, "/") == (200, b"hello")
        assert get(conn, "/") == (200, b"hello")
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()

    status, headers, body = after_lent("/stream")
    assert (status, body) == (200, b"one,two,three")
    status, _, body = after_lent("/big")
    assert status == 200 and body == b"b" * (1024 * 1024)
    status, _, body = after_lent("/echo", "POST", b"x" * 70000)
    assert (status, body) == (200, b"x" * 70000)
    status, _, body = after_lent("/echo", "POST", b"abc", {"Expect": "100-continue"})
    assert (status, body) == (200, b"abc")
    assert after_lent("/write")[::2] == (200, b"written,ok")
    assert after_lent("/empty")[::2] == (204, b"")
    status, _, body = after_lent("/file")
    assert status == 200 and body.startswith(b'"""Responses of every shape')
    assert after_lent("/healthz")[0] == 200
    assert after_lent("/s/a.txt")[::2] == (200, b"static bytes\n")
    assert after_lent("/error")[0] == 500
    assert after_lent("/missing")[0] == 404
    status, _, body = after_lent("/", "HEAD")
    assert (status, body) == (200, b"")
    # The traceback is written by the log thread: waited for, not assumed.
    assert "lendapp error 5e1f" in server.wait_for_log("lendapp error 5e1f", timeout=BOUND)
    conn.close()


def test_a_lone_connection_is_not_lent_after_a_request_with_a_body(start):
    # An uploading client likely uploads again, and a lent thread sends a
    # request with a body home: after one, the connection stays with its
    # task, in the I/O thread's poller; after plain requests it is lent
    # again (taken out of the poller: the check can tell).
    # A keep-alive time no wait here comes near, even on a loaded machine:
    # the idle connection must stay open between the steps (a helper saw a
    # broken pipe on the first POST once, under heavy load).
    server = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1", "--threads", "2",
                   "--keep-alive", "60")
    worker = worker_pid(server.pid)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND)
    for _ in range(3):
        assert get(conn, "/") == (200, b"hello")
    # Looked up once the server has accepted it (a deferred accept).
    inode = server_socket_inode(server.port, conn.sock.getsockname()[1])
    wait_until("the connection lent", lambda: inode not in polled_sockets(worker))
    for _ in range(3):
        conn.request("POST", "/echo", body=b"x" * 70000)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"x" * 70000)
        time.sleep(0.3)  # a lend would have happened by now
        assert inode in polled_sockets(worker), "lent after a request with a body"
    for _ in range(2):
        assert get(conn, "/") == (200, b"hello")
    wait_until("the connection lent again", lambda: inode not in polled_sockets(worker))
    conn.close()


def raw_exchange(sock, payload, responses):
    """Sends `payload`, reads `responses` whole responses (Content-Length
    framed) and returns them as (status line, body) pairs."""
    sock.sendall(payload)
    buffer = b""
    out = []
    while len(out) < responses:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = buffer[:end].decode("latin-1")
            length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")[1:]
                           if line.lower().startswith("content-length:")), 0)
            if len(buffer) >= end + 4 + length:
                out.append((head, buffer[end + 4:end + 4 + length]))
                buffer = buffer[end + 4 + length:]
                continue
        data = sock.recv(65536)
        if not data:
            break
        buffer += data
    return out


def test_a_lent_connection_takes_pipelined_split_and_bad_requests(start):
    import socket

    server = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND)
    get_root = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(3):
        [(head, body)] = raw_exchange(sock, get_root, 1)
        assert head.startswith("HTTP/1.1 200") and body == b"hello"
    # Two requests in one write: the second is in the buffer, not on the
    # socket, when the first is answered.
    answers = raw_exchange(sock, get_root + b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n", 2)
    assert [head.split("\r\n")[0] for head, _ in answers] == ["HTTP/1.1 200 OK",
                                                              "HTTP/1.1 204 No Content"]
    for _ in range(2):
        assert raw_exchange(sock, get_root, 1)[0][1] == b"hello"
    # A head in two writes.
    sock.sendall(b"GET / HTTP/1.1\r\nHo")
    [(head, body)] = raw_exchange(sock, b"st: x\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 200") and body == b"hello"
    for _ in range(2):
        assert raw_exchange(sock, get_root, 1)[0][1] == b"hello"
    # A malformed request: 400, then the connection closes.
    [(head, _)] = raw_exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 400"), head
    assert sock.recv(1024) == b""
    sock.close()
    # Connection: close on a lent connection: answered, then closed.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND)
    for _ in range(3):
        assert raw_exchange(sock, get_root, 1)[0][1] == b"hello"
    [(head, body)] = raw_exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1)
    assert body == b"hello" and "connection: close" in head.lower()
    assert sock.recv(1024) == b""
    sock.close()


def test_a_stop_takes_a_lent_connection_back(start):
    # A lent, idle connection when SIGTERM comes: its next request is
    # answered with `Connection: close` and the worker exits, as for any
    # idle keep-alive connection.
    import signal
    import socket

    server = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1", "--keep-alive", KEEP_ALIVE)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND)
    get_root = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(3):
        assert raw_exchange(sock, get_root, 1)[0][1] == b"hello"
    server.proc.send_signal(signal.SIGTERM)

    # The worker closes its listener when its stop begins (the master
    # already has): from then on a request is answered as a stop says.
    wait_until("the worker's listener closed", lambda: listener_refused(server.port))
    [(head, body)] = raw_exchange(sock, get_root, 1)
    assert body == b"hello" and "connection: close" in head.lower(), head
    assert sock.recv(1024) == b""
    sock.close()
    assert server.proc.wait(timeout=BOUND) == 0


def test_a_stuck_request_on_a_lent_connection_still_gets_its_500(start):
    # The request is read and run by the application thread holding the
    # connection, and blocks outside Python (`time.sleep`): past --timeout
    # and its grace the watchdog ends the response from its own thread.
    # The connection must go back to the I/O thread for that answer, not
    # stay with the stuck thread until the worker exits.
    import socket

    server = start("--pythonpath", str(TEST_APPS), "process_app", "-w", "1", "--threads", "2",
                   "--timeout", "2", "--timeout-grace", "1")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    for _ in range(3):
        [(head, _)] = raw_exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)
        assert head.startswith("HTTP/1.1 200"), head
    sock.sendall(b"GET /sleep-long HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = sock.recv(65536)
        assert data, f"closed without an answer: {answer!r}\n{server.log()}"
        answer += data
    assert answer.startswith(b"HTTP/1.1 500"), answer
    sock.close()
    assert "did not return" in server.wait_for_log("did not return", timeout=BOUND)



CLOSE = b"Connection: close\r\n"


class Paused:
    """The worker stopped (SIGSTOP) while a client connects and sends, so
    that its request is there when the worker accepts the connection, as it
    is under load (a sequential client otherwise races the accept)."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        import os
        import signal

        os.kill(self.pid, signal.SIGSTOP)

    def __exit__(self, *exc):
        import os
        import signal

        os.kill(self.pid, signal.SIGCONT)


def closing_request(port, path, method=b"GET", body=b"", extra=b"", version=b"HTTP/1.1",
                    worker=None):
    """Opens a connection and sends one request asking to close after it,
    in one write (with the worker paused meanwhile, if given)."""
    import contextlib
    import socket

    head = method + b" " + path + b" " + version + b"\r\nHost: x\r\n" + CLOSE + extra
    if body:
        head += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    with Paused(worker) if worker else contextlib.nullcontext():
        sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
        sock.sendall(head + b"\r\n" + body)
    return sock


def read_to_close(sock):
    """The whole answer, read to the server's close, as (head, body)."""
    answer = b""
    with sock:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, rest = answer.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def closing_exchange(port, path, method=b"GET", body=b"", extra=b"", version=b"HTTP/1.1",
                     worker=None):
    return read_to_close(closing_request(port, path, method, body, extra, version, worker))


def polled_sockets(pid):
    """Inodes of the sockets in the worker's epoll sets (its I/O thread's poller)."""
    import os

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target != "anon_inode:[eventpoll]":
            continue
        with open(f"/proc/{pid}/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("tfd:"):
                    polled = int(line.split()[1])
                    try:
                        link = os.readlink(f"/proc/{pid}/fd/{polled}")
                    except OSError:
                        continue
                    if link.startswith("socket:["):
                        inodes.add(int(link[8:-1]))
    return inodes


def server_side(server_port, client_port):
    """The server's end of the connection from `client_port` in
    /proc/net/tcp, as (state, inode): state 01 established, 03 SYN_RECV.
    `None` when there is none."""
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (int(local.split(":")[1], 16) == server_port
                    and int(remote.split(":")[1], 16) == client_port):
                return fields[3], int(fields[9])
    return None


def server_socket_inode(server_port, client_port):
    """The inode of the server's end of the connection from `client_port`."""
    found = server_side(server_port, client_port)
    assert found, f"no server socket for client port {client_port}"
    return found[1]


def test_a_closing_first_request_is_served_without_the_poller(start, tmp_path):
    # A new connection whose first request is in and asks to close after
    # it is lent to an application thread with that request, never
    # registered with the I/O thread's poller: the thread writes the
    # response and closes the socket. Checked while the request is held
    # inside the application: its socket is not among those the worker
    # polls (through the I/O thread it would be).
    server = start("--pythonpath", str(TEST_APPS), "reportapp", "-w", "1", "--threads", "2")
    worker = worker_pid(server.pid)
    marker = tmp_path / "hold"
    marker.mkdir()
    sock = closing_request(server.port, b"/hold?" + str(marker).encode(), worker=worker)
    try:
        wait_until("the request inside the application", lambda: any(marker.glob("entered-*")))
        inode = server_socket_inode(server.port, sock.getsockname()[1])
        assert inode not in polled_sockets(worker)
        # A request on a keep-alive connection, held the same way, is on a
        # polled socket (the check can tell).
        other = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND)
        other.connect()
        other.request("GET", "/hold?" + str(marker))
        wait_until("the second request inside the application",
                   lambda: len(list(marker.glob("entered-*"))) == 2)
        other_inode = server_socket_inode(server.port, other.sock.getsockname()[1])
        assert other_inode in polled_sockets(worker)
    finally:
        (marker / "release").touch()
    head, _ = read_to_close(sock)
    assert head.startswith("HTTP/1.1 200") and "connection: close" in head.lower(), head
    assert other.getresponse().status == 200


def test_every_response_to_a_closing_first_request(start, tmp_path):
    # Every kind of request and response on a connection lent at its first
    # request: those the thread cannot answer alone get a task at the
    # point they are found, and nothing is lost.
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_bytes(b"static bytes\n")
    server = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1", "--threads", "2",
                   "--health-path", "/healthz", "--static-map", f"/s={static}")
    worker = worker_pid(server.pid)
    port = server.port

    def exchange(path, *args, **kwargs):
        return closing_exchange(port, path, *args, worker=worker, **kwargs)

    for _ in range(3):
        head, body = exchange(b"/")
        assert body == b"hello" and "connection: close" in head.lower(), head
    head, body = exchange(b"/stream")
    assert head.startswith("HTTP/1.1 200") and body == b"one,two,three", (head, body)
    head, body = exchange(b"/big")
    assert head.startswith("HTTP/1.1 200") and body == b"b" * (1024 * 1024)
    head, body = exchange(b"/echo", b"POST", b"x" * 70000)
    assert head.startswith("HTTP/1.1 200") and body == b"x" * 70000
    head, body = exchange(b"/echo", b"POST", b"abc", b"Expect: 100-continue\r\n")
    assert body.endswith(b"abc"), (head, body)
    assert exchange(b"/write")[1] == b"written,ok"
    head, body = exchange(b"/empty")
    assert head.startswith("HTTP/1.1 204") and body == b""
    head, body = exchange(b"/file")
    assert head.startswith("HTTP/1.1 200") and body.startswith(b'"""Responses of every shape')
    assert exchange(b"/healthz")[0].startswith("HTTP/1.1 200")
    assert exchange(b"/s/a.txt")[1] == b"static bytes\n"
    assert exchange(b"/error")[0].startswith("HTTP/1.1 500")
    assert exchange(b"/missing")[0].startswith("HTTP/1.1 404")
    head, body = exchange(b"/", b"HEAD")
    assert head.startswith("HTTP/1.1 200") and body == b"", (head, body)
    # HTTP/1.0 without keep-alive closes too.
    head, body = exchange(b"/", version=b"HTTP/1.0")
    assert head.startswith("HTTP/1.1 200") and body == b"hello", (head, body)
    head, _ = exchange(b"/", extra=b"Bad Header\r\n")
    assert head.startswith("HTTP/1.1 400"), head
    assert "lendapp error 5e1f" in server.wait_for_log("lendapp error 5e1f", timeout=BOUND)


def test_a_stuck_request_on_a_closing_first_request_still_gets_its_500(start):
    # As for a lent keep-alive connection: the watchdog ends the stuck
    # response from its own thread, and the connection, which had no task,
    # must get one for that answer.
    server = start("--pythonpath", str(TEST_APPS), "process_app", "-w", "1", "--threads", "2",
                   "--timeout", "2", "--timeout-grace", "1")
    worker = worker_pid(server.pid)
    head, _ = closing_exchange(server.port, b"/", worker=worker)
    assert head.startswith("HTTP/1.1 200"), head
    head, _ = closing_exchange(server.port, b"/sleep-long", worker=worker)
    assert head.startswith("HTTP/1.1 500"), (head, server.log())
    assert "did not return" in server.wait_for_log("did not return", timeout=BOUND)


def test_a_graceful_stop_waits_for_a_closing_first_request(start, tmp_path):
    # The request runs on an application thread with no connection task
    # behind it: a graceful stop must still wait for it, not only for the
    # connections that have tasks, and it is answered whole.
    import signal

    server = start("--pythonpath", str(TEST_APPS), "reportapp", "-w", "1", "--threads", "2",
                   "--graceful-timeout", "30")
    worker = worker_pid(server.pid)
    marker = tmp_path / "hold"
    marker.mkdir()
    result = {}

    def hold():
        try:
            result["held"] = closing_exchange(server.port, b"/hold?" + str(marker).encode(),
                                              worker=worker)
        except Exception as error:  # noqa: BLE001 - reported below
            result["error"] = error

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        wait_until("the request inside the application", lambda: any(marker.glob("entered-*")))
        server.proc.send_signal(signal.SIGTERM)
        wait_until("the worker's listener closed", lambda: listener_refused(server.port))
        # A worker that did not count the request would end its I/O loop
        # now, give its application threads a second, log that they are
        # still busy and exit, cutting the response: watched for, for
        # three times that second, while the request is still held.
        log = server.wait_for_log("still busy at exit", timeout=3)
        assert "still busy at exit" not in log, log
        assert server.proc.poll() is None, server.log()
    finally:
        (marker / "release").touch()
        holder.join(BOUND)
    assert "error" not in result, result
    head, _ = result["held"]
    assert head.startswith("HTTP/1.1 200"), head
    assert server.proc.wait(timeout=BOUND) == 0


def uwsgi_packet(path, method="GET", body=b"", version="HTTP/1.1"):
    """A uwsgi packet as nginx's uwsgi_pass sends it."""
    import struct

    variables = [
        ("REQUEST_METHOD", method), ("REQUEST_URI", path), ("PATH_INFO", path.split("?")[0]),
        ("QUERY_STRING", path.partition("?")[2]), ("SERVER_PROTOCOL", version),
        ("SERVER_NAME", "test"), ("SERVER_PORT", "80"), ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", "test"), ("CONTENT_LENGTH", str(len(body)) if body else ""),
    ]
    block = b"".join(
        struct.pack("<H", len(key)) + key.encode("latin-1") + struct.pack("<H", len(value))
        + value.encode("latin-1")
        for key, value in variables
    )
    return struct.pack("<BHB", 0, len(block), 0) + block + body


def uwsgi_send(port, path, worker, method="GET", body=b""):
    """A connection with one uwsgi request sent while the worker is paused
    (so it is whole when the worker accepts it)."""
    import socket

    with Paused(worker):
        sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
        sock.sendall(uwsgi_packet(path, method, body))
    return sock


def uwsgi_exchange(port, path, worker, method="GET", body=b""):
    """One uwsgi request (`uwsgi_send`); the answer read to the close."""
    return read_to_close(uwsgi_send(port, path, worker, method, body))


def test_a_uwsgi_request_is_served_without_the_poller(start, tmp_path):
    # uwsgi (nginx's uwsgi_pass) is one request per connection: a whole
    # packet without a body is queued with its connection lent along, and
    # the application thread answers and closes; its socket is never
    # polled. Then every kind of response: those the thread cannot write
    # alone get a task. The same for a stuck request's 500.
    port = free_port()
    server = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1", "--threads", "2",
                   "--socket", f"127.0.0.1:{port}")
    worker = worker_pid(server.pid)
    for _ in range(3):
        head, body = uwsgi_exchange(port, "/", worker)
        assert head.startswith("HTTP/1.1 200") and body == b"hello", (head, body)
    head, body = uwsgi_exchange(port, "/stream", worker)
    assert head.startswith("HTTP/1.1 200") and body == b"one,two,three", (head, body)
    head, body = uwsgi_exchange(port, "/big", worker)
    assert head.startswith("HTTP/1.1 200") and body == b"b" * (1024 * 1024)
    head, body = uwsgi_exchange(port, "/echo", worker, "POST", b"x" * 70000)
    assert head.startswith("HTTP/1.1 200") and body == b"x" * 70000
    assert uwsgi_exchange(port, "/write", worker)[1] == b"written,ok"
    head, body = uwsgi_exchange(port, "/file", worker)
    assert head.startswith("HTTP/1.1 200") and body.startswith(b'"""Responses of every shape')
    assert uwsgi_exchange(port, "/error", worker)[0].startswith("HTTP/1.1 500")
    head, body = uwsgi_exchange(port, "/", worker, "HEAD")
    assert head.startswith("HTTP/1.1 200") and body == b"", (head, body)

    marker = tmp_path / "hold"
    marker.mkdir()
    held_port = free_port()
    held_server = start("--pythonpath", str(TEST_APPS), "reportapp", "-w", "1", "--threads", "2",
                        "--socket", f"127.0.0.1:{held_port}")
    held_worker = worker_pid(held_server.pid)
    sock = uwsgi_send(held_port, "/hold?" + str(marker), held_worker)
    try:
        wait_until("the request inside the application", lambda: any(marker.glob("entered-*")))
        inode = server_socket_inode(held_port, sock.getsockname()[1])
        assert inode not in polled_sockets(held_worker)
    finally:
        (marker / "release").touch()
    head, _ = read_to_close(sock)
    assert head.startswith("HTTP/1.1 200"), head


def test_a_response_and_its_end_do_not_wait_for_the_applications_close(start):
    # A connection lent with its first request closes after the response:
    # the response and the FIN leave together right after the write (one
    # segment), not when the socket is closed, which comes after the
    # iterable's close(), two seconds here. Over uwsgi and over HTTP with
    # `Connection: close`.
    port = free_port()
    server = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1", "--threads", "2",
                   "--socket", f"127.0.0.1:{port}")
    sock = uwsgi_send(port, "/slow-close", worker_pid(server.pid))
    started = time.monotonic()
    head, body = read_to_close(sock)
    assert time.monotonic() - started < 1.5, "the end waited for close()"
    assert head.startswith("HTTP/1.1 200") and body == b"hello", (head, body)

    http = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1", "--threads", "2")
    sock = closing_request(http.port, b"/slow-close", worker=worker_pid(http.pid))
    started = time.monotonic()
    head, body = read_to_close(sock)
    assert time.monotonic() - started < 1.5, "the end waited for close()"
    assert head.startswith("HTTP/1.1 200") and body == b"hello", (head, body)


# A post_request hook that holds its request until the test has read the
# response whole (the marker directory is the query string), with a bound
# past the client's timeout.
HOLDING_HOOK = """
import os
import time


def post_request(worker, req, environ, resp):
    marker = environ.get("QUERY_STRING")
    if not marker:
        return
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(marker, "read")) and time.monotonic() < deadline:
        time.sleep(0.01)
"""


def test_a_response_without_close_ends_its_connection(start, tmp_path):
    # A body returned as a list (no close() to call, no hook after it): the
    # response is sent corked (MSG_MORE) and the socket's close right after
    # sends it with the FIN, without a shutdown of its own. It must still
    # arrive whole, and the connection end, over HTTP and uwsgi. With a
    # post_request hook the request goes on after the response: the hook
    # here waits until the client has read it all, so data left corked
    # until the close would never arrive.
    port = free_port()
    config = tmp_path / "hook.conf.py"
    config.write_text(HOLDING_HOOK)
    for hooks in ([], ["-c", str(config)]):
        http = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1", "--threads", "2",
                     *hooks)
        uwsgi = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1", "--threads", "2",
                      "--socket", f"127.0.0.1:{port}", *hooks)
        for attempt in range(3):
            sends = {
                "http": lambda marker: closing_request(
                    http.port, b"/?" + str(marker).encode(), worker=worker_pid(http.pid)),
                "uwsgi": lambda marker: uwsgi_send(port, "/?" + str(marker),
                                                   worker_pid(uwsgi.pid)),
            }
            for protocol, send in sends.items():
                marker = tmp_path / f"{protocol}-{len(hooks)}-{attempt}"
                marker.mkdir()
                sock = send(marker)
                try:
                    head, body = read_to_close(sock)
                finally:
                    # Lets the hook (if any) end the request.
                    (marker / "read").mkdir()
                assert head.startswith("HTTP/1.1 200") and body == b"hello", (protocol, head, body)
        http.stop()
        uwsgi.stop()
        port = free_port()


def test_a_stuck_uwsgi_request_still_gets_its_500(start):
    port = free_port()
    server = start("--pythonpath", str(TEST_APPS), "process_app", "-w", "1", "--threads", "2",
                   "--timeout", "2", "--timeout-grace", "1", "--socket", f"127.0.0.1:{port}")
    worker = worker_pid(server.pid)
    assert uwsgi_exchange(port, "/", worker)[0].startswith("HTTP/1.1 200")
    head, _ = uwsgi_exchange(port, "/sleep-long", worker)
    assert head.startswith("HTTP/1.1 500"), (head, server.log())


def server_side_state(server_port, client_port):
    """The TCP state of the server's end of that connection, if any."""
    found = server_side(server_port, client_port)
    return found and found[0]


@pytest.mark.parametrize("defer", [True, False])
def test_a_connection_is_accepted_with_its_first_bytes(start, defer):
    # TCP_DEFER_ACCEPT, on by default as in uWSGI: the kernel hands a
    # connection over once its first bytes are in, so the worker finds the
    # request at once instead of racing the client's first write. Seen
    # from the kernel: a connected client that has sent nothing has no
    # established socket on the server's side yet (the handshake's last
    # step waits for data), and one with --no-defer-accept has.
    import socket

    server = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1",
                   *([] if defer else ["--no-defer-accept"]))
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND) as sock:
        client_port = sock.getsockname()[1]
        if defer:
            assert server_side_state(server.port, client_port) == "03"
        else:
            wait_until("the server's end established",
                       lambda: server_side_state(server.port, client_port) == "01")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, body = read_to_close(sock)
    assert head.startswith("HTTP/1.1 200") and body == b"hello", (head, body)


def test_a_request_right_behind_a_buffered_body_is_served(start):
    # A body read before the application runs is read with a byte of room
    # to spare (so the read that ends it is short and the socket is known
    # drained): that byte may be the next request's first, and must not
    # be lost. Everything is in the socket before the worker reads (it is
    # paused meanwhile), so the body's last read takes that byte: the `H`
    # of a HEAD, whose loss would make it an `EAD` answered with a body.
    import socket

    server = start("--pythonpath", str(TEST_APPS), "lendapp", "-w", "1")
    worker = worker_pid(server.pid)
    body = b"y" * 20000
    with Paused(worker):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n" + body
                     + b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, rest = read_to_close(sock)
    assert first.startswith("HTTP/1.1 200") and rest.startswith(body), first
    second = rest[len(body):]
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(b"\r\n\r\n"), second
