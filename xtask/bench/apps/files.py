"""WSGI app for the `file` scenario: a 1 MiB file sent through `wsgi.file_wrapper`.

At import it writes a 1 MiB file (`x` bytes) into a fresh temporary directory
(removed at exit). Every request opens it and returns
`environ["wsgi.file_wrapper"](file, 64 KiB)` with an explicit Content-Length,
so a server with a sendfile fast path can use it; servers without one iterate
the wrapper in 64 KiB blocks. Falls back to plain iteration when the server
offers no `wsgi.file_wrapper`.
"""

import atexit
import os
import shutil
import tempfile

SIZE = 1 << 20
BLOCK = 64 * 1024

_dir = tempfile.mkdtemp(prefix="wsgi-bench-files-")
atexit.register(shutil.rmtree, _dir, True)
PATH = os.path.join(_dir, "big.bin")
with open(PATH, "wb") as _f:
    _f.write(b"x" * SIZE)
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))]


def _iter_file(f):
    try:
        while True:
            block = f.read(BLOCK)
            if not block:
                break
            yield block
    finally:
        f.close()


def application(environ, start_response):
    f = open(PATH, "rb")
    start_response("200 OK", HEADERS)
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is None:
        return _iter_file(f)
    return wrapper(f, BLOCK)


app = application
