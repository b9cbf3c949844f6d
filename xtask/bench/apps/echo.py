"""(Same as the shared bench harness's app.) WSGI app for body-heavy cases.

GET  /big   -> 1 MiB response body, yielded in 64 KiB chunks (16 chunks),
               with Content-Length so no chunked encoding is needed.
any other  -> reads the whole wsgi.input (honouring CONTENT_LENGTH, in
               64 KiB reads) and returns the number of bytes read as text.
"""

CHUNK = 64 * 1024
BIG_CHUNKS = 16  # 16 * 64 KiB = 1 MiB
BIG_LEN = CHUNK * BIG_CHUNKS
_block = b"x" * CHUNK


def _big_body():
    for _ in range(BIG_CHUNKS):
        yield _block


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/big":
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(BIG_LEN))],
        )
        return _big_body()

    stream = environ["wsgi.input"]
    try:
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        remaining = 0
    total = 0
    while remaining > 0:
        data = stream.read(min(CHUNK, remaining))
        if not data:
            break
        total += len(data)
        remaining -= len(data)
    body = str(total).encode("ascii")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = application
