"""Filesystem access through fsspec, so local paths, s3://, gs:// and az:// share one code path."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from typing import Optional, Tuple

import fsspec
from fsspec.core import url_to_fs

from .errors import InputError, MissingDependency, OutputError, install_hint, redact, remember_secrets  # noqa: F401 - fs.redact is public
from .io import retry

# the faceqc extra that installs each bucket protocol's fsspec implementation
PROTOCOL_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
                   "abfss": "azure", "adl": "azure"}


@functools.lru_cache(maxsize=32)
def _fs_cached(protocol_key: str, options_json: str):
    protocol = protocol_key or "file"
    try:
        options = json.loads(options_json)[0]
        if protocol in ("s3", "s3a"):
            options = retry.s3_defaults(options)
        fs = fsspec.filesystem(protocol, **options)
        if protocol in ("s3", "s3a"):
            retry.quiet_s3fs(fs)
        # every store but the local disk: calls retried on transient faults, and counted
        return fs if protocol in ("file", "local") else retry.RetryingFileSystem(fs)
    except ImportError as e:
        extra = PROTOCOL_EXTRAS.get(protocol)
        hint = install_hint(extra) if extra else str(e)
        raise MissingDependency(f"{protocol}:// URIs need a package that is not installed: {hint}") from e
    except ValueError as e:
        if "Protocol not known" in str(e):
            raise InputError(f"unknown URI scheme {protocol}:// (known: file, s3, gs, az, abfs, https...)") from e
        raise


def get_fs(uri: str, storage_options: dict | None = None) -> Tuple[fsspec.AbstractFileSystem, str]:
    """Return (filesystem, path inside it) for a URI; filesystems are cached per process."""
    opts = storage_options or {}
    if "://" not in uri:
        fs, path = url_to_fs(uri)
        return fs, path
    protocol = uri.split("://", 1)[0]
    remember_secrets(opts)
    # the retry policy is part of the key: an S3 filesystem is built with its timeouts
    key = json.dumps([opts, retry.policy().as_dict()], sort_keys=True, default=str)
    fs = _fs_cached(protocol, key)
    return fs, fs._strip_protocol(uri)


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (``file://`` stripped); other URIs unchanged."""
    return uri[len("file://"):] if uri.startswith("file://") else uri


def join_uri(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def read_bytes(uri: str, storage_options: dict | None = None, max_bytes: int | None = None) -> bytes:
    """The bytes of one file (at most ``max_bytes`` + 1), the whole read retried on transient
    storage faults (:mod:`pipeline.io.retry`)."""
    fs, path = get_fs(uri, storage_options)

    def read() -> bytes:
        with fs.open(path, "rb") as f:
            return f.read() if max_bytes is None else f.read(max_bytes + 1)

    data = read() if is_local(uri) else retry.call("read", read, what=uri)
    if max_bytes is not None and len(data) > max_bytes:
        raise OverflowError(f"file is larger than decode.max_bytes ({max_bytes} bytes)")
    return data


def read_json(uri: str, storage_options: dict | None = None) -> Optional[dict]:
    """A small JSON file; None if it is missing or unreadable as JSON.  A store that cannot be
    reached at all is an OutputError (reported before any work, exit code 2)."""
    try:
        return json.loads(read_bytes(uri, storage_options))
    except (OSError, ValueError) as e:  # missing, not a folder, unreadable
        if not retry.transient(e):
            return None
        # the store failed (after the whole retry budget, or inside an operation that is retried
        # as a whole): never taken for "missing"
        raise OutputError(redact(f"cannot read {uri}: {type(e).__name__}: {e}", storage_options)) from e
    except Exception as e:  # noqa: BLE001 - endpoint, credentials
        raise OutputError(redact(f"cannot read {uri}: {type(e).__name__}: {e}", storage_options)) from e


def write_json(uri: str, obj: dict, storage_options: dict | None = None) -> None:
    """A small JSON file, replaced atomically, with every secret of ``storage_options`` masked."""
    text = json.dumps(obj, indent=2, default=str)
    write_bytes_atomic(uri, redact(text, storage_options).encode(), storage_options)


def write_bytes_atomic(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write a whole file so that readers see either nothing (or the old file) or all of it
    (see :func:`atomic_writer`); retried on transient storage faults, counted as commits."""
    def write() -> None:
        with atomic_writer(uri, storage_options) as f:
            f.write(data)

    write() if is_local(uri) else retry.call("commit", write, what=uri)


def invalidate(uri: str, storage_options: dict | None = None) -> None:
    """Forget cached listings (s3fs and friends cache directory listings per process)."""
    fs, path = get_fs(uri, storage_options)
    try:
        fs.invalidate_cache()
    except Exception:  # noqa: BLE001 - not every filesystem caches
        pass


def list_names(uri: str, storage_options: dict | None = None) -> list:
    """Names (not paths) of the entries directly inside a folder; [] when it does not exist."""
    fs, path = get_fs(uri, storage_options)
    invalidate(uri, storage_options)
    try:
        found = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted({p.rstrip("/").rsplit("/", 1)[-1] for p in found} - {""})




@contextlib.contextmanager
def atomic_writer(uri: str, storage_options: dict | None = None, tmp_dir: str | None = None):
    """A binary file object whose contents appear at ``uri`` only if the block exits cleanly:
    a temporary file renamed into place locally; an upload completed on close on object stores
    (and aborted on error), so readers never see part of it."""
    fs, path = get_fs(uri, storage_options)
    if is_local(uri):
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        if tmp_dir:  # e.g. a state folder, so that a killed writer leaves no litter beside the output
            os.makedirs(tmp_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=tmp_dir or folder)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return
    f = fs.open(path, "wb")
    try:
        yield f
    except BaseException:
        try:
            f.discard()
        finally:
            f.closed = True  # never flush what was written so far
        raise
    f.close()
