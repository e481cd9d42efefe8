"""A real S3 HTTP endpoint on loopback for tests and benchmarks: moto's server mode, run as a
subprocess (``python -m moto.server``), never an in-process mock.

    with MotoServer(log="moto.log") as s3:
        env = s3.env        # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for subprocesses
        fs = s3.fs()        # an s3fs filesystem talking to it
        s3.object_gets("bucket")   # keys read so far, from the server's own request log

Needs the ``test`` extra (``moto[server]``, ``s3fs``).  Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

# fake credentials: moto accepts any; tests grep outputs and logs for these strings
ACCESS_KEY = "AKIAFACEQCTESTKEY0001"
SECRET_KEY = "faceqc-test-secret-9f8e7d6c5b4a"

_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (/[^ ]*) HTTP/1\.[01]"\s+(\d{3})')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours some status codes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self, log: str | None = None, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or tempfile.mkstemp(prefix="moto-", suffix=".log")[1]
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict:
        """Environment for anything that should reach this server through the AWS defaults."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    @property
    def storage_options(self) -> dict:
        """The same, as fsspec storage options (for --storage-options)."""
        return {"key": ACCESS_KEY, "secret": SECRET_KEY, "client_kwargs": {"endpoint_url": self.url}}

    def start(self) -> "MotoServer":
        logf = open(self.log, "ab")
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
               "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        logf.close()
        deadline = time.time() + 60
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited ({self.proc.returncode}); see {self.log}")
            try:
                opener.open(self.url + "/moto-api/", timeout=2).read()
                return self
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not answer on {self.url}; see {self.log}")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, client_kwargs={"endpoint_url": self.url},
                                 use_listings_cache=False)

    def log_size(self) -> int:
        return os.path.getsize(self.log)

    def requests(self, since: int = 0) -> list:
        """(method, path, status) of every request the server logged after byte ``since``."""
        with open(self.log, "rb") as f:
            f.seek(since)
            text = _ANSI.sub("", f.read().decode("utf-8", "replace"))
        return [(m, p, int(s)) for m, p, s in _REQUEST.findall(text)]

    def object_gets(self, bucket: str, prefix: str = "", since: int = 0) -> collections.Counter:
        """How many times each object key under ``prefix`` was read (GET of the key itself)."""
        c: collections.Counter = collections.Counter()
        for method, path, status in self.requests(since):
            if method != "GET" or "?" in path:
                continue
            parts = path.lstrip("/").split("/", 1)
            if len(parts) != 2 or parts[0] != bucket:
                continue
            key = urllib.parse.unquote(parts[1])
            if key.startswith(prefix):
                c[key] += 1
        return c
