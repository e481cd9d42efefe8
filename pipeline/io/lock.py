"""One run per output at a time: ``OUT/_lock.json``, taken before any work.

The lock is one small JSON object naming its holder (host, pid, process start time, command,
start time, a random token) and the holder's last heartbeat.  It is created only if absent and
changed only if it is still the version the changer read — a compare-and-swap on every store:

- local disks: the create is ``O_CREAT | O_EXCL``; replacing and deleting happen under an
  ``fcntl.flock`` on ``OUT/_lock.json.guard`` (held for a few microseconds, never across work);
- S3: conditional writes — ``PutObject`` with ``If-None-Match: *`` to create, with ``If-Match:
  <ETag>`` to heartbeat or take over, ``DeleteObject`` with ``If-Match`` to release;
- other fsspec stores (GCS, Azure): create through fsspec's exclusive mode ``"xb"`` (GCS
  ``ifGenerationMatch=0``, Azure ``If-None-Match: *`` where the filesystem implements it); a
  heartbeat or takeover reads, compares and writes, which leaves a window of one round trip.

While a run works, a thread refreshes the heartbeat every ``storage.lock_heartbeat`` seconds.  A
second run finding the lock stops with exit code 2 and a line naming the holder, unless the lock
is stale: its holder's process is gone (same host), or no heartbeat came for the holder's lease
(``storage.lock_lease``; hosts' clocks are assumed to agree within seconds).  A stale lock is
taken over by a conditional replace, so of two runs that find it stale at once only one wins;
the winner says so on the console and in its summary.  A holder whose lock was taken over (its
heartbeat finds another's token) stops before it commits (:meth:`RunLock.check`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Optional, Tuple

from ..errors import OutputError, RunError
from ..fs import get_fs, is_local, join_uri, local_path, redact
from . import retry

log = logging.getLogger("faceqc")

LOCK_NAME = "_lock.json"


class LockHeld(OutputError):
    """Another live run holds the output (exit code 2)."""


def _now() -> float:
    return time.time()


def _iso(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "?"


def _etag(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _process_start(pid: int) -> Optional[float]:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone, or no psutil
        return None


def _alive(pid: int, started: Optional[float]) -> bool:
    """Whether process ``pid`` on this host is still the one that took the lock."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _process_start(pid)
    return not (started and now and abs(now - started) > 1.0)  # the pid was reused


# ------------------------------------------------------------------------------ stores
class _LocalStore:
    def __init__(self, path: str):
        self.path, self.guard = path, path + ".guard"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    @contextlib.contextmanager
    def _guarded(self):
        import fcntl

        fd = os.open(self.guard, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self) -> Tuple[Optional[bytes], Optional[str]]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        return data, _etag(data)

    def read(self):
        with self._guarded():
            return self._read()

    def create(self, data: bytes) -> Optional[str]:
        with self._guarded():
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return None
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return _etag(data)

    def replace(self, data: bytes, if_etag: str) -> Optional[str]:
        with self._guarded():
            _, cur = self._read()
            if cur != if_etag:
                return None
            tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            return _etag(data)

    def delete(self, if_etag: str) -> bool:
        with self._guarded():
            _, cur = self._read()
            if cur != if_etag:
                return False
            os.unlink(self.path)
            return True


def _precondition_failed(e: BaseException) -> bool:
    for x in retry._chain(e):
        if isinstance(x, FileExistsError):
            return True
        resp = getattr(x, "response", None)
        if isinstance(resp, dict) and "Error" in resp:
            code = str(resp["Error"].get("Code", ""))
            status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 409 ConditionalRequestConflict: another conditional write to the key won the race
            return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)
    return "PreconditionFailed" in str(e) or "412" in str(e)


class _S3Store:
    def __init__(self, fs, path: str):
        self.fs = getattr(fs, "_fs", fs)  # the plain s3fs: retries are wrapped here, per call
        self.bucket, self.key, _ = self.fs.split_path(path)

    def _call(self, method: str, **kw):
        return retry.call("commit", self.fs.call_s3, method, Bucket=self.bucket, Key=self.key, what=self.key, **kw)

    def read(self):
        from fsspec.asyn import sync

        async def get():
            r = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            body = await r["Body"].read()
            return body, r["ETag"]

        try:
            return retry.call("read", sync, self.fs.loop, get, what=self.key)
        except FileNotFoundError:
            return None, None

    def create(self, data: bytes) -> Optional[str]:
        try:
            return self._call("put_object", Body=data, IfNoneMatch="*")["ETag"]
        except Exception as e:  # noqa: BLE001
            if _precondition_failed(e):
                return None
            raise

    def replace(self, data: bytes, if_etag: str) -> Optional[str]:
        try:
            return self._call("put_object", Body=data, IfMatch=if_etag)["ETag"]
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            if _precondition_failed(e):
                return None
            raise

    def delete(self, if_etag: str) -> bool:
        try:
            self._call("delete_object", IfMatch=if_etag)
            return True
        except FileNotFoundError:
            return False
        except Exception as e:  # noqa: BLE001
            if _precondition_failed(e):
                return False
            raise


class _FsspecStore:
    """Any other fsspec store: exclusive create where the filesystem has it ("xb"); replace and
    delete compare, then write (not atomic: see the module's notes)."""

    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path

    def read(self):
        try:
            data = retry.call("read", self.fs.cat_file, self.path, what=self.path)
        except FileNotFoundError:
            return None, None
        return data, _etag(data)

    def _write(self, data: bytes, mode: str) -> None:
        with self.fs.open(self.path, mode) as f:
            f.write(data)

    def create(self, data: bytes) -> Optional[str]:
        try:
            retry.call("commit", self._write, data, "xb", what=self.path)
        except FileExistsError:
            return None
        except (ValueError, NotImplementedError, TypeError):  # no exclusive mode here
            if self.read()[0] is not None:
                return None
            retry.call("commit", self._write, data, "wb", what=self.path)
        return _etag(data)

    def replace(self, data: bytes, if_etag: str) -> Optional[str]:
        if self.read()[1] != if_etag:
            return None
        retry.call("commit", self._write, data, "wb", what=self.path)
        return _etag(data)

    def delete(self, if_etag: str) -> bool:
        if self.read()[1] != if_etag:
            return False
        retry.call("commit", self.fs.rm_file, self.path, what=self.path)
        return True


def _store(uri: str, storage_options: dict):
    if is_local(uri):
        return _LocalStore(os.path.abspath(local_path(uri)))
    fs, path = get_fs(uri, storage_options)
    if hasattr(getattr(fs, "_fs", fs), "call_s3"):
        return _S3Store(fs, path)
    return _FsspecStore(fs, path)


# ------------------------------------------------------------------------------ the lock
class RunLock:
    """``with RunLock(out, so, "faceqc nightly", lease, heartbeat) as lock: ...``"""

    def __init__(self, out: str, storage_options: Optional[dict] = None, command: str = "faceqc",
                 lease: float = 300.0, heartbeat: float = 30.0):
        self.out, self.so, self.command = out, storage_options or {}, command
        self.uri = join_uri(out, LOCK_NAME)
        self.lease, self.heartbeat = float(lease), float(heartbeat)
        self.token = uuid.uuid4().hex
        self.store = _store(self.uri, self.so)
        self.etag: Optional[str] = None
        self.taken_over: Optional[dict] = None
        self.lost: Optional[str] = None
        self.confirmed: Optional[float] = None  # when a write last showed this run holds the lock
        self.started = _now()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._mu = threading.Lock()

    def _record(self, **more) -> dict:
        pid = os.getpid()
        return {"host": socket.gethostname(), "pid": pid, "process_started": _process_start(pid),
                "command": self.command, "started_at": _iso(self.started), "started": self.started,
                "heartbeat": _now(), "heartbeat_at": _iso(_now()), "lease_s": self.lease,
                "token": self.token, **more}

    @staticmethod
    def _encode(rec: dict) -> bytes:
        return json.dumps(rec, indent=1, sort_keys=True).encode()

    def stale_reason(self, rec: dict) -> Optional[str]:
        """Why a lock found in place belongs to a dead run, or None while its holder lives."""
        if rec.get("host") == socket.gethostname() and isinstance(rec.get("pid"), int):
            if not _alive(rec["pid"], rec.get("process_started")):
                return f"its process (pid {rec['pid']} on {rec['host']}) is gone"
        age = _now() - float(rec.get("heartbeat") or 0)
        lease = float(rec.get("lease_s") or self.lease)
        if age > lease:
            return f"no heartbeat for {age:.0f} s (lease {lease:.0f} s)"
        return None

    def describe(self, rec: dict) -> str:
        age = _now() - float(rec.get("heartbeat") or 0)
        return (f"output {self.out} is locked by a running {rec.get('command', 'faceqc')}: host {rec.get('host')}, "
                f"pid {rec.get('pid')}, started {rec.get('started_at')} (last heartbeat {age:.0f} s ago, lease "
                f"{float(rec.get('lease_s') or 0):.0f} s); wait for it to finish, or remove {self.uri} if that run is "
                f"gone")

    def acquire(self) -> "RunLock":
        try:
            return self._acquire()
        except (LockHeld, RunError):
            raise
        except Exception as e:  # noqa: BLE001 - the store itself
            if retry.transient(e):
                raise retry.exhausted(e, f"cannot take the lock {self.uri}", self.so) from e
            raise OutputError(redact(f"cannot take the lock {self.uri}: {type(e).__name__}: {e}", self.so)) from e

    def _acquire(self) -> "RunLock":
        for _ in range(5):
            rec = self._record()
            etag = self.store.create(self._encode(rec))
            if etag:
                return self._hold(etag)
            data, cur_etag = self.store.read()
            if data is None:
                continue  # released meanwhile: try again
            try:
                cur = json.loads(data)
            except ValueError:
                cur = {}
            if cur.get("token") == self.token:  # our own create, whose answer was lost and retried
                return self._hold(cur_etag)
            why = self.stale_reason(cur)
            if why is None:
                raise LockHeld(self.describe(cur))
            prev = {k: cur.get(k) for k in ("host", "pid", "command", "started_at", "heartbeat_at")}
            etag = self.store.replace(self._encode(self._record(took_over_from=prev)), cur_etag)
            if etag:
                self.taken_over = {**prev, "reason": why}
                log.warning("took over the stale lock on %s from host %s, pid %s (started %s): %s",
                            self.out, prev["host"], prev["pid"], prev["started_at"], why)
                return self._hold(etag)
            # another run took it over first, or its holder woke up: look again
        raise LockHeld(f"output {self.out}: the lock {self.uri} keeps changing hands; try again later")

    def _hold(self, etag: str) -> "RunLock":
        self.etag = etag
        self.confirmed = _now()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="faceqc-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self.refresh()
            except Exception as e:  # noqa: BLE001 - the next beat tries again; the lease allows a few misses
                log.warning("could not refresh the lock on %s: %s", self.out, redact(f"{type(e).__name__}: {e}", self.so))
            if self.lost:
                return

    def refresh(self) -> None:
        with self._mu:
            if self.lost or self.etag is None:
                return
            rec = self._record(**({"took_over_from": self.taken_over} if self.taken_over else {}))
            etag = self.store.replace(self._encode(rec), self.etag)
            if etag:
                self.etag, self.confirmed = etag, _now()
                return
            data, cur_etag = self.store.read()
            try:
                cur = json.loads(data) if data else {}
            except ValueError:
                cur = {}
            if cur.get("token") == self.token:  # our own write landed, its answer was lost and retried
                self.etag, self.confirmed = cur_etag, _now()
                return
            self.lost = (f"the lock on {self.out} was taken over by host {cur.get('host')}, pid {cur.get('pid')}"
                         if cur else f"the lock on {self.out} was removed")
            log.error("faceqc: %s; this run will not commit", self.lost)

    def check(self) -> None:
        """Raise RunError unless this run still holds its lock (do this before a commit): the lock
        is refreshed now, by a conditional write.  When the store cannot be reached, the run may
        commit only while its last confirmed heartbeat is younger than its lease -- after that
        another run may have taken the lock over."""
        try:
            self.refresh()
        except Exception as e:  # noqa: BLE001 - judged by the lease below
            age = _now() - (self.confirmed or 0.0)
            if age > self.lease:
                raise RunError(f"the lock on {self.out} could not be confirmed for {age:.0f} s (lease {self.lease:.0f} s; "
                               f"{redact(f'{type(e).__name__}: {e}', self.so)}); another run may hold it, so this run "
                               "stops without committing; starting it again resumes it") from None
        if self.lost:
            raise RunError(f"{self.lost} while this run worked; it stops without committing")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._mu:
            if self.etag and not self.lost:
                try:
                    self.store.delete(self.etag)
                except Exception as e:  # noqa: BLE001 - a lock left behind expires with its lease
                    log.warning("could not release the lock on %s: %s", self.out,
                                redact(f"{type(e).__name__}: {e}", self.so))
            self.etag = None

    def summary(self) -> dict:
        return {"file": LOCK_NAME, "holder": {"host": socket.gethostname(), "pid": os.getpid(),
                                              "started_at": _iso(self.started)},
                "lease_s": self.lease, "heartbeat_s": self.heartbeat, "taken_over": self.taken_over}

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_lock(out: str, cfg, command: str) -> RunLock:
    """The lock of a run on ``out`` with the configuration's lease and heartbeat (not taken yet)."""
    s = cfg.storage
    return RunLock(out, cfg.input.storage_options, command, s.lock_lease, s.lock_heartbeat)
