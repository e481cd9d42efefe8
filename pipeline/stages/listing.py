"""Stage 1 — list: expand inputs into rows (uri, size, mtime).

Inputs are files, directories (walked recursively), globs, or manifest files (``.parquet``,
``.csv``, ``.jsonl`` or ``.lst``: a ``uri`` (or ``path``) column / one URI per line).  Every
non-directory entry becomes a row — a text file or a broken symlink included — so that every
input file yields exactly one output row.  Listing is metadata only and runs on the driver.
"""

from __future__ import annotations

import glob as globmod
import json
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, List

import pyarrow as pa

from ..fs import get_fs, is_local

MANIFEST_SUFFIXES = (".parquet", ".csv", ".jsonl", ".lst")
LIST_SCHEMA = pa.schema([("uri", pa.string()), ("size", pa.int64()), ("mtime", pa.float64())])


class InputError(ValueError):
    """An input the user named does not exist or cannot be listed."""


@dataclass
class Entry:
    uri: str
    size: int = -1
    mtime: float = float("nan")


def _has_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _local_entry(path: str) -> Entry:
    try:
        st = os.lstat(path)
        if os.path.islink(path):
            try:
                st = os.stat(path)
            except OSError:
                pass  # broken link: keep the link's own stat; reading it fails later
        return Entry(os.path.abspath(path), int(st.st_size), float(st.st_mtime))
    except OSError:
        return Entry(os.path.abspath(path))


def _walk_local(root: str) -> Iterator[Entry]:
    failed: List[str] = []
    # a sub-directory that cannot be listed becomes one row (read_error), not a silent gap
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=lambda e: failed.append(e.filename)):
        while failed:
            yield _local_entry(failed.pop())
        dirnames.sort()
        # os.walk lists symlinks to directories among dirnames; they are not followed (no
        # cycles), and are scored like any other non-directory entry
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames + links):
            yield _local_entry(os.path.join(dirpath, name))
    for d in failed:
        yield _local_entry(d)


def _walk_remote(uri: str, storage_options: dict) -> Iterator[Entry]:
    fs, path = get_fs(uri, storage_options)
    protocol = uri.split("://", 1)[0]
    for p, info in sorted(fs.find(path, detail=True).items()):
        if info.get("type") == "directory":
            continue
        yield Entry(f"{protocol}://{p}", int(info.get("size") or 0), _mtime(info))


def _mtime(info: dict) -> float:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        v = info.get(key)
        if v is None:
            continue
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
        try:
            return float(v)
        except (TypeError, ValueError):
            continue
    return float("nan")


def read_manifest(uri: str, storage_options: dict | None = None) -> List[Entry]:
    """URIs listed in a manifest file; relative local paths resolve against its folder."""
    fs, path = get_fs(uri, storage_options)
    lower = uri.lower()
    try:
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            with fs.open(path, "rb") as f:
                table = pq.read_table(f)
            col = "uri" if "uri" in table.column_names else "path"
            if col not in table.column_names:
                raise InputError(f"manifest {uri} has no 'uri' or 'path' column")
            uris = [u for u in table.column(col).to_pylist() if u]
        elif lower.endswith(".csv"):
            import csv
            import io

            with fs.open(path, "rb") as f:
                rows = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
            if rows and "uri" not in rows[0] and "path" not in rows[0]:
                raise InputError(f"manifest {uri} has no 'uri' or 'path' column")
            uris = [r.get("uri") or r.get("path") for r in rows]
            uris = [u for u in uris if u]
        elif lower.endswith(".jsonl"):
            uris = []
            with fs.open(path, "rb") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    obj = json.loads(line)
                    u = obj.get("uri") or obj.get("path") if isinstance(obj, dict) else None
                    if not u:
                        raise InputError(f"manifest {uri} line {n}: no 'uri' or 'path'")
                    uris.append(u)
        else:  # .lst: one URI per line
            with fs.open(path, "rb") as f:
                uris = [ln.decode("utf-8").strip() for ln in f]
            uris = [u for u in uris if u and not u.startswith("#")]
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read manifest {uri}: {e}") from e
    base = os.path.dirname(os.path.abspath(path)) if is_local(uri) else None
    out = []
    for u in uris:
        if base and "://" not in u and not os.path.isabs(u):
            u = os.path.join(base, u)
        out.append(_local_entry(u) if "://" not in u else Entry(u))
    return out


def expand_inputs(sources: Iterable[str], storage_options: dict | None = None,
                  extensions: Iterable[str] = (), stats: dict | None = None) -> List[Entry]:
    """Expand the user's inputs into entries; raise InputError for anything that is missing.

    ``extensions`` (lower-case suffixes), when given, filters what directory and prefix walks
    find; files named explicitly and manifest entries are always kept.  The number of files a
    walk skipped is added to ``stats["skipped_by_extension"]``."""
    so = storage_options or {}
    exts = tuple(e.lower() for e in extensions)
    entries: List[Entry] = []

    def walked(found: Iterable[Entry]) -> List[Entry]:
        found = list(found)
        if not exts:
            return found
        kept = [e for e in found if e.uri.lower().endswith(exts)]
        if stats is not None:
            stats["skipped_by_extension"] = stats.get("skipped_by_extension", 0) + len(found) - len(kept)
        return kept

    for src in sources:
        if is_local(src):
            src = src[len("file://"):] if src.startswith("file://") else src
            if _has_glob(src) and not os.path.lexists(src):  # an existing name is taken literally
                matches = sorted(globmod.glob(src, recursive=True))
                if not matches:
                    raise InputError(f"no files match {src!r}")
                for m in matches:
                    entries.extend(walked(_walk_local(m)) if os.path.isdir(m) else [_local_entry(m)])
            elif os.path.isdir(src):
                entries.extend(walked(_walk_local(src)))
            elif os.path.lexists(src):
                if src.lower().endswith(MANIFEST_SUFFIXES):
                    entries.extend(read_manifest(src, so))
                else:
                    entries.append(_local_entry(src))
            else:
                raise InputError(f"input not found: {src}")
        else:
            fs, path = get_fs(src, so)
            protocol = src.split("://", 1)[0]
            try:
                if _has_glob(path):
                    matches = sorted(fs.glob(path))
                    if not matches:
                        raise InputError(f"no objects match {src!r}")
                    for m in matches:
                        mu = f"{protocol}://{m}"
                        entries.extend(walked(_walk_remote(mu, so)) if fs.isdir(m) else [_remote_entry(fs, mu, m)])
                elif src.lower().endswith(MANIFEST_SUFFIXES) and fs.isfile(path):
                    entries.extend(read_manifest(src, so))
                elif fs.isdir(path):
                    entries.extend(walked(_walk_remote(src, so)))
                elif fs.exists(path):
                    entries.append(_remote_entry(fs, src, path))
                else:
                    raise InputError(f"input not found: {src}")
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 - credentials, endpoint, permissions
                raise InputError(f"cannot list {src}: {type(e).__name__}: {e}") from e
    # the same file named twice (overlapping inputs) is scored once
    seen, unique = set(), []
    for e in entries:
        if e.uri not in seen:
            seen.add(e.uri)
            unique.append(e)
    return unique


def _remote_entry(fs, uri: str, path: str) -> Entry:
    info = fs.info(path)
    return Entry(uri, int(info.get("size") or 0), _mtime(info))


def entries_table(entries: List[Entry]) -> pa.Table:
    return pa.table(
        {
            "uri": pa.array([e.uri for e in entries], pa.string()),
            "size": pa.array([e.size for e in entries], pa.int64()),
            "mtime": pa.array([e.mtime for e in entries], pa.float64()),
        },
        schema=LIST_SCHEMA,
    )
