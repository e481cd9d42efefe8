"""Filesystem access through fsspec, so local paths, s3://, gs:// and az:// share one code path."""

from __future__ import annotations

import functools
import json
from typing import Tuple

import fsspec
from fsspec.core import url_to_fs


@functools.lru_cache(maxsize=32)
def _fs_cached(protocol_key: str, options_json: str):
    protocol = protocol_key or "file"
    return fsspec.filesystem(protocol, **json.loads(options_json))


def get_fs(uri: str, storage_options: dict | None = None) -> Tuple[fsspec.AbstractFileSystem, str]:
    """Return (filesystem, path inside it) for a URI; filesystems are cached per process."""
    opts = storage_options or {}
    if "://" not in uri:
        fs, path = url_to_fs(uri)
        return fs, path
    protocol = uri.split("://", 1)[0]
    fs = _fs_cached(protocol, json.dumps(opts, sort_keys=True, default=str))
    return fs, fs._strip_protocol(uri)


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def join_uri(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def read_bytes(uri: str, storage_options: dict | None = None, max_bytes: int | None = None) -> bytes:
    fs, path = get_fs(uri, storage_options)
    with fs.open(path, "rb") as f:
        if max_bytes is None:
            return f.read()
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OverflowError(f"file is larger than decode.max_bytes ({max_bytes} bytes)")
    return data
