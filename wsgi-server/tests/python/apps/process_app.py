"""A plain WSGI app for the process-model tests (test_process.py).

Routes:
- `/`             fast; returns this worker's pid (text/plain)
- `/sleep?s=N`    sleeps N seconds in `process_app_sleeper` (a name the
                  timeout test looks for in the Python stack dump)
- `/leak?mb=N`    appends N MiB of touched memory to a module-level list,
                  so the worker's resident memory grows
- `/spin`         loops in Python forever (`process_app_spinner`)
- `/sleep-long`   one `time.sleep(3600)` (`process_app_long_sleep`)
- `/block`        `os.read` on a pipe nobody writes (`process_app_blocked_read`)
                  (these three for the --timeout tests: each writes
                  `finally ran: PATH` and its iterable's close() writes
                  `close ran: PATH` to wsgi.errors when they end)
- `/version`      the `VERSION` constant of the module `process_version`
                  (a file the HUP test writes in a directory on
                  --pythonpath and rewrites before the reload), or `none`
- `/hold?DIR`     held by the test: drops a file `entered-PID-THREAD` in DIR,
                  waits until DIR/release exists (at most 30 s), answers
                  `released in PID` (or `not released in PID`)
"""

import os
import threading
import time
from urllib.parse import parse_qs

try:
    from process_version import VERSION
except ImportError:
    VERSION = "none"

LEAKED = []


def process_app_sleeper(seconds):
    """Sleeps in small steps (so the stack dump finds us here)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def process_app_spinner():
    while True:
        pass


def process_app_long_sleep():
    time.sleep(3600)


def process_app_blocked_read():
    read_end, _write_end = os.pipe()
    os.read(read_end, 1)


STUCK = {"/spin": process_app_spinner, "/sleep-long": process_app_long_sleep,
         "/block": process_app_blocked_read}


class _Closing:
    """A response iterable whose close() leaves a mark in the log."""

    def __init__(self, errors, path, run):
        self.errors, self.path, self.run = errors, path, run

    def __iter__(self):
        try:
            self.run()
        finally:
            self.errors.write("finally ran: %s\n" % self.path)
            self.errors.flush()
        yield b"unreachable"

    def close(self):
        self.errors.write("close ran: %s\n" % self.path)
        self.errors.flush()


def _text(start_response, text, status="200 OK"):
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/":
        return _text(start_response, str(os.getpid()))
    if path == "/sleep":
        seconds = float(query.get("s", ["1"])[0])
        process_app_sleeper(seconds)
        return _text(start_response, "slept %s in %d" % (seconds, os.getpid()))
    if path == "/leak":
        mb = int(query.get("mb", ["10"])[0])
        # b"\xa5" * n writes every byte, so the pages are resident (a
        # zeroed bytearray could stay untouched copy-on-write zero pages).
        LEAKED.append(b"\xa5" * (mb << 20))
        return _text(start_response, "leaked %d MiB in %d" % (mb, os.getpid()))
    if path in STUCK:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _Closing(environ["wsgi.errors"], path, STUCK[path])
    if path == "/version":
        return _text(start_response, VERSION)
    if path == "/hold":
        marker = environ["QUERY_STRING"]
        open(os.path.join(marker, "entered-%d-%d" % (os.getpid(), threading.get_ident())),
             "w").close()
        release = os.path.join(marker, "release")
        deadline = time.monotonic() + 30  # a failure bound: the test releases
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
        released = "released" if os.path.exists(release) else "not released"
        return _text(start_response, "%s in %d" % (released, os.getpid()))
    return _text(start_response, "not found", "404 Not Found")
