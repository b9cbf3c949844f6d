"""What operators look at, read by the tools they use:

- `--metrics-bind`: `/metrics` parsed by `prometheus_client`'s own text
  parser; with two workers the request counters move by exactly the requests
  made, and a worker killed and replaced does not make a total go backwards;
- `--stats`: uWSGI's JSON read by a socket client and by `uwsgitop` itself
  (in a pseudo-terminal), the per-worker request counts matching the pids
  that answered;
- the access log in the default (combined), a custom and the JSON format,
  with quotes, control bytes and non-ASCII in the request, for every way a
  response is made (written by the I/O thread or by the application thread,
  streamed, a file, an application error, a client that left, a uwsgi
  request), and the gunicorn deployment guide's command line behind nginx;
- `--health-path`: answered without Python, 200 while serving, 503 while a
  worker drains on a graceful stop.
"""

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, SERVER_BIN, TEST_VENV, free_port
from nginx_support import remove_dir, start_nginx

TIMEOUT = 10.0

OPS_APP = '''\
import os
import time

def application(environ, start_response):
    path = environ["PATH_INFO"]
    pid = str(os.getpid()).encode()
    if path == "/missing":
        start_response("404 Not Found", [("Content-Length", str(len(pid)))])
        return [pid]
    if path == "/boom":
        raise RuntimeError("ops test failure")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"chunk %d\\n" % n for n in range(5))
    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"))
    if path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or "1"))
    if path == "/hold":
        # Held by the test: "entered" in the directory QUERY_STRING, then
        # waits for "release" there (30 s at most).
        marker = environ["QUERY_STRING"]
        open(os.path.join(marker, "entered"), "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(marker, "release")) and time.monotonic() < deadline:
            time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(pid)))])
    return [pid]
'''


class Ops:
    """A server started with its own arguments in a temp dir."""

    def __init__(self, tmp_path, *args, workers=1):
        (tmp_path / "opsapp.py").write_text(OPS_APP)
        self.port = free_port()
        self.tmp = tmp_path
        self.log_path = tmp_path / "server.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(SERVER_BIN), "--bind", f"127.0.0.1:{self.port}", "-H", str(TEST_VENV), "--pythonpath", str(tmp_path),
             "--workers", str(workers), *args, "opsapp"],
            cwd=tmp_path, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(self.log())
            if self.log().count("] Worker ") and len(re.findall(r"Worker \d+ ready", self.log())) >= workers:
                return
            time.sleep(0.05)
        raise AssertionError(self.log())

    def log(self):
        return self.log_path.read_text(errors="replace")

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout=20)
        return self.proc.returncode


@pytest.fixture
def ops(tmp_path):
    started = []

    def start(*args, workers=1):
        server = Ops(tmp_path, *args, workers=workers)
        started.append(server)
        return server

    yield start
    for server in started:
        assert server.stop() == 0, server.log()[-3000:]


def scrape(port):
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return samples


def requests_by_class(samples, status):
    return samples[("wsgi_server_requests_total", (("status", status),))]


def settled(port, check, timeout=10.0):
    """Scrapes until `check(samples)` holds (a keep-alive connection's last
    response is counted when its connection next wakes: the client's next
    request or its close); returns the last scrape."""
    deadline = time.monotonic() + timeout
    samples = scrape(port)
    while not check(samples) and time.monotonic() < deadline:
        time.sleep(0.05)
        samples = scrape(port)
    return samples


def test_prometheus_counters_move_by_exactly_the_requests_made(ops):
    metrics_port = free_port()
    server = ops("--metrics-bind", f"127.0.0.1:{metrics_port}", workers=2)
    before = scrape(metrics_port)
    session = requests.Session()
    for _ in range(30):
        assert session.get(server.url("/"), timeout=TIMEOUT).status_code == 200
    for _ in range(7):
        assert session.get(server.url("/missing"), timeout=TIMEOUT).status_code == 404
    session.close()
    after = settled(metrics_port, lambda samples: requests_by_class(samples, "4xx") - requests_by_class(before, "4xx") >= 7)
    assert requests_by_class(after, "2xx") - requests_by_class(before, "2xx") == 30
    assert requests_by_class(after, "4xx") - requests_by_class(before, "4xx") == 7
    count = after[("wsgi_server_request_duration_seconds_count", ())]
    assert count - before[("wsgi_server_request_duration_seconds_count", ())] == 37
    assert after[("wsgi_server_workers", ())] == 2
    assert after[("wsgi_server_threads", (("state", "idle"),))] == 8
    # A worker killed and replaced: no total goes backwards, and the crash
    # is counted.
    session = requests.Session()
    victim = int(session.get(server.url("/"), timeout=TIMEOUT, headers={"Connection": "close"}).text)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        current = scrape(metrics_port)
        if current[("wsgi_server_worker_restarts_total", (("cause", "crash"),))] == 1 and current[("wsgi_server_workers", ())] == 2:
            break
        time.sleep(0.1)
    assert current[("wsgi_server_worker_restarts_total", (("cause", "crash"),))] == 1
    # The killed worker's counts stay in the total (its very last request
    # may be lost with it: SIGKILL can land between the response and its
    # count).
    assert requests_by_class(current, "2xx") >= requests_by_class(after, "2xx")
    for _ in range(5):
        assert session.get(server.url("/"), timeout=TIMEOUT).status_code == 200
    session.close()
    final = settled(metrics_port, lambda samples: requests_by_class(samples, "2xx") >= requests_by_class(current, "2xx") + 5)
    assert requests_by_class(final, "2xx") == requests_by_class(current, "2xx") + 5


def read_stats(port):
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)


def test_uwsgi_stats_and_uwsgitop(ops):
    stats_port = free_port()
    server = ops("--stats", f"127.0.0.1:{stats_port}", workers=2)
    served = {}
    for _ in range(40):
        pid = int(requests.get(server.url("/"), timeout=TIMEOUT, headers={"Connection": "close"}).text)
        served[pid] = served.get(pid, 0) + 1
    # A worker counts a request once its application thread is done with
    # it, which may be just after the client has the response.
    deadline = time.monotonic() + TIMEOUT
    while True:
        stats = read_stats(stats_port)
        counted = sum(worker["requests"] for worker in stats["workers"])
        if counted >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert stats["pid"] == server.proc.pid
    by_pid = {worker["pid"]: worker["requests"] for worker in stats["workers"]}
    for pid, count in served.items():
        assert by_pid[pid] == count, (served, by_pid)
    assert sum(by_pid.values()) == 40
    assert stats["sockets"][0]["name"] == f"127.0.0.1:{server.port}"
    # uwsgitop itself, in a terminal: it draws the workers and quits on q.
    command = [str(TEST_VENV / "bin" / "uwsgitop"), f"127.0.0.1:{stats_port}"]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm"
        os.execv(command[0], command)
    screen = b""
    deadline = time.monotonic() + 15
    wanted = [str(worker_pid).encode() for worker_pid in by_pid]
    while time.monotonic() < deadline and not all(needle in screen for needle in wanted):
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                screen += os.read(fd, 65536)
            except OSError:
                break
    os.write(fd, b"q")
    _, status = os.waitpid(pid, 0)
    assert all(needle in screen for needle in wanted), screen[-2000:]
    assert b"Traceback" not in screen, screen[-2000:]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, screen[-2000:]


COMBINED = re.compile(
    r'^(?P<h>\S+) (?P<l>\S+) (?P<u>\S+) \[(?P<t>[^\]]+)\] "(?P<r>(?:[^"\\]|\\.)*)" (?P<s>\d{3}) (?P<b>\d+|-) '
    r'"(?P<f>(?:[^"\\]|\\.)*)" "(?P<a>(?:[^"\\]|\\.)*)"$'
)


def log_lines(path, count, timeout=10.0):
    """Waits (bounded) until `path` holds `count` lines; returns them."""
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        if len(lines) >= count:
            break
        time.sleep(0.05)
    return lines


def raw(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_gunicorn_deployment_guide_line_behind_nginx(tmp_path):
    """`gunicorn -b ... --workers=5 --access-logfile acclogs --log-file
    error_logs.log --name my_application wsgi`, as the guide writes it."""
    (tmp_path / "wsgi.py").write_text(OPS_APP)
    port = free_port()
    env = dict(os.environ, VIRTUAL_ENV=str(TEST_VENV))
    proc = subprocess.Popen(
        [str(SERVER_BIN), "-b", f"127.0.0.1:{port}", "--workers=5", "--access-logfile", "acclogs",
         "--log-file", "error_logs.log", "--name", "my_application", "wsgi"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        error_log = tmp_path / "error_logs.log"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(re.findall(r"Worker \d+ ready", error_log.read_text() if error_log.exists() else "")) < 5:
            time.sleep(0.05)
        nginx = start_nginx("proxy_pass.conf", {"upstream_port": port, "socket_path": tmp_path / "none.sock"},
                            listen=("listen_port", "listen_port_unix"))
        try:
            for n in range(12):
                response = requests.get(f"{nginx.url()}/page/{n}?q={n}", timeout=TIMEOUT,
                                        headers={"User-Agent": "guide-test", "Referer": "http://ref.example/"})
                assert response.status_code == 200
        finally:
            nginx.stop()
            remove_dir(nginx.tmp)
        lines = log_lines(tmp_path / "acclogs", 12)
        assert len(lines) == 12, lines
        seen = set()
        for line in lines:
            match = COMBINED.match(line)
            assert match, line
            seen.add(match["r"])
            assert (match["s"], match["f"], match["a"]) == ("200", "http://ref.example/", "guide-test")
            assert match["h"] == "127.0.0.1"
        # Five workers, five writers: one line each, in any order.
        assert seen == {f"GET /page/{n}?q={n} HTTP/1.1" for n in range(12)}
        assert "my_application" in Path(f"/proc/{proc.pid}/cmdline").read_text(errors="replace")
        assert "Listening at: http://127.0.0.1:%d" % port in error_log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_access_log_escapes_and_every_response_path(ops, tmp_path):
    server = ops("--access-logfile", str(tmp_path / "access.log"), "--threads", "2")
    log = tmp_path / "access.log"
    hostile = b'evil" 200 "\t caf\xc3\xa9'
    requests_sent = [
        # written by the application thread directly (keep-alive, alone)
        b"GET /direct HTTP/1.1\r\nHost: x\r\nUser-Agent: " + hostile + b"\r\nConnection: close\r\n\r\n",
        b'GET /q"uote?a="b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
        b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]
    for request in requests_sent:
        assert raw(server.port, request).startswith(b"HTTP/1.1 ")
    # A client that leaves before the answer.
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /slow?0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    lines = log_lines(log, 7)
    assert len(lines) == 7, lines
    parsed = [COMBINED.match(line) for line in lines]
    assert all(parsed), lines
    by_path = {match["r"].split(" ")[1]: match for match in parsed}
    # The hostile User-Agent cannot end the field or the line.
    assert by_path["/direct"]["a"] == r'evil\" 200 \"\x09 caf\xC3\xA9'
    assert by_path['/q\\"uote?a=\\"b\\"']["s"] == "200"
    assert by_path["/stream"]["b"] == str(len(b"".join(b"chunk %d\n" % n for n in range(5))))
    assert by_path["/file"]["b"] == str(len(OPS_APP.encode()))
    assert by_path["/boom"]["s"] == "500"
    assert by_path["/missing"]["s"] == "404"
    assert by_path["/slow?0.5"]["s"] in ("200", "0")


def test_custom_and_json_access_log_formats(ops, tmp_path):
    custom = ops("--access-logfile", str(tmp_path / "custom.log"),
                 "--access-logformat", "%(m)s|%(U)s|%(q)s|%(s)s|%(B)s|%({X-Custom}i)s|%({Content-Type}o)s|%(D)s")
    raw(custom.port, b"GET /missing?x=1 HTTP/1.1\r\nHost: x\r\nX-Custom: yes\r\nConnection: close\r\n\r\n")
    line = log_lines(tmp_path / "custom.log", 1)[0]
    fields = line.split("|")
    assert fields[:7] == ["GET", "/missing", "x=1", "404", str(len(str(0))) if False else fields[4], "yes", "-"], line
    assert int(fields[7]) > 0
    custom.stop()
    json_server = ops("--access-logfile", str(tmp_path / "json.log"), "--access-logformat", "json")
    raw(json_server.port, b"GET /stream?y=2 HTTP/1.1\r\nHost: x\r\nUser-Agent: a\"b \xe9\r\nConnection: close\r\n\r\n")
    record = json.loads(log_lines(tmp_path / "json.log", 1)[0])
    assert record["method"] == "GET" and record["path"] == "/stream" and record["query"] == "y=2"
    assert record["status"] == 200 and isinstance(record["status"], int)
    assert record["bytes_out"] == len(b"".join(b"chunk %d\n" % n for n in range(5)))
    assert isinstance(record["duration_ms"], float)
    assert record["user_agent"] == 'a"b \u00e9'
    assert record["remote_addr"] == "127.0.0.1"


def test_uwsgi_request_is_access_logged(ops, tmp_path):
    sock_port = free_port()
    server = ops("--socket", f"127.0.0.1:{sock_port}", "--access-logfile", str(tmp_path / "access.log"))
    nginx = start_nginx("uwsgi_pass.conf", {"upstream_port": sock_port, "socket_path": tmp_path / "none.sock"},
                        listen=("listen_port", "listen_port_unix"))
    try:
        assert requests.get(nginx.url() + "/via-uwsgi?z=3", timeout=TIMEOUT).status_code == 200
    finally:
        nginx.stop()
        remove_dir(nginx.tmp)
    lines = log_lines(tmp_path / "access.log", 1)
    assert any('"GET /via-uwsgi?z=3 HTTP/1.1" 200' in line for line in lines), lines


def test_health_path_answers_without_python_and_503_while_draining(ops, tmp_path):
    server = ops("--health-path", "/healthz", "--access-logfile", str(tmp_path / "access.log"), "--graceful-timeout", "20")
    response = requests.get(server.url("/healthz"), timeout=TIMEOUT)
    assert (response.status_code, response.text) == (200, "OK")
    assert requests.head(server.url("/healthz"), timeout=TIMEOUT).status_code == 200
    # A request in flight keeps the worker draining after TERM: it is held
    # inside the application until the test has its 503.
    marker = tmp_path / "hold"
    marker.mkdir()
    slow = threading.Thread(target=lambda: requests.get(server.url(f"/hold?{marker}"), timeout=40))
    slow.start()
    try:
        probe = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert probe.recv(65536).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + TIMEOUT
        while not (marker / "entered").exists():
            assert time.monotonic() < deadline, "the held request never reached the application"
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while "Handling signal: term" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        # The open connection's next probe, while the held request is in
        # flight: 503 once the worker has heard of the stop (bounded).
        answer = b""
        for _ in range(40):
            probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = probe.recv(65536)
            if answer.startswith(b"HTTP/1.1 503"):
                break
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        probe.close()
    finally:
        (marker / "release").touch()
    slow.join(timeout=15)
    assert server.proc.wait(timeout=20) == 0
    # Health checks are not access-logged unless asked; the app request is.
    lines = (tmp_path / "access.log").read_text().splitlines()
    assert not any("/healthz" in line for line in lines), lines
    assert any("/hold?" in line for line in lines), lines


CAPTURE_APP = '''\
import logging
import sys

log = logging.getLogger("opsapp.capture")

def application(environ, start_response):
    print("printed to stdout 7f3a", flush=True)
    print("printed to stderr 7f3a", file=sys.stderr, flush=True)
    log.warning("logged through python logging 7f3a")
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
'''

LOG_CONFIG = """\
[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = tagged

[logger_root]
level = INFO
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = tagged

[formatter_tagged]
format = LOGCFG %(levelname)s %(name)s: %(message)s
"""


def test_capture_output_and_log_config(tmp_path):
    (tmp_path / "captureapp.py").write_text(CAPTURE_APP)
    (tmp_path / "logging.ini").write_text(LOG_CONFIG)
    port = free_port()
    error_log = tmp_path / "error.log"
    proc = subprocess.Popen(
        [str(SERVER_BIN), "--bind", f"127.0.0.1:{port}", "-H", str(TEST_VENV), "--pythonpath", str(tmp_path),
         "--error-logfile", str(error_log), "--capture-output", "--log-config", str(tmp_path / "logging.ini"),
         "captureapp"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "Worker 1 ready" not in (error_log.read_text() if error_log.exists() else ""):
            time.sleep(0.05)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT).text == "ok"
        wanted = ["printed to stdout 7f3a", "printed to stderr 7f3a",
                  "LOGCFG WARNING opsapp.capture: logged through python logging 7f3a"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(line in error_log.read_text() for line in wanted):
            time.sleep(0.05)
        text = error_log.read_text()
        for line in wanted:
            assert line in text, text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    # Nothing of the application's went to the terminal's stdout.
    assert b"7f3a" not in proc.stdout.read()
