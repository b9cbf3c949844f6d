"""Routes for the body-buffering tests (test_body_buffering.py):

- `/len`: reads the whole body, answers its length;
- `/first`: reads one byte of the body and answers it at once, before the
  rest is read (streaming: the client has not sent the rest yet);
- `/spool`: reads the body and answers its length and the descriptors of
  this process that point to deleted files (a spooled body's file has no
  name from the start);
- `/digest?HOW`: reads the body as HOW says (`read`: `read()`;
  `chunks-N`: `read(N)` until `b""`; `lines`: iteration; `readline-N`:
  `readline(N)` until `b""`; `part-N`: one `read(N)`, the rest left unread)
  and answers the length and SHA-256 of what it read, and what a `read()`
  after that gave;
- anything else: `ok`, without reading the body.
"""

import hashlib
import json
import os


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/len":
        body = environ["wsgi.input"].read()
        payload = str(len(body)).encode()
    elif path == "/spool":
        body = environ["wsgi.input"].read(1)  # the file is open now
        deleted = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.endswith("(deleted)"):
                deleted.append(target)
        body += environ["wsgi.input"].read()
        payload = json.dumps({"length": len(body), "deleted": deleted}).encode()
    elif path == "/digest":
        stream = environ["wsgi.input"]
        how = environ["QUERY_STRING"]
        pieces = []
        if how == "read":
            pieces.append(stream.read())
        elif how.startswith("chunks-"):
            while piece := stream.read(int(how[7:])):
                pieces.append(piece)
        elif how == "lines":
            pieces.extend(stream)
        elif how.startswith("readline-"):
            while piece := stream.readline(int(how[9:])):
                pieces.append(piece)
        elif how.startswith("part-"):
            pieces.append(stream.read(int(how[5:])))
        assert all(type(piece) is bytes for piece in pieces)
        body = b"".join(pieces)
        after = b"" if how.startswith("part-") else stream.read()
        payload = json.dumps(
            {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "after": len(after)}
        ).encode()
    elif path == "/first":
        payload = environ["wsgi.input"].read(1)
    else:
        payload = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))])
    return [payload]
