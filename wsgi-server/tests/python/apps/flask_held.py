"""The Flask example (examples/apps/flask_app.py, which must be on the
path too) with one route more, for test_flask.py:

- `GET /stream-held?dir=DIR&n=N`: a streamed response (a generator with
  `stream_with_context`, as the example's `/stream`) that yields `held 0`,
  then waits until DIR/release exists (at most 30 s; the test creates it
  once it has received that first chunk), then yields `held 1` .. `held N-1`.
"""

import os
import time

from flask import Response, request, stream_with_context

from flask_app import app

application = app


@app.get("/stream-held")
def stream_held():
    marker = request.args["dir"]
    count = int(request.args.get("n", "3"))

    @stream_with_context
    def generate():
        yield "held 0\n"
        release = os.path.join(marker, "release")
        deadline = time.monotonic() + 30  # a failure bound: the test releases
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
        for index in range(1, count):
            yield f"held {index}\n"

    return Response(generate(), mimetype="text/plain")
