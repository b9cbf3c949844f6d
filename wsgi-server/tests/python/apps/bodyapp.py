"""Routes for the body-buffering tests (test_body_buffering.py):

- `/len`: reads the whole body, answers its length;
- `/first`: reads one byte of the body and answers it at once, before the
  rest is read (streaming: the client has not sent the rest yet);
- anything else: `ok`, without reading the body.
"""


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/len":
        body = environ["wsgi.input"].read()
        payload = str(len(body)).encode()
    elif path == "/first":
        payload = environ["wsgi.input"].read(1)
    else:
        payload = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))])
    return [payload]
