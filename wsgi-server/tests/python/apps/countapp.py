"""A WSGI app that counts its calls, for the static-file tests: every
response names the path it served; `/__count` answers how many calls this
process had before it and its pid, so a test can prove that static answers
never entered the application (and never counted toward --max-requests)."""

import json
import os
import threading

_lock = threading.Lock()
_calls = 0


def application(environ, start_response):
    global _calls
    with _lock:
        before = _calls
        _calls += 1
    if environ["PATH_INFO"] == "/__count":
        body = json.dumps({"calls": before, "pid": os.getpid()}).encode()
        content_type = "application/json"
    else:
        body = ("APP " + environ["REQUEST_METHOD"] + " " + environ["PATH_INFO"]).encode("latin-1")
        content_type = "text/plain"
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
