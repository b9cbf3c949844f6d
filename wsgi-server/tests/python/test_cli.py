"""The command line and the process: exit codes, application specs,
--chdir / --pythonpath, the virtualenv (-H) and what the app sees of the
interpreter, os.environ kept out of the WSGI environ, signals."""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import APPS, REPO, SERVER_BIN, TEST_APPS, TEST_VENV, free_port


def run_server(*args, cwd=None, env=None, timeout=15):
    """Runs the server expected to exit by itself; returns (status, stderr)."""
    command = [str(SERVER_BIN), "--bind", f"127.0.0.1:{free_port()}", "-H", str(TEST_VENV)]
    result = subprocess.run(command + list(args), cwd=cwd or REPO, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return result.returncode, result.stdout.decode(errors="replace"), \
        result.stderr.decode(errors="replace")


def get_json(server, path):
    response = requests.get(server.url + path, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


# -- exit codes --------------------------------------------------------------


def test_import_error_exits_4_with_one_traceback(server_bin):
    status, stdout, stderr = run_server("--pythonpath", str(TEST_APPS), "broken_import:application")
    assert status == 4, stderr
    assert stderr.count("Traceback (most recent call last)") == 1, stderr
    assert stderr.count("RuntimeError: broken at import 8c1f") == 1, stderr
    assert "broken_import.py" in stderr
    # The master binds first (as gunicorn does), then stops when the
    # worker reports that the application does not load.
    assert "The application failed to load: stopping" in stderr


def test_missing_attribute_exits_4_listing_the_module_names(server_bin):
    status, stdout, stderr = run_server("--pythonpath", str(TEST_APPS), "reportapp:nosuch")
    assert status == 4, stderr
    assert "nosuch" in stderr
    for name in ("application", "factory", "helper", "CONSTANT"):
        assert name in stderr, f"{name} not listed:\n{stderr}"
    assert "Traceback" not in stderr, stderr


def test_missing_module_exits_4(server_bin):
    status, stdout, stderr = run_server("no_such_module_3b7e:application")
    assert status == 4, stderr
    assert "no_such_module_3b7e" in stderr


@pytest.mark.parametrize("args, flag", [
    (["--no-such-flag", "reportapp"], "--no-such-flag"),
    (["--threads", "many", "reportapp"], "--threads"),
])
def test_unknown_flag_or_unparsable_value_exits_1(server_bin, args, flag):
    """The argument parser's errors: one error line naming the flag (clap
    may add its usage and a hint)."""
    status, stdout, stderr = run_server(*args)
    assert status == 1, stderr
    error_lines = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1 and flag in error_lines[0], stderr
    assert "panicked" not in stderr


@pytest.mark.parametrize("args", [
    ["--threads", "0", "reportapp"],
    ["--protocol", "gopher", "reportapp"],
    ["--rust-app", "hello", "reportapp"],
    ["--keep-alive=-3", "reportapp"],
])
def test_bad_flag_value_exits_1_with_one_line(server_bin, args):
    status, stdout, stderr = run_server(*args)
    assert status == 1, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "error" in stderr.lower()
    assert stdout == ""


def test_taken_port_exits_1(server_bin):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(SERVER_BIN), "--bind", f"127.0.0.1:{port}", "-H", str(TEST_VENV),
             "--pythonpath", str(TEST_APPS), "reportapp"],
            capture_output=True, timeout=15, stdin=subprocess.DEVNULL, cwd=REPO)
    assert result.returncode == 1, result.stderr
    assert b"cannot listen" in result.stderr


# -- application specs -------------------------------------------------------


def test_module_alone_means_application(start):
    server = start("--pythonpath", str(TEST_APPS), "reportapp")
    assert get_json(server, "/x")["app"] == "reportapp"


def test_factory_with_literal_arguments(start):
    server = start("--pythonpath", str(TEST_APPS), "reportapp:factory('x', debug=True)")
    assert get_json(server, "/") == {"args": ["x"], "kwargs": {"debug": True}}


def test_factory_without_arguments(start):
    server = start("--pythonpath", str(TEST_APPS), "reportapp:factory()")
    assert get_json(server, "/") == {"args": [], "kwargs": {}}


def test_app_file_path(start):
    server = start("examples/apps/hello.py")
    response = requests.get(server.url + "/", timeout=10)
    assert (response.status_code, response.content) == (200, b"Hello, World!")


def test_app_file_path_with_callable(start):
    server = start(str(TEST_APPS / "reportapp.py") + ":application")
    assert get_json(server, "/x")["app"] == "reportapp"


def test_chdir(start, tmp_path):
    target = TEST_APPS / "chdir_only"
    server = start("--chdir", str(target), "chdironly:application", cwd=tmp_path)
    assert get_json(server, "/") == {"app": "chdironly", "cwd": str(target)}


def test_pythonpath(start, tmp_path):
    server = start("--pythonpath", str(TEST_APPS / "pypath_only"), "pypathonly", cwd=tmp_path)
    assert get_json(server, "/") == {"app": "pypathonly", "cwd": str(tmp_path)}


def test_without_pythonpath_the_module_is_not_found(server_bin, tmp_path):
    status, _stdout, stderr = run_server("pypathonly", cwd=tmp_path)
    assert status == 4, stderr


# -- the interpreter ---------------------------------------------------------


def check_venv_interpreter(report):
    venv = os.path.realpath(TEST_VENV)
    assert os.path.realpath(report["prefix"]) == venv, report
    assert os.path.realpath(os.path.dirname(report["executable"])) == os.path.join(venv, "bin"), report
    assert os.access(report["executable"], os.X_OK), report
    assert report["child_returncode"] == 0, report
    assert report["child_stdout"] == "1\n", report
    assert os.path.realpath(report["child_prefix"]) == venv, report
    assert os.path.realpath(report["flask_file"]).startswith(venv + os.sep), report
    assert report["version"] == [3, 11, 7], report


def test_virtualenv_flag(start):
    server = start("--pythonpath", str(TEST_APPS), "reportapp")
    check_venv_interpreter(get_json(server, "/interpreter"))
    log = server.log()
    assert "virtualenv %s" % TEST_VENV in log, log


def test_virtualenv_from_environment(start):
    env = dict(os.environ, VIRTUAL_ENV=str(TEST_VENV))
    server = start("--pythonpath", str(TEST_APPS), "reportapp", env=env, venv=None)
    check_venv_interpreter(get_json(server, "/interpreter"))


def test_os_environ_not_merged_into_environ(start):
    env = dict(os.environ, HTTP_FOO="leaked-from-the-environment")
    server = start("--pythonpath", str(TEST_APPS), "reportapp", env=env)
    report = get_json(server, "/environ")
    assert report == {
        "environ_has_HTTP_FOO": False,
        "environ_HTTP_FOO": None,
        "os_environ_HTTP_FOO": "leaked-from-the-environment",
        "environ_keys_from_os": [],
    }
    response = requests.get(server.url + "/environ", headers={"Foo": "from-the-request"},
                            timeout=10)
    assert response.json()["environ_HTTP_FOO"] == "from-the-request"


# -- signals -----------------------------------------------------------------


def test_sigint_stops_cleanly(start):
    server = start("--pythonpath", str(TEST_APPS), "reportapp")
    assert get_json(server, "/x")["app"] == "reportapp"
    assert server.stop(signal.SIGINT) == 0
    assert "Handling signal: int" in server.log()


def test_sigterm_lets_the_in_flight_request_finish(start, tmp_path):
    # The request is inside the application (held by the test) when the
    # stop begins, and is let go only once the master has taken the
    # signal: no sleep guesses when it is in flight.
    server = start("--pythonpath", str(TEST_APPS), "reportapp")
    marker = tmp_path / "hold"
    marker.mkdir()
    result = {}

    def held():
        try:
            result["response"] = requests.get(server.url + "/hold", params=str(marker), timeout=40)
        except Exception as error:  # noqa: BLE001 - reported below
            result["error"] = error

    thread = threading.Thread(target=held)
    thread.start()
    try:
        wait_until("request inside the application", lambda: any(marker.glob("entered-*")))
        offset = server.log_size()
        server.proc.send_signal(signal.SIGTERM)
        log = server.wait_for_log("Handling signal: term", offset, timeout=10)
        assert "Handling signal: term" in log, log
    finally:
        (marker / "release").touch()
        thread.join(45)
    assert "error" not in result, result
    response = result["response"]
    assert response.status_code == 200
    assert response.json() == {"released": True, "most_inside": 1}
    # Out once its last request is done, not after the graceful timeout
    # (30 s): 10 s is a failure bound.
    assert server.proc.wait(timeout=10) == 0, server.log()


def test_sigterm_answers_the_next_request_of_an_idle_keep_alive_connection(start):
    # An idle keep-alive connection is not closed under its client on a
    # graceful stop (a proxy may be sending on it at that very moment, and
    # nginx does not retry a POST that met a reset): its next request is
    # answered, with `Connection: close`, and then it closes.
    from rawhttp import Conn, request

    server = start("--pythonpath", str(TEST_APPS), "reportapp", "--keep-alive", "60")
    with Conn(server) as conn:
        conn.send(request(b"GET", b"/x"))
        response = conn.read_response()
        assert (response.status, response.header("Connection")) == (200, None)
        offset = server.log_size()
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_log("Handling signal: term", offset)
        # The worker hears of the stop a moment after the master: until it
        # does, answers keep the connection alive. Bounded.
        for _ in range(500):
            conn.send(request(b"GET", b"/x"))
            response = conn.read_response()
            assert response.status == 200
            if response.header("Connection") == b"close":
                break
            time.sleep(0.01)
        assert response.header("Connection") == b"close"
        closed, extra = conn.at_eof(timeout=5)
    assert closed and extra == b""
    assert server.stop(signal.SIGTERM) == 0


def test_sigterm_closes_an_idle_connection_when_its_keep_alive_time_runs_out(start):
    from rawhttp import Conn, request

    server = start("--pythonpath", str(TEST_APPS), "reportapp", "--keep-alive", "2")
    with Conn(server) as conn:
        conn.send(request(b"GET", b"/x"))
        assert conn.read_response().status == 200
        offset = server.log_size()
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_log("Handling signal: term", offset)
        closed, extra = conn.at_eof(timeout=8)
    assert closed and extra == b""
    assert server.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("spec, needle", [
    ("reportapp:CONSTANT", "CONSTANT"),
    ("reportapp:failing_factory()", "factory refused 2d9a"),
    ("reportapp:factory(os.getcwd())", "factory"),
])
def test_unusable_application_exits_4(server_bin, spec, needle):
    status, _stdout, stderr = run_server("--pythonpath", str(TEST_APPS), spec)
    assert status == 4, stderr
    assert needle in stderr, stderr
    assert "The application failed to load: stopping" in stderr


def test_unusable_virtualenv_stops_the_master_with_4(tmp_path):
    # Workers that cannot start Python must not be respawned forever.
    command = [str(SERVER_BIN), "--bind", f"127.0.0.1:{free_port()}",
               "-H", str(tmp_path / "no-venv"), "--pythonpath", str(TEST_APPS), "reportapp"]
    result = subprocess.run(command, cwd=REPO, stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=15)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 4, stderr
    assert "is not a usable virtualenv" in stderr, stderr
    assert "The application failed to load: stopping" in stderr, stderr


def test_startup_log_names_the_interpreter(start):
    server = start("--pythonpath", str(TEST_APPS), "reportapp")
    log = server.log()
    line = next((l for l in log.splitlines() if "[INFO] Python " in l), "")
    assert "Python 3.11.7" in line, log
    assert f"prefix {TEST_VENV}" in line, log
    assert f"executable {TEST_VENV}/bin/python" in line, log


def test_one_thread_keeps_its_thread_local_state(start):
    server = start("--pythonpath", str(TEST_APPS), "reportapp", "--threads", "1")
    reports = [get_json(server, "/tlocal") for _ in range(5)]
    assert [r["count"] for r in reports] == [1, 2, 3, 4, 5]
    assert len({r["thread"] for r in reports}) == 1
    assert reports[0]["multithread"] is False


def wait_until(what, check, timeout=15):
    """Polls `check()` until it is true; fails after `timeout` s (a failure
    bound: nothing is measured)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.02)


def queue_depth(metrics_port):
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    line = next(l for l in text.splitlines() if l.startswith("wsgi_server_queue_depth "))
    return int(float(line.split()[1]))


@pytest.mark.parametrize("threads, parallel", [(1, False), (3, True)])
def test_application_threads_run_requests_in_parallel(start, tmp_path, threads, parallel):
    # Three requests held inside the application (`/hold`) until the test
    # lets go: on three threads all three are inside at once; on one
    # thread one is inside while the other two wait in the queue (the
    # server's own gauge says they arrived), and no two are ever inside
    # together. Nothing is timed.
    metrics_port = free_port()
    server = start("--pythonpath", str(TEST_APPS), "reportapp", "--threads", str(threads),
                   "--metrics-bind", f"127.0.0.1:{metrics_port}")
    marker = tmp_path / "hold"
    marker.mkdir()
    results = []

    def held():
        response = requests.get(server.url + "/hold", params=str(marker), timeout=40)
        results.append((response.status_code, response.json()))

    workers = [threading.Thread(target=held) for _ in range(3)]
    for worker in workers:
        worker.start()
    entered = lambda: len(list(marker.glob("entered-*")))  # noqa: E731
    try:
        if parallel:
            wait_until("three requests inside at once", lambda: entered() == 3)
        else:
            wait_until("one request inside, two queued",
                       lambda: entered() >= 1 and queue_depth(metrics_port) == 2)
            assert entered() == 1, f"{entered()} requests inside on one thread"
    finally:
        (marker / "release").touch()
        for worker in workers:
            worker.join(45)
    assert [status for status, _ in results] == [200, 200, 200]
    assert all(answer["released"] for _, answer in results), results
    most = max(answer["most_inside"] for _, answer in results)
    assert most == (3 if parallel else 1), f"{most} requests inside at once on {threads} threads"
