"""Stage 7 — write: Parquet part files committed one by one, then the run summary written last.

Each write task writes its rows into one ``part-<digest>.parquet`` file, where the digest is
a hash of the URIs in it, so a task that Ray retries rewrites the same file rather than adding
a second copy.  A part file appears whole or not at all: locally it is written under
``_faceqc/tmp/`` and renamed into place; on object stores it is one PUT, visible only once
complete.  So every readable part file is a committed block of finished rows — that is the
resume mechanism (as img2dataset's per-shard stats files): a run that is killed and started
again lists the readable parts, skips the URIs in them and scores the rest.

The driver writes ``_summary.json`` last, listing every part file of the run: a reader that
finds no ``_summary.json`` is looking at an unfinished run.  Each part file carries the schema
version, faceqc version and model ids in its metadata; storage options never appear in it, and
error messages are masked against them before they are written.
"""

from __future__ import annotations

import collections
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, List

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.datasource import Datasink

from ..fs import atomic_writer, get_fs, invalidate, is_local, join_uri, list_names, redact

SUMMARY_NAME = "_summary.json"
STATE_DIR = "_faceqc"  # resume state and temporary files; readers skip "_" folders
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"


def part_name(uris: List[str]) -> str:
    h = hashlib.sha1()
    for u in uris:
        h.update(u.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return f"{PART_PREFIX}{h.hexdigest()[:24]}{PART_SUFFIX}"


def _local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def write_table_atomic(uri: str, table: pa.Table, storage_options: dict | None,
                       compression: str = "zstd") -> None:
    """One Parquet file, visible whole or not at all (local temporaries go to the state folder)."""
    tmp_dir = None
    if is_local(uri):
        parent = os.path.dirname(_local_path(uri))
        tmp_dir = os.path.join(parent, "tmp") if os.path.basename(parent) == STATE_DIR \
            else os.path.join(parent, STATE_DIR, "tmp")
    with atomic_writer(uri, storage_options, tmp_dir) as f:
        pq.write_table(table, f, compression=compression)

class ParquetResultSink(Datasink):
    def __init__(self, out: str, schema: pa.Schema, storage_options: dict, compression: str = "zstd"):
        self.out = out
        self.schema = schema
        self.storage_options = storage_options
        self.compression = compression
        self.result = None  # set on the driver by on_write_complete

    def _conform(self, table: pa.Table) -> pa.Table:
        table = table.select(self.schema.names).cast(self.schema)
        if self.storage_options and table.num_rows:
            errors = table.column("error")
            if pc.any(pc.is_valid(errors)).as_py():
                masked = pa.array([None if e is None else redact(e, self.storage_options)
                                   for e in errors.to_pylist()], pa.string())
                table = table.set_column(table.schema.get_field_index("error"), "error", masked)
        return table

    def write(self, blocks: Iterable, ctx) -> dict:
        tables = []
        for block in blocks:
            table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
            if table.num_rows:
                tables.append(self._conform(table))
        counts = {"rows": 0, "status": {}, "verdict": {}, "files": []}
        if not tables:
            return counts
        table = pa.concat_tables(tables).combine_chunks()
        name = part_name(table.column("uri").to_pylist())
        write_table_atomic(join_uri(self.out, name), table, self.storage_options, self.compression)
        counts["rows"] = table.num_rows
        counts["status"] = dict(collections.Counter(table.column("status").to_pylist()))
        counts["verdict"] = dict(collections.Counter(table.column("verdict").to_pylist()))
        counts["files"] = [name]
        return counts

    def on_write_complete(self, write_result) -> None:
        total = {"rows": 0, "status": collections.Counter(), "verdict": collections.Counter(), "files": []}
        for r in write_result.write_returns:
            total["rows"] += r["rows"]
            total["status"].update(r["status"])
            total["verdict"].update(r["verdict"])
            total["files"].extend(r["files"])
        total["status"], total["verdict"] = dict(total["status"]), dict(total["verdict"])
        total["files"].sort()
        self.result = total


# ------------------------------------------------------------------------ committed parts
def part_names(out: str, storage_options: dict | None) -> List[str]:
    return [n for n in list_names(out, storage_options) if n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX)]


def read_part(out: str, name: str, storage_options: dict | None, columns=("uri", "status", "verdict")):
    """The given columns of one part file, or None when it cannot be read as Parquet."""
    fs, path = get_fs(join_uri(out, name), storage_options)
    try:
        with fs.open(path, "rb") as f:
            return pq.read_table(f, columns=list(columns))
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - truncated or foreign file
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
