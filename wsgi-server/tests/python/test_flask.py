"""Flask end to end: examples/apps/flask_app.py served by the binary."""

import hashlib
import json
import os
import time

import pytest
import requests

from conftest import APPS, TEST_APPS
from rawhttp import Conn, chunked, request

APP_FILE = APPS / "flask_app.py"


@pytest.fixture(scope="module")
def server(module_start):
    return module_start("--pythonpath", str(APPS), "flask_app:app")


def url(server, path):
    return server.url + path


def test_json_get(server):
    response = requests.get(url(server, "/api/items"), timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["items"][0] == {"id": 1, "name": "first"}


def test_json_post(server):
    response = requests.post(url(server, "/api/items"), json={"name": "second"}, timeout=10)
    assert response.status_code == 201
    item = response.json()
    assert item["name"] == "second"
    assert response.headers["Location"] == "/api/items"
    listed = requests.get(url(server, "/api/items"), timeout=10).json()["items"]
    assert item in listed


def test_json_post_invalid(server):
    response = requests.post(url(server, "/api/items"), data=b"not json",
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": "expected a JSON object with a name"}


def test_form_post(server):
    response = requests.post(url(server, "/form"),
                             data=[("a", "1"), ("a", "2"), ("name", "J\u00fcrgen & co")],
                             timeout=10)
    assert response.status_code == 200
    assert response.json() == {"fields": {"a": ["1", "2"], "name": ["J\u00fcrgen & co"]}}


@pytest.mark.parametrize("size", [0, 1000, 3 * 1024 * 1024 + 7])
def test_file_upload(server, size):
    data = os.urandom(size)
    response = requests.post(url(server, "/upload"),
                             files={"file": ("blob.bin", data, "application/octet-stream")},
                             data={"note": "hi"}, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"filename": "blob.bin", "size": size,
                               "sha256": hashlib.sha256(data).hexdigest(),
                               "fields": {"note": "hi"}}


def test_cookies(server):
    session = requests.Session()
    response = session.get(url(server, "/cookies/set?flavour=oat&size=large"), timeout=10)
    assert response.status_code == 200
    set_cookies = response.raw.headers.getlist("Set-Cookie")
    assert sorted(c.split(";")[0] for c in set_cookies) == ["flavour=oat", "size=large"]
    assert all("HttpOnly" in c for c in set_cookies)
    response = session.get(url(server, "/cookies"), timeout=10)
    assert response.json() == {"cookies": {"flavour": "oat", "size": "large"}}


def test_redirect(server):
    response = requests.get(url(server, "/redirect"), allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert response.headers["Location"] == "/api/items"
    followed = requests.get(url(server, "/redirect"), timeout=10)
    assert followed.status_code == 200
    assert followed.url == url(server, "/api/items")


def test_streaming_response(server):
    with Conn(server) as conn:
        conn.send(request(b"GET", b"/stream?n=4&prefix=part"))
        response = conn.read_response()
    assert response.status == 200
    assert response.body == b"part 0\npart 1\npart 2\npart 3\n"


def test_streaming_response_is_not_buffered(start, tmp_path):
    """Each chunk leaves when the generator yields it: the first arrives
    while the generator waits for the test to let it go on (a server that
    buffers the response sends nothing until then; 5 s is a failure
    bound)."""
    server = start("--pythonpath", f"{APPS},{TEST_APPS}", "flask_held:app")
    marker = tmp_path / "hold"
    marker.mkdir()
    with Conn(server) as conn:
        try:
            conn.send(request(b"GET", b"/stream-held?n=3&dir=" + str(marker).encode()))
            _version, status, _reason, headers, _head = conn.read_head()
            assert status == 200
            assert (b"Transfer-Encoding", b"chunked") in headers, headers
            first = conn.read_until(b"held 0\n", time.monotonic() + 5)
        finally:
            (marker / "release").touch()
        rest = conn.read_until(b"0\r\n\r\n", time.monotonic() + 5)
    assert first.endswith(b"held 0\n")
    assert b"held 1\n" in rest and b"held 2\n" in rest, rest


def test_send_file(server):
    response = requests.get(url(server, "/file"), timeout=10)
    assert response.status_code == 200
    data = APP_FILE.read_bytes()
    assert response.headers["Content-Type"].startswith("text/x-python")
    assert response.headers["Content-Length"] == str(len(data))
    assert response.content == data


def test_send_file_conditional(server):
    first = requests.get(url(server, "/file"), timeout=10)
    etag = first.headers["ETag"]
    response = requests.get(url(server, "/file"), headers={"If-None-Match": etag}, timeout=10)
    assert response.status_code == 304
    assert response.content == b""


def test_send_file_range(server):
    response = requests.get(url(server, "/file"), headers={"Range": "bytes=10-29"}, timeout=10)
    assert response.status_code == 206
    assert response.content == APP_FILE.read_bytes()[10:30]
    assert response.headers["Content-Length"] == "20"


def test_url_for(server):
    response = requests.get(url(server, "/url_for"), timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "relative": "/api/items",
        "external": f"http://127.0.0.1:{server.port}/api/items",
        "with_args": "/url_for?q=a+b",
        "script_root": "",
        "url": f"http://127.0.0.1:{server.port}/url_for",
    }


def test_url_for_with_host_header(server):
    response = requests.get(url(server, "/url_for"), headers={"Host": "example.test:8080"},
                            timeout=10)
    assert response.json()["external"] == "http://example.test:8080/api/items"


def test_error_route(server):
    offset = server.log_size()
    response = requests.get(url(server, "/error"), timeout=10)
    assert response.status_code == 500
    assert b"Internal Server Error" in response.content
    log = server.wait_for_log("RuntimeError: flask route failed on purpose", offset)
    assert "Traceback (most recent call last)" in log, log
    assert "RuntimeError: flask route failed on purpose" in log, log
    # The server is fine afterwards.
    assert requests.get(url(server, "/api/items"), timeout=10).status_code == 200


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_request_data(server, framing):
    data = os.urandom(300_000)
    if framing == "length":
        response = requests.post(url(server, "/data"), data=data, timeout=30)
        expected_length, expected_te = len(data), None
    else:
        parts = [data[i:i + 10_000] for i in range(0, len(data), 10_000)]
        response = requests.post(url(server, "/data"), data=iter(parts), timeout=30)
        expected_length, expected_te = None, "chunked"
    assert response.status_code == 200
    assert response.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                               "content_length": expected_length,
                               "transfer_encoding": expected_te}


def test_chunked_upload_raw(server):
    with Conn(server) as conn:
        conn.send(request(b"POST", b"/data", [b"Transfer-Encoding: chunked"],
                          chunked([b"hello ", b"chunked ", b"world"])))
        response = conn.read_response()
    assert response.status == 200, response
    assert json.loads(response.body)["size"] == len(b"hello chunked world")
    assert json.loads(response.body)["sha256"] == hashlib.sha256(b"hello chunked world").hexdigest()


def test_not_found(server):
    response = requests.get(url(server, "/does-not-exist"), timeout=10)
    assert response.status_code == 404


def test_method_not_allowed(server):
    response = requests.delete(url(server, "/api/items"), timeout=10)
    assert response.status_code == 405
    assert sorted(m.strip() for m in response.headers["Allow"].split(",")) == [
        "GET", "HEAD", "OPTIONS", "POST"]


def test_concurrent_requests(server):
    import concurrent.futures

    def one(index):
        return requests.get(url(server, f"/stream?n=50&prefix=c{index}"), timeout=20)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(one, range(32)))
    for index, response in enumerate(responses):
        assert response.status_code == 200
        assert response.text == "".join(f"c{index} {i}\n" for i in range(50))
    assert time.monotonic() - started < 30


def test_head_matches_get(server):
    get = requests.get(url(server, "/api/items"), timeout=10)
    head = requests.head(url(server, "/api/items"), timeout=10)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]


def test_mounted_under_script_name(start):
    server = start("--pythonpath", str(APPS), "--script-name", "/mount", "flask_app:app")
    response = requests.get(server.url + "/mount/url_for", timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "relative": "/mount/api/items",
        "external": f"http://127.0.0.1:{server.port}/mount/api/items",
        "with_args": "/mount/url_for?q=a+b",
        "script_root": "/mount",
        "url": f"http://127.0.0.1:{server.port}/mount/url_for",
    }
    redirect = requests.get(server.url + "/mount/redirect", allow_redirects=False, timeout=10)
    assert redirect.headers["Location"] == "/mount/api/items"
