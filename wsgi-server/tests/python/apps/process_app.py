"""A plain WSGI app for the process-model tests (test_process.py).

Routes:
- `/`             fast; returns this worker's pid (text/plain)
- `/sleep?s=N`    sleeps N seconds in `process_app_sleeper` (a name the
                  timeout test looks for in the Python stack dump)
- `/leak?mb=N`    appends N MiB of touched memory to a module-level list,
                  so the worker's resident memory grows
- `/version`      the `VERSION` constant of the module `process_version`
                  (a file the HUP test writes in a directory on
                  --pythonpath and rewrites before the reload), or `none`
"""

import os
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
    if path == "/version":
        return _text(start_response, VERSION)
    return _text(start_response, "not found", "404 Not Found")
