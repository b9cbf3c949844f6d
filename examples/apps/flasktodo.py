"""flasktodo: a small Flask to-do app, the application behind the nginx
examples in `examples/nginx/` and their tests
(`wsgi-server/tests/python/test_nginx.py`).

Serve it with `wsgi-server --chdir examples/apps flasktodo:app` (add
`--socket ...` for nginx's uwsgi_pass). Routes:

- `GET /`: the to-do list as JSON; `POST /todos` (form field `title`) adds one
  (201).
- `GET|POST /echo[/<rest>]`: what the app saw of the request (method, path,
  query, headers nginx sets, remote address, scheme, body length and sha256).
- `GET /foobar`: `request.script_root`, `request.path`, `url_for('foobar')`,
  the scheme, the remote address and `X-Forwarded-For`: what a mount under a
  prefix (SCRIPT_NAME) changes.
- `POST /upload`: the body's length and sha256, read with
  `request.get_data()` or, with `?mode=stream`, from `request.stream` in
  64 KiB reads; also `CONTENT_LENGTH` as the server passed it (absent for a
  chunked body).
- `GET /stream/<n_mib>`: a generator yielding `n_mib` MiB in 64 KiB chunks,
  chunk `i` being `stream_chunk(i)` (deterministic, no Content-Length).
- `GET /work/<n>`: sleeps `?ms=` milliseconds (default 10), then returns
  `work <n> done`; the `X-Instance` header is `$FLASKTODO_INSTANCE`.
- `GET /requests`: every path this process has served so far (SCRIPT_NAME +
  PATH_INFO), oldest first, to check what nginx kept for itself.
- `/static/<file>`: Flask's static files from `flasktodo_static/`; behind nginx
  (`examples/nginx/subpath.conf`) nginx serves them and the app never sees
  them.
"""

import hashlib
import os
import threading
import time

from flask import Flask, Response, jsonify, request, url_for

app = Flask(__name__, static_folder="flasktodo_static", static_url_path="/static")
application = app

CHUNK = 64 * 1024
_PATTERN = bytes(range(256)) * 257


def stream_chunk(i):
    """Chunk `i` of `/stream/<n>`: 64 KiB of 0..255 repeated, rotated by i."""
    start = i % 256
    return _PATTERN[start : start + CHUNK]


_lock = threading.Lock()
_todos = [{"id": 1, "title": "serve flasktodo behind nginx"}]
_seen = []


@app.before_request
def _count():
    with _lock:
        _seen.append(request.environ.get("SCRIPT_NAME", "") + request.environ.get("PATH_INFO", ""))


@app.get("/")
def index():
    with _lock:
        return jsonify(app="flasktodo", todos=list(_todos))


@app.post("/todos")
def add_todo():
    title = request.form.get("title", "").strip()
    if not title:
        return jsonify(error="title is required"), 400
    with _lock:
        todo = {"id": len(_todos) + 1, "title": title}
        _todos.append(todo)
    return jsonify(todo), 201


@app.route("/echo", methods=["GET", "POST"])
@app.route("/echo/<path:rest>", methods=["GET", "POST"])
def echo(rest=None):
    body = request.get_data()
    env = request.environ
    return jsonify(
        method=request.method,
        path=request.path,
        rest=rest,
        script_root=request.script_root,
        query_string=env.get("QUERY_STRING", ""),
        args=request.args.to_dict(flat=False),
        form=request.form.to_dict(flat=False),
        host=request.headers.get("Host"),
        x_real_ip=request.headers.get("X-Real-IP"),
        x_forwarded_for=request.headers.get("X-Forwarded-For"),
        x_forwarded_proto=request.headers.get("X-Forwarded-Proto"),
        x_custom=request.headers.get("X-Custom"),
        user_agent=request.headers.get("User-Agent"),
        content_type=env.get("CONTENT_TYPE"),
        remote_addr=request.remote_addr,
        scheme=request.scheme,
        url_scheme=env.get("wsgi.url_scheme"),
        length=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
    )


@app.get("/foobar")
def foobar():
    return jsonify(
        script_root=request.script_root,
        path=request.path,
        url_for=url_for("foobar"),
        scheme=request.scheme,
        remote_addr=request.remote_addr,
        x_forwarded_for=request.headers.get("X-Forwarded-For"),
    )


@app.post("/upload")
def upload():
    digest = hashlib.sha256()
    length = 0
    if request.args.get("mode") == "stream":
        while True:
            data = request.stream.read(CHUNK)
            if not data:
                break
            digest.update(data)
            length += len(data)
    else:
        data = request.get_data()
        digest.update(data)
        length = len(data)
    return jsonify(
        length=length,
        sha256=digest.hexdigest(),
        content_length=request.environ.get("CONTENT_LENGTH") or None,
    )


@app.get("/stream/<int:n_mib>")
def stream(n_mib):
    def generate():
        for i in range(n_mib * 16):
            yield stream_chunk(i)

    return Response(generate(), mimetype="application/octet-stream")


@app.get("/work/<int:n>")
def work(n):
    time.sleep(request.args.get("ms", 10, type=int) / 1000)
    response = Response(f"work {n} done", mimetype="text/plain")
    response.headers["X-Instance"] = os.environ.get("FLASKTODO_INSTANCE", "")
    return response


@app.get("/requests")
def requests_seen():
    with _lock:
        return jsonify(paths=list(_seen))
