"""Runs nginx for the tests in test_nginx.py: fills in a template from
`examples/nginx/` (an http-level file with `{placeholder}`s), wraps it in a
small nginx.conf of its own (pid file, logs and temporary directories in a
private directory, `daemon off`), starts `nginx -p DIR -c DIR/nginx.conf`
as a child process and stops it with SIGQUIT (graceful), bounded.

When the tests run as root, nginx runs its workers as `nobody` (its default),
as a packaged nginx runs them as `www-data`: so the private directory is
world-readable and the server's unix sockets need `--chmod-socket 666`.
"""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, free_port

EXAMPLES = REPO / "examples" / "nginx"
STATIC_ROOT = REPO / "examples" / "apps" / "flasktodo_static"
SYSTEM_CONF_DIR = Path("/etc/nginx")

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

PLACEHOLDER = re.compile(r"\{([a-z_0-9]+)\}")

WRAPPER = """\
# Written by nginx_support.py: a private nginx around {conf_name}.
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
daemon off;
worker_processes 2;

events {{
    worker_connections 1024;
}}

http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body_temp;
    proxy_temp_path {tmp}/proxy_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
    include mime.types;
    default_type application/octet-stream;

    include {conf_name};
}}
"""


def nginx_binary():
    """The nginx executable, or skip (fail under CI=true, where .ci/run
    installs it)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        message = "nginx is not installed (apt-get install nginx-light)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def fill(template_text, values):
    """Replaces each `{name}` with `values[name]`; every placeholder must be
    given (nginx's own braces never hold a bare identifier)."""

    def one(match):
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for placeholder {{{name}}}")
        return str(values[name])

    return PLACEHOLDER.sub(one, template_text)


def _world_readable(path):
    """True if `other` may read `path` and traverse every directory above it."""
    path = Path(path).resolve()
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        needed = stat.S_IXOTH | (stat.S_IROTH if parent == path else 0)
        if mode & needed != needed:
            return False
    return True


def private_dir(prefix="wsgi-nginx-"):
    """A fresh directory nginx workers running as another user can traverse
    (pytest's tmp_path is mode 0700 under /tmp/pytest-of-USER)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def static_root(tmp):
    """examples/apps/flasktodo_static, or a copy of it in `tmp` when the
    checkout is not readable by the nginx workers' user."""
    if os.geteuid() != 0 or _world_readable(STATIC_ROOT):
        return STATIC_ROOT
    copy = tmp / "flasktodo_static"
    shutil.copytree(STATIC_ROOT, copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy


def port_open(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Nginx:
    """A running nginx with one example config."""

    def __init__(self, tmp, conf_name, ports):
        self.tmp = tmp
        self.conf_name = conf_name
        self.ports = ports
        self.proc = None

    def url(self, name="listen_port"):
        return f"http://127.0.0.1:{self.ports[name]}"

    def error_log(self):
        path = self.tmp / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self):
        path = self.tmp / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def diagnostics(self):
        return f"nginx config {self.tmp / self.conf_name}; error.log tail:\n{self.error_log()[-3000:]}"

    def start(self):
        command = [nginx_binary(), "-p", str(self.tmp), "-c", str(self.tmp / "nginx.conf"), "-e", str(self.tmp / "error.log")]
        output = open(self.tmp / "nginx.out", "wb")
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True
        )
        output.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = (self.tmp / "nginx.out").read_text(errors="replace")
                raise AssertionError(f"nginx exited with {self.proc.returncode}: {out}\n{self.diagnostics()}")
            if all(port_open(port) for port in self.ports.values()):
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"nginx not listening on {self.ports} within {READY_TIMEOUT}s\n{self.diagnostics()}")

    def stop(self):
        """SIGQUIT (graceful shutdown), then SIGKILL to its process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)


def start_nginx(conf_name, values, listen=("listen_port",)):
    """Writes examples/nginx/`conf_name` filled with `values`, plus a free
    port for each placeholder named in `listen` and `tmp`, into a private
    directory and starts nginx there. Returns the Nginx (its `ports` map
    each `listen` name to its port), retrying with other ports if one was
    taken meanwhile."""
    last = None
    for _attempt in range(3):
        tmp = private_dir()
        ports = {name: free_port() for name in listen}
        filled = dict(values, tmp=tmp, **ports)
        text = fill((EXAMPLES / conf_name).read_text(), filled)
        (tmp / conf_name).write_text(text)
        (tmp / "nginx.conf").write_text(WRAPPER.format(conf_name=conf_name, tmp=tmp))
        # The examples say `include uwsgi_params;` as users write it: relative
        # to the configuration directory, here `tmp`.
        for name in ("uwsgi_params", "mime.types"):
            shutil.copy(SYSTEM_CONF_DIR / name, tmp / name)
        nginx = Nginx(tmp, conf_name, ports)
        try:
            return nginx.start()
        except AssertionError as error:
            last = error
            if "Address already in use" not in nginx.error_log():
                raise
    raise last


def remove_dir(path):
    shutil.rmtree(path, ignore_errors=True)
