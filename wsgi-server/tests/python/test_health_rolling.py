"""A rolling restart behind a balancer that checks `--health-path`: HAProxy
(`option httpchk GET /healthz`) in front of two instances; each is stopped
with TERM; with `--drain-delay` its health path answers 503 while it still
accepts, so the balancer takes it out before its listener closes, started again, and the other one
after it, while clients keep sending requests: none of them fails.

(Open-source nginx has no active health checks; its passive ones are
covered by test_nginx.py's rolling restarts.)"""

import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from conftest import SERVER_BIN, TEST_VENV, free_port
from nginx_support import private_dir, remove_dir

APP = '''\
import os

def application(environ, start_response):
    body = os.environ["INSTANCE"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

HAPROXY = """\
global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    retries 3
    option redispatch
frontend front
    bind 127.0.0.1:{front}
    default_backend app
backend app
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 100ms fall 1 rise 2
    server a 127.0.0.1:{a} check
    server b 127.0.0.1:{b} check
"""


def haproxy_binary():
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (apt-get install haproxy)")
        pytest.skip("haproxy is not installed")
    return found


def start_instance(tmp, name, port):
    log = open(tmp / f"{name}.log", "ab")
    proc = subprocess.Popen(
        [str(SERVER_BIN), "--bind", f"127.0.0.1:{port}", "-H", str(TEST_VENV), "--pythonpath", str(tmp),
         "--health-path", "/healthz", "--drain-delay", "1", "--keep-alive", "2", "--graceful-timeout", "20",
         "rollapp"],
        cwd=tmp, env=dict(os.environ, INSTANCE=name), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError((tmp / f"{name}.log").read_text())


class Load:
    """Client threads sending GETs through the balancer until stopped
    (bounded in count and time)."""

    def __init__(self, url, threads=4, max_requests=200000, max_seconds=90.0):
        self.url = url
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.served = {}
        self.failures = []
        self.count = 0
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def run(self):
        session = requests.Session()
        while not self.stop_flag.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if self.count >= self.max_requests:
                    return
                self.count += 1
            try:
                response = session.get(self.url, timeout=10)
                outcome = response.text if response.status_code == 200 else f"status {response.status_code}"
            except requests.RequestException as error:
                outcome = f"error {error}"
            with self.lock:
                if outcome in ("a", "b"):
                    self.served[outcome] = self.served.get(outcome, 0) + 1
                else:
                    self.failures.append(outcome)

    def served_by(self, name):
        with self.lock:
            return self.served.get(name, 0)

    def wait_served(self, name, more=20, timeout=20.0):
        start = self.served_by(name)
        deadline = time.monotonic() + timeout
        while self.served_by(name) < start + more and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.served_by(name) >= start + more, f"instance {name} gets no requests: {self.served}"

    def stop(self):
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(timeout=20)


def test_rolling_restart_behind_an_active_health_check_drops_nothing(server_bin):
    binary = haproxy_binary()
    tmp = private_dir("wsgi-rolling-")
    (tmp / "rollapp.py").write_text(APP)
    ports = {"a": free_port(), "b": free_port()}
    front = free_port()
    (tmp / "haproxy.cfg").write_text(HAPROXY.format(front=front, **ports))
    instances = {name: start_instance(tmp, name, port) for name, port in ports.items()}
    balancer = subprocess.Popen([binary, "-f", str(tmp / "haproxy.cfg"), "-db"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=open(tmp / "haproxy.log", "wb"))
    load = None
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{front}/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        load = Load(f"http://127.0.0.1:{front}/")
        load.wait_served("a")
        load.wait_served("b")
        for name in ("a", "b"):
            other = "b" if name == "a" else "a"
            instances[name].send_signal(signal.SIGTERM)
            assert instances[name].wait(timeout=30) == 0, (tmp / f"{name}.log").read_text()[-3000:]
            load.wait_served(other)
            instances[name] = start_instance(tmp, name, ports[name])
            load.wait_served(name)
        load.stop()
        assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:5]} (served {load.served})"
        assert load.served_by("a") > 0 and load.served_by("b") > 0
        # The balancer took each instance out on its health path's 503 (the
        # drain), not on a refused connection after its listener closed.
        checks = (tmp / "haproxy.log").read_text()
        for name in ("a", "b"):
            assert re.search(rf"Server app/{name} is DOWN, reason: Layer7 wrong status, code: 503", checks), checks
    finally:
        if load is not None:
            load.stop()
        balancer.terminate()
        balancer.wait(timeout=10)
        for proc in instances.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        remove_dir(tmp)
