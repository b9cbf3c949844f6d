"""A WSGI app that reports the interpreter it runs in (sys.prefix,
sys.executable, a child process started with sys.executable, os.environ)
and the request environ, for the command-line tests; `factory(...)`
returns an app reporting the factory's arguments.

`/hold?DIR` is held by the test: it drops a file `entered-*` in DIR, waits
until DIR/release exists (at most 30 s), and answers whether it was
released and the most requests ever inside `/hold` at once. `/hold-read?DIR`
is held the same way before it first reads `wsgi.input`, then answers the
body it read."""

import json
import os
import subprocess
import sys
import threading
import time

_local = threading.local()
_held_lock = threading.Lock()
_held = {"inside": 0, "most": 0}

CONSTANT = 42


def helper():
    return "helper"


def _json(start_response, value):
    body = json.dumps(value, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _wait_for_release(marker):
    """Drops `entered-THREAD` in the directory `marker`, waits until
    `marker`/release exists; whether it does (30 s at most)."""
    open(os.path.join(marker, "entered-%d" % threading.get_ident()), "w").close()
    release = os.path.join(marker, "release")
    deadline = time.monotonic() + 30  # a failure bound: the test releases
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.path.exists(release)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or "1"))
        return _json(start_response, {"slept": True})
    if path == "/hold":
        marker = environ["QUERY_STRING"]
        with _held_lock:
            _held["inside"] += 1
            _held["most"] = max(_held["most"], _held["inside"])
        released = _wait_for_release(marker)
        with _held_lock:
            _held["inside"] -= 1
            most = _held["most"]
        return _json(start_response, {"released": released, "most_inside": most})
    if path == "/hold-read":
        _wait_for_release(environ["QUERY_STRING"])
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/tlocal":
        _local.count = getattr(_local, "count", 0) + 1
        return _json(start_response, {"count": _local.count,
                                      "thread": threading.get_ident(),
                                      "multithread": environ["wsgi.multithread"]})
    if path == "/interpreter":
        child = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True,
                               timeout=20, text=True)
        child_prefix = subprocess.run(
            [sys.executable, "-c", "import sys; print(sys.prefix)"], capture_output=True,
            timeout=20, text=True)
        try:
            import flask
            flask_file = flask.__file__
        except ImportError as error:
            flask_file = "ImportError: %s" % error
        return _json(start_response, {
            "prefix": sys.prefix,
            "base_prefix": sys.base_prefix,
            "executable": sys.executable,
            "version": sys.version_info[:3],
            "child_stdout": child.stdout,
            "child_returncode": child.returncode,
            "child_stderr": child.stderr[-2000:],
            "child_prefix": child_prefix.stdout.strip(),
            "flask_file": flask_file,
            "cwd": os.getcwd(),
        })
    if path == "/environ":
        return _json(start_response, {
            "environ_has_HTTP_FOO": "HTTP_FOO" in environ,
            "environ_HTTP_FOO": environ.get("HTTP_FOO"),
            "os_environ_HTTP_FOO": os.environ.get("HTTP_FOO"),
            "environ_keys_from_os": sorted(k for k in os.environ if k in environ),
        })
    return _json(start_response, {"app": "reportapp", "path": path, "cwd": os.getcwd(),
                                  "module_file": __file__})


def failing_factory():
    raise ValueError("factory refused 2d9a")


def factory(*args, **kwargs):
    def app(environ, start_response):
        return _json(start_response, {"args": list(args), "kwargs": kwargs})
    return app
