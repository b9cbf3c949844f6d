"""Large bodies for the memory tests: `POST /upload?delay=S` sleeps S
seconds, then reads the body in 64 KiB pieces and answers its size and
sha256; `GET /download?size=N` streams N bytes of a 64 KiB pattern
(`bytes(range(256)) * 256`) from a generator."""

import hashlib
import json
import time
from urllib.parse import parse_qs

BLOCK = bytes(range(256)) * 256


def application(environ, start_response):
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if environ["PATH_INFO"] == "/upload":
        time.sleep(float(query.get("delay", "0")))
        stream = environ["wsgi.input"]
        digest = hashlib.sha256()
        size = 0
        for _ in range(10_000_000):
            piece = stream.read(65536)
            if not piece:
                break
            size += len(piece)
            digest.update(piece)
        body = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if environ["PATH_INFO"] == "/download":
        size = int(query["size"])

        def generate():
            remaining = size
            while remaining > 0:
                piece = BLOCK if remaining >= len(BLOCK) else BLOCK[:remaining]
                remaining -= len(piece)
                yield piece

        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return generate()
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
