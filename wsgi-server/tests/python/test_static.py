"""Static files (`--static-map`, `--static-index`, `--static-expires`):
answered by the I/O thread, never by the application.

Requests go over raw sockets (`rawhttp`): `requests` and `http.client`
would normalise `..` and percent escapes before we could send them. The
site has a secret file next to the mapped directory and symlinks inside it
pointing at the secret: its content must never appear in any response.
The application (`apps/countapp.py`) counts its calls, so every test can
say whether a request reached it.
"""

import gzip
import json
import os
import socket
import struct
import time
from email.utils import formatdate

import pytest

from conftest import TEST_APPS, free_port
from rawhttp import Conn

SECRET = b"TOP-SECRET-4f1c9e0a-never-serve-me"
PLAIN = b"0123456789abcdefghij" * 5  # 100 bytes
SCRIPT = b"console.log('identity representation');\n" * 20
BROTLI_MARKER = b"BROTLI-REPRESENTATION-OF-COMP-JS"


def build_site(root):
    """root/secret.txt outside DIR; root/www is DIR; root/www2 a deeper mount."""
    (root / "secret.txt").write_bytes(SECRET)
    www = root / "www"
    www.mkdir()
    (www / "a.css").write_bytes(b"body { color: red }\n")
    (www / "plain.txt").write_bytes(PLAIN)
    (www / "empty.txt").write_bytes(b"")
    (www / "data.json").write_bytes(b'{"a": 1}')
    (www / "page.html").write_bytes(b"<p>page</p>")
    (www / "img.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (www / "img.png.gz").write_bytes(gzip.compress(b"\x89PNG\r\n\x1a\nnot really"))
    (www / "blob.unknownext").write_bytes(b"blob")
    (www / "comp.js").write_bytes(SCRIPT)
    (www / "comp.js.gz").write_bytes(gzip.compress(SCRIPT))
    (www / "comp.js.br").write_bytes(BROTLI_MARKER)
    (www / "onlygz.css").write_bytes(b"p { margin: 0 }\n" * 10)
    (www / "onlygz.css.gz").write_bytes(gzip.compress(b"p { margin: 0 }\n" * 10))
    (www / "docs").mkdir()
    (www / "docs" / "index.html").write_bytes(b"<h1>docs index</h1>")
    (www / "nodir").mkdir()
    (www / "nodir" / "listed-if-listing.txt").write_bytes(b"x")
    (www / "deep").mkdir()
    (www / "deep" / "only-in-www.txt").write_bytes(b"from www")
    # Symlinks: out of DIR (relative, absolute, a directory) and inside it.
    os.symlink("../secret.txt", www / "link.txt")
    os.symlink(str(root / "secret.txt"), www / "abs.txt")
    os.symlink("..", www / "up")
    os.symlink("a.css", www / "inner.css")
    os.mkfifo(www / "fifo.txt")
    www2 = root / "www2"
    www2.mkdir()
    (www2 / "x.txt").write_bytes(b"from www2")
    return www, www2


@pytest.fixture(scope="module")
def site(module_start, tmp_path_factory):
    root = tmp_path_factory.mktemp("static-site")
    www, www2 = build_site(root)
    uwsgi_port = free_port()
    server = module_start(
        "--pythonpath", str(TEST_APPS), "countapp",
        "--socket", f"127.0.0.1:{uwsgi_port}",
        "--static-map", f"/static={www}",
        "--static-map", f"/static/deep={www2}",
        "--static-map", f"/favicon.ico={www / 'img.png'}",
        "--static-index", "index.html",
        "--static-expires", "3600",
        cwd=root,
    )
    server.uwsgi_port = uwsgi_port
    server.www = www
    return server


def request(server, target, method="GET", headers=(), body=b""):
    """One request on its own connection (`Connection: close`); the response,
    with `raw` holding every byte the server sent."""
    lines = [f"{method} {target} HTTP/1.1", "Host: test"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with Conn(server) as conn:
        conn.send(data)
        response = conn.read_response(method.encode())
        trailing = conn.read_to_eof()
    response.raw = response.raw_head + response.body + trailing
    response.trailing = trailing
    return response


def uwsgi_request(server, uri, method="GET", headers=()):
    """A uwsgi packet as nginx's uwsgi_pass sends it; the raw answer."""
    path = uri.split("?")[0]
    variables = [
        ("REQUEST_METHOD", method), ("REQUEST_URI", uri), ("PATH_INFO", path),
        ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "test"),
        ("SERVER_PORT", "80"), ("REMOTE_ADDR", "127.0.0.1"), ("HTTP_HOST", "test"),
    ] + list(headers)
    block = b"".join(
        struct.pack("<H", len(key)) + key.encode("latin-1") + struct.pack("<H", len(value))
        + value.encode("latin-1")
        for key, value in variables
    )
    with socket.create_connection(("127.0.0.1", server.uwsgi_port), timeout=5) as sock:
        sock.sendall(struct.pack("<BHB", 0, len(block), 0) + block)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def app_calls(server):
    response = request(server, "/__count")
    assert response.status == 200, response
    return json.loads(response.body)


class AppNotEntered:
    """`with AppNotEntered(server):` fails if the application ran inside."""

    def __init__(self, server):
        self.server = server

    def __enter__(self):
        self.before = app_calls(self.server)["calls"]

    def __exit__(self, *exc):
        after = app_calls(self.server)["calls"]
        # The second /__count saw the first one only.
        assert after == self.before + 1, f"the application ran {after - self.before - 1} time(s)"


def header(response, name):
    value = response.header(name)
    return value.decode("latin-1") if value is not None else None


# --- no path leaves DIR ---------------------------------------------------------

TRAVERSALS = [
    "/static/../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/%2e%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/..\\secret.txt",
    "/static/..%5csecret.txt",
    "/static/..%5Csecret.txt",
    "/static/docs/../../secret.txt",
    "/static//..//secret.txt",
    "/static/./../secret.txt",
    "/static/a.css%00.txt",
    "/static/%00",
    "/static/a%zzb",
    "http://test/static/../secret.txt",
]

SYMLINKS_OUT = [
    "/static/link.txt",
    "/static/abs.txt",
    "/static/up/secret.txt",
    "/static/up/www/a.css",
    "/static/up/",
]


@pytest.mark.parametrize("target", TRAVERSALS + SYMLINKS_OUT)
def test_paths_out_of_dir_are_refused(site, target):
    with AppNotEntered(site):
        response = request(site, target)
        head_response = request(site, target, method="HEAD")
    for answer in (response, head_response):
        assert answer.status == 404, (target, answer)
        assert SECRET not in answer.raw
        assert answer.trailing == b""


def test_symlinks_inside_dir_are_followed(site):
    response = request(site, "/static/inner.css")
    assert response.status == 200
    assert response.body == (site.www / "a.css").read_bytes()


def test_fifo_is_refused_without_hanging(site):
    with AppNotEntered(site):
        response = request(site, "/static/fifo.txt")
    assert response.status == 404


@pytest.mark.parametrize("target", ["/static/link.txt", "/static/%2e%2e/secret.txt", "/static/up/secret.txt"])
def test_uwsgi_protocol_refuses_too(site, target):
    answer = uwsgi_request(site, target)
    assert answer.startswith(b"HTTP/1.1 404 "), answer
    assert SECRET not in answer


# --- what is served ---------------------------------------------------------------

def test_file_is_served_without_the_application(site):
    with AppNotEntered(site):
        response = request(site, "/static/plain.txt")
    assert response.status == 200
    assert response.body == PLAIN
    assert header(response, "Content-Length") == "100"
    assert header(response, "Content-Type") == "text/plain; charset=utf-8"
    assert header(response, "Accept-Ranges") == "bytes"
    assert header(response, "Cache-Control") == "max-age=3600"
    assert header(response, "ETag").startswith('"')
    mtime = (site.www / "plain.txt").stat().st_mtime
    assert header(response, "Last-Modified") == formatdate(int(mtime), usegmt=True)


def test_uwsgi_protocol_serves_static_files(site):
    answer = uwsgi_request(site, "/static/plain.txt")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer
    assert body == PLAIN
    answer = uwsgi_request(site, "/static/missing.txt")
    assert answer.endswith(b"APP GET /static/missing.txt"), answer


@pytest.mark.parametrize("name, expected", [
    ("a.css", "text/css; charset=utf-8"),
    ("page.html", "text/html; charset=utf-8"),
    ("data.json", "application/json"),
    ("img.png", "image/png"),
    ("blob.unknownext", "application/octet-stream"),
])
def test_content_type_from_extension(site, name, expected):
    assert header(request(site, f"/static/{name}"), "Content-Type") == expected


def test_javascript_has_a_charset(site):
    content_type = header(request(site, "/static/comp.js"), "Content-Type")
    assert content_type in ("application/javascript; charset=utf-8", "text/javascript; charset=utf-8")


def test_index_file_for_a_directory(site):
    with AppNotEntered(site):
        with_slash = request(site, "/static/docs/")
        without = request(site, "/static/docs")
    for response in (with_slash, without):
        assert response.status == 200
        assert response.body == b"<h1>docs index</h1>"
        assert header(response, "Content-Type") == "text/html; charset=utf-8"


def test_single_file_map(site):
    with AppNotEntered(site):
        response = request(site, "/favicon.ico")
    assert response.status == 200
    assert response.body == (site.www / "img.png").read_bytes()
    assert request(site, "/favicon.ico/x").body == b"APP GET /favicon.ico/x"


def test_longest_prefix_first_then_the_next_mount(site):
    assert request(site, "/static/deep/x.txt").body == b"from www2"
    # Not in www2: the shorter /static mount has it.
    assert request(site, "/static/deep/only-in-www.txt").body == b"from www"


def test_missing_file_falls_through_to_the_application(site):
    before = app_calls(site)["calls"]
    response = request(site, "/static/missing.txt")
    assert response.status == 200
    assert response.body == b"APP GET /static/missing.txt"
    # A prefix matches whole segments only.
    assert request(site, "/staticx/a.css").body == b"APP GET /staticx/a.css"
    # A file name with a trailing slash is no file.
    assert request(site, "/static/a.css/").body == b"APP GET /static/a.css/"
    assert app_calls(site)["calls"] == before + 4


def test_directory_without_index_is_never_listed(site):
    # Falls through to the application, like a missing file (uWSGI's rule).
    response = request(site, "/static/nodir/")
    assert response.body == b"APP GET /static/nodir/"
    assert b"listed-if-listing" not in response.raw


def test_other_methods_are_405(site):
    with AppNotEntered(site):
        response = request(site, "/static/a.css", method="POST", body=b"x=1")
        put = request(site, "/static/a.css", method="DELETE")
    for answer in (response, put):
        assert answer.status == 405
        assert header(answer, "Allow") == "GET, HEAD"
    # A method on a path with no file is the application's.
    assert request(site, "/static/upload", method="POST", body=b"x").body == b"APP POST /static/upload"


def test_head_has_headers_and_no_body(site):
    with Conn(site) as conn:
        conn.send(b"HEAD /static/plain.txt HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /static/a.css HTTP/1.1\r\nHost: t\r\n\r\n")
        head = conn.read_response(b"HEAD")
        get = conn.read_response(b"GET")
    assert head.status == 200
    assert head.header("Content-Length") == b"100"
    assert head.header("ETag") is not None
    # Had HEAD sent body bytes, they would stand where the GET's answer is.
    assert get.status == 200
    assert get.body == (site.www / "a.css").read_bytes()


def test_keep_alive_goes_on_after_a_static_answer(site):
    with Conn(site) as conn:
        conn.send(b"GET /static/plain.txt HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /static/nope HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /static/link.txt HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /static/a.css HTTP/1.1\r\nHost: t\r\n\r\n")
        statuses = [conn.read_response() for _ in range(4)]
    assert [response.status for response in statuses] == [200, 200, 404, 200]
    assert statuses[0].body == PLAIN
    assert statuses[1].body == b"APP GET /static/nope"


# --- conditional requests (RFC 9110 §13) ------------------------------------------

def test_not_modified(site):
    first = request(site, "/static/a.css")
    etag = header(first, "ETag")
    last_modified = header(first, "Last-Modified")
    mtime = int((site.www / "a.css").stat().st_mtime)
    long_ago = formatdate(mtime - 3600, usegmt=True)
    rfc850 = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(mtime))
    cases = [
        ([("If-None-Match", etag)], 304),
        ([("If-None-Match", f'"other", {etag}')], 304),
        ([("If-None-Match", "W/" + etag)], 304),  # weak comparison
        ([("If-None-Match", "*")], 304),
        ([("If-None-Match", '"other"')], 200),
        ([("If-Modified-Since", last_modified)], 304),
        ([("If-Modified-Since", rfc850)], 304),
        ([("If-Modified-Since", long_ago)], 200),
        ([("If-Modified-Since", "not a date")], 200),
        # If-None-Match wins over If-Modified-Since (§13.2.2).
        ([("If-None-Match", '"other"'), ("If-Modified-Since", last_modified)], 200),
        ([("If-None-Match", etag), ("If-Modified-Since", long_ago)], 304),
    ]
    with AppNotEntered(site):
        for headers, status in cases:
            response = request(site, "/static/a.css", headers=headers)
            assert response.status == status, (headers, response)
            if status == 304:
                assert response.body == b"" and response.trailing == b""
                assert header(response, "ETag") == etag
                assert header(response, "Cache-Control") == "max-age=3600"
                assert header(response, "Vary") == "Accept-Encoding"
            else:
                assert response.body == (site.www / "a.css").read_bytes()


# --- ranges (RFC 9110 §14) ----------------------------------------------------------

@pytest.mark.parametrize("spec, first, last", [
    ("bytes=10-19", 10, 19),
    ("bytes=90-", 90, 99),
    ("bytes=95-500", 95, 99),
    ("bytes=-5", 95, 99),
    ("bytes=-500", 0, 99),
    ("bytes=0-0", 0, 0),
])
def test_single_range(site, spec, first, last):
    with AppNotEntered(site):
        response = request(site, "/static/plain.txt", headers=[("Range", spec)])
    assert response.status == 206
    assert header(response, "Content-Range") == f"bytes {first}-{last}/100"
    assert response.body == PLAIN[first:last + 1]
    assert header(response, "Content-Length") == str(last - first + 1)


@pytest.mark.parametrize("path, spec, size", [
    ("plain.txt", "bytes=100-", 100),
    ("plain.txt", "bytes=500-600", 100),
    ("plain.txt", "bytes=-0", 100),
    ("empty.txt", "bytes=0-", 0),
])
def test_unsatisfiable_range(site, path, spec, size):
    response = request(site, f"/static/{path}", headers=[("Range", spec)])
    assert response.status == 416
    assert header(response, "Content-Range") == f"bytes */{size}"


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "items=0-5", "bytes=5-2", "bytes=x-y"])
def test_ranges_we_ignore_get_the_whole_file(site, spec):
    response = request(site, "/static/plain.txt", headers=[("Range", spec)])
    assert response.status == 200
    assert response.body == PLAIN


def test_if_range(site):
    first = request(site, "/static/plain.txt")
    etag = header(first, "ETag")
    last_modified = header(first, "Last-Modified")
    cases = [
        (etag, 206),
        ('"stale"', 200),
        ("W/" + etag, 200),  # If-Range compares strongly (§13.1.5)
        (last_modified, 206),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 200),
    ]
    for validator, status in cases:
        response = request(site, "/static/plain.txt",
                           headers=[("Range", "bytes=0-9"), ("If-Range", validator)])
        assert response.status == status, (validator, response)
        assert response.body == (PLAIN[:10] if status == 206 else PLAIN)


def test_head_ignores_range(site):
    response = request(site, "/static/plain.txt", method="HEAD", headers=[("Range", "bytes=0-9")])
    assert response.status == 200
    assert header(response, "Content-Length") == "100"
    assert response.trailing == b""


# --- precompressed siblings -------------------------------------------------------

@pytest.mark.parametrize("accept, coding", [
    (None, None),
    ("gzip", "gzip"),
    ("br", "br"),
    ("gzip, br", "br"),
    ("br;q=0, gzip", "gzip"),
    ("gzip;q=0", None),
    ("br;q=0.5, gzip;q=0.8", "gzip"),
    ("*", "br"),
    ("*;q=0", None),
    ("identity", None),
    ("GZIP", "gzip"),
])
def test_precompressed_variants(site, accept, coding):
    headers = [("Accept-Encoding", accept)] if accept is not None else []
    with AppNotEntered(site):
        response = request(site, "/static/comp.js", headers=headers)
    assert response.status == 200
    assert header(response, "Vary") == "Accept-Encoding"
    assert header(response, "Content-Encoding") == coding
    if coding is None:
        assert response.body == SCRIPT
    elif coding == "gzip":
        assert gzip.decompress(response.body) == SCRIPT
    else:
        assert response.body == BROTLI_MARKER
    assert header(response, "Content-Type").endswith("javascript; charset=utf-8")


def test_each_encoding_has_its_own_etag(site):
    tags = {
        coding: header(request(site, "/static/comp.js", headers=[("Accept-Encoding", coding)]), "ETag")
        for coding in ("identity", "gzip", "br")
    }
    assert len(set(tags.values())) == 3, tags
    # The gzip ETag validates the gzip representation only.
    gz = request(site, "/static/comp.js",
                 headers=[("Accept-Encoding", "gzip"), ("If-None-Match", tags["gzip"])])
    assert gz.status == 304
    plain = request(site, "/static/comp.js", headers=[("If-None-Match", tags["gzip"])])
    assert plain.status == 200 and plain.body == SCRIPT


def test_ranges_apply_to_the_compressed_bytes(site):
    response = request(site, "/static/comp.js",
                       headers=[("Accept-Encoding", "gzip"), ("Range", "bytes=0-1")])
    assert response.status == 206
    assert response.body == b"\x1f\x8b"  # the gzip magic
    size = (site.www / "comp.js.gz").stat().st_size
    assert header(response, "Content-Range") == f"bytes 0-1/{size}"


def test_only_the_siblings_that_exist(site):
    response = request(site, "/static/onlygz.css", headers=[("Accept-Encoding", "br, gzip")])
    assert header(response, "Content-Encoding") == "gzip"
    assert gzip.decompress(response.body) == b"p { margin: 0 }\n" * 10


def test_incompressible_types_ignore_siblings(site):
    response = request(site, "/static/img.png", headers=[("Accept-Encoding", "gzip")])
    assert header(response, "Content-Encoding") is None
    assert header(response, "Vary") is None
    assert response.body == (site.www / "img.png").read_bytes()


# --- --max-requests does not count static answers ---------------------------------

def test_static_answers_do_not_count_toward_max_requests(start, tmp_path):
    www, _ = build_site(tmp_path)
    server = start(
        "--pythonpath", str(TEST_APPS), "countapp",
        "--static-map", f"/static={www}",
        "--max-requests", "3",
    )
    first = app_calls(server)
    for _ in range(20):
        assert request(server, "/static/plain.txt").body == PLAIN
    second = app_calls(server)
    # Two application requests: the same worker, under its limit of three.
    assert second["pid"] == first["pid"]
    assert second["calls"] == first["calls"] + 1


def test_uwsgi_ini_static_map(start, tmp_path):
    www, _ = build_site(tmp_path)
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nstatic-map = /assets={www}\nstatic-index = index.html\n")
    server = start("--pythonpath", str(TEST_APPS), "countapp", "--ini", str(ini))
    with AppNotEntered(server):
        assert request(server, "/assets/plain.txt").body == PLAIN
        assert request(server, "/assets/docs/").body == b"<h1>docs index</h1>"
        assert request(server, "/assets/link.txt").status == 404


def test_root_mount_leaves_the_rest_to_the_application(start, tmp_path):
    www, _ = build_site(tmp_path)
    server = start("--pythonpath", str(TEST_APPS), "countapp", "--static-map", f"/={www}")
    assert request(server, "/plain.txt").body == PLAIN
    # No index file: the application's "/".
    assert request(server, "/").body == b"APP GET /"
    # An encoded slash is the application's business under a mount at `/`.
    assert request(server, "/api/a%2Fb").body == b"APP GET /api/a/b"
    for target in ("/link.txt", "/up/secret.txt"):
        response = request(server, target)
        assert response.status == 404 and SECRET not in response.raw
    # Escapes are never served, whoever answers.
    for target in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt"):
        assert SECRET not in request(server, target).raw


def test_large_file_and_a_range_inside_it(site):
    data = os.urandom(8 * 1024 * 1024 + 7)
    (site.www / "big.bin").write_bytes(data)
    with AppNotEntered(site):
        whole = request(site, "/static/big.bin")
        part = request(site, "/static/big.bin", headers=[("Range", "bytes=5000000-5999999")])
    assert whole.status == 200 and whole.body == data
    assert part.status == 206 and part.body == data[5000000:6000000]
