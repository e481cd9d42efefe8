"""The sink: Parquet part files committed one by one (the run summary is written last, by
:mod:`pipeline.run`).

Each write task writes its rows into one ``part-<digest>.parquet`` file, where the digest is a
hash of the URIs in it, so a task that Ray retries rewrites the same file rather than adding a
second copy.  A part file appears whole or not at all: locally it is written under
``_faceqc/tmp/`` and renamed into place; on object stores it is one PUT, visible only once
complete.  So every readable part file is a committed block of finished rows — that is the
resume mechanism (as img2dataset's per-shard stats files): a run that is killed and started
again lists the readable parts, skips the URIs in them and scores the rest.

Each part file carries the schema version, faceqc version and model ids in its metadata;
storage options never appear in it, and error messages are masked against them.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, List

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import OutputError
from ..fs import (
    atomic_writer,
    get_fs,
    invalidate,
    is_local,
    join_uri,
    list_names,
    local_path,
    redact,
)
from ..schema import READ_RETRIES, conform
from . import retry

SUMMARY_NAME = "_summary.json"
STATE_DIR = "_faceqc"  # resume state and temporary files; readers skip "_" folders
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"


def part_name(uris: List[str]) -> str:
    h = hashlib.sha1()
    for u in uris:
        h.update(u.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return f"{PART_PREFIX}{h.hexdigest()[:24]}{PART_SUFFIX}"


def write_table_atomic(uri: str, table: pa.Table, storage_options: dict | None,
                       compression: str = "zstd") -> None:
    """One Parquet file, visible whole or not at all (local temporaries go to the state folder)."""
    tmp_dir = None
    if is_local(uri):
        parent = os.path.dirname(local_path(uri))
        tmp_dir = os.path.join(parent, "tmp") if os.path.basename(parent) == STATE_DIR \
            else os.path.join(parent, STATE_DIR, "tmp")
        with atomic_writer(uri, storage_options, tmp_dir) as f:
            pq.write_table(table, f, compression=compression)
        return

    def write() -> None:  # one PUT (or multipart upload): the whole file again on a retry
        with atomic_writer(uri, storage_options) as f:
            pq.write_table(table, f, compression=compression)

    retry.call("write", write, what=uri)


class PartWriter:
    """The sink, on the driver: every table of output rows handed to :meth:`write` becomes one
    part file, conformed to the output schema, written by a few threads (on object stores each
    file is one PUT) while the next rows arrive.  :meth:`close` waits for every write and
    returns the counts: rows, part files, statuses and verdicts."""

    def __init__(self, out: str, schema: pa.Schema, storage_options: dict, compression: str = "zstd",
                 threads: int = 4):
        self.out, self.schema, self.storage_options, self.compression = out, schema, storage_options, compression
        self.mask = functools.partial(redact, storage_options=storage_options) if storage_options else None
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="faceqc-write")
        self.threads = threads
        self.pending: collections.deque = collections.deque()
        self.counts = {"rows": 0, "status": collections.Counter(), "verdict": collections.Counter(), "files": []}
        self.read_retries = 0  # the workers' retried object reads, summed from the rows' side channel

    def write(self, rows) -> int:
        """Queue one part file of ``rows`` (the fuse stage's output); return its row count."""
        names = rows.column_names if isinstance(rows, pa.Table) else list(rows)
        if READ_RETRIES in names:
            col = rows.column(READ_RETRIES) if isinstance(rows, pa.Table) else rows[READ_RETRIES]
            self.read_retries += int(sum(col.to_pylist() if hasattr(col, "to_pylist") else col))
        table = conform(rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows), self.schema, self.mask)
        if not table.num_rows:
            return 0
        table = table.combine_chunks()
        name = part_name(table.column("uri").to_pylist())
        fut = self.pool.submit(write_table_atomic, join_uri(self.out, name), table, self.storage_options,
                               self.compression)
        self.pending.append((fut, name, table.column("status").to_pylist(), table.column("verdict").to_pylist()))
        while len(self.pending) > 2 * self.threads:  # bounded: rows wait here, not in memory
            self._reap()
        return table.num_rows

    def _reap(self) -> None:
        fut, name, status, verdict = self.pending.popleft()
        fut.result()  # a failed write fails the run (it stays uncommitted and resumes)
        self.counts["rows"] += len(status)
        self.counts["status"].update(status)
        self.counts["verdict"].update(verdict)
        self.counts["files"].append(name)

    def close(self) -> dict:
        try:
            while self.pending:
                self._reap()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        c = self.counts
        return {"rows": c["rows"], "status": dict(c["status"]), "verdict": dict(c["verdict"]),
                "files": sorted(c["files"]), "read_retries": self.read_retries}


# ------------------------------------------------------------------------ committed parts
def part_names(out: str, storage_options: dict | None) -> List[str]:
    return [n for n in list_names(out, storage_options) if n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX)]


def read_part(out: str, name: str, storage_options: dict | None, columns=("uri", "status", "verdict")):
    """The given columns of one part file, or None when it cannot be read as Parquet."""
    fs, path = get_fs(join_uri(out, name), storage_options)

    def read():
        with fs.open(path, "rb") as f:
            return pq.read_table(f, columns=list(columns))

    try:
        return read() if is_local(out) else retry.call("read", read, what=name)
    except Exception as e:  # noqa: BLE001 - missing, truncated or foreign file
        if retry.transient(e):  # the store, not the file: never drop a good part for it
            raise OutputError(redact(f"cannot read part file {join_uri(out, name)} after "
                                     f"{retry.policy().retries} retries: {type(e).__name__}: {e}",
                                     storage_options)) from e
        return None


def scan_parts(out: str, storage_options: dict | None, names: List[str] | None = None,
               threads: int = 16) -> dict:
    """What the readable part files in ``out`` hold: {name: table(uri, status, verdict)}.
    Unreadable ones map to None."""
    names = part_names(out, storage_options) if names is None else names
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(names)))) as ex:
        tables = list(ex.map(lambda n: read_part(out, n, storage_options), names))
    return dict(zip(names, tables))


def remove(out: str, names: Iterable[str], storage_options: dict | None) -> None:
    for n in names:
        fs, path = get_fs(join_uri(out, n), storage_options)
        try:
            fs.rm(path)
        except FileNotFoundError:
            pass
    invalidate(out, storage_options)
