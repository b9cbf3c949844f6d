"""Fixtures for the end-to-end tests of the `wsgi-server` binary.

The binary is `$WSGI_SERVER_BIN` (default: <repo>/target/debug/wsgi-server),
started with `-H $TEST_VENV` (default: the venv running pytest, `sys.prefix`)
on 127.0.0.1 and a free port. Its stderr (the log, Python tracebacks,
`wsgi.errors`) goes to a file the tests assert on. On teardown the server gets
SIGTERM and must exit with status 0 within 10 s.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
APPS = REPO / "examples" / "apps"
TEST_APPS = HERE / "apps"
SERVER_BIN = Path(os.environ.get("WSGI_SERVER_BIN") or REPO / "target" / "debug" / "wsgi-server")
TEST_VENV = Path(os.environ.get("TEST_VENV") or sys.prefix)

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def free_port():
    """A port nobody listens on right now (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A running `wsgi-server` process."""

    def __init__(self, proc, port, log_path):
        self.proc = proc
        self.port = port
        self.host = "127.0.0.1"
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.stopped = False

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        """The whole log so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_size(self):
        return self.log_path.stat().st_size

    def log_since(self, offset):
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", errors="replace")

    def wait_for_log(self, needle, offset=0, timeout=5.0):
        """Waits (bounded) until `needle` appears in the log after `offset`;
        returns that part of the log (the caller asserts)."""
        deadline = time.monotonic() + timeout
        text = self.log_since(offset)
        while needle not in text and time.monotonic() < deadline:
            time.sleep(0.05)
            text = self.log_since(offset)
        return text

    def rss_kib(self):
        """VmRSS of the server process, in KiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/PID/status")

    def connect(self, timeout=5.0):
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.settimeout(timeout)
        return sock

    def stop(self, sig=signal.SIGTERM):
        """Sends `sig` and returns the exit status (killing after 10 s)."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            return "did not exit within %ss of %s" % (STOP_TIMEOUT, sig.name)


def metrics(port):
    """`--metrics-bind`'s samples, `{"name{labels}": value}` (the master
    answers from the workers' scoreboard: the server's own gauges)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def wait_until(what, check, timeout=10.0):
    """Polls `check()` until it is true; fails after `timeout` s (a failure
    bound: nothing is measured)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.02)


def server_idle(metrics_port):
    """Whether the server's gauges say no application thread is busy and no
    request is in flight or queued. A thread counts busy until the result's
    close() has run and the result is released."""
    samples = metrics(metrics_port)
    return (samples['wsgi_server_threads{state="busy"}'] == 0
            and samples["wsgi_server_requests_in_flight"] == 0
            and samples["wsgi_server_queue_depth"] == 0)


def settled_log(server, offset, marker_path, marker_line):
    """The log since `offset` once every request made so far is over and
    everything it logged is in the file: first the server is idle (its
    gauges; `server.metrics_port` is its `--metrics-bind` port), then
    `marker_line`, which GET `marker_path` writes through wsgi.errors and
    which queues behind every line logged before it for the log's writer
    thread, must reach the file. (Python's own sys.stderr is the file
    itself: what the application printed there is in it already.)"""
    wait_until("the server idle", lambda: server_idle(server.metrics_port))
    before = server.log_since(offset).count(marker_line)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                     % marker_path.encode())
        sock.settimeout(10)
        while sock.recv(65536):
            pass
    wait_until("the log written up to the marker",
               lambda: server.log_since(offset).count(marker_line) > before)
    return server.log_since(offset)


def server_command(app_args, port, venv=TEST_VENV):
    command = [str(SERVER_BIN), "--bind", f"127.0.0.1:{port}"]
    if venv is not None:
        command += ["-H", str(venv)]
    return command + list(app_args)


def start_server(app_args, log_path, cwd=None, env=None, venv=TEST_VENV):
    """Starts the server and waits (at most 10 s) until it accepts
    connections. Raises with the log if it exits or never gets ready."""
    last_error = None
    for _attempt in range(3):  # a freshly freed port may be taken meanwhile
        port = free_port()
        log_file = open(log_path, "wb")
        proc = subprocess.Popen(
            server_command(app_args, port, venv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            cwd=cwd or REPO,
            env=env,
        )
        log_file.close()
        server = Server(proc, port, Path(log_path))
        deadline = time.monotonic() + READY_TIMEOUT
        listening = re.compile(r"Listening at: http://127\.0\.0\.1:%d\b" % port)
        # Under a master the socket accepts (into its backlog) before any
        # worker has loaded the app: wait for a worker to say it serves.
        serving = re.compile(r"\[INFO\] Worker \d+ ready")
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            log = server.log()
            if listening.search(log) and serving.search(log):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return server
                except OSError:
                    pass
            time.sleep(0.05)
        if proc.poll() is None:
            server.stop(signal.SIGKILL)
            raise AssertionError(
                f"server not ready within {READY_TIMEOUT}s: {proc.args}\n{server.log()}"
            )
        last_error = f"server exited with {proc.returncode}: {proc.args}\n{server.log()}"
        if "cannot listen" not in server.log():
            break
    raise AssertionError(last_error)


@pytest.fixture(scope="session")
def server_bin():
    assert SERVER_BIN.is_file(), f"no server binary at {SERVER_BIN} (cargo build -p wsgi-server)"
    return SERVER_BIN


class ServerFactory:
    """Starts servers for one test (or module) and stops them all at the end,
    checking each exits 0 on SIGTERM."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.servers = []

    def __call__(self, *app_args, cwd=None, env=None, venv=TEST_VENV):
        log_path = self.tmp_path / f"server-{len(self.servers)}.log"
        server = start_server(app_args, log_path, cwd=cwd, env=env, venv=venv)
        self.servers.append(server)
        return server

    def stop_all(self):
        failures = []
        for server in self.servers:
            status = server.stop()
            if status != 0:
                failures.append(
                    f"server {server.proc.args} exit status on SIGTERM: {status!r} "
                    f"(expected 0)\n{server.log()[-4000:]}"
                )
        assert not failures, "\n".join(failures)


@pytest.fixture
def start(server_bin, tmp_path):
    """`start("module:app", "--threads", "2", cwd=..., env=...)` -> Server."""
    factory = ServerFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_start(server_bin, tmp_path_factory):
    """As `start`, shared by a module's tests."""
    factory = ServerFactory(tmp_path_factory.mktemp("servers"))
    yield factory
    factory.stop_all()


def pytest_report_header(config):
    return [f"wsgi-server binary: {SERVER_BIN}", f"test venv: {TEST_VENV}"]
