"""A PEP 3333 conformance app, wrapped in `wsgiref.validate.validator`.

Serve it with `wsgi-server examples/apps/pep3333_app.py`. Every route under
`/` goes through the validator, which raises AssertionError (logged by the
server as a traceback) for anything the server does against the spec; the
end-to-end tests assert no such error reaches the server's log. Routes under
`/raw/` skip the validator on purpose: they misbehave (a str chunk, invalid
headers) in ways the validator would catch before the server could.

Routes (each answers in a form a test can check exactly):

- `GET /environ`: the environ as JSON (str values, plus the `wsgi.*` keys).
- `POST /echo`: the request body, read with `read(8192)` until `b""`.
- `POST /echo-slow`: sleeps 0.5 s, then as `/echo` (for `Expect: 100-continue`).
- `POST /input/read-all`: `read()` with no argument (on the unwrapped
  stream: the validator only allows `read(size)`), as JSON `{"data": ...}`.
- `POST /input/read-n?n=N`: `read(N)` until `b""`; JSON list of the chunks.
- `POST /input/readline`: `readline()` until `b""`; JSON list of lines.
- `POST /input/readline-limit?limit=N`: `readline(N)` until `b""`.
- `POST /input/readlines` and `/input/readlines-hint?hint=N`.
- `POST /input/iter`: `list(wsgi.input)`.
- `POST /input/mixed`: `read(0)`, `read(3)`, `readline()`, `readline(2)`,
  `read(-1)`, then `read(5)` and `readline()` at the end.
  (JSON bodies hold bytes as latin-1 decoded strings.)
- `GET /write`: `write(b"part1,")`, `write(b"part2,")`, returns `[b"part3"]`.
- `GET /write-only`: the whole body through `write()`, returns `[]`.
- `GET /exc-info`: starts a 200, catches an exception and re-starts with
  `exc_info` before any body byte: a 500 page of the app's own.
- `GET /exc-info-late`: writes a body byte, then re-starts with `exc_info`:
  `start_response` must re-raise (`LookupError: late failure`).
- `GET /generator?n=N&token=T[&fail_after=K]`: an iterable of N lines
  (raising after K of them) whose `close()` is recorded under T; `GET /closed?token=T` reports the record.
- `GET /endless?token=T`: 64 KiB chunks for up to ~20 s (for a client that
  disconnects mid-stream; `close()` is recorded with the chunk count).
- `GET /file-wrapper`: this file through `wsgi.file_wrapper` (block 4096).
- `GET /file-wrapper-bytesio`: a BytesIO (no fileno) through `wsgi.file_wrapper`.
- `GET /latin1`: a latin-1 response header `X-Latin1: café ñ ü`, and the
  request's `X-Echo` header echoed as JSON.
- `GET /errors`: writes to `wsgi.errors` (`write`, `writelines`, `flush`).
- `GET /raise?msg=M`: raises `RuntimeError(M)` before `start_response`.
- `GET /raise-in-iter?msg=M`: raises `RuntimeError(M)` from the iterable
  before its first chunk.
- `GET /raw/not-bytes`: the iterable yields a `str` (server must answer 500).
- `GET /raw/invalid-headers`: tries invalid statuses and headers, catches
  the errors `start_response` raises, and reports them as JSON.
- `GET /raw/declared-length?declared=N&actual=M&mode=list|gen`: declares
  `Content-Length: N` and sends M bytes (`0123456789...`) as one list item or
  from a generator.
- `GET /raw/file-wrapper`: this file through `wsgi.file_wrapper`, no
  validator in between (so the server can use sendfile).
"""

import io
import json
import sys
import threading
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

HERE = __file__

# close() records: token -> {"closed": bool, "chunks": int}
_RECORDS = {}
_RECORDS_LOCK = threading.Lock()


def _record(token, **values):
    with _RECORDS_LOCK:
        _RECORDS.setdefault(token, {"closed": False, "chunks": 0}).update(values)


def _query(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _json(start_response, value, status="200 OK", headers=()):
    body = json.dumps(value, sort_keys=True).encode("ascii")
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        + list(headers),
    )
    return [body]


def _text(start_response, text, status="200 OK"):
    body = text.encode("latin-1") if isinstance(text, str) else text
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _l1(data):
    return data.decode("latin-1")


class RecordingIterable:
    """An iterable of chunks whose close() is recorded under a token."""

    def __init__(self, token, chunks, delay=0.0, fail_after=None):
        self.token = token
        self.chunks = chunks
        self.delay = delay
        self.fail_after = fail_after
        _record(token, closed=False, chunks=0)

    def __iter__(self):
        count = 0
        for chunk in self.chunks:
            if count == self.fail_after:
                raise RuntimeError("iterable failed after %d chunks" % count)
            count += 1
            _record(self.token, chunks=count)
            yield chunk
            if self.delay:
                time.sleep(self.delay)

    def close(self):
        _record(self.token, closed=True)


class RaisingIterable:
    def __init__(self, message):
        self.message = message

    def __iter__(self):
        raise RuntimeError(self.message)
        yield b""  # pragma: no cover

    def close(self):
        pass


def validated_app(environ, start_response):
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    query = _query(environ)
    inp = environ["wsgi.input"]

    if path == "/environ":
        report = {}
        for key, value in environ.items():
            if isinstance(value, str):
                report[key] = value
        report["wsgi.version"] = list(environ["wsgi.version"])
        for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
                    "wsgi.input_terminated"):
            report[key] = environ.get(key)
        report["has_file_wrapper"] = callable(environ.get("wsgi.file_wrapper"))
        report["environ_type"] = type(environ).__name__
        return _json(start_response, report)

    if path in ("/echo", "/echo-slow"):
        if path == "/echo-slow":
            time.sleep(0.5)
        parts = []
        total = 0
        for _ in range(100000):
            chunk = inp.read(8192)
            if not chunk:
                break
            total += len(chunk)
            parts.append(chunk)
        body = b"".join(parts)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    if path.startswith("/input/"):
        kind = path[len("/input/"):]
        bounded = range(100000)
        if kind == "read-all":
            raw = getattr(inp, "input", inp)  # the validator allows read(size) only
            return _json(start_response, {"data": _l1(raw.read())})
        if kind == "read-n":
            n = int(query["n"])
            chunks = []
            for _ in bounded:
                chunk = inp.read(n)
                if not chunk:
                    break
                chunks.append(_l1(chunk))
            return _json(start_response, {"chunks": chunks})
        if kind in ("readline", "readline-limit"):
            limit = int(query["limit"]) if kind == "readline-limit" else None
            lines = []
            for _ in bounded:
                line = inp.readline(limit) if limit is not None else inp.readline()
                if not line:
                    break
                lines.append(_l1(line))
            return _json(start_response, {"lines": lines})
        if kind == "readlines":
            return _json(start_response, {"lines": [_l1(x) for x in inp.readlines()]})
        if kind == "readlines-hint":
            first = inp.readlines(int(query["hint"]))
            rest = inp.readlines()
            return _json(start_response, {"first": [_l1(x) for x in first],
                                          "rest": [_l1(x) for x in rest]})
        if kind == "iter":
            return _json(start_response, {"lines": [_l1(x) for x in inp]})
        if kind == "mixed":
            steps = [
                inp.read(0),
                inp.read(3),
                inp.readline(),
                inp.readline(2),
                inp.read(-1),
                inp.read(5),
                inp.readline(),
            ]
            return _json(start_response, {"steps": [_l1(x) for x in steps]})

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"part1,")
        write(b"part2,")
        return [b"part3"]

    if path == "/write-only":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        for i in range(5):
            write(b"w%d;" % i)
        return []

    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("caught by the app")
        except ValueError:
            body = b"the app's own error page: caught by the app"
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain"), ("X-App-Error", "handled"),
                 ("Content-Length", str(len(body)))],
                sys.exc_info(),
            )
            return [body]

    if path == "/exc-info-late":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial body;")
        try:
            raise LookupError("late failure")
        except LookupError:
            # The head is sent: this must re-raise LookupError.
            start_response("500 Internal Server Error",
                           [("Content-Type", "text/plain")], sys.exc_info())
        return [b"must not be reached"]

    if path == "/generator":
        n = int(query.get("n", "3"))
        token = query.get("token", "generator")
        start_response("200 OK", [("Content-Type", "text/plain")])
        fail_after = int(query["fail_after"]) if "fail_after" in query else None
        return RecordingIterable(token, (b"line %d\n" % i for i in range(n)),
                                 fail_after=fail_after)

    if path == "/endless":
        token = query["token"]
        block = b"e" * 65536
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return RecordingIterable(token, (block for _ in range(4000)), delay=0.005)

    if path == "/closed":
        with _RECORDS_LOCK:
            record = dict(_RECORDS.get(query["token"], {}))
        return _json(start_response, record)

    if path == "/file-wrapper":
        start_response("200 OK", [("Content-Type", "text/x-python")])
        return environ["wsgi.file_wrapper"](open(HERE, "rb"), 4096)

    if path == "/file-wrapper-bytesio":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"0123456789" * 1000), 1000)

    if path == "/latin1":
        echo = environ.get("HTTP_X_ECHO", "")
        return _json(start_response, {"x-echo": echo, "codepoints": [ord(c) for c in echo]},
                     headers=[("X-Latin1", "caf\u00e9 \u00f1 \u00fc")])

    if path == "/errors":
        errors = environ["wsgi.errors"]
        errors.write("pep3333-errors: write\n")
        errors.writelines(["pep3333-errors: writelines 1\n", "pep3333-errors: writelines 2\n"])
        errors.flush()
        return _text(start_response, "logged")

    if path == "/raise":
        raise RuntimeError(query.get("msg", "deliberate failure"))

    if path == "/raise-in-iter":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return RaisingIterable(query.get("msg", "deliberate failure in iterable"))

    if path == "/head":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Method", method)])
        return (chunk for chunk in [b"body that HEAD ", b"must not send"])

    return _text(start_response, "not found: " + path, "404 Not Found")


def raw_app(environ, start_response):
    path = environ["PATH_INFO"]

    if path == "/raw/not-bytes":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str, not bytes"]

    if path == "/raw/invalid-headers":
        cases = {
            "newline-in-value": ("200 OK", [("X-Bad", "a\r\nInjected: yes")]),
            "colon-in-name": ("200 OK", [("X-Bad:Name", "v")]),
            "space-in-name": ("200 OK", [("X Bad", "v")]),
            "non-latin1-value": ("200 OK", [("X-Bad", "snow \u2603")]),
            "bad-status": ("abc", [("Content-Type", "text/plain")]),
            "int-value": ("200 OK", [("X-Bad", 1)]),
        }
        report = {}
        for name, (status, headers) in cases.items():
            try:
                start_response(status, headers)
            except ValueError:
                report[name] = "ValueError"
            except TypeError:
                report[name] = "TypeError"
            except Exception as error:  # noqa: BLE001 - reported, checked by the test
                report[name] = "other: %s: %s" % (type(error).__name__, error)
            else:
                report[name] = "accepted"
        try:
            raise RuntimeError("replace whatever head a bad case left behind")
        except RuntimeError:
            body = json.dumps(report, sort_keys=True).encode("ascii")
            start_response("200 OK", [("Content-Type", "application/json")], sys.exc_info())
            return [body]

    if path == "/raw/declared-length":
        query = _query(environ)
        body = (b"0123456789" * 1000)[: int(query["actual"])]
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", query["declared"])])
        if query.get("mode") == "gen":
            return (body[i:i + 3] for i in range(0, len(body), 3))
        return [body]

    if path == "/raw/file-wrapper":
        start_response("200 OK", [("Content-Type", "text/x-python")])
        return environ["wsgi.file_wrapper"](open(HERE, "rb"))

    return _text(start_response, "not found: " + path, "404 Not Found")


_validated = validator(validated_app)


def application(environ, start_response):
    if environ.get("PATH_INFO", "").startswith("/raw/"):
        return raw_app(environ, start_response)
    return _validated(environ, start_response)
