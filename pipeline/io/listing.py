"""The source: expand inputs into listing rows (uri, size, mtime, etag, carried columns).

Inputs are files, directories (walked recursively), globs, bucket prefixes, or manifest files
(``.parquet``, ``.csv``, ``.jsonl`` or ``.lst``: a ``uri`` (or ``path``) column / one URI per
line; a manifest's other columns are carried through to the output).  Every non-directory entry
becomes a row — a text file or a broken symlink included — so that every input file yields
exactly one output row.  Listing is metadata only and runs on the driver; S3 prefixes are listed
page by page (1,000 keys a request), other stores one directory at a time; :func:`list_table`
builds the table in chunks, so no store's listing is ever held as Python objects all at once.

The listing table has the columns ``uri``, ``size``, ``mtime`` and, for anything carried through
to the output, ``extra.<name>``: ``extra.etag`` (the object's ETag where the store has one) and a
manifest's own columns (renamed ``manifest_<name>`` where they would collide with an output
column).
"""

from __future__ import annotations

import glob as globmod
import json
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional

import pyarrow as pa

from ..errors import InputError, errors_as
from ..fs import get_fs, invalidate, is_local, local_path
from ..schema import EXTRA_PREFIX, carried_name

MANIFEST_SUFFIXES = (".parquet", ".csv", ".jsonl", ".lst")
ETAG = EXTRA_PREFIX + "etag"


@dataclass
class Entry:
    uri: str
    size: int = -1
    mtime: float = float("nan")
    etag: Optional[str] = None  # the store's content tag (S3/GCS/Azure ETag); None if unknown
    extra: Optional[dict] = None  # a manifest's other columns, carried through to the output


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
    invalidate(uri, storage_options)  # a listing cached earlier in this process may be stale
    if hasattr(fs, "call_s3") and hasattr(fs, "split_path"):
        yield from _walk_s3(fs, path, protocol)
        return
    yield from _walk_dirs(fs, path, protocol)


def _walk_dirs(fs, path: str, protocol: str) -> Iterator[Entry]:
    """Every file under ``path`` of any fsspec store, one directory listing in memory at a time
    (``fs.ls`` of that directory: GCS and Azure page through it), in the order of a sorted
    recursive listing.  fsspec's ``find`` would hold the whole tree's info dicts at once."""
    def listed(d: str) -> Iterator[tuple]:
        try:
            infos = fs.ls(d, detail=True)
        except FileNotFoundError:
            return iter(())
        here = d.rstrip("/")
        keyed = []
        for info in infos:
            name = str(info.get("name", "")).rstrip("/")
            if not name or name == here:
                continue
            if info.get("type") == "directory":
                keyed.append((name + "/", name, None))  # a folder sorts as its files' common prefix
            else:
                keyed.append((name, name, (int(info.get("size") or 0), _mtime(info), _etag(info))))
        del infos
        keyed.sort()
        return iter(keyed)

    stack = [listed(path)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        _, name, meta = item
        if meta is None:
            stack.append(listed(name))
        else:
            yield Entry(f"{protocol}://{name}", *meta)


def _walk_s3(fs, path: str, protocol: str) -> Iterator[Entry]:
    """Every object under an S3 prefix, one ListObjectsV2 page (<= 1,000 keys) at a time, so
    that listing memory is one page plus the entries kept, not fsspec's whole info dicts."""
    bucket, key, _ = fs.split_path(path)
    kw = dict(Bucket=bucket, Prefix=(key.rstrip("/") + "/") if key else "", **getattr(fs, "req_kw", {}))
    while True:
        page = fs.call_s3("list_objects_v2", **kw)
        for c in page.get("Contents", []):
            if c["Key"].endswith("/"):  # "folder" marker objects
                continue
            yield Entry(f"{protocol}://{bucket}/{c['Key']}", int(c.get("Size") or 0), _mtime(c), _etag(c))
        if not page.get("IsTruncated"):
            return
        kw["ContinuationToken"] = page["NextContinuationToken"]


def _etag(info: dict) -> Optional[str]:
    for key in ("ETag", "etag", "md5Hash"):
        v = info.get(key)
        if isinstance(v, str) and v:
            return v.strip('"')
    return None


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


def _manifest_entry(u: str, base: Optional[str], extra: dict) -> Entry:
    meta = {}
    for k in ("size", "mtime", "etag"):
        if k in extra:
            meta[k] = extra.pop(k)
    if base and "://" not in u and not os.path.isabs(u):
        u = os.path.join(base, u)
    e = _local_entry(u) if "://" not in u else Entry(u)
    # a manifest's own size / mtime / etag describe the object; used where the listing has none
    if isinstance(meta.get("size"), int) and e.size < 0:
        e.size = meta["size"]
    if isinstance(meta.get("mtime"), (int, float)) and e.mtime != e.mtime:
        e.mtime = float(meta["mtime"])
    if isinstance(meta.get("etag"), str):
        e.etag = meta["etag"]
    for k, v in meta.items():  # present but unusable as metadata: keep it as a plain column
        if (k == "size" and not isinstance(v, int)) or (k == "mtime" and not isinstance(v, (int, float))) \
                or (k == "etag" and not isinstance(v, str)):
            extra[k] = v
    e.extra = extra or None
    return e


def _manifest_rows(fs, path: str, uri: str) -> List[dict]:
    lower = uri.lower()
    if lower.endswith((".parquet", ".csv")):
        with fs.open(path, "rb") as f:
            data = f.read()
        if lower.endswith(".csv") and not data.strip():
            return []
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(pa.BufferReader(data))
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(pa.py_buffer(data), convert_options=pcsv.ConvertOptions(
                column_types={"uri": pa.string(), "path": pa.string(), "etag": pa.string()},
                strings_can_be_null=True))
        if "uri" not in table.column_names and "path" not in table.column_names:
            raise InputError(f"manifest {uri} has no 'uri' or 'path' column")
        return table.to_pylist()
    rows = []
    with fs.open(path, "rb") as f:
        if lower.endswith(".jsonl"):
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                if not isinstance(obj, dict) or not (obj.get("uri") or obj.get("path")):
                    raise InputError(f"manifest {uri} line {n}: no 'uri' or 'path'")
                rows.append(obj)
            return rows
        uris = [ln.decode("utf-8").strip() for ln in f]  # .lst: one URI per line
    return [{"uri": u} for u in uris if u and not u.startswith("#")]


def read_manifest(uri: str, storage_options: dict | None = None) -> List[Entry]:
    """Entries listed in a manifest file; relative local paths resolve against its folder.

    Columns other than ``uri`` / ``path`` are carried through to the output (their types kept
    for Parquet, inferred for CSV and JSONL)."""
    fs, path = get_fs(uri, storage_options)
    with errors_as(InputError, f"cannot read manifest {uri}"):
        rows = _manifest_rows(fs, path, uri)
    base = os.path.dirname(os.path.abspath(path)) if is_local(uri) else None
    out = []
    for r in rows:
        key = "uri" if r.get("uri") else "path"
        u = r.get(key)
        if not u:
            continue
        out.append(_manifest_entry(str(u), base, {k: v for k, v in r.items() if k != key}))
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
        entries.extend(_expand_local(local_path(src), so, walked) if is_local(src) else _expand_remote(src, so, walked))
    # the same file named twice (overlapping inputs) is scored once
    seen, unique = set(), []
    for e in entries:
        if e.uri not in seen:
            seen.add(e.uri)
            unique.append(e)
    return unique


def _expand_local(src: str, so: dict, walked) -> List[Entry]:
    if _has_glob(src) and not os.path.lexists(src):  # an existing name is taken literally
        matches = sorted(globmod.glob(src, recursive=True))
        if not matches:
            raise InputError(f"no files match {src!r}")
        return [e for m in matches for e in (walked(_walk_local(m)) if os.path.isdir(m) else [_local_entry(m)])]
    if os.path.isdir(src):
        return walked(_walk_local(src))
    if not os.path.lexists(src):
        raise InputError(f"input not found: {src}")
    return read_manifest(src, so) if src.lower().endswith(MANIFEST_SUFFIXES) else [_local_entry(src)]


def _expand_remote(src: str, so: dict, walked) -> List[Entry]:
    fs, path = get_fs(src, so)
    protocol = src.split("://", 1)[0]
    with errors_as(InputError, f"cannot list {src}"):
        if _has_glob(path):
            matches = sorted(fs.glob(path))
            if not matches:
                raise InputError(f"no objects match {src!r}")
            return [e for m in matches for e in (walked(_walk_remote(f"{protocol}://{m}", so)) if fs.isdir(m)
                                                 else [_remote_entry(fs, f"{protocol}://{m}", m)])]
        if src.lower().endswith(MANIFEST_SUFFIXES) and fs.isfile(path):
            return read_manifest(src, so)
        if fs.isdir(path):
            return walked(_walk_remote(src, so))
        if fs.exists(path):
            return [_remote_entry(fs, src, path)]
        raise InputError(f"input not found: {src}")


def _remote_entry(fs, uri: str, path: str) -> Entry:
    info = fs.info(path)
    return Entry(uri, int(info.get("size") or 0), _mtime(info), _etag(info))


def _column(values: list) -> pa.Array:
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them as text
        arr = pa.array([None if v is None else str(v) for v in values], pa.string())
    if pa.types.is_null(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _pool():
    """The Arrow memory pool for listings: jemalloc where pyarrow has it.  A listing is built
    from thousands of small chunks; mimalloc (pyarrow's default) keeps the scratch of each,
    which at a million objects costs ~80 MB of resident memory more than the table itself."""
    global _POOL
    if _POOL is None:
        try:
            _POOL = pa.jemalloc_memory_pool()
        except (NotImplementedError, pa.ArrowNotImplementedError, AttributeError):
            _POOL = pa.default_memory_pool()
    return _POOL


_POOL = None


def entries_table(entries: List[Entry]) -> pa.Table:
    """The listing as an Arrow table: uri, size, mtime, extra.etag and extra.<manifest column>."""
    pool = _pool()
    cols = {
        "uri": pa.array([e.uri for e in entries], pa.string(), memory_pool=pool),
        "size": pa.array([e.size for e in entries], pa.int64(), memory_pool=pool),
        "mtime": pa.array([e.mtime for e in entries], pa.float64(), memory_pool=pool),
        ETAG: pa.array([e.etag for e in entries], pa.string(), memory_pool=pool),
    }
    names: dict = {}
    for e in entries:
        for k in e.extra or ():
            names.setdefault(k, None)
    for k in names:
        cols[EXTRA_PREFIX + carried_name(k)] = _column([(e.extra or {}).get(k) for e in entries])
    return pa.table(cols)


def list_table(source: str, storage_options: dict | None = None, extensions: Iterable[str] = (),
               stats: dict | None = None, chunk: int = 10_000) -> pa.Table:
    """A prefix, folder, glob or manifest listed straight into an Arrow table (built ``chunk``
    entries at a time, so that a large listing never lives as Python objects all at once)."""
    so = storage_options or {}
    exts = tuple(e.lower() for e in extensions)
    if is_local(source) and not _has_glob(source) and os.path.isdir(local_path(source)):
        found: Iterable[Entry] = _walk_local(local_path(source))
    elif not is_local(source) and not _has_glob(source) and not source.lower().endswith(MANIFEST_SUFFIXES):
        fs, path = get_fs(source, so)
        with errors_as(InputError, f"cannot list {source}"):
            is_dir = fs.isdir(path)
        if not is_dir:  # one object, or nothing: as `faceqc score` takes it
            return entries_table(expand_inputs([source], so, extensions, stats))
        found = _walk_remote(source, so)
    else:
        return entries_table(expand_inputs([source], so, extensions, stats))
    tables, buf, skipped = [], [], 0
    with errors_as(InputError, f"cannot list {source}"):
        for e in found:
            if exts and not e.uri.lower().endswith(exts):
                skipped += 1
                continue
            buf.append(e)
            if len(buf) >= chunk:
                tables.append(entries_table(buf))
                buf = []

    tables.append(entries_table(buf))
    if stats is not None:
        stats["skipped_by_extension"] = stats.get("skipped_by_extension", 0) + skipped
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def list_sources(sources: Iterable[str], storage_options: dict | None = None, extensions: Iterable[str] = (),
                 stats: dict | None = None, limit: Optional[int] = None) -> pa.Table:
    """Every source listed into one table (:func:`list_table` each: streamed, built in chunks);
    a file named by two overlapping sources is listed once; ``limit`` keeps the first rows."""
    sources = list(sources)
    tables = [list_table(s, storage_options, extensions, stats) for s in sources]
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    if len(tables) > 1 and table.num_rows:
        import pyarrow.compute as pc

        idx = pa.array(range(table.num_rows), pa.int64())
        first = table.select(["uri"]).append_column("_i", idx).group_by("uri", use_threads=False) \
            .aggregate([("_i", "min")]).column("_i_min")
        table = table.take(pc.sort_indices(first))
    if limit is not None:
        table = table.slice(0, max(0, limit))
    return table
