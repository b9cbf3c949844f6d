"""The process model, end to end: a master and its workers under real
signals, with a bounded request loop running beside every test.

- kill -9 of a worker: respawned, failures only for requests in flight then
- HUP: rolling reload with zero failed requests, the new code serves after
- TERM: in-flight requests finish, idle keep-alive does not delay the exit
- --max-requests (+ jitter), --reload-on-rss recycle
- --timeout: the stuck request stopped (exception or abandon), its neighbours spared
- every signal of the README's table; the USR2 upgrade
- TTIN / TTOU change the number of workers
- supervisord (examples/supervisor) restarts a killed master
- systemd socket activation and sd_notify (examples/systemd)
- --pid, --daemon and process titles (--name)

The load clients open a NEW connection per request (`requests.get` without a
Session), so a keep-alive connection closed by a leaving worker between two
requests (a race every HTTP/1.1 client must retry) does not count as a
failure here; what counts is a request the server accepted and dropped, or
never accepted.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from conftest import REPO, SERVER_BIN, TEST_APPS, TEST_VENV, free_port

APP = "process_app:application"
EXAMPLES = REPO / "examples"
READY = re.compile(r"\[INFO\] Worker (\d+) ready")


# -- helpers -----------------------------------------------------------------


def wait_until(predicate, timeout, interval=0.05):
    """Polls `predicate` until it returns a true value (returned) or
    `timeout` seconds pass (returns the last, false, value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (None if gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode(errors="replace")
    except OSError:
        return None
    # comm is in parentheses and may hold spaces: the fields follow the last ')'.
    return text[text.rindex(")") + 2:].split()


def ppid_of(pid):
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def cmdline(pid):
    """The process title as `ps -o args` shows it ('' if gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            raw = file.read()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def all_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def children(pid):
    return [child for child in all_pids() if ppid_of(child) == pid]


def workers_of(master_pid):
    """Pids of the master's children titled as workers, sorted."""
    return sorted(child for child in children(master_pid)
                  if cmdline(child).startswith("wsgi-server: worker"))


def is_zombie_or_gone(pid):
    fields = stat_fields(pid)
    return fields is None or fields[0] == "Z"


def ready_count(server):
    return len(READY.findall(server.log()))


def wait_workers(server, count, timeout=10.0):
    """Waits until the master has exactly `count` worker children and at
    least `count` "Worker N ready" lines were logged; returns the pids."""
    pids = wait_until(lambda: (len(workers_of(server.pid)) == count
                               and ready_count(server) >= count
                               and workers_of(server.pid)), timeout)
    assert pids, (f"expected {count} ready workers, got {workers_of(server.pid)}\n"
                  f"{server.log()[-3000:]}")
    return pids


class Load:
    """A bounded request loop: `threads` clients, each doing `GET path` on a
    new connection per request, until stopped, `max_requests` in all, or
    `max_seconds`. Records (start, end, ok, detail) per request."""

    def __init__(self, url, path="/", threads=3, max_requests=5000, max_seconds=30.0,
                 timeout=5.0, pause=0.005):
        self.url = url + path
        self.threads = threads
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.pause = pause
        self.results = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.workers = []

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            with self.lock:
                if len(self.results) >= self.max_requests:
                    return
            started = time.monotonic()
            try:
                response = requests.get(self.url, timeout=self.timeout,
                                        headers={"Connection": "close"})
                ok = response.status_code == 200
                detail = response.text if ok else f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as error:
                ok, detail = False, f"{type(error).__name__}: {error}"
            with self.lock:
                self.results.append((started, time.monotonic(), ok, detail))
            time.sleep(self.pause)  # a steady load, not a flood: bounded counts

    def __enter__(self):
        self.started = time.monotonic()
        for _ in range(self.threads):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self.workers.append(thread)
        return self

    def stop(self):
        self.stopping.set()
        for thread in self.workers:
            thread.join(self.timeout + 5)

    def __exit__(self, *exc):
        self.stop()

    def snapshot(self):
        with self.lock:
            return list(self.results)

    def count(self):
        with self.lock:
            return len(self.results)

    def wait_for(self, count, timeout=10.0):
        """Waits until `count` more requests than now have completed."""
        target = self.count() + count
        assert target <= self.max_requests, "Load.max_requests too low for this test"
        assert wait_until(lambda: self.count() >= target, timeout), \
            f"load stalled: {self.count()} of {target} requests done"

    def failures(self):
        return [result for result in self.snapshot() if not result[2]]

    def bodies(self):
        return [result[3] for result in self.snapshot() if result[2]]

    def summary(self):
        results = self.snapshot()
        failed = [result for result in results if not result[2]]
        return (f"{len(results)} requests, {len(failed)} failed: "
                + "; ".join(f"t={start - self.started:.2f}s..{end - self.started:.2f}s {detail}"
                            for start, end, _ok, detail in failed[:10]))


def start_workers(start, *args, workers=2, env=None, cwd=None):
    """A server running process_app with `workers` workers, all ready."""
    server = start("--pythonpath", str(TEST_APPS), "-w", str(workers), *args, APP,
                   env=env, cwd=cwd)
    wait_workers(server, workers)
    return server


def get(server, path, timeout=10):
    return requests.get(server.url + path, timeout=timeout, headers={"Connection": "close"})


def kill_leftovers(marker):
    """SIGKILLs every process whose title or command line contains `marker`;
    returns what it found (the test asserts it is empty)."""
    found = [(pid, cmdline(pid)) for pid in all_pids()
             if pid != os.getpid() and marker in cmdline(pid)]
    for pid, _ in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return found


# -- 1. kill -9 of a worker --------------------------------------------------


def test_killed_worker_is_respawned_and_only_in_flight_requests_fail(start):
    server = start_workers(start, "--threads", "2")
    before = wait_workers(server, 2)
    with Load(server.url, threads=3, max_seconds=25) as load:
        load.wait_for(100)
        victim = before[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        after = wait_until(lambda: (victim not in workers_of(server.pid)
                                    and len(workers_of(server.pid)) == 2
                                    and ready_count(server) >= 3
                                    and workers_of(server.pid)), 10)
        respawned_at = time.monotonic()
        assert after, f"no respawn: workers {workers_of(server.pid)}\n{server.log()}"
        load.wait_for(300)
    log = server.log()
    assert re.search(rf"Worker \d+ \(pid: {victim}\) was killed by SIGKILL", log), log
    new_pids = set(after) - set(before)
    assert len(new_pids) == 1, (before, after)
    # The new worker serves.
    assert str(new_pids.pop()) in set(load.bodies()) | {
        get(server, "/").text for _ in range(20)}, "the respawned worker never answered"
    failures = load.failures()
    # At most one per client thread: only requests in flight at the kill.
    assert len(failures) <= load.threads, load.summary()
    assert all(start_time < killed_at + 0.1 for start_time, *_ in failures), load.summary()
    assert not [f for f in failures if f[0] >= respawned_at], load.summary()


# -- 2. HUP: rolling reload ----------------------------------------------------


def test_hup_reloads_new_code_without_failing_a_request(start, tmp_path):
    version_dir = tmp_path / "version"
    version_dir.mkdir()
    module = version_dir / "process_version.py"
    module.write_text('VERSION = "v1"\n')
    server = start_workers(start, "--threads", "2", "--pythonpath", str(version_dir),
                           "--graceful-timeout", "10")
    old = wait_workers(server, 2)
    assert get(server, "/version").text == "v1"
    with Load(server.url, path="/version", threads=3, max_requests=3000,
              max_seconds=30) as load:
        load.wait_for(100)
        # Another length too, so a stale .pyc (same mtime second) cannot match.
        module.write_text('VERSION = "v2-reloaded"\n')
        shutil.rmtree(version_dir / "__pycache__", ignore_errors=True)
        offset = server.log_size()
        os.kill(server.pid, signal.SIGHUP)
        text = wait_until(lambda: (server.log_since(offset).count("exited: reloaded") >= 2
                                   and server.log_since(offset)), 15)
        assert text, f"old workers did not leave:\n{server.log_since(offset)}"
        reloaded_at = time.monotonic()
        load.wait_for(200)
    log = server.log_since(offset)
    assert "Handling signal: hup" in log, log
    assert "Reload complete" in log, log
    # The new workers serve before the first old one is told to leave.
    first_exit = log.index("exited: reloaded")
    assert len(READY.findall(log[:log.index("Reload complete")])) >= 2, log
    assert log.index("Reload complete") < first_exit, log
    for pid in old:
        assert f"(pid: {pid}) exited: reloaded" in log, log
    assert not load.failures(), load.summary()
    new = wait_workers(server, 2)
    assert not set(new) & set(old), (old, new)
    # Every answer after the old workers left is the new code's.
    late = {detail for start_time, _end, ok, detail in load.snapshot()
            if ok and start_time > reloaded_at}
    assert late == {"v2-reloaded"}, late
    assert {get(server, "/version").text for _ in range(10)} == {"v2-reloaded"}


# -- 3. TERM: graceful stop ----------------------------------------------------


def held_in_thread(server, marker):
    """Starts GET `/hold?MARKER` on a thread (the request waits inside the
    application until MARKER/release exists); returns (thread, result)."""
    result = {}

    def run():
        try:
            response = get(server, "/hold?" + str(marker), timeout=40)
            result["status"], result["text"] = response.status_code, response.text
        except requests.RequestException as error:
            result["status"], result["text"] = None, f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def entered(marker):
    return any(marker.glob("entered-*"))


def test_term_finishes_in_flight_request_and_idle_keep_alive_does_not_delay_exit(start, tmp_path):
    from rawhttp import Conn, request

    server = start_workers(start, "--threads", "2", "--graceful-timeout", "20",
                           "--keep-alive", "30")
    marker = tmp_path / "hold"
    marker.mkdir()
    # An idle keep-alive connection: one request answered, then silence.
    idle = Conn(server, timeout=10)
    idle.send(request(b"GET", b"/"))
    assert idle.read_response().status == 200

    with Load(server.url, threads=2, max_requests=2000, max_seconds=20) as load:
        load.wait_for(50)
        # The held request waits inside its worker's application until the
        # test lets it go, after the stop is under way: in flight at TERM
        # whatever the timing.
        held_thread, held = held_in_thread(server, marker)
        try:
            assert wait_until(lambda: entered(marker), 10), \
                f"the held request never reached the application\n{server.log()[-3000:]}"
            load.stopping.set()  # no new requests after the stop (nobody accepts them)
            term_at = time.monotonic()
            server.stopped = True  # this test collects the exit status itself
            os.kill(server.pid, signal.SIGTERM)
            # The idle connection is not closed under its client (a proxy may be
            # sending on it right now): its next request is answered, with
            # `Connection: close` once its worker has heard of the stop (a
            # moment after the master; bounded), and then it closes.
            for _ in range(500):
                idle.send(request(b"GET", b"/"))
                answer = idle.read_response()
                if answer.header("Connection") == b"close":
                    break
                time.sleep(0.01)
            closed, extra = idle.at_eof(timeout=10)
            idle_closed_after = time.monotonic() - term_at
            # Still stopping: the held request keeps it from ending.
            running_while_held = server.proc.poll() is None
        finally:
            released_at = time.monotonic()
            (marker / "release").touch()
        try:
            status = server.proc.wait(timeout=19)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
            status = "still running 19 s after the release"
        exited_after = time.monotonic() - released_at
        held_thread.join(15)
    idle.close()
    log = server.log()
    print(f"idle keep-alive closed {idle_closed_after:.2f}s after TERM, exit {exited_after:.2f}s "
          f"after the release; held request {held}; load {load.summary()}")
    assert status == 0, f"exit status {status!r}\n{log}"
    assert running_while_held, f"the server exited with a request in flight\n{log}"
    assert held.get("status") == 200, (held, log)
    assert held["text"].startswith("released in "), held
    assert (answer.status, answer.header("Connection")) == (200, b"close"), answer
    assert closed and extra == b"", (closed, extra)
    # Once the held request is done nothing is left: the answered and closed
    # connection must not hold the exit until --keep-alive (30 s) or
    # --graceful-timeout (20 s). 5 s is a failure bound far below both.
    assert exited_after < 5.0, f"exit {exited_after:.1f}s after the last request ended\n{log}"
    before_term = [f for f in load.failures() if f[1] < term_at]
    assert not before_term, load.summary()
    assert "still running at the stop deadline" not in log, log


def late_connection(server):
    """Connects and sends a request: what came back within 10 s."""
    try:
        late = socket.create_connection((server.host, server.port), timeout=10)
    except OSError as error:
        return type(error).__name__
    try:
        late.settimeout(10)
        late.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        answer = late.recv(4096)
        return answer[:12].decode(errors="replace") if answer else "closed"
    except socket.timeout:
        return "no answer in 10 s"
    except OSError as error:
        return type(error).__name__
    finally:
        late.close()


def test_term_does_not_leave_new_connections_hanging_during_the_graceful_stop(start, tmp_path):
    """After TERM nobody accepts any more: a client connecting while an
    in-flight request finishes must be refused (gunicorn closes its
    listeners at once) or answered, not left in the listen backlog until the
    master exits. The in-flight request is held by the test until the late
    connections have their outcome, so the master cannot exit meanwhile and
    rescue a connection from a backlog nobody accepts from: such a
    connection gets no answer (a 10 s failure bound)."""
    server = start_workers(start, "--threads", "2", "--graceful-timeout", "20")
    marker = tmp_path / "hold"
    marker.mkdir()
    outcomes = []
    with Load(server.url, threads=2, max_requests=2000, max_seconds=20) as load:
        load.wait_for(50)
        thread, held = held_in_thread(server, marker)
        try:
            assert wait_until(lambda: entered(marker), 10), \
                f"the held request never reached the application\n{server.log()[-3000:]}"
            load.stopping.set()
            server.stopped = True
            offset = server.log_size()
            os.kill(server.pid, signal.SIGTERM)
            text = server.wait_for_log("Handling signal: term", offset, timeout=10)
            assert "Handling signal: term" in text, text
            # A worker that has not heard of the stop yet still answers; go
            # on connecting until every copy of the listener is closed
            # (refused), so the late connections cover the time after the
            # workers stopped accepting. Each must have its outcome at once.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                outcomes.append(late_connection(server))
                if outcomes[-1] in ("ConnectionRefusedError", "no answer in 10 s"):
                    break
                time.sleep(0.02)
            running_while_held = server.proc.poll() is None
        finally:
            (marker / "release").touch()
        status = server.proc.wait(timeout=25)
        thread.join(15)
    print(f"late connections during the stop: {outcomes}")
    assert status == 0, server.log()
    assert held.get("status") == 200, held
    assert running_while_held, "the server exited with a request in flight"
    assert "no answer in 10 s" not in outcomes, (
        f"a connection made during the graceful stop got no answer (outcomes {outcomes}): it "
        f"sat in the listen backlog nobody accepts from")
    assert outcomes[-1] == "ConnectionRefusedError", (
        f"the listener still took connections 10 s after TERM, with a request in flight: "
        f"{outcomes}")


# -- 4. --max-requests with jitter ---------------------------------------------


def test_max_requests_recycles_workers_without_failing_a_request(start):
    server = start_workers(start, "--threads", "2", "--max-requests", "50",
                           "--max-requests-jitter", "10")
    with Load(server.url, threads=3, max_requests=600, max_seconds=60) as load:
        assert wait_until(lambda: load.count() >= 600, 60), load.summary()
    log = server.log()
    served = [int(n) for n in re.findall(r"exited: max-requests reached \((\d+) requests served\)", log)]
    assert len(served) >= 3, log
    pids = set(load.bodies())
    assert len(pids) > 2, pids
    assert not load.failures(), load.summary()
    assert "crash" not in log, log
    wait_workers(server, 2)
    # Each worker leaves after its 50..60 requests, plus at most the
    # requests already in flight when it reached its count (the 3 clients
    # here, and as many again for slack): gunicorn counts after each request.
    assert all(50 <= n <= 60 + 2 * load.threads for n in served), \
        f"requests served per recycled worker: {served} (--max-requests 50, jitter 10)"


# -- 5. --timeout: stop the stuck request, not its neighbours -------------------


def get_in_thread(server, path, timeout=20):
    """Starts GET `path` on a thread; returns (thread, result dict)."""
    result = {}

    def run():
        started = time.monotonic()
        try:
            response = get(server, path, timeout=timeout)
            result["status"], result["text"] = response.status_code, response.text
        except requests.RequestException as error:
            result["status"], result["text"] = None, f"{type(error).__name__}: {error}"
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("path, function, reached", [
    # Python code: the exception reaches it, finally and close() run, 500.
    ("/spin", "process_app_spinner", True),
    # Blocked outside the evaluation loop: time.sleep (CPython 3.11 sleeps
    # again after a signal and looks at no pending exception) and os.read
    # on a pipe nobody writes. The worker gives up after the grace.
    ("/sleep-long", "process_app_long_sleep", False),
    ("/block", "process_app_blocked_read", False),
])
def test_timeout_stops_the_stuck_request_and_spares_the_others(start, path, function, reached):
    # One worker, so the neighbours are in the same process as the stuck one.
    server = start_workers(start, "--threads", "4", "--timeout", "2", "--timeout-grace", "1",
                           workers=1)
    (worker,) = wait_workers(server, 1)
    with Load(server.url, threads=2, max_seconds=40) as load:
        load.wait_for(30)
        stuck_thread, stuck = get_in_thread(server, path)
        offset = 0
        text = server.wait_for_log(f"Request timeout: GET {path}", offset, timeout=10)
        assert f"Request timeout: GET {path}" in text, server.log()
        # A neighbour in flight when the request is stopped (or given up on:
        # the grace is 1 s, the neighbour takes 1.5 s, under the timeout).
        neighbour_thread, neighbour = get_in_thread(server, "/sleep?s=1.5")
        stuck_thread.join(15)
        neighbour_thread.join(15)
        if not reached:
            # Replaced: a new worker serves.
            assert wait_until(lambda: (len(workers_of(server.pid)) == 1
                                       and worker not in workers_of(server.pid)
                                       and ready_count(server) >= 2), 15), server.log()
        load.wait_for(30)
    log = server.log()
    print(f"stuck: {stuck}; neighbour: {neighbour}; load: {load.summary()}")
    # The log names the request and the thread, with that thread's stack.
    assert re.search(rf"Request timeout: GET {re.escape(path)} from 127\.0\.0\.1:\d+ on "
                     rf"application thread \d+", log), log
    assert re.search(rf'File ".*process_app\.py", line \d+, in {function}', log), log
    # The stuck client got a 500, not a hang.
    assert stuck.get("status") == 500, stuck
    assert neighbour.get("status") == 200, (neighbour, log)
    if reached:
        assert "wsgi_server.RequestTimeout" in log, log
        assert f"finally ran: {path}" in log and f"close ran: {path}" in log, log
        assert "did not return" not in log, log
        assert workers_of(server.pid) == [worker], "the worker was replaced"
    else:
        assert re.search(rf"Request GET {re.escape(path)} from .* did not return 1s after "
                         r"the timeout", log), log
        assert re.search(rf"Worker 1 \(pid: {worker}\) exited: a request did not return "
                         r"after --timeout", log), log
        assert "WORKER TIMEOUT" not in log, log
    assert not load.failures(), load.summary()


def test_timeout_defaults_to_30_seconds(server_bin):
    config = subprocess.run([str(SERVER_BIN), "--print-config", "--rust-app", "hello"],
                            capture_output=True, text=True, timeout=10)
    assert re.search(r"^timeout = 30\b", config.stdout, re.M), config.stdout


# -- 6. --reload-on-rss ----------------------------------------------------------


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_reload_on_rss_recycles_a_leaking_worker(start):
    server = start_workers(start, "--threads", "2", "--reload-on-rss", "80")
    before = wait_workers(server, 2)
    assert all(rss_mib(pid) < 60 for pid in before), [rss_mib(pid) for pid in before]
    with Load(server.url, threads=3, max_seconds=25) as load:
        load.wait_for(50)
        offset = server.log_size()
        response = get(server, "/leak?mb=100", timeout=20)
        assert response.status_code == 200, response.text
        leaker = int(response.text.rsplit(" ", 1)[1])
        text = server.wait_for_log(f"(pid: {leaker}) exited: reload-on-rss", offset, timeout=10)
        assert f"(pid: {leaker}) exited: reload-on-rss" in text, server.log_since(offset)
        wait_workers(server, 2)
        load.wait_for(200)
    log = server.log_since(offset)
    match = re.search(rf"\(pid: {leaker}\) exited: reload-on-rss: (\d+) MiB", log)
    assert match and int(match.group(1)) > 80, log
    assert leaker not in workers_of(server.pid)
    assert not load.failures(), load.summary()


# -- 7. TTIN / TTOU ---------------------------------------------------------------


def test_ttin_and_ttou_change_the_number_of_workers(start):
    server = start_workers(start, "--threads", "2")
    with Load(server.url, threads=2, max_seconds=30) as load:
        os.kill(server.pid, signal.SIGTTIN)
        three = wait_workers(server, 3)
        load.wait_for(50)
        offset = server.log_size()
        os.kill(server.pid, signal.SIGTTOU)
        # A second TTOU sent before the master took the first would merge
        # with it (one pending signal): wait for the master's word first.
        text = server.wait_for_log("Handling signal: ttou: 2 workers", offset, timeout=10)
        assert "Handling signal: ttou: 2 workers" in text, text
        os.kill(server.pid, signal.SIGTTOU)
        one = wait_until(lambda: len(workers_of(server.pid)) == 1 and workers_of(server.pid), 15)
        assert one, f"workers: {workers_of(server.pid)}\n{server.log()}"
        load.wait_for(100)
        assert workers_of(server.pid) == one
    log = server.log()
    assert "ttin: 3 workers" in log and "ttou: 1 workers" in log, log
    assert log.count("fewer workers wanted (TTOU)") == 2, log
    assert set(one) < set(three)
    assert not load.failures(), load.summary()


# -- 8. supervisord ------------------------------------------------------------------


SUPERVISORD_CONF = """\
[unix_http_server]
file={dir}/supervisor.sock

[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}
user=root

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{dir}/supervisor.sock

[include]
files = {dir}/program.conf
"""


def supervisor_status(conf, program):
    """(state, pid or None) from `supervisorctl status PROGRAM`."""
    result = subprocess.run(["supervisorctl", "-c", str(conf), "status", program],
                            capture_output=True, text=True, timeout=10)
    match = re.search(rf"^{re.escape(program)}\s+(\w+)(?:\s+pid (\d+))?", result.stdout, re.M)
    if not match:
        return (result.stdout + result.stderr).strip(), None
    return match.group(1), int(match.group(2)) if match.group(2) else None


def test_supervisor_runs_the_example_and_restarts_a_killed_master(server_bin):
    if not shutil.which("supervisord"):
        pytest.fail("supervisord not installed (apt-get install supervisor)")
    program = f"wsgi-sup-{uuid.uuid4().hex[:8]}"
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="wsgi-sup-"))  # short: a unix socket path
    template = (EXAMPLES / "supervisor" / "wsgi-server.conf").read_text()
    (workdir / "program.conf").write_text(template.format(
        program=program, server=SERVER_BIN, bind=f"127.0.0.1:{port}", venv=TEST_VENV,
        app_dir=TEST_APPS, app=APP, log_dir=workdir))
    conf = workdir / "supervisord.conf"
    conf.write_text(SUPERVISORD_CONF.format(dir=workdir))
    supervisord = subprocess.Popen(["supervisord", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
    server_log = workdir / f"{program}.err.log"
    url = f"http://127.0.0.1:{port}"

    def serving():
        try:
            return requests.get(url + "/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def diagnostics():
        logs = [path for path in (server_log, workdir / "supervisord.log") if path.exists()]
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in logs)

    leftovers = []
    try:
        first = wait_until(lambda: (supervisor_status(conf, program)[0] == "RUNNING"
                                    and serving() and supervisor_status(conf, program)), 20)
        assert first, f"{supervisor_status(conf, program)}\n{diagnostics()}"
        master = first[1]
        assert cmdline(master) == f"wsgi-server: master [{program}]", cmdline(master)
        old_workers = workers_of(master)
        assert len(old_workers) == 2, old_workers
        with Load(url, threads=2, max_seconds=30, timeout=5) as load:
            load.wait_for(50)
            killed_at = time.monotonic()
            os.kill(master, signal.SIGKILL)
            second = wait_until(lambda: (supervisor_status(conf, program)[0] == "RUNNING"
                                         and supervisor_status(conf, program)[1] != master
                                         and serving()
                                         and supervisor_status(conf, program)), 30)
            assert second, f"{supervisor_status(conf, program)}\n{diagnostics()}"
            back_at = time.monotonic()
            load.wait_for(100, timeout=15)
        print(f"master back {back_at - killed_at:.2f}s after kill -9; load {load.summary()}")
        new_master = second[1]
        assert cmdline(new_master) == f"wsgi-server: master [{program}]", cmdline(new_master)
        assert len(wait_until(lambda: len(workers_of(new_master)) == 2
                              and workers_of(new_master), 10)) == 2
        # `supervisorctl signal HUP` (as the example says): a rolling reload.
        reload = subprocess.run(["supervisorctl", "-c", str(conf), "signal", "HUP", program],
                                capture_output=True, text=True, timeout=10)
        assert reload.returncode == 0, reload
        assert wait_until(lambda: server_log.read_text().count("exited: reloaded") >= 2, 15), \
            diagnostics()
        assert supervisor_status(conf, program) == ("RUNNING", new_master)
        assert serving()
        # The old master's workers followed it (PR_SET_PDEATHSIG).
        assert wait_until(lambda: all(is_zombie_or_gone(pid) for pid in old_workers), 10), \
            [(pid, cmdline(pid)) for pid in old_workers]
        assert not [f for f in load.failures() if f[1] < killed_at], load.summary()
        assert not [f for f in load.failures() if f[0] > back_at], load.summary()
    finally:
        subprocess.run(["supervisorctl", "-c", str(conf), "shutdown"],
                       capture_output=True, timeout=20)
        try:
            supervisord.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(supervisord.pid, signal.SIGKILL)
            supervisord.wait(timeout=10)
        # Anything titled with our program name still alive is a leak;
        # processes on their way out get 10 s (a failure bound).
        def alive():
            return [(pid, title) for pid, title in
                    ((pid, cmdline(pid)) for pid in all_pids())
                    if program in title and not is_zombie_or_gone(pid)]

        wait_until(lambda: not alive(), 10)
        leftovers = alive()
        kill_leftovers(program)
        diagnostic_text = diagnostics()
        shutil.rmtree(workdir, ignore_errors=True)
    assert not leftovers, f"processes left behind: {leftovers}\n{diagnostic_text}"
    assert "exited: server stop" in diagnostic_text or "Shutting down: Master" in diagnostic_text


# -- 9. systemd: socket activation and sd_notify -----------------------------------


def unit_values(text):
    """key -> [values] of a systemd unit file (sections ignored)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values.setdefault(key.strip(), []).append(value.strip())
    return values


# Runs systemd's part: the socket at fd 3, LISTEN_PID = the pid that execs
# the server (this wrapper's own, kept by exec).
ACTIVATE = ("import os, sys; fd = int(sys.argv[1]); "
            "os.dup2(fd, 3); fd != 3 and os.close(fd); "
            "os.environ['LISTEN_PID'] = str(os.getpid()); os.environ['LISTEN_FDS'] = '1'; "
            "os.execv(sys.argv[2], sys.argv[2:])")


def test_systemd_socket_activation_and_notify(server_bin, tmp_path):
    name = f"wsgi-sd-{uuid.uuid4().hex[:8]}"
    port = free_port()
    socket_unit = unit_values((EXAMPLES / "systemd" / "wsgi-server.socket").read_text()
                              .format(listen=f"127.0.0.1:{port}"))
    service_unit = unit_values((EXAMPLES / "systemd" / "wsgi-server.service").read_text().format(
        server=SERVER_BIN, name=name, venv=TEST_VENV, app_dir=TEST_APPS, app=APP))
    assert service_unit["Type"] == ["notify"]
    assert service_unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service_unit["KillSignal"] == ["SIGTERM"]
    assert socket_unit["Accept"] == ["no"]
    host, _, listen_port = socket_unit["ListenStream"][0].rpartition(":")
    command = shlex.split(service_unit["ExecStart"][0])
    assert "--bind" not in command and "-b" not in command

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(listen_port)))
    listener.listen(128)
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    env = dict(os.environ)
    for assignment in service_unit.get("Environment", []):
        key, value = assignment.split("=", 1)
        env[key] = value
    env["NOTIFY_SOCKET"] = str(notify_path)
    env.pop("LISTEN_PID", None)
    env.pop("LISTEN_FDS", None)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", ACTIVATE, str(listener.fileno())] + command,
            pass_fds=(listener.fileno(),), cwd=service_unit["WorkingDirectory"][0],
            env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)

    def log():
        return log_path.read_text(errors="replace")

    messages = []

    def receive_until(needle, timeout):
        notify.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in message for message in messages):
                return True
            try:
                messages.append(notify.recv(4096).decode(errors="replace"))
            except socket.timeout:
                if proc.poll() is not None:
                    break
        return any(needle in message for message in messages)

    url = f"http://{host}:{listen_port}"
    try:
        assert receive_until("READY=1", 15), f"no READY=1 in {messages}\n{log()}"
        ready_message = next(message for message in messages if "READY=1" in message)
        # READY=1 comes from the main pid (NotifyAccess=main) once both
        # workers serve.
        assert f"MAINPID={proc.pid}" in ready_message, ready_message
        assert len(READY.findall(log())) >= 2, log()
        # The inherited socket is served (shown by its address), not a new one.
        assert f"Listening at: http://{host}:{listen_port}" in log(), log()
        assert os.stat(f"/proc/{proc.pid}/fd/3").st_ino == os.fstat(listener.fileno()).st_ino
        assert cmdline(proc.pid) == f"wsgi-server: master [{name}]"
        with Load(url, threads=3, max_requests=2000, max_seconds=25) as load:
            load.wait_for(100)
            # ExecReload: a rolling reload, on the inherited socket.
            offset = len(log())
            os.kill(proc.pid, signal.SIGHUP)
            assert wait_until(lambda: log()[offset:].count("exited: reloaded") >= 2, 15), log()
            load.wait_for(100)
        assert not load.failures(), load.summary()
        # KillSignal: graceful stop, exit 0, STOPPING=1.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log()
        assert receive_until("STOPPING=1", 2), messages
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        listener.close()
        kill_leftovers(name)


# -- 10. --pid, --daemon and process titles -------------------------------------------


def test_pidfile_and_process_titles(start, tmp_path):
    name = f"titles-{uuid.uuid4().hex[:6]}"
    pidfile = tmp_path / "server.pid"
    server = start_workers(start, "--threads", "2", "--pid", str(pidfile), "--name", name)
    with Load(server.url, threads=2, max_requests=500, max_seconds=15) as load:
        load.wait_for(50)
        assert pidfile.read_text().strip() == str(server.pid)
        master = subprocess.run(["ps", "-o", "args=", "-p", str(server.pid)],
                                capture_output=True, text=True).stdout.strip()
        assert master == f"wsgi-server: master [{name}]", master
        listing = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(server.pid)],
                                 capture_output=True, text=True).stdout
        titles = sorted(line.split(None, 1)[1] for line in listing.strip().splitlines())
        assert titles == [f"wsgi-server: worker 1 [{name}]",
                          f"wsgi-server: worker 2 [{name}]"], listing
    assert not load.failures(), load.summary()
    assert server.stop() == 0, server.log()
    assert not pidfile.exists(), "the pidfile is left behind after a clean stop"


def ids_of(pid):
    """(real, effective uid), (real, effective gid) and groups of a process."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    uids, gids = fields["Uid"].split(), fields["Gid"].split()
    return (int(uids[0]), int(uids[1])), (int(gids[0]), int(gids[1])), fields["Groups"].split()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_and_group_apply_to_the_master_and_its_workers(start):
    # The Rust app, so no file of the test venv needs to be readable by nobody.
    server = start("--workers", "2", "--rust-app", "hello", "--user", "nobody",
                   "--group", "nogroup", venv=None)
    assert get(server, "/").status_code == 200
    nobody, nogroup = 65534, 65534
    for pid in [server.pid] + workers_of(server.pid):
        uid, gid, groups = ids_of(pid)
        assert uid == (nobody, nobody) and gid == (nogroup, nogroup), (pid, uid, gid)
        assert groups in ([], [str(nogroup)]), (pid, groups)
    assert server.stop() == 0, server.log()


SCHED_OTHER, SCHED_BATCH = 0, 3


def thread_policies(pid):
    """{thread name: [scheduling policy, ...]} of a process's threads."""
    policies = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as comm:
            name = comm.read().strip()
        fields = stat_fields(f"{pid}/task/{tid}")
        if fields:
            # Field 41 of stat(5) is the policy; `fields` starts at field 3.
            policies.setdefault(name, []).append(int(fields[41 - 3]))
    return policies


def test_the_io_thread_runs_batched_and_the_application_threads_do_not(start):
    # SCHED_BATCH keeps the I/O thread from preempting a running application
    # thread at every network event (docs/performance.md); the application
    # threads keep the normal policy.
    server = start_workers(start, "--threads", "2", workers=1)
    assert get(server, "/").status_code == 200
    (worker,) = workers_of(server.pid)
    policies = thread_policies(worker)
    io_thread = [policy for name, found in policies.items() if name.startswith("wsgi-server")
                 for policy in found]
    assert io_thread == [SCHED_BATCH], policies
    assert policies.get("wsgi-app-0") == [SCHED_OTHER], policies
    assert policies.get("wsgi-app-1") == [SCHED_OTHER], policies
    assert server.stop() == 0, server.log()


def test_daemon_detaches_writes_the_pidfile_and_stops_on_term(server_bin, tmp_path):
    name = f"daemon-{uuid.uuid4().hex[:6]}"
    pidfile = tmp_path / "daemon.pid"
    log_path = tmp_path / "daemon.log"
    port = free_port()
    try:
        launcher = subprocess.run(
            [str(SERVER_BIN), "--bind", f"127.0.0.1:{port}", "-H", str(TEST_VENV),
             "--pythonpath", str(TEST_APPS), "-w", "2", "--daemon",
             "--error-logfile", str(log_path), "--pid", str(pidfile), "--name", name, APP],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        assert launcher.returncode == 0, launcher
        master = wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10)
        assert master, "no pidfile"
        master = int(master)
        # The pidfile is written just before the master names itself.
        assert wait_until(lambda: cmdline(master) == f"wsgi-server: master [{name}]", 5), \
            cmdline(master)
        assert wait_until(lambda: len(READY.findall(log_path.read_text())) >= 2, 10), \
            log_path.read_text()
        with Load(f"http://127.0.0.1:{port}", threads=2, max_requests=300,
                  max_seconds=15) as load:
            load.wait_for(100)
        assert not load.failures(), load.summary()
        assert len(workers_of(master)) == 2
        os.kill(master, signal.SIGTERM)
        assert wait_until(lambda: is_zombie_or_gone(master), 10), log_path.read_text()
        assert wait_until(lambda: not pidfile.exists(), 2), "pidfile left behind"
        assert "Shutting down: Master" in log_path.read_text()
    finally:
        leftovers = kill_leftovers(name)
    assert not leftovers, leftovers


# -- 11. every signal of the README's table; the USR2 upgrade -----------------------


def process_state(pid):
    fields = stat_fields(pid)
    return fields[0] if fields else None


def usr1_marker(server):
    """Sends USR1 (reopen logs) and waits for the master to say so: the
    master's loop ran after whatever was sent before."""
    offset = server.log_size()
    os.kill(server.pid, signal.SIGUSR1)
    text = server.wait_for_log("Handling signal: usr1", offset, timeout=10)
    assert "Handling signal: usr1" in text, server.log()


# Signals the master logs and ignores (their default would stop or kill it and
# leave its workers serving without it), and those the kernel discards for it
# (URG and CONT by default, PIPE ignored by the Rust runtime).
LOGGED_AND_IGNORED = ["SIGTSTP", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR",
                      "SIGXCPU", "SIGXFSZ", "SIGUSR2-to-worker", "SIGWINCH"]
DISCARDED = ["SIGURG", "SIGPIPE", "SIGCONT"]


@pytest.mark.parametrize("name", LOGGED_AND_IGNORED + DISCARDED)
def test_each_signal_of_the_table_has_its_effect_and_fails_no_request(start, name):
    server = start_workers(start, "--threads", "2")
    before = wait_workers(server, 2)
    with Load(server.url, threads=2, max_requests=2000, max_seconds=30) as load:
        load.wait_for(30)
        offset = server.log_size()
        if name == "SIGUSR2-to-worker":
            # A worker dumps its Python threads' stacks and goes on.
            os.kill(before[0], signal.SIGUSR2)
            text = server.wait_for_log("most recent call first", offset, timeout=10)
            assert "most recent call first" in text, server.log()
        elif name == "SIGWINCH":
            # Not daemonized and no upgrade under way: a terminal's resize.
            os.kill(server.pid, signal.SIGWINCH)
            text = server.wait_for_log("winch: ignored", offset, timeout=10)
            assert "winch: ignored" in text, server.log()
        elif name in DISCARDED:
            os.kill(server.pid, getattr(signal, name))
            usr1_marker(server)
        else:
            os.kill(server.pid, getattr(signal, name))
            text = server.wait_for_log(f"Ignoring signal {name}", offset, timeout=10)
            assert f"Ignoring signal {name}" in text, server.log()
        load.wait_for(30)
        usr1_marker(server)
    assert process_state(server.pid) in ("S", "R"), process_state(server.pid)
    assert workers_of(server.pid) == before, (before, workers_of(server.pid), server.log())
    assert all(process_state(pid) in ("S", "R") for pid in before)
    assert not load.failures(), load.summary()
    assert server.stop() == 0, server.log()


def test_usr2_upgrades_the_binary_without_failing_a_request(start, tmp_path):
    pidfile = tmp_path / "server.pid"
    new_pidfile = tmp_path / "server.pid.2"
    server = start_workers(start, "--threads", "2", "--pid", str(pidfile))
    old = server.pid
    old_workers = wait_workers(server, 2)
    new = None
    try:
        with Load(server.url, threads=3, max_requests=5000, max_seconds=60) as load:
            load.wait_for(50)
            assert pidfile.read_text().strip() == str(old)
            # 1. USR2: a new master on the same sockets; both serve.
            os.kill(old, signal.SIGUSR2)
            text = server.wait_for_log("started a new master (pid: ", timeout=10)
            found = re.search(r"started a new master \(pid: (\d+)\)", text)
            assert found, server.log()
            new = int(found.group(1))
            assert wait_until(lambda: len(workers_of(new)) == 2 and ready_count(server) >= 4,
                              15), server.log()
            assert wait_until(lambda: new_pidfile.exists()
                              and new_pidfile.read_text().strip() == str(new), 5)
            assert pidfile.read_text().strip() == str(old)
            new_workers = workers_of(new)
            load.wait_for(50)
            # 2. WINCH to the old master: its workers leave, it stays.
            offset = server.log_size()
            os.kill(old, signal.SIGWINCH)
            assert wait_until(lambda: server.log_since(offset).count("exited: WINCH") == 2,
                              15), server.log()
            assert workers_of(old) == [], workers_of(old)
            assert server.proc.poll() is None
            load.wait_for(50)
            # 3. TERM to the old master: it exits; the new one is promoted.
            os.kill(old, signal.SIGTERM)
            assert server.proc.wait(timeout=15) == 0, server.log()
            text = server.wait_for_log("Master has been promoted", offset, timeout=10)
            assert "Master has been promoted" in text, server.log()
            assert wait_until(lambda: pidfile.exists()
                              and pidfile.read_text().strip() == str(new), 5), \
                pidfile.read_text() if pidfile.exists() else "no pidfile"
            assert not new_pidfile.exists()
            # 4. The new master's workers go on serving.
            served_from = len(load.bodies())
            load.wait_for(100)
        bodies = set(load.bodies()[served_from:])
        assert bodies and bodies <= {str(pid) for pid in new_workers}, (bodies, new_workers)
        assert not set(load.bodies()) - {str(pid) for pid in old_workers + new_workers}
        assert not load.failures(), load.summary()
        # 5. TERM to the new master: it stops and removes the pidfile.
        os.kill(new, signal.SIGTERM)
        assert wait_until(lambda: is_zombie_or_gone(new), 15), server.log()
        assert wait_until(lambda: not pidfile.exists(), 5), "pidfile left behind"
    finally:
        if new and not is_zombie_or_gone(new):
            os.kill(new, signal.SIGKILL)


def test_a_new_master_that_fails_leaves_the_old_one_serving(server_bin, tmp_path):
    # The binary is replaced by one that does not start, then USR2.
    binary = tmp_path / "wsgi-server"
    shutil.copy2(SERVER_BIN, binary)
    pidfile = tmp_path / "server.pid"
    log_path = tmp_path / "server.log"
    port = free_port()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [str(binary), "--bind", f"127.0.0.1:{port}", "-H", str(TEST_VENV),
             "--pythonpath", str(TEST_APPS), "-w", "2", "--pid", str(pidfile), APP],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    try:
        assert wait_until(lambda: len(READY.findall(log_path.read_text())) >= 2, 15), \
            log_path.read_text()
        with Load(f"http://127.0.0.1:{port}", threads=2, max_requests=2000,
                  max_seconds=30) as load:
            load.wait_for(30)
            binary.unlink()
            binary.write_text("#!/bin/sh\nexit 3\n")
            binary.chmod(0o755)
            os.kill(proc.pid, signal.SIGUSR2)
            assert wait_until(lambda: "this master goes on serving" in log_path.read_text(),
                              10), log_path.read_text()
            assert "exited with code 3" in log_path.read_text()
            assert pidfile.read_text().strip() == str(proc.pid)
            assert not (tmp_path / "server.pid.2").exists()
            load.wait_for(30)
        assert not load.failures(), load.summary()
        assert len(workers_of(proc.pid)) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text()
        assert not pidfile.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
