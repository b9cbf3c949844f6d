"""A Flask application exercising what real apps do through the server.

Serve it with `wsgi-server examples/apps/flask_app.py` (or
`--pythonpath examples/apps flask_app:app`). Routes:

- `GET /api/items`, `POST /api/items` (JSON body `{"name": ...}` -> 201).
- `POST /form`: the form fields as JSON.
- `POST /upload`: `request.files["file"]` -> name, size and sha256.
- `GET /cookies/set?name=value`: sets the given cookies; `GET /cookies`
  returns the request's cookies.
- `GET /redirect`: 302 to `/api/items`.
- `GET /stream?n=N&prefix=P&delay=S`: a streamed response (generator with
  `stream_with_context`, reading `request.args` while streaming; sleeps S
  seconds after each chunk).
- `GET /file`: this file with `send_file` (through `wsgi.file_wrapper`).
- `GET /url_for`: `url_for` results, relative and external.
- `GET /error`: raises RuntimeError (Flask's 500 page; the traceback goes to
  `wsgi.errors`, i.e. the server's log).
- `POST /data`: `request.data` (also for chunked uploads) -> size and sha256.
"""

import hashlib
import os
import threading
import time

from flask import (
    Flask,
    Response,
    jsonify,
    redirect,
    request,
    send_file,
    stream_with_context,
    url_for,
)

app = Flask(__name__)
application = app

_items = [{"id": 1, "name": "first"}]
_items_lock = threading.Lock()


@app.get("/api/items")
def list_items():
    with _items_lock:
        return jsonify(items=list(_items))


@app.post("/api/items")
def create_item():
    payload = request.get_json(force=False, silent=True)
    if not isinstance(payload, dict) or "name" not in payload:
        return jsonify(error="expected a JSON object with a name"), 400
    with _items_lock:
        item = {"id": len(_items) + 1, "name": payload["name"]}
        _items.append(item)
    return jsonify(item), 201, {"Location": url_for("list_items")}


@app.post("/form")
def form():
    return jsonify(fields={key: request.form.getlist(key) for key in request.form})


@app.post("/upload")
def upload():
    uploaded = request.files["file"]
    digest = hashlib.sha256()
    size = 0
    while True:
        block = uploaded.stream.read(65536)
        if not block:
            break
        size += len(block)
        digest.update(block)
    return jsonify(
        filename=uploaded.filename,
        size=size,
        sha256=digest.hexdigest(),
        fields={key: request.form[key] for key in request.form},
    )


@app.get("/cookies/set")
def set_cookies():
    response = jsonify(set=sorted(request.args))
    for name, value in request.args.items():
        response.set_cookie(name, value, httponly=True)
    return response


@app.get("/cookies")
def get_cookies():
    return jsonify(cookies=dict(request.cookies))


@app.get("/redirect")
def go_elsewhere():
    return redirect(url_for("list_items"))


@app.get("/stream")
def stream():
    count = int(request.args.get("n", "5"))
    delay = float(request.args.get("delay", "0"))

    @stream_with_context
    def generate():
        for index in range(count):
            # request is still usable while the response streams.
            yield f"{request.args.get('prefix', 'chunk')} {index}\n"
            if delay:
                time.sleep(delay)

    return Response(generate(), mimetype="text/plain")


@app.get("/file")
def file():
    return send_file(os.path.abspath(__file__), mimetype="text/x-python")


@app.get("/url_for")
def show_url_for():
    return jsonify(
        relative=url_for("list_items"),
        external=url_for("list_items", _external=True),
        with_args=url_for("show_url_for", q="a b"),
        script_root=request.script_root,
        url=request.url,
    )


@app.get("/error")
def error():
    raise RuntimeError("flask route failed on purpose")


@app.post("/data")
def data():
    body = request.get_data(cache=False)
    return jsonify(
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        transfer_encoding=request.headers.get("Transfer-Encoding"),
        content_length=request.content_length,
    )
