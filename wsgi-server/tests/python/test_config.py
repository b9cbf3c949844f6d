"""The server started the way its users already start their servers, with
files written as deployment guides write them (paths in a temp dir, free
loopback ports), checked through a real nginx where the guide has one:

- PasteDeploy (`paster serve` / `pserve` habits): `--paste FILE[#name]` with
  `[server:main] use = egg:Paste#http` and an `egg:` app from a pip-installed
  package, two app/server pairs by name, both daemonized behind one nginx
  upstream; a PasteScript cherrypy section on a unix socket behind
  `proxy_pass http://unix:`; `[pipeline]`, `[filter-app]`, `[composite]`;
  logging sections;
- uWSGI: `--socket --protocol=http -w`, `uwsgi_pass`, `--ini` and `--json`
  with `%d` and exactly five workers, `--ini-paste`, `--pythonpath --module`,
  `--module --callable`;
- gunicorn: `-c gunicorn.conf.py` with a `post_fork` hook, the environment
  (`GUNICORN_CMD_ARGS`, `PORT`, `WEB_CONCURRENCY`) and the precedence
  file < environment < flag, as `--print-config` shows it;
- every bad input: one line naming the source, the key and the problem, and
  the exit status.
"""

import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO, SERVER_BIN, TEST_VENV, free_port
from nginx_support import private_dir, remove_dir, start_nginx

PASTE_EXAMPLE = REPO / "examples" / "apps" / "paste_example"
TIMEOUT = 10.0


@pytest.fixture(scope="session", autouse=True)
def paste_example_installed(server_bin):
    """`egg:paste_example` resolves only when the package is installed in
    the test venv, as a user's app package would be (requirements.txt
    installs it from the checkout)."""
    python = TEST_VENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; m.distribution('paste_example')"]
    assert subprocess.run(probe, capture_output=True).returncode == 0, (
        f"paste_example is not installed in {TEST_VENV}: pip install -r wsgi-server/tests/python/requirements.txt"
    )


# --- running the server as a user would ------------------------------------------


class Running:
    """A server started with exactly the given arguments."""

    def __init__(self, proc, log_path):
        self.proc = proc
        self.log_path = log_path

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                return "killed"
        return self.proc.returncode


def connectable(address):
    """True when `address` ((host, port) or a unix socket path) accepts."""
    family = socket.AF_UNIX if isinstance(address, (str, Path)) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(address) if family == socket.AF_UNIX else address)
            return True
        except OSError:
            return False


def launch(args, cwd, address, workers=1, env=None, log_name="server.log"):
    """Starts `wsgi-server ARGS` in `cwd` and waits until `workers` workers
    said they are ready and `address` accepts."""
    log_path = Path(cwd) / log_name
    log_file = open(log_path, "wb")
    environment = dict(os.environ if env is None else env)
    environment.setdefault("VIRTUAL_ENV", str(TEST_VENV))
    proc = subprocess.Popen(
        [str(SERVER_BIN), *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=environment
    )
    log_file.close()
    server = Running(proc, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {args}\n{server.log()}")
        if len(re.findall(r"\[INFO\] Worker \d+ ready", server.log())) >= workers and connectable(address):
            return server
        time.sleep(0.05)
    server.stop()
    raise AssertionError(f"server not ready: {args}\n{server.log()}")


@pytest.fixture
def servers():
    started = []
    yield started
    failures = []
    for server in started:
        status = server.stop()
        if status != 0:
            failures.append(f"exit status {status!r} on SIGTERM\n{server.log()[-3000:]}")
    assert not failures, "\n".join(failures)


def run(args, cwd, env=None, timeout=60):
    """Runs `wsgi-server ARGS` to completion (bad inputs, --print-config)."""
    environment = dict(os.environ if env is None else env)
    environment.setdefault("VIRTUAL_ENV", str(TEST_VENV))
    result = subprocess.run(
        [str(SERVER_BIN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, env=environment,
    )
    return result.returncode, result.stdout, result.stderr


def get(url, **kwargs):
    return requests.get(url, timeout=TIMEOUT, **kwargs)


def unix_get(path, target="/"):
    """GET over a unix socket; returns (status, body)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


# The app the uWSGI and gunicorn guides call `wsgi.py`.
WSGI_PY = '''\
import os

def application(environ, start_response):
    body = ("pid=%d forked_by=%s greeting=%s app=wsgi" % (
        os.getpid(), os.environ.get("FORKED_BY", "-"), os.environ.get("GREETING", "-"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

app = application
'''


def field(text, name):
    match = re.search(rf"\b{name}=(\S+)", text)
    assert match, (name, text)
    return match.group(1)


# --- PasteDeploy -------------------------------------------------------------------


DEVELOPMENT_INI = """\
[app:main]
use = egg:paste_example
db_uri = postgresql://localhost/main

[server:main]
use = egg:Paste#http
host = 127.0.0.1
port = {port_main}
use_threadpool = True
threadpool_workers = 10

[app:main2]
use = egg:paste_example#main
db_uri = sqlite:///%(here)s/second.db

[server:main2]
use = egg:Paste#http
host = 127.0.0.1
port = {port_main2}
use_threadpool = True
threadpool_workers = 10
"""


class Daemon:
    """A `--daemon` server known by its pidfile."""

    def __init__(self, pidfile):
        self.pidfile = pidfile

    def pid(self):
        return int(self.pidfile.read_text().strip())

    def stop(self):
        pid = self.pid()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return 0
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        return "killed"


def start_daemon(args, cwd, pidfile, port, logfile):
    """`wsgi-server ... --daemon --pid FILE`: the command returns at once;
    the detached master writes its pidfile and serves."""
    code, out, err = run([*args, "--daemon", "--pid", str(pidfile), "--log-file", str(logfile)], cwd)
    assert code == 0, err
    # The terminal is told where the logs go before the process detaches.
    assert f"logs go to {logfile}" in err, err
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = logfile.read_text(errors="replace") if logfile.exists() else ""
        if pidfile.exists() and "Worker 1 ready" in log and connectable(("127.0.0.1", port)):
            return Daemon(pidfile)
        time.sleep(0.05)
    raise AssertionError(f"daemon not ready: {args}\n{logfile.read_text(errors='replace') if logfile.exists() else ''}")


def test_paste_ini_two_servers_by_name_daemonized_behind_one_nginx_upstream(tmp_path):
    ports = {"port_main": free_port(), "port_main2": free_port()}
    ini = tmp_path / "development.ini"
    ini.write_text(DEVELOPMENT_INI.format(**ports))
    first = start_daemon(["--paste", str(ini)], tmp_path, tmp_path / "main.pid", ports["port_main"], tmp_path / "main.log")
    try:
        # `paster serve -n main2 --server-name=main2` as one flag: FILE#name.
        second = start_daemon(["--paste", f"{ini}#main2"], tmp_path, tmp_path / "main2.pid", ports["port_main2"], tmp_path / "main2.log")
        try:
            # Each daemon is its own master, detached from us.
            assert first.pid() != second.pid()
            assert os.getpgid(first.pid()) != os.getpgid(0)
            direct = get(f"http://127.0.0.1:{ports['port_main']}/").text
            assert "db_uri=postgresql://localhost/main" in direct
            assert f"here={tmp_path}" in direct
            direct2 = get(f"http://127.0.0.1:{ports['port_main2']}/").text
            assert f"db_uri=sqlite:///{tmp_path}/second.db" in direct2
            # threadpool_workers = 10 became the thread count.
            assert "serving with 10 thread(s)" in (tmp_path / "main.log").read_text()
            nginx = start_nginx("scale_out.conf", {"upstream_port_1": ports["port_main"], "upstream_port_2": ports["port_main2"]})
            try:
                answers = {get(nginx.url() + "/").text.split("\n")[0] for _ in range(20)}
                assert answers == {"db_uri=postgresql://localhost/main", f"db_uri=sqlite:///{tmp_path}/second.db"}
            finally:
                nginx.stop()
                remove_dir(nginx.tmp)
        finally:
            assert second.stop() == 0
    finally:
        assert first.stop() == 0
    # Vacuum: the pidfiles are gone with their masters.
    assert not (tmp_path / "main.pid").exists() and not (tmp_path / "main2.pid").exists()


BARRIER_APP = '''\
import threading

barrier = threading.Barrier(10, timeout=15)

def make_app(global_config, **settings):
    def app(environ, start_response):
        # Answers only when 10 requests are inside the app at once.
        index = barrier.wait()
        body = b"inside together %d" % index
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app
'''

SITE_INI = """\
[app:main]
use = call:barrierapp:make_app

[server:main]
use = egg:PasteScript#cherrypy
host = {socket}
numthreads = 10
timeout = 180
request_queue_size = 200
"""


def test_paste_cherrypy_section_on_a_unix_socket_behind_nginx(servers):
    tmp = private_dir()
    try:
        (tmp / "barrierapp.py").write_text(BARRIER_APP)
        sock = tmp / "site-python.sock"
        (tmp / "site.ini").write_text(SITE_INI.format(socket=sock))
        servers.append(launch(["--paste", "site.ini", "--pythonpath", str(tmp), "--chmod-socket", "666"], tmp, sock))
        printed = run(["--paste", "site.ini", "--print-config"], tmp)[1]
        assert re.search(r"^threads = 10  # site.ini:\d+: numthreads$", printed, re.M), printed
        assert re.search(r"^backlog = 200  # site.ini:\d+: request_queue_size$", printed, re.M), printed
        assert re.search(r"^header_timeout = 180  # site.ini:\d+: timeout$", printed, re.M), printed
        nginx = start_nginx("proxy_pass.conf", {"upstream_port": free_port(), "socket_path": sock}, listen=("listen_port", "listen_port_unix"))
        try:
            results = []

            def one():
                results.append(get(nginx.url("listen_port_unix") + "/"))

            threads = [threading.Thread(target=one) for _ in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert [response.status_code for response in results] == [200] * 10, [r.text for r in results]
            assert sorted(int(r.text.split()[-1]) for r in results) == list(range(10))
        finally:
            nginx.stop()
            remove_dir(nginx.tmp)
    finally:
        for server in servers:
            server.stop()
        remove_dir(tmp)


COMPOSED_INI = """\
[DEFAULT]
company = Example Ltd

[composite:main]
use = call:composeapp:urlmap
/ = home
/api = api_pipeline
/legacy = legacy

[app:home]
use = egg:paste_example
db_uri = %(company)s home

[pipeline:api_pipeline]
pipeline = tag upper api

[filter:tag]
use = call:composeapp:tag_filter
label = pipeline

[filter:upper]
use = call:composeapp:upper_filter

[app:api]
use = call:composeapp:api_app
set company = Overridden Inc

[filter-app:legacy]
use = egg:paste_example#header
header = X-Legacy
value = yes
next = home

[server:main]
use = egg:waitress#main
listen = 127.0.0.1:{port}
"""

COMPOSE_PY = '''\
def urlmap(loader, global_conf, **mapping):
    """A composite: the longest matching prefix picks the app."""
    apps = sorted(((prefix, loader.get_app(name)) for prefix, name in mapping.items()), key=lambda p: -len(p[0]))
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        for prefix, sub in apps:
            bare = prefix.rstrip("/")
            if path == bare or path.startswith(bare + "/") or prefix == "/":
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + bare
                environ["PATH_INFO"] = path[len(bare):]
                return sub(environ, start_response)
        start_response("404 Not Found", [("Content-Length", "0")])
        return []
    return app

def tag_filter(global_conf, label="?"):
    def wrap(app):
        def tagged(environ, start_response):
            def start(status, headers, exc_info=None):
                return start_response(status, headers + [("X-Tag", label)], exc_info)
            return app(environ, start)
        return tagged
    return wrap

def upper_filter(global_conf):
    def wrap(app):
        def upper(environ, start_response):
            return [chunk.upper() for chunk in app(environ, start_response)]
        return upper
    return wrap

def api_app(global_conf, **settings):
    body = ("api company=%s script=%%s" % global_conf["company"]).encode()
    def app(environ, start_response):
        out = body % environ["SCRIPT_NAME"].encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
        return [out]
    return app
'''


def test_paste_composite_pipeline_and_filter_app(tmp_path, servers):
    port = free_port()
    (tmp_path / "composeapp.py").write_text(COMPOSE_PY)
    (tmp_path / "composed.ini").write_text(COMPOSED_INI.format(port=port))
    servers.append(launch(["--paste", "config:composed.ini", "--pythonpath", str(tmp_path)], tmp_path, ("127.0.0.1", port)))
    home = get(f"http://127.0.0.1:{port}/")
    assert home.text.startswith("db_uri=Example Ltd home")
    assert "X-Tag" not in home.headers and "X-Legacy" not in home.headers
    api = get(f"http://127.0.0.1:{port}/api/x")
    # The pipeline: `upper` inside `tag`; `set` overrides the [DEFAULT] value.
    assert api.text == "API COMPANY=OVERRIDDEN INC SCRIPT=/API"
    assert api.headers["X-Tag"] == "pipeline"
    legacy = get(f"http://127.0.0.1:{port}/legacy")
    assert legacy.headers["X-Legacy"] == "yes" and legacy.text.startswith("db_uri=Example Ltd home")


LOGGING_INI = """\
[app:main]
use = call:loggingapp:make_app

[server:main]
use = egg:Paste#http
host = 127.0.0.1
port = {port}

[loggers]
keys = root, myapp

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_myapp]
level = DEBUG
handlers =
qualname = myapp

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = PASTELOG %(levelname)-5.5s [%(name)s] %(message)s
"""

LOGGING_APP = '''\
import logging

log = logging.getLogger("myapp")

def make_app(global_config, **settings):
    def app(environ, start_response):
        log.debug("handling %s", environ["PATH_INFO"])
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    return app
'''


def test_paste_logging_sections_format_the_apps_log_lines(tmp_path, servers):
    port = free_port()
    (tmp_path / "loggingapp.py").write_text(LOGGING_APP)
    (tmp_path / "logging.ini").write_text(LOGGING_INI.format(port=port))
    server = launch(["--paste", "logging.ini", "--pythonpath", str(tmp_path)], tmp_path, ("127.0.0.1", port))
    servers.append(server)
    assert get(f"http://127.0.0.1:{port}/hello-log").text == "ok"
    deadline = time.monotonic() + 5
    while "PASTELOG DEBUG [myapp] handling /hello-log" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "PASTELOG DEBUG [myapp] handling /hello-log" in server.log()


PRODUCTION_INI = """\
[uwsgi]
http-socket = 127.0.0.1:{port}
master = true
processes = 2
threads = 2

[app:main]
use = egg:paste_example
db_uri = mysql://prod
"""


def test_uwsgi_ini_paste(tmp_path, servers):
    port = free_port()
    (tmp_path / "production.ini").write_text(PRODUCTION_INI.format(port=port))
    servers.append(launch(["--ini-paste", "production.ini"], tmp_path, ("127.0.0.1", port), workers=2))
    assert get(f"http://127.0.0.1:{port}/").text.startswith("db_uri=mysql://prod")


# --- uWSGI -------------------------------------------------------------------------


def test_uwsgi_socket_with_protocol_http_and_w(tmp_path, servers):
    """`uwsgi --socket ADDR --protocol=http -w wsgi`: plain HTTP on --socket."""
    (tmp_path / "wsgi.py").write_text(WSGI_PY)
    port = free_port()
    servers.append(launch(["--socket", f"127.0.0.1:{port}", "--protocol=http", "-w", "wsgi"], tmp_path, ("127.0.0.1", port)))
    assert "app=wsgi" in get(f"http://127.0.0.1:{port}/").text


def test_uwsgi_socket_and_w_behind_uwsgi_pass(tmp_path, servers):
    (tmp_path / "wsgi.py").write_text(WSGI_PY)
    port = free_port()
    servers.append(launch(["--socket", f"127.0.0.1:{port}", "-w", "wsgi"], tmp_path, ("127.0.0.1", port)))
    sock = tmp_path / "unused.sock"
    nginx = start_nginx("uwsgi_pass.conf", {"upstream_port": port, "socket_path": sock}, listen=("listen_port", "listen_port_unix"))
    try:
        assert "app=wsgi" in get(nginx.url() + "/").text
    finally:
        nginx.stop()
        remove_dir(nginx.tmp)


APP_INI = """\
[uwsgi]
master = true
processes = 5
socket = 127.0.0.1:{port}
protocol = http
chdir = %d
module = wsgi:application
env = GREETING=from-ini
"""

APP_JSON = """\
{{
    "uwsgi": {{
        "master": true,
        "processes": 5,
        "socket": "127.0.0.1:{port}",
        "protocol": "http",
        "chdir": "%d",
        "module": "wsgi:application",
        "env": ["GREETING=from-json"]
    }}
}}
"""


def worker_pids(master_pid):
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return {int(pid) for pid in children}


@pytest.mark.parametrize("kind", ["ini", "json"])
def test_uwsgi_file_with_five_workers_and_chdir(tmp_path, servers, kind):
    """`uwsgi --ini app.ini` (or `--json`): `chdir = %d` is the file's
    directory, run from elsewhere; exactly five workers answer."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "wsgi.py").write_text(WSGI_PY)
    port = free_port()
    text = (APP_INI if kind == "ini" else APP_JSON).format(port=port)
    config = app_dir / f"app.{kind}"
    config.write_text(text)
    server = launch([f"--{kind}", str(config)], tmp_path, ("127.0.0.1", port), workers=5)
    servers.append(server)
    children = worker_pids(server.proc.pid)
    assert len(children) == 5, children
    seen = set()
    session = requests.Session()
    for _ in range(400):
        text = session.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT, headers={"Connection": "close"}).text
        assert field(text, "greeting") == f"from-{kind}"
        seen.add(int(field(text, "pid")))
        if len(seen) == 5:
            break
    assert seen == children


def test_uwsgi_pythonpath_and_module(tmp_path, servers):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "wsgihandler.py").write_text(WSGI_PY)
    port = free_port()
    servers.append(launch(["--http-socket", f"127.0.0.1:{port}", "--pythonpath", str(lib), "--module", "wsgihandler"], tmp_path, ("127.0.0.1", port)))
    assert "app=wsgi" in get(f"http://127.0.0.1:{port}/").text


def test_uwsgi_module_and_callable(tmp_path, servers):
    (tmp_path / "mod.py").write_text(WSGI_PY.replace("app = application", "named = application\napplication = None"))
    port = free_port()
    servers.append(launch(["--http-socket", f"127.0.0.1:{port}", "--module", "mod", "--callable", "named"], tmp_path, ("127.0.0.1", port)))
    assert "app=wsgi" in get(f"http://127.0.0.1:{port}/").text


# --- gunicorn ------------------------------------------------------------------------


GUNICORN_CONF = """\
import os

bind = ["127.0.0.1:{port}"]
workers = 2
threads = 3
raw_env = ["GREETING=from-conf"]
wsgi_app = "wsgi:application"

def post_fork(server, worker):
    os.environ["FORKED_BY"] = str(worker.pid)
    server.log.info("post_fork hook ran for worker %s", worker.pid)
"""


def test_gunicorn_conf_py_with_post_fork_hook(tmp_path, servers):
    (tmp_path / "wsgi.py").write_text(WSGI_PY)
    port = free_port()
    (tmp_path / "gunicorn.conf.py").write_text(GUNICORN_CONF.format(port=port))
    server = launch(["-c", "gunicorn.conf.py"], tmp_path, ("127.0.0.1", port), workers=2)
    servers.append(server)
    text = get(f"http://127.0.0.1:{port}/").text
    # The hook ran in the worker that answers, before the app loaded.
    assert field(text, "forked_by") == field(text, "pid")
    assert field(text, "greeting") == "from-conf"
    assert re.search(rf"post_fork hook ran for worker {field(text, 'pid')}\b", server.log())
    assert "serving with 3 thread(s)" in server.log()
    assert len(worker_pids(server.proc.pid)) == 2


def test_gunicorn_conf_py_is_read_from_the_working_directory(tmp_path, servers):
    (tmp_path / "wsgi.py").write_text(WSGI_PY)
    port = free_port()
    (tmp_path / "gunicorn.conf.py").write_text(GUNICORN_CONF.format(port=port))
    servers.append(launch([], tmp_path, ("127.0.0.1", port), workers=2))
    assert "app=wsgi" in get(f"http://127.0.0.1:{port}/").text


def test_gunicorn_environment_variables(tmp_path, servers):
    (tmp_path / "wsgi.py").write_text(WSGI_PY)
    port = free_port()
    env = dict(os.environ, WEB_CONCURRENCY="3", GUNICORN_CMD_ARGS=f"--threads 2 --name envtest --bind 127.0.0.1:{port}")
    server = launch(["wsgi:app"], tmp_path, ("127.0.0.1", port), workers=3, env=env)
    servers.append(server)
    assert len(worker_pids(server.proc.pid)) == 3
    assert "serving with 2 thread(s)" in server.log()
    assert "app=wsgi" in get(f"http://127.0.0.1:{port}/").text
    # $PORT means every interface on that port, as gunicorn binds it (shown,
    # not bound: tests listen on loopback only).
    code, out, err = run(["--print-config", "wsgi:app"], tmp_path, env=dict(os.environ, PORT="5999"))
    assert code == 0 and "\nbind = 0.0.0.0:5999  # PORT\n" in out, out


PRECEDENCE = [
    # (in the file, in GUNICORN_CMD_ARGS, on the command line) -> (value, source)
    ("4", None, None, "4", "gunicorn.conf.py:1: workers"),
    ("4", "5", None, "5", "GUNICORN_CMD_ARGS --workers"),
    ("4", "5", "6", "6", "--workers"),
    (None, "5", "6", "6", "--workers"),
    ("4", None, "6", "6", "--workers"),
    (None, None, None, "1", "default"),
]


@pytest.mark.parametrize("in_file, in_env, on_line, value, source", PRECEDENCE)
def test_precedence_file_environment_flag(tmp_path, in_file, in_env, on_line, value, source):
    (tmp_path / "gunicorn.conf.py").write_text(f"workers = {in_file}\n" if in_file else "threads = 2\n")
    env = dict(os.environ)
    env.pop("WEB_CONCURRENCY", None)
    if in_env:
        env["GUNICORN_CMD_ARGS"] = f"--workers {in_env}"
    else:
        env.pop("GUNICORN_CMD_ARGS", None)
    args = ["--print-config", "wsgi:app"] + (["--workers", on_line] if on_line else [])
    code, out, err = run(args, tmp_path, env=env)
    assert code == 0, err
    assert f"\nworkers = {value}  # {source}\n" in out, out


def test_check_config(tmp_path):
    (tmp_path / "wsgi.py").write_text(WSGI_PY)
    code, out, err = run(["--check-config", "wsgi:app"], tmp_path)
    assert code == 0 and "application loads" in out, (out, err)
    code, out, err = run(["--check-config", "wsgi:nothing"], tmp_path)
    assert code == 1, (out, err)
    assert "nothing" in err


def test_reload_restarts_a_worker_when_its_source_changes(tmp_path, servers):
    (tmp_path / "wsgi.py").write_text(WSGI_PY)
    port = free_port()
    server = launch(["--bind", f"127.0.0.1:{port}", "--reload", "wsgi:app"], tmp_path, ("127.0.0.1", port))
    servers.append(server)
    assert "app=wsgi" in get(f"http://127.0.0.1:{port}/").text
    (tmp_path / "wsgi.py").write_text(WSGI_PY.replace("app=wsgi", "app=edited"))
    os.utime(tmp_path / "wsgi.py", (time.time() + 5, time.time() + 5))
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        try:
            text = get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"}).text
        except requests.ConnectionError:
            pass
        if "app=edited" in text:
            break
        time.sleep(0.1)
    assert "app=edited" in text, server.log()
    assert "a source file changed (--reload)" in server.log()


# --- bad input -----------------------------------------------------------------------


def one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_uwsgi_ini_value_names_file_line_and_key(tmp_path):
    (tmp_path / "app.ini").write_text("[uwsgi]\nmaster = true\nprocesses = five\nmodule = wsgi\n")
    code, out, err = run(["--ini", "app.ini"], tmp_path)
    assert code == 1
    assert one_error_line(err) == 'wsgi-server: error: app.ini:3: processes: "five" is not a whole number'


def test_invalid_json_names_line_and_column(tmp_path):
    (tmp_path / "app.json").write_text('{\n  "uwsgi": {\n    "master": true,\n    "processes" 5\n  }\n}\n')
    code, out, err = run(["--json", "app.json"], tmp_path)
    assert code == 1
    assert one_error_line(err) == "wsgi-server: error: app.json:4:17: invalid JSON: expected ':', found '5'"


def test_missing_section_and_missing_file(tmp_path):
    (tmp_path / "app.ini").write_text("[uwsgi]\nmodule = wsgi\n[staging]\nmodule = x\n")
    code, out, err = run(["--ini", "app.ini:production"], tmp_path)
    assert (code, one_error_line(err)) == (1, "wsgi-server: error: app.ini: no [production] section (its sections: uwsgi, staging)")
    code, out, err = run(["--ini", "nothere.ini"], tmp_path)
    assert (code, one_error_line(err)) == (1, "wsgi-server: error: nothere.ini: cannot read: No such file or directory")
    code, out, err = run(["-c", "nothere.py"], tmp_path)
    assert code == 1 and "nothere.py" in one_error_line(err)
    (tmp_path / "dev.ini").write_text("[app:main]\nuse = egg:paste_example\n[server:main]\nuse = egg:Paste#http\n")
    code, out, err = run(["--paste", "dev.ini", "--server-name", "other"], tmp_path)
    assert code == 1 and "server:other" in one_error_line(err), err


def test_unknown_flag_names_the_closest(tmp_path):
    code, out, err = run(["--wokers", "2", "wsgi:app"], tmp_path)
    assert (code, one_error_line(err)) == (1, "wsgi-server: error: --wokers: unknown option (did you mean --workers?)")


def test_unknown_uwsgi_options_in_a_file_warn_once_and_the_server_starts(tmp_path, servers):
    (tmp_path / "wsgi.py").write_text(WSGI_PY)
    port = free_port()
    (tmp_path / "app.ini").write_text(
        f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nmodule = wsgi\nenable-threads = true\n"
        "offload-threads = 2\ncheaper-algo = spare\n"
    )
    server = launch(["--ini", "app.ini"], tmp_path, ("127.0.0.1", port))
    servers.append(server)
    warnings = [line for line in server.log().splitlines() if "[WARNING]" in line and "ignored" in line]
    assert len(warnings) == 1, server.log()
    assert "app.ini:5: offload-threads" in warnings[0] and "app.ini:6: cheaper-algo" in warnings[0]
    assert "app.ini:4: enable-threads" not in warnings[0]


def test_bad_gunicorn_conf_names_file_and_line(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 2\nthreads = int('x')\n")
    code, out, err = run(["wsgi:app"], tmp_path)
    assert code == 1
    assert re.fullmatch(r"wsgi-server: error: gunicorn\.conf\.py:2: ValueError: .*'x'.*", one_error_line(err)), err
    (tmp_path / "gunicorn.conf.py").write_text("workers = 'many'\n")
    code, out, err = run(["wsgi:app"], tmp_path)
    assert (code, one_error_line(err)) == (1, 'wsgi-server: error: gunicorn.conf.py:1: workers: "many" is not a whole number')


def test_worker_class_other_than_threads_is_refused(tmp_path):
    code, out, err = run(["-k", "gevent", "wsgi:app"], tmp_path)
    assert code == 1
    assert one_error_line(err).startswith('wsgi-server: error: -k: "gevent" is not available')


def test_app_that_cannot_be_imported_exits_4(tmp_path):
    port = free_port()
    code, out, err = run(["--http-socket", f"127.0.0.1:{port}", "--module", "no_such_module"], tmp_path)
    assert code == 4, err
    assert "no_such_module" in err


def test_paste_without_pastedeploy_installed(tmp_path):
    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (tmp_path / "dev.ini").write_text("[app:main]\nuse = egg:paste_example\n[server:main]\nuse = egg:Paste#http\nport = 1\n")
    code, out, err = run(["--paste", "dev.ini", "-H", str(venv)], tmp_path)
    assert code == 1
    line = one_error_line(err)
    assert "PasteDeploy" in line and "pip install PasteDeploy" in line, err


def test_port_in_use_and_permission_denied(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = run(["--bind", f"127.0.0.1:{port}", "--rust-app", "hello"], tmp_path)
    assert code == 1
    assert re.search(rf"\[ERROR\] cannot listen: http://127\.0\.0\.1:{port}: Address already in use", err), err
    # A port below 1024 without the capability to bind one (root keeps its
    # uid but loses CAP_NET_BIND_SERVICE).
    command = [str(SERVER_BIN), "--bind", "127.0.0.1:81", "--rust-app", "hello"]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-net_bind_service", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd="/")
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot listen: http://127.0.0.1:81: Permission denied" in result.stderr


# --- the example files the README shows ------------------------------------------------

EXAMPLE_CONFIGS = REPO / "examples" / "config"


@pytest.mark.parametrize("args, expect", [
    (["-c", str(EXAMPLE_CONFIGS / "gunicorn.conf.py")], ["threads = 4  # ", "wsgi_app = hello:application  # "]),
    (["--ini", str(EXAMPLE_CONFIGS / "uwsgi.ini")], ["workers = 4  # ", "socket = 127.0.0.1:3031  # "]),
    (["--json", str(EXAMPLE_CONFIGS / "uwsgi.json")], ["workers = 4  # ", "http_socket = 127.0.0.1:8000  # "]),
    (["--paste", str(EXAMPLE_CONFIGS / "development.ini")], ["bind = 127.0.0.1:6543  # ", "threads = 4  # "]),
    (["--paste", f"{EXAMPLE_CONFIGS / 'development.ini'}#second"], ["bind = 127.0.0.1:6544  # "]),
])
def test_example_config_files_resolve_and_load_their_app(tmp_path, args, expect):
    code, out, err = run([*args, "--print-config"], tmp_path)
    assert code == 0, err
    for needle in expect:
        assert needle in out, out
    code, out, err = run([*args, "--check-config"], tmp_path)
    assert code == 0, err


HOOKS_CONF = """\
import os

bind = "127.0.0.1:{port}"
workers = 1
wsgi_app = "wsgi:app"
LOG = {log!r}


def note(text):
    with open(LOG, "a") as log:
        log.write(text + "\\n")


def on_starting(server):
    note("on_starting master=%d" % server.pid)

def when_ready(server):
    note("when_ready workers=%d" % server.cfg.workers)

def pre_fork(server, worker):
    note("pre_fork age=%d" % worker.age)

def post_fork(server, worker):
    note("post_fork age=%d pid=%d ppid=%d" % (worker.age, worker.pid, worker.ppid))

def post_worker_init(worker):
    note("post_worker_init pid=%d" % worker.pid)

def pre_request(worker, req):
    note("pre_request %s %s" % (req.method, req.path))

def post_request(worker, req, environ, resp):
    note("post_request %s %s" % (req.path, resp.status))

def nworkers_changed(server, new_value, old_value):
    note("nworkers_changed %s->%s" % (old_value, new_value))

def on_reload(server):
    note("on_reload")

def worker_int(worker):
    note("worker_int pid=%d alive=%s" % (worker.pid, worker.alive))

def worker_exit(server, worker):
    note("worker_exit pid=%d" % worker.pid)

def child_exit(server, worker):
    note("child_exit age=%d" % worker.age)

def on_exit(server):
    note("on_exit")
"""


def wait_for_line(path, needle, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in {path}: {path.read_text() if path.exists() else ''}")


def test_gunicorn_server_hooks_run_at_their_moments(tmp_path):
    (tmp_path / "wsgi.py").write_text(WSGI_PY)
    port = free_port()
    notes = tmp_path / "hooks.log"
    (tmp_path / "gunicorn.conf.py").write_text(HOOKS_CONF.format(port=port, log=str(notes)))
    server = launch([], tmp_path, ("127.0.0.1", port))
    try:
        master = server.proc.pid
        text = get(f"http://127.0.0.1:{port}/hooked").text
        pid = int(field(text, "pid"))
        lines = wait_for_line(notes, "post_request /hooked 200 OK")
        assert lines.splitlines()[:6] == [
            f"on_starting master={master}",
            "when_ready workers=1",
            "pre_fork age=1",
            f"post_fork age=1 pid={pid} ppid={master}",
            f"post_worker_init pid={pid}",
            "pre_request GET /hooked",
        ], lines
        os.kill(master, signal.SIGTTIN)
        wait_for_line(notes, "nworkers_changed 1->2")
        os.kill(master, signal.SIGHUP)
        wait_for_line(notes, "on_reload")
        # The first worker leaves once the new generation is ready.
        wait_for_line(notes, f"worker_exit pid={pid}")
        wait_for_line(notes, "child_exit age=1")
        # INT straight to a worker: worker_int, then it leaves gracefully.
        current = int(field(get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"}).text, "pid"))
        os.kill(current, signal.SIGINT)
        wait_for_line(notes, f"worker_int pid={current} alive=False")
        wait_for_line(notes, f"worker_exit pid={current}")
    finally:
        status = server.stop()
    assert status == 0, server.log()
    assert notes.read_text().splitlines()[-1] == "on_exit"
