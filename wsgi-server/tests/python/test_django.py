"""Django end to end: examples/apps/django_project (testsite.wsgi) served by
the binary, loaded as `--chdir <project> testsite.wsgi` (module alone =
module:application)."""

import hashlib
import os
import time

import pytest
import requests

from conftest import APPS
from rawhttp import Conn, request

PROJECT = APPS / "django_project"
VIEWS_FILE = PROJECT / "testsite" / "views.py"


@pytest.fixture(scope="module")
def server(module_start, tmp_path_factory):
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["TMPDIR"] = str(tmp_path_factory.mktemp("django-tmp"))
    return module_start("--chdir", str(PROJECT), "testsite.wsgi", env=env)


def url(server, path):
    return server.url + path


def test_json(server):
    response = requests.get(url(server, "/api/json?x=1"), timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"framework": "django", "method": "GET", "query": {"x": "1"}}


def test_form_post_csrf_exempt(server):
    response = requests.post(url(server, "/form"),
                             data=[("a", "1"), ("a", "2"), ("b", "\u00e9t\u00e9")], timeout=10)
    assert response.status_code == 200
    assert response.json() == {"fields": {"a": ["1", "2"], "b": ["\u00e9t\u00e9"]}}


def test_csrf_protected_post_rejected(server):
    response = requests.post(url(server, "/protected-form"), data={"a": "1"}, timeout=10)
    assert response.status_code == 403
    assert b"CSRF" in response.content


@pytest.mark.parametrize("size", [10, 4 * 1024 * 1024 + 3])
def test_upload(server, size):
    data = os.urandom(size)
    response = requests.post(url(server, "/upload"),
                             files={"file": ("data.bin", data, "application/octet-stream")},
                             data={"k": "v"}, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"filename": "data.bin", "size": size,
                               "sha256": hashlib.sha256(data).hexdigest(),
                               "fields": {"k": "v"}}


def test_cookies(server):
    session = requests.Session()
    response = session.get(url(server, "/cookies/set?a=1&b=two"), timeout=10)
    assert response.status_code == 200
    set_cookies = response.raw.headers.getlist("Set-Cookie")
    assert sorted(c.split(";")[0] for c in set_cookies) == ["a=1", "b=two"]
    response = session.get(url(server, "/cookies"), timeout=10)
    assert response.json() == {"cookies": {"a": "1", "b": "two"}}


def test_redirect(server):
    response = requests.get(url(server, "/redirect"), allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert response.headers["Location"] == "/api/json"
    assert requests.get(url(server, "/redirect"), timeout=10).json()["framework"] == "django"


def test_unknown_url_404(server):
    response = requests.get(url(server, "/nope"), timeout=10)
    assert response.status_code == 404
    assert b"Not Found" in response.content


def test_streaming_http_response(server):
    with Conn(server) as conn:
        conn.send(request(b"GET", b"/stream?n=3"))
        response = conn.read_response()
    assert response.status == 200
    assert response.body == b"django chunk 0\ndjango chunk 1\ndjango chunk 2\n"
    assert response.header("Content-Type") == b"text/plain"


def test_file_response(server):
    response = requests.get(url(server, "/file"), timeout=10)
    assert response.status_code == 200
    data = VIEWS_FILE.read_bytes()
    assert response.headers["Content-Type"] == "text/x-python"
    assert response.headers["Content-Length"] == str(len(data))
    assert response.content == data


def test_request_meta(server):
    response = requests.get(url(server, "/meta"), headers={"User-Agent": "pytest-ua/1"},
                            timeout=10)
    assert response.json() == {
        "host": f"127.0.0.1:{server.port}",
        "absolute_uri": f"http://127.0.0.1:{server.port}/meta",
        "is_secure": False,
        "path": "/meta",
        "path_info": "/meta",
        "script_name": "",
        "remote_addr": "127.0.0.1",
        "user_agent": "pytest-ua/1",
    }


def test_error_view(server):
    offset = server.log_size()
    response = requests.get(url(server, "/error"), timeout=10)
    assert response.status_code == 500
    assert b"Server Error (500)" in response.content
    log = server.wait_for_log("RuntimeError: django view failed on purpose", offset)
    assert "Traceback (most recent call last)" in log, log
    assert "RuntimeError: django view failed on purpose" in log, log
    assert requests.get(url(server, "/api/json"), timeout=10).status_code == 200


def test_head_request(server):
    with Conn(server) as conn:
        conn.send(request(b"HEAD", b"/api/json"))
        response = conn.read_response(method=b"HEAD")
        assert response.status == 200
        # No body bytes: the next response on the connection parses cleanly.
        conn.send(request(b"GET", b"/api/json"))
        follow = conn.read_response()
    assert follow.status == 200
    assert follow.body.startswith(b'{"framework": "django"')


def test_keep_alive_many(server):
    session = requests.Session()
    started = time.monotonic()
    for index in range(20):
        response = session.get(url(server, f"/api/json?i={index}"), timeout=10)
        assert response.json()["query"] == {"i": str(index)}
    assert time.monotonic() - started < 20
