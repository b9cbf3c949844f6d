"""Large bodies stream through the server in bounded memory: a 200 MiB
upload (generated on the fly, never held in memory by the client) and a
200 MiB download, with the server's RSS (VmRSS) sampled all along and
required to stay under 100 MiB. The application stalls first (upload) and
the client stops reading for a while (download), so a server that buffered
instead of applying backpressure would have the whole body in memory."""

import hashlib
import http.client
import json
import threading
import time

import pytest
import requests

from conftest import TEST_APPS

MIB = 1024 * 1024
SIZE = 200 * MIB
RSS_LIMIT_KIB = 100 * 1024
BLOCK = bytes(range(256)) * 256  # the pattern bigstream.py streams
assert SIZE % len(BLOCK) == 0


def expected_sha256():
    digest = hashlib.sha256()
    for _ in range(SIZE // len(BLOCK)):
        digest.update(BLOCK)
    return digest.hexdigest()


EXPECTED_SHA256 = expected_sha256()


@pytest.fixture(scope="module")
def server(module_start):
    return module_start(str(TEST_APPS / "bigstream.py"), "--threads", "2")


def worker_rss_kib(server):
    """VmRSS of the server's worker, in KiB: the master's only child (the
    master's own VmRSS says nothing of the process that serves)."""
    children = open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()
    assert len(children) == 1, children
    with open(f"/proc/{children[0]}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssSampler:
    """Samples the server's VmRSS every 10 ms in a thread (bounded by a
    deadline) until stopped."""

    def __init__(self, server, max_seconds=120):
        self.server = server
        self.samples = []
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                self.samples.append(worker_rss_kib(self.server))
            except (OSError, AssertionError):
                return
            self.stop_event.wait(0.01)

    def __enter__(self):
        self.baseline = worker_rss_kib(self.server)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(5)

    def peak(self):
        return max(self.samples, default=0)

    def describe(self):
        return (f"baseline {self.baseline // 1024} MiB, peak {self.peak() // 1024} MiB "
                f"over {len(self.samples)} samples")


def blocks():
    for _ in range(SIZE // len(BLOCK)):
        yield BLOCK


def test_200_mib_chunked_upload_in_bounded_memory(server):
    with RssSampler(server) as rss:
        response = requests.post(server.url + "/upload?delay=1", data=blocks(), timeout=120)
    assert response.status_code == 200
    assert response.json() == {"size": SIZE, "sha256": EXPECTED_SHA256}
    assert len(rss.samples) > 10
    print(rss.describe())
    assert rss.peak() < RSS_LIMIT_KIB, rss.describe()


def test_200_mib_content_length_upload_in_bounded_memory(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        with RssSampler(server) as rss:
            conn.request("POST", "/upload?delay=1", body=blocks(),
                         headers={"Content-Length": str(SIZE)}, encode_chunked=False)
            response = conn.getresponse()
            body = response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert json.loads(body) == {"size": SIZE, "sha256": EXPECTED_SHA256}
    print(rss.describe())
    assert rss.peak() < RSS_LIMIT_KIB, rss.describe()


def test_200_mib_download_in_bounded_memory(server):
    digest = hashlib.sha256()
    received = 0
    with RssSampler(server) as rss:
        with requests.get(server.url + f"/download?size={SIZE}", stream=True,
                          timeout=120) as response:
            assert response.status_code == 200
            pieces = response.iter_content(65536)
            for piece in pieces:  # the first MiB, then stall
                digest.update(piece)
                received += len(piece)
                if received >= MIB:
                    break
            time.sleep(1.0)
            stalled_peak = rss.peak()
            for piece in pieces:
                digest.update(piece)
                received += len(piece)
    assert received == SIZE
    assert digest.hexdigest() == EXPECTED_SHA256
    assert stalled_peak < RSS_LIMIT_KIB, f"while the client stalled: {rss.describe()}"
    print(rss.describe())
    assert rss.peak() < RSS_LIMIT_KIB, rss.describe()
