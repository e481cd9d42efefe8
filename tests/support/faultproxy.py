"""A fault-injecting HTTP proxy on loopback, in front of an S3 server (moto's), for tests.

    with FaultProxy(s3.url, slowdown=0.1, reset=0.1, delay=0.05, delay_s=2.5, seed=1) as proxy:
        options = {..., "client_kwargs": {"endpoint_url": proxy.url}}
        ...
        proxy.injected   # Counter: {"slowdown": n, "reset": n, "delay": n, "slow": n}

Each request is read whole from the client, then one fault may be drawn for it:

- ``slowdown``: the request is not forwarded; the answer is ``503 SlowDown`` (S3's throttling
  reply, with its XML body);
- ``reset``: (GETs that return a body) the request is forwarded, the answer's headers and half of
  its body are sent, then the connection is reset (RST);
- ``delay``: the request is forwarded and the answer held back ``delay_s`` seconds (longer than
  the client's read timeout: the client gives up on it) before it is sent;
- ``slow``: the answer is held back ``slow_s`` seconds (shorter than the timeout: survived
  without a retry).

Faults are drawn from a seeded generator under a lock; ``skip`` (a predicate on method and path)
exempts requests.  Only the standard library; one thread per client connection.
"""

from __future__ import annotations

import collections
import random
import socket
import struct
import threading
import time
import urllib.parse
from typing import Callable, Optional

SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                 b"<Message>Please reduce your request rate.</Message><RequestId>faceqc-fault</RequestId></Error>")


def _read_headers(f) -> Optional[tuple]:
    line = f.readline(65537)
    if not line:
        return None
    head = [line]
    while True:
        h = f.readline(65537)
        if not h:
            return None
        head.append(h)
        if h in (b"\r\n", b"\n"):
            break
    headers = {}
    for h in head[1:-1]:
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return line, b"".join(head), headers


def _read_body(f, headers: dict, request: bool, status: int = 200, method: str = "GET") -> bytes:
    """The raw body bytes (chunked bodies kept chunked, trailers included)."""
    if not request and (method == "HEAD" or status in (204, 304) or 100 <= status < 200):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = []
        while True:
            size_line = f.readline(65537)
            raw.append(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    t = f.readline(65537)
                    raw.append(t)
                    if t in (b"\r\n", b"\n", b""):
                        break
                return b"".join(raw)
            raw.append(f.read(size + 2))
    n = headers.get("content-length")
    if n is not None:
        return f.read(int(n))
    return b"" if request else f.read()


class FaultProxy:
    def __init__(self, upstream: str, slowdown: float = 0.0, reset: float = 0.0, delay: float = 0.0,
                 delay_s: float = 2.5, slow: float = 0.0, slow_s: float = 0.3, seed: int = 0,
                 skip: Optional[Callable[[str, str], bool]] = None):
        u = urllib.parse.urlparse(upstream)
        self.up_host, self.up_port = u.hostname, u.port or 80
        self.p = {"slowdown": slowdown, "reset": reset, "delay": delay, "slow": slow}
        self.delay_s, self.slow_s = delay_s, slow_s
        self.rng = random.Random(seed)
        self.skip = skip
        self.injected: collections.Counter = collections.Counter()
        self.requests = 0
        self.enabled = True
        self._mu = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._threads: list = []
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        s.settimeout(0.2)
        self._sock, self.port = s, s.getsockname()[1]
        t = threading.Thread(target=self._accept, name="faultproxy", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _draw(self, method: str, path: str, has_body: bool) -> Optional[str]:
        with self._mu:
            self.requests += 1
            if not self.enabled or (self.skip and self.skip(method, path)):
                return None
            x = self.rng.random()
            for kind in ("slowdown", "reset", "delay", "slow"):
                p = self.p[kind]
                if x < p:
                    if kind == "reset" and not has_body:
                        return None  # nothing to cut: this share of other requests passes
                    self.injected[kind] += 1
                    return kind
                x -= p
            return None

    def _serve(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                got = _read_headers(f)
                if got is None:
                    return
                line, head, headers = got
                method, path = line.decode("latin-1").split(" ")[:2]
                if headers.get("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = _read_body(f, headers, request=True)
                # a GET of an object (not a listing, not a HEAD) returns a body worth cutting
                object_get = method == "GET" and "?" not in path.split("/", 2)[-1] and path.count("/") >= 2
                fault = self._draw(method, path, object_get)
                if fault == "slowdown":
                    conn.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                                 + f"Content-Length: {len(SLOWDOWN_BODY)}\r\n".encode()
                                 + b"x-amz-request-id: faceqc-fault\r\n\r\n" + SLOWDOWN_BODY)
                    continue
                status, rhead, rbody, close = self._forward(method, head, headers, body)
                if fault == "delay":
                    time.sleep(self.delay_s)
                elif fault == "slow":
                    time.sleep(self.slow_s)
                if fault == "reset" and len(rbody) > 1:
                    conn.sendall(rhead + rbody[: len(rbody) // 2])
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return  # closed with RST below
                conn.sendall(rhead + rbody)
                if close or fault == "delay":
                    return
        except (OSError, ValueError):
            return
        finally:
            try:
                f.close()
                conn.close()
            except OSError:
                pass

    def _forward(self, method: str, head: bytes, headers: dict, body: bytes) -> tuple:
        """Send one request upstream on a fresh connection; (status, raw headers, raw body, close)."""
        lines = head.split(b"\r\n")
        kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith((b"connection:", b"expect:"))]
        raw = b"\r\n".join([lines[0], *kept, b"Connection: close", b"", b""]) + body
        with socket.create_connection((self.up_host, self.up_port), timeout=60) as up:
            up.sendall(raw)
            uf = up.makefile("rb")
            while True:
                got = _read_headers(uf)
                if got is None:
                    raise OSError("upstream closed")
                status_line, rhead, rheaders = got
                status = int(status_line.split()[1])
                if status != 100:
                    break
            rbody = _read_body(uf, rheaders, request=False, status=status, method=method)
        # to the client: the upstream's answer, kept alive unless the client asked otherwise
        rl = rhead.split(b"\r\n")
        rkept = [ln for ln in rl[1:] if ln and not ln.lower().startswith(b"connection:")]
        close = headers.get("connection", "").lower() == "close"
        if "content-length" not in rheaders and "chunked" not in rheaders.get("transfer-encoding", "").lower() \
                and method != "HEAD" and status not in (204, 304):
            rkept.append(f"Content-Length: {len(rbody)}".encode())
        rkept.append(b"Connection: close" if close else b"Connection: keep-alive")
        return status, b"\r\n".join([rl[0], *rkept, b"", b""]), rbody, close
