"""Responses of every shape, for a keep-alive connection that an
application thread holds between requests (test_isolation.py): some the
thread writes itself, some only the I/O thread can (streamed, large, an
error, a file)."""

import os
import time

BIG = b"b" * (1024 * 1024)


class SlowClose:
    """A whole body whose close() takes two seconds: work an application
    does "after the response"."""

    def __iter__(self):
        return iter([b"hello"])

    def close(self):
        time.sleep(2)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        body = b"hello"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one,", b"two,", b"three"])
    if path == "/big":
        start_response("200 OK", [("Content-Length", str(len(BIG)))])
        return [BIG]
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/write":
        write = start_response("200 OK", [("Content-Length", "10")])
        write(b"written,")
        return [b"ok"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/file":
        handle = open(os.path.abspath(__file__), "rb")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](handle)
    if path == "/slow-close":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return SlowClose()
    if path == "/error":
        raise RuntimeError("lendapp error 5e1f")
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
