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
    stats = read_stats(stats_port)
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
