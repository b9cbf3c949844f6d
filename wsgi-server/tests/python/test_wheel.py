"""The pip-installed package, end to end: the wheel built once by maturin,
installed (without a Rust toolchain on PATH) into one virtualenv per CPython
build, each listed in `$WSGI_WHEEL_VENVS` (os.pathsep-separated; `cargo
xtask ci`'s `wheel` step, or `cargo xtask wheel`, builds and installs them
with Flask and pyramid). Every test runs once per virtualenv, against what a
user runs: the `wsgi-server` console script, `python -m wsgi_server`,
`wsgi_server.serve()` and `pserve` with `use = egg:wsgi-server#main`.
"""

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from conftest import APPS, READY_TIMEOUT, TEST_APPS, Server, free_port
from test_process import Load, cmdline, ids_of, wait_until, workers_of

VENVS = [Path(entry) for entry in os.environ.get("WSGI_WHEEL_VENVS", "").split(os.pathsep) if entry]

pytestmark = pytest.mark.skipif(
    not VENVS,
    reason="no installed wheel: `cargo xtask ci` (step wheel) or `cargo xtask wheel` builds it "
    "and sets WSGI_WHEEL_VENVS",
)

READY = re.compile(r"\[INFO\] Worker \d+ ready")


@pytest.fixture(params=VENVS or [None], ids=lambda venv: venv.name if venv else "none")
def venv(request):
    return request.param


def bin_of(venv, name):
    return str(venv / "bin" / name)


def launch(command, log_path, port, cwd=APPS, env=None, workers=True, **popen):
    """Starts `command` (which listens on `port`) and waits until it accepts
    and, with `workers`, a worker said it is ready. Returns a Server whose
    teardown the caller owns."""
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                            stderr=log_file, cwd=cwd, env=env, **popen)
    log_file.close()
    server = Server(proc, port, Path(log_path))
    ready = wait_until(
        lambda: proc.poll() is not None
        or ((not workers or READY.search(server.log())) and connectable(port)),
        READY_TIMEOUT)
    if proc.poll() is not None or not ready:
        server.stop(signal.SIGKILL)
        raise AssertionError(f"not serving: {command}\n{server.log()}")
    return server


def connectable(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def servers():
    """Servers started by a test; each must exit 0 on TERM at the end."""
    started = []
    yield started
    failures = []
    for server in started:
        status = server.stop()
        if status != 0:
            failures.append(f"{server.proc.args}: exit status {status!r}\n{server.log()[-3000:]}")
    assert not failures, "\n".join(failures)


def console(venv, tmp_path, servers, *args, name="server", **launch_args):
    port = free_port()
    command = [bin_of(venv, "wsgi-server"), "--bind", f"127.0.0.1:{port}", *args]
    server = launch(command, tmp_path / f"{name}.log", port, **launch_args)
    servers.append(server)
    return server


# -- the package as built --------------------------------------------------


def native_module(venv):
    found = sorted((venv / "lib").glob("python3*/site-packages/wsgi_server/_native*.so"))
    assert len(found) == 1, found
    return found[0]


def test_the_extension_is_abi3_and_does_not_link_libpython(venv):
    module = native_module(venv)
    assert module.name == "_native.abi3.so", module
    dynamic = subprocess.run(["readelf", "-d", str(module)], capture_output=True, text=True,
                             check=True).stdout
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", dynamic)
    assert needed and not [lib for lib in needed if "python" in lib], needed


def test_the_package_imports_and_knows_its_version(venv):
    code = ("import wsgi_server, sys; "
            "print(wsgi_server.__version__, issubclass(wsgi_server.RequestTimeout, BaseException), "
            "sys.prefix)")
    out = subprocess.run([bin_of(venv, "python"), "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[1:] == ["True", str(venv)], out
    version = subprocess.run([bin_of(venv, "wsgi-server"), "--version"], capture_output=True,
                             text=True, check=True).stdout
    assert version.strip() == f"wsgi-server {out[0]}"


# -- entry points ----------------------------------------------------------


def test_console_script_serves_flask(venv, tmp_path, servers):
    server = console(venv, tmp_path, servers, "-w", "1", "--threads", "2", "flask_app:app")
    # One worker, so the item is there on the next request.
    response = requests.post(server.url + "/api/items", json={"name": "wheel"}, timeout=5)
    assert response.status_code == 201, response.text
    assert {"id": 2, "name": "wheel"} in requests.get(server.url + "/api/items", timeout=5).json()["items"]
    log = server.log()
    # The interpreter is the venv's own, already running: nothing embedded.
    assert f"this process's interpreter: prefix {venv}" in log, log
    assert f"executable {venv}/bin/python" in log, log


def test_python_dash_m_serves(venv, tmp_path, servers):
    port = free_port()
    command = [bin_of(venv, "python"), "-m", "wsgi_server", "--bind", f"127.0.0.1:{port}",
               "hello:application"]
    server = launch(command, tmp_path / "m.log", port)
    servers.append(server)
    assert requests.get(server.url, timeout=5).text == "Hello, World!"


def test_bad_usage_is_reported_like_the_binary(venv):
    result = subprocess.run([bin_of(venv, "wsgi-server"), "--wokers", "2", "hello:application"],
                            capture_output=True, text=True, cwd=APPS)
    assert result.returncode == 1
    assert "--wokers: unknown option (did you mean --workers?)" in result.stderr, result.stderr


SERVE_OBJECT = """
    import os, sys, uuid
    import wsgi_server

    # Made once, in the master: a worker that imported this file again would
    # have another token (and would start another server).
    TOKEN = uuid.uuid4().hex
    MASTER = os.getpid()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{TOKEN} {MASTER} {os.getppid()}".encode()]

    import signal, threading
    # What SIGINT did before (a shell's background job starts with it
    # ignored, and then Python installs no handler of its own).
    BEFORE = signal.getsignal(signal.SIGINT)
    print("token", TOKEN, flush=True)
    code = wsgi_server.serve(app, bind=sys.argv[1], workers=2, threads=2,
                             graceful_timeout=5)
    print("returned", code, signal.getsignal(signal.SIGINT) is BEFORE,
          threading.active_count(), flush=True)
"""


def test_serve_an_object_forks_it_into_the_workers(venv, tmp_path):
    script = tmp_path / "serve_object.py"
    script.write_text(textwrap.dedent(SERVE_OBJECT))
    port = free_port()
    server = launch([bin_of(venv, "python"), str(script), f"127.0.0.1:{port}"],
                    tmp_path / "serve.log", port, cwd=tmp_path)
    try:
        token = re.search(r"token (\w+)", server.log()).group(1)
        body = requests.get(server.url, timeout=5).text.split()
        assert body == [token, str(server.pid), str(server.pid)], body
    finally:
        status = server.stop()
    log = server.log()
    assert status == 0, log
    # serve() returned to a normal Python: its SIGINT handler is as it was.
    assert "returned 0 True 1" in log, log


def test_serve_a_spec_string(venv, tmp_path):
    script = tmp_path / "serve_spec.py"
    script.write_text("import sys, wsgi_server\n"
                      "raise SystemExit(wsgi_server.serve('hello:application', bind=sys.argv[1],"
                      " no_master=True, threads=2))\n")
    port = free_port()
    server = launch([bin_of(venv, "python"), str(script), f"127.0.0.1:{port}"],
                    tmp_path / "spec.log", port, cwd=APPS, workers=False)
    try:
        assert requests.get(server.url, timeout=5).text == "Hello, World!"
    finally:
        assert server.stop() == 0, server.log()


def test_serve_refuses_to_fork_beside_other_threads(venv, tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(textwrap.dedent("""
        import threading, wsgi_server
        stop = threading.Event()
        threading.Thread(target=stop.wait, name="busy-helper", daemon=True).start()
        try:
            wsgi_server.serve("hello:application", bind="127.0.0.1:1")
        except RuntimeError as error:
            print("refused:", error)
        stop.set()
    """))
    result = subprocess.run([bin_of(venv, "python"), str(script)], capture_output=True,
                            text=True, timeout=30)
    assert "refused:" in result.stdout and "busy-helper" in result.stdout, result
    assert "Listening" not in result.stderr, result.stderr


PASTE_APP = """
    def make_app(global_config, **settings):
        greeting = settings["greeting"]

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [f"{greeting} multiprocess={environ['wsgi.multiprocess']}".encode()]
        return app
"""

PASTE_INI = """
    [app:main]
    use = call:wheel_paste_app:make_app
    greeting = {greeting}

    [server:main]
    use = egg:wsgi-server#main
    host = 127.0.0.1
    port = {port}
    workers = 2
    threads = 2
"""


def test_pserve_runs_the_egg_entry_point(venv, tmp_path):
    (tmp_path / "wheel_paste_app.py").write_text(textwrap.dedent(PASTE_APP))
    greeting = f"bonjour-{uuid.uuid4().hex[:6]}"
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(textwrap.dedent(PASTE_INI.format(greeting=greeting, port=port)))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    server = launch([bin_of(venv, "pserve"), str(ini)], tmp_path / "pserve.log", port,
                    cwd=tmp_path, env=env)
    try:
        assert requests.get(server.url, timeout=5).text == f"{greeting} multiprocess=True"
        assert len(workers_of(server.pid)) == 2, server.log()
    finally:
        status = server.stop()
    assert status == 0, server.log()
    assert "Shutting down: Master" in server.log()


# -- the master in a Python process ---------------------------------------


def test_hup_reloads_and_term_stops_without_dropping_a_request(venv, tmp_path, servers):
    version_dir = tmp_path / "version"
    version_dir.mkdir()
    module = version_dir / "process_version.py"
    module.write_text('VERSION = "v1"\n')
    server = console(venv, tmp_path, servers, "-w", "2", "--threads", "2",
                     "--pythonpath", f"{TEST_APPS},{version_dir}", "--graceful-timeout", "10",
                     "process_app:application", cwd=tmp_path)
    assert requests.get(server.url + "/version", timeout=5).text == "v1"
    with Load(server.url, path="/version", threads=3, max_requests=3000,
              max_seconds=30) as load:
        load.wait_for(50)
        module.write_text('VERSION = "v2-reloaded"\n')
        offset = server.log_size()
        os.kill(server.pid, signal.SIGHUP)
        assert wait_until(lambda: "Reload complete" in server.log_since(offset), 15), \
            server.log_since(offset)
        assert wait_until(lambda: requests.get(server.url + "/version", timeout=5).text
                          == "v2-reloaded", 10)
        load.wait_for(150)
        slow = {}

        def slow_request():
            slow["response"] = requests.get(server.url + "/sleep?s=2", timeout=15)

        thread = threading.Thread(target=slow_request)
        thread.start()
        # The load ends (its threads joined) before TERM: a connection made
        # after TERM is refused by design (the listeners close at once), so
        # only the slow request is in flight when TERM comes.
        load.stop()
        time.sleep(0.5)
        status = server.stop()
        thread.join(15)
    assert status == 0, server.log()
    assert slow["response"].status_code == 200, server.log()
    assert not load.failures(), load.summary()


def test_ctrl_c_on_a_terminal_stops_master_and_workers_cleanly(venv, tmp_path):
    port = free_port()
    # A process group of its own, as a shell gives a foreground job: Ctrl-C
    # is SIGINT to every process of the group.
    server = launch([bin_of(venv, "wsgi-server"), "--bind", f"127.0.0.1:{port}", "-w", "2",
                     "hello:application"], tmp_path / "ctrl-c.log", port,
                    start_new_session=True)
    workers = wait_until(lambda: len(workers_of(server.pid)) == 2 and workers_of(server.pid), 10)
    assert workers, server.log()
    os.killpg(server.pid, signal.SIGINT)
    try:
        status = server.proc.wait(timeout=15)
    finally:
        server.stop(signal.SIGKILL)
    log = server.log()
    assert status == 0, log
    assert "Shutting down: Master" in log, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 5)


def test_daemon_detaches_and_titles_the_processes(venv, tmp_path):
    name = f"wheel-{uuid.uuid4().hex[:6]}"
    pidfile = tmp_path / "daemon.pid"
    log_path = tmp_path / "daemon.log"
    port = free_port()
    launcher = subprocess.run(
        [bin_of(venv, "wsgi-server"), "--bind", f"127.0.0.1:{port}", "-w", "2", "--daemon",
         "--error-logfile", str(log_path), "--pid", str(pidfile), "--name", name,
         "hello:application"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=APPS, timeout=15)
    assert launcher.returncode == 0, launcher
    master = wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10)
    assert master, launcher
    master = int(master)
    try:
        assert wait_until(lambda: cmdline(master) == f"wsgi-server: master [{name}]", 5), \
            cmdline(master)
        assert wait_until(lambda: len(workers_of(master)) == 2, 10), log_path.read_text()
        titles = sorted(cmdline(pid) for pid in workers_of(master))
        assert titles == [f"wsgi-server: worker 1 [{name}]", f"wsgi-server: worker 2 [{name}]"]
        assert wait_until(lambda: connectable(port), 5)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "Hello, World!"
    finally:
        os.kill(master, signal.SIGTERM)
    assert wait_until(lambda: not Path(f"/proc/{master}").exists(), 15), log_path.read_text()
    assert "Shutting down: Master" in log_path.read_text()


def readable_by_anyone(path):
    """Whether a user who is neither owner nor in the group can read `path`
    (every directory above it searchable by others, itself readable)."""
    path = Path(path).resolve()
    for directory in [*reversed(path.parents)]:
        if not directory.stat().st_mode & 0o001:
            return False
    return bool(path.stat().st_mode & 0o004)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_nobody_after_binding(venv, tmp_path, servers):
    stdlib = subprocess.run([bin_of(venv, "python"), "-c", "import os; print(os.__file__)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    if not readable_by_anyone(stdlib):
        # pyenv's Python under /root (mode 700): no interpreter runs as nobody.
        pytest.skip(f"{stdlib} is not readable by nobody")
    # The venv (under target/) and the apps are readable by nobody; the
    # listener is bound before the switch.
    server = console(venv, tmp_path, servers, "-w", "1", "--user", "nobody", "--group",
                     "nogroup", "reportapp:application", "--pythonpath", str(TEST_APPS))
    body = requests.get(server.url + "/", timeout=5)
    assert body.status_code == 200, server.log()
    (master_uid, _), _, _ = ids_of(server.pid)
    [worker] = workers_of(server.pid)
    (worker_uid, worker_euid), _, _ = ids_of(worker)
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True,
                                check=True).stdout)
    assert master_uid == worker_uid == worker_euid == nobody


def test_preloaded_app_starting_threads_is_warned_about_at_fork(venv, tmp_path, servers):
    (tmp_path / "threaded_app.py").write_text(textwrap.dedent("""
        import threading
        _stop = threading.Event()
        threading.Thread(target=_stop.wait, name="import-time-helper", daemon=True).start()

        def application(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [",".join(t.name for t in threading.enumerate()).encode()]
    """))
    server = console(venv, tmp_path, servers, "-w", "1", "--preload", "--pythonpath",
                     str(tmp_path), "threaded_app:application", cwd=tmp_path)
    assert "1 other Python thread(s) run in the master at fork" in server.log(), server.log()
    # The helper stayed behind in the master: no copy runs in the worker.
    names = requests.get(server.url, timeout=5).text.split(",")
    assert "import-time-helper" not in names and names, names
