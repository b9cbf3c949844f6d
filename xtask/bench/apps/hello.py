"""(Same as the shared bench harness's app.) Minimal WSGI app: 13-byte plain-text body with an explicit Content-Length.

Every request path returns the same response.  This is the classic
"hello world" micro-benchmark: it measures the server's per-request cost
(parse, call into Python, build environ, write response), not the app's.
"""

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


app = application
