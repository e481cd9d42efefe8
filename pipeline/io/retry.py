"""Storage faults: what is transient, how long to wait, and how many retries a run needed.

faceqc retries whole operations — a listing page, an object read, a part-file write, a commit —
when they fail for a transient reason: throttling (``SlowDown``, HTTP 429 / 500 / 502 / 503 /
504), a dropped connection (reset, closed mid-body, incomplete read) or a timeout.  Anything
else (a missing object, a permission, a precondition) fails at once.  The wait before retry k
(0-based) is a random time in ``[0, min(backoff_cap, backoff_base * 2**k)]`` ("full jitter").

The budget comes from the ``storage`` section of the configuration (:func:`configure`, called
by the driver and by every worker process).  On S3, botocore's and s3fs's own retry layers are
turned off (unless the storage options set them: :func:`s3_defaults`), so that every retry is
faceqc's and is counted: :func:`counts` per kind (``listing``, ``read``, ``write``, ``commit``),
plus ``gave_up`` (operations that failed after the whole budget).  Retried calls nest: each
request retries itself, and a whole operation (a Parquet file read as a stream, a rewrite of
the view) is retried as a whole only when a request inside it runs out of budget or a stream
breaks midway.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import http.client
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

log = logging.getLogger("faceqc")

KINDS = ("listing", "read", "write", "commit")
THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded",
                  "ServiceUnavailable", "InternalError", "RequestTimeout", "BandwidthLimitExceeded",
                  "500", "502", "503", "504", "429"}
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT}
TRANSIENT_WORDS = ("SlowDown", "Please reduce your request rate", "Service Unavailable", "Connection reset",
                   "Server disconnected", "Response payload is not completed", "Read timed out",
                   "Connection was closed", "IncompleteRead")


@dataclass(frozen=True)
class Policy:
    retries: int = 8
    backoff_base: float = 0.2
    backoff_cap: float = 20.0
    timeout: float = 60.0

    def delay(self, attempt: int, rng: random.Random = random) -> float:
        return rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * (2 ** attempt)))

    def as_dict(self) -> dict:
        return {"retries": self.retries, "backoff_base": self.backoff_base, "backoff_cap": self.backoff_cap,
                "timeout": self.timeout}


_policy = Policy()
_counts: collections.Counter = collections.Counter()
_counts_lock = threading.Lock()
_local = threading.local()


def configure(storage) -> Policy:
    """Use the retry budget of a ``storage`` config section (or a Policy) in this process."""
    global _policy
    if isinstance(storage, Policy):
        _policy = storage
    else:
        _policy = Policy(storage.retries, storage.backoff_base, storage.backoff_cap, storage.timeout)
    return _policy


def policy() -> Policy:
    return _policy


def counts() -> dict:
    """Retries so far in this process, per kind, and ``gave_up``."""
    with _counts_lock:
        return dict(_counts)


def count(kind: str, n: int = 1) -> None:
    with _counts_lock:
        _counts[kind] += n


def since(before: dict, after: Optional[dict] = None) -> dict:
    """The retries counted between two :func:`counts` snapshots, every kind named."""
    after = counts() if after is None else after
    keys = set(KINDS) | {"gave_up"} | set(after)
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(keys)}


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen and len(seen) < 10:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def transient(e: BaseException) -> bool:
    """Whether a failure is worth retrying: throttling, a dropped connection or a timeout."""
    for x in _chain(e):
        if isinstance(x, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError,
                          NotADirectoryError)):
            return False
        resp = getattr(x, "response", None)
        if isinstance(resp, dict) and "Error" in resp:  # botocore ClientError
            code = str(resp["Error"].get("Code", ""))
            status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return code in THROTTLE_CODES or status in TRANSIENT_STATUS
        name = type(x).__name__
        if name in ("EndpointConnectionError", "ClientConnectorError", "NoCredentialsError"):
            return False  # nothing listens there, or no credentials: a configuration error
        if name in ("ReadTimeoutError", "ConnectTimeoutError", "ConnectionClosedError", "ResponseStreamingError",
                    "IncompleteReadError", "ClientPayloadError", "ServerDisconnectedError", "ServerTimeoutError",
                    "ClientOSError", "ProtocolError", "ContentLengthError", "TransferEncodingError"):
            return True
        if isinstance(x, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, TimeoutError,
                          asyncio.TimeoutError, http.client.IncompleteRead, http.client.RemoteDisconnected)):
            return True
        if isinstance(x, OSError) and x.errno in TRANSIENT_ERRNOS:
            return True
        status = getattr(x, "status", None) or getattr(x, "code", None)
        if isinstance(status, int) and status in TRANSIENT_STATUS:
            return True
    text = str(e)
    return any(w in text for w in TRANSIENT_WORDS)


def _masked(e: BaseException) -> str:
    from ..errors import redact

    return redact(str(e), None)[:200]


def call(kind: str, fn: Callable[..., Any], *args, what: str = "", **kw) -> Any:
    """``fn(*args, **kw)``, retried on transient failures within the budget; each retry is
    counted under ``kind``.  Calls nest: the requests inside a whole operation (a view rewrite,
    a Parquet file read as a stream) retry themselves, and the operation is retried as a whole
    only when one of them runs out of budget or a stream breaks midway.  ``gave_up`` counts the
    outermost operations that failed after their whole budget."""
    p = _policy
    attempt = 0
    depth = getattr(_local, "depth", 0)
    _local.depth = depth + 1
    try:
        while True:
            try:
                return fn(*args, **kw)
            except Exception as e:  # noqa: BLE001 - classified below
                if not transient(e):
                    raise
                if attempt >= p.retries:
                    if depth == 0:
                        count("gave_up")
                        log.warning("storage: %s%s failed after %d retries: %s: %s", kind,
                                    f" of {what}" if what else "", attempt, type(e).__name__, _masked(e))
                    raise
                delay = p.delay(attempt)
                count(kind)
                log.debug("storage: retrying %s%s in %.2f s (%s: %s)", kind, f" of {what}" if what else "",
                          delay, type(e).__name__, _masked(e))
                attempt += 1
                time.sleep(delay)
    finally:
        _local.depth = depth


def s3_defaults(options: dict) -> dict:
    """S3 storage options with faceqc as the only retry layer: botocore's retries and s3fs's
    off, connect and read timeouts from the policy (whatever the options set stays)."""
    o = dict(options)
    ck = dict(o.get("config_kwargs") or {})
    ck.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})  # one attempt: no retry
    ck.setdefault("connect_timeout", _policy.timeout)
    ck.setdefault("read_timeout", _policy.timeout)
    o["config_kwargs"] = ck
    return o


def quiet_s3fs(fs) -> None:
    """s3fs's own retry loop (its class attribute ``retries``, 5) off: faceqc retries, and counts."""
    try:
        fs.retries = 1
    except Exception:  # noqa: BLE001
        pass


# ------------------------------------------------------------------------ a retrying filesystem
_FS_KINDS = {
    "ls": "listing", "find": "listing", "glob": "listing", "walk": None, "du": "listing",
    "info": "read", "exists": "read", "isdir": "read", "isfile": "read", "cat": "read", "cat_file": "read",
    "head": "read", "size": "read", "checksum": "read", "ukey": "read",
    "rm": "write", "rm_file": "write", "makedirs": "write", "mkdir": "write", "pipe": "write",
    "pipe_file": "write", "put_file": "write", "put": "write", "copy": "write", "cp_file": "write",
    "touch": "write", "mv": "write",
}


class RetryingFileSystem:
    """An fsspec filesystem whose calls are retried (see :func:`call`); everything else is the
    wrapped filesystem's.  ``open`` is retried (it asks the store for the object's size), reads
    from the file object it returns are not: retry the whole read (:func:`call`) instead."""

    def __init__(self, fs):
        object.__setattr__(self, "_fs", fs)

    def __getattr__(self, name):
        attr = getattr(self._fs, name)
        if name == "call_s3" and callable(attr):
            def s3(method, *a, **kw):
                return call("listing" if method.startswith("list") else "write" if method.startswith(("put", "delete"))
                            else "read", attr, method, *a, **kw)
            return s3
        kind = _FS_KINDS.get(name)
        if kind is None or not callable(attr):
            return attr

        def wrapped(*a, **kw):
            return call(kind, attr, *a, what=str(a[0]) if a else "", **kw)
        return wrapped

    def open(self, path, mode="rb", **kw):
        return call("write" if "w" in mode or "x" in mode else "read", self._fs.open, path, mode, what=str(path), **kw)

    def __setattr__(self, name, value):
        setattr(self._fs, name, value)

    def __repr__(self) -> str:
        return f"RetryingFileSystem({self._fs!r})"


def exhausted(e: BaseException, what: str, storage_options: Optional[dict] = None):
    """The one-line error for an operation whose store kept failing after the whole budget
    (an OutputError, exit code 2; the run stays unfinished and resumes when started again)."""
    from ..errors import OutputError, redact

    msg = (f"{what}: the store kept failing after {_policy.retries} retries ({type(e).__name__}: "
           f"{str(e)[:200]}); nothing committed is lost: start the run again to finish it")
    return OutputError(redact(msg, storage_options))
