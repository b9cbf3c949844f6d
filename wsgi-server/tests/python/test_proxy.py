"""Trusted proxies over real loopback sockets: a client bound to 127.0.0.2
is inside `--forwarded-allow-ips 127.0.0.0/30` (a CIDR network), one bound to
127.0.0.9 is not. From a trusted peer, `X-Forwarded-Proto`, `X-Forwarded-Ssl`
and RFC 7239 `Forwarded: proto=` set `wsgi.url_scheme`, a `SCRIPT_NAME`
header mounts the app, and with `--forwarded-remote-addr` the client named
by `Forwarded: for=` or `X-Forwarded-For` (the rightmost address that is not
a trusted proxy) becomes `REMOTE_ADDR`, the socket's peer `PEER_ADDR`. From
an untrusted peer nothing of that changes scheme, address or script name.
"""

import json
import socket

import pytest

REPORT = '''\
import json

def application(environ, start_response):
    body = json.dumps({key: environ.get(key) for key in (
        "REMOTE_ADDR", "REMOTE_PORT", "PEER_ADDR", "SCRIPT_NAME", "PATH_INFO", "SERVER_PORT", "wsgi.url_scheme",
    )}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture(scope="module")
def server(module_start, tmp_path_factory):
    apps = tmp_path_factory.mktemp("proxyapp")
    (apps / "proxyreport.py").write_text(REPORT)
    return module_start(
        "--pythonpath", str(apps), "--forwarded-allow-ips", "127.0.0.0/30", "--forwarded-remote-addr", "proxyreport",
    )


def ask(server, source, headers, target="/app/page"):
    """GET from a socket bound to `source`; returns the app's report."""
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect((server.host, server.port))
        lines = [f"GET {target} HTTP/1.1", "Host: example.test", "Connection: close", *headers, "", ""]
        sock.sendall("\r\n".join(lines).encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    return json.loads(body)


SPOOFED = [
    "X-Forwarded-For: 6.6.6.6, 203.0.113.7",
    "X-Forwarded-Proto: https",
    "SCRIPT_NAME: /app",
]


def test_trusted_peer_inside_a_cidr_network(server):
    report = ask(server, "127.0.0.2", SPOOFED)
    assert report["REMOTE_ADDR"] == "203.0.113.7"
    assert report["REMOTE_PORT"] == ""
    assert report["PEER_ADDR"] == "127.0.0.2"
    assert report["wsgi.url_scheme"] == "https"
    assert report["SERVER_PORT"] == "443"
    assert (report["SCRIPT_NAME"], report["PATH_INFO"]) == ("/app", "/page")


def test_untrusted_peer_changes_nothing(server):
    report = ask(server, "127.0.0.9", SPOOFED + ["Forwarded: for=1.2.3.4;proto=https"])
    assert report["REMOTE_ADDR"] == "127.0.0.9"
    assert report["PEER_ADDR"] is None
    assert report["wsgi.url_scheme"] == "http"
    assert (report["SCRIPT_NAME"], report["PATH_INFO"]) == ("", "/app/page")


def test_forwarded_header_rfc_7239(server):
    report = ask(server, "127.0.0.1", ['Forwarded: for=6.6.6.6, for="[2001:db8::7]:4711";proto=https'])
    assert (report["REMOTE_ADDR"], report["REMOTE_PORT"]) == ("2001:db8::7", "4711")
    assert report["wsgi.url_scheme"] == "https"


def test_trusted_hops_are_passed_over_from_the_right(server):
    # 127.0.0.3 is a trusted proxy in the chain; the client is left of it.
    report = ask(server, "127.0.0.1", ["X-Forwarded-For: 198.51.100.4, 127.0.0.3", "X-Forwarded-Ssl: on"])
    assert report["REMOTE_ADDR"] == "198.51.100.4"
    assert report["wsgi.url_scheme"] == "https"


def test_bad_allow_list_names_the_flag(server_bin, tmp_path):
    import subprocess

    from conftest import SERVER_BIN

    result = subprocess.run([str(SERVER_BIN), "--forwarded-allow-ips", "10.0.0.0/40", "x:app"],
                            capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'wsgi-server: error: --forwarded-allow-ips: "10.0.0.0/40": the prefix length must be 0 to 32'
    )


# --- PROXY protocol (HAProxy, cloud load balancers) -------------------------------

import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(command, family, body):
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_tcp4(source, source_port):
    body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", source_port, 80)
    return v2_header(1, 0x11, body + b"\x04\x00\x01\xff")  # a TLV, skipped


@pytest.fixture(scope="module")
def proxied(module_start, tmp_path_factory):
    apps = tmp_path_factory.mktemp("proxyapp2")
    (apps / "proxyreport2.py").write_text(REPORT)
    return module_start(
        "--pythonpath", str(apps), "--proxy-protocol", "--proxy-allow-from", "127.0.0.1",
        "--forwarded-allow-ips", "127.0.0.0/30", "proxyreport2",
    )


def send(server, source, data):
    """Sends `data` from a socket bound to `source`; returns all it got."""
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect((server.host, server.port))
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received


GET = b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-Proto: https\r\n\r\n"


def report_of(data):
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    return json.loads(body)


def test_proxy_v1_names_the_client(proxied):
    report = report_of(send(proxied, "127.0.0.1", b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n" + GET))
    assert (report["REMOTE_ADDR"], report["REMOTE_PORT"]) == ("203.0.113.9", "5555")
    # Trust is judged on the client the balancer names, not the balancer:
    # a TCP balancer passes the client's own headers through.
    assert report["wsgi.url_scheme"] == "http"


def test_proxy_v1_ipv6_and_v2(proxied):
    report = report_of(send(proxied, "127.0.0.1", b"PROXY TCP6 2001:db8::5 ::1 4711 80\r\n" + GET))
    assert (report["REMOTE_ADDR"], report["REMOTE_PORT"]) == ("2001:db8::5", "4711")
    report = report_of(send(proxied, "127.0.0.1", v2_tcp4("198.51.100.3", 4444) + GET))
    assert (report["REMOTE_ADDR"], report["REMOTE_PORT"]) == ("198.51.100.3", "4444")
    # LOCAL (a balancer's own health check): the peer stays the address.
    report = report_of(send(proxied, "127.0.0.1", v2_header(0, 0x00, b"") + GET))
    assert report["REMOTE_ADDR"] == "127.0.0.1"
    # A trusted client behind the balancer keeps its forwarded scheme.
    report = report_of(send(proxied, "127.0.0.1", b"PROXY TCP4 127.0.0.2 127.0.0.1 1 80\r\n" + GET))
    assert report["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 203.0.113.9 127.0.0.1 5555\r\n",
    b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n",
    b"PROXY TCP4 203.0.113.9 127.0.0.1 05555 80\r\n",
    b"PROXY UDP4 203.0.113.9 127.0.0.1 1 2\r\n",
    b"PROXY TCP4 203.0.113.9 127.0.0.1 1 2\n",
    V2_SIGNATURE + bytes([0x21, 0x12, 0, 12]) + b"\x00" * 12,
    V2_SIGNATURE + bytes([0x11, 0x11, 0, 12]) + b"\x00" * 12,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_malformed_or_missing_proxy_headers_are_refused(proxied, header):
    """The connection closes without an answer, and the application is never
    entered: nothing of the header reaches REMOTE_ADDR."""
    assert send(proxied, "127.0.0.1", header + GET) == b""


def test_proxy_header_from_a_peer_not_allowed_is_a_bad_request(proxied):
    data = send(proxied, "127.0.0.3", b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n" + GET)
    assert data.startswith(b"HTTP/1.1 400"), data
    # Without the header, that peer is served as itself.
    report = report_of(send(proxied, "127.0.0.3", GET))
    assert report["REMOTE_ADDR"] == "127.0.0.3"
