"""A strict little HTTP/1.1 response reader for raw-socket tests: reads
exactly one response (Content-Length, chunked, or to EOF) from a socket and
leaves the bytes after it for the next call."""

import socket
import time


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as bytes, in order
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        """The value (bytes) of the only header `name`, or None."""
        values = self.header_values(name)
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None

    def header_values(self, name):
        name = name.lower().encode() if isinstance(name, str) else name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} body={self.body[:200]!r}>"


class Conn:
    """A client connection with a read buffer."""

    def __init__(self, server, timeout=5.0):
        self.sock = server.connect(timeout=timeout)
        self.buffer = b""
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, deadline):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no complete response in time; buffered: {self.buffer[:500]!r}")
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"connection closed; buffered: {self.buffer[:500]!r}")
        self.buffer += data

    def read_until(self, marker, deadline):
        for _ in range(100000):
            index = self.buffer.find(marker)
            if index >= 0:
                data = self.buffer[: index + len(marker)]
                self.buffer = self.buffer[index + len(marker):]
                return data
            self._fill(deadline)
        raise AssertionError("read_until: too many reads")

    def read_exact(self, count, deadline):
        for _ in range(1000000):
            if len(self.buffer) >= count:
                data = self.buffer[:count]
                self.buffer = self.buffer[count:]
                return data
            self._fill(deadline)
        raise AssertionError("read_exact: too many reads")

    def read_head(self, deadline=None):
        deadline = deadline or time.monotonic() + self.timeout
        head = self.read_until(b"\r\n\r\n", deadline)
        lines = head[:-4].split(b"\r\n")
        version, status, *reason = lines[0].split(b" ", 2)
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            assert sep, f"bad header line {line!r} in {head!r}"
            headers.append((name, value.strip(b" \t")))
        return version, int(status), (reason[0] if reason else b""), headers, head

    def read_response(self, method=b"GET", timeout=None):
        """One final response (1xx interim responses are returned too: the
        caller calls again)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        version, status, reason, headers, head = self.read_head(deadline)
        response = Response(version, status, reason, headers, b"", head)
        if method == b"HEAD" or status < 200 or status in (204, 304):
            return response
        encoding = response.header("Transfer-Encoding")
        length = response.header("Content-Length")
        if encoding is not None:
            assert encoding.lower() == b"chunked", encoding
            assert length is None, "both Content-Length and Transfer-Encoding"
            parts = []
            for _ in range(1000000):
                size_line = self.read_until(b"\r\n", deadline)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    # trailers until the empty line
                    for _ in range(1000):
                        if self.read_until(b"\r\n", deadline) == b"\r\n":
                            break
                    break
                parts.append(self.read_exact(size, deadline))
                assert self.read_exact(2, deadline) == b"\r\n"
            response.body = b"".join(parts)
        elif length is not None:
            response.body = self.read_exact(int(length), deadline)
        else:
            response.body = self.read_to_eof(deadline)
        return response

    def read_to_eof(self, deadline=None):
        deadline = deadline or time.monotonic() + self.timeout
        for _ in range(1000000):
            try:
                self._fill(deadline)
            except EOFError:
                data, self.buffer = self.buffer, b""
                return data
        raise AssertionError("read_to_eof: too many reads")

    def at_eof(self, timeout=2.0):
        """Reads until the server closes the connection or `timeout` passes;
        returns (closed, the bytes that came before, buffered ones included)."""
        deadline = time.monotonic() + timeout
        data, self.buffer = self.buffer, b""
        try:
            for _ in range(100000):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False, data
                self.sock.settimeout(remaining)
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    return False, data
                except ConnectionResetError:
                    return True, data
                if not chunk:
                    return True, data
                data += chunk
            return False, data
        finally:
            self.sock.settimeout(self.timeout)


def request(method, target, headers=(), body=b"", host=b"test"):
    """Request bytes; adds Host, and Content-Length for a body."""
    lines = [b"%s %s HTTP/1.1" % (method, target), b"Host: " + host]
    lines += list(headers)
    if body and not any(h.lower().startswith(b"content-length") or
                        h.lower().startswith(b"transfer-encoding") for h in headers):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(parts):
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts if part) + b"0\r\n\r\n"


def unread_by_peer(sock):
    """Bytes the other end of `sock` (a TCP socket on this host, IPv4) has
    received but not read yet: its socket's receive queue, asked of the
    kernel's sock_diag for that one socket (reading /proc/net/tcp costs
    ~20 ms with thousands of sockets about). None if it is gone."""
    import struct

    peer_host, peer_port = sock.getpeername()
    own_host, own_port = sock.getsockname()
    # inet_diag_req_v2: family, protocol, extensions, pad, states; then the
    # socket's id from its own side: source = the peer, destination = us;
    # no interface, no cookie (~0).
    request_body = struct.pack(
        "=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0xFFFFFFFF
    ) + struct.pack(
        "!HH16s16s", peer_port, own_port,
        socket.inet_aton(peer_host).ljust(16, b"\0"), socket.inet_aton(own_host).ljust(16, b"\0"),
    ) + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    sock_diag_by_family, nlm_f_request, nlmsg_error = 20, 1, 2
    header = struct.pack("=IHHII", 16 + len(request_body), sock_diag_by_family,
                         nlm_f_request, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as diag:  # NETLINK_SOCK_DIAG
        diag.settimeout(5)
        diag.send(header + request_body)
        reply = diag.recv(65536)
    _length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", reply)
    if kind == nlmsg_error:
        return None
    # inet_diag_msg: 4 bytes, the 48-byte id, expires, then rqueue.
    (rqueue,) = struct.unpack_from("=I", reply, 16 + 4 + 48 + 4)
    return rqueue


def wait_read_by_peer(sock, timeout=10.0):
    """Waits until the other end of `sock` has read everything sent so far
    (a failure bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while unread_by_peer(sock) != 0:
        assert time.monotonic() < deadline, \
            f"the peer left {unread_by_peer(sock)} bytes unread for {timeout}s"
        time.sleep(0.0005)
