"""Reading a run's output back: the rows of a ``faceqc score --out`` folder and its summary (for
the report, calibration and anything else built on finished runs)."""

from __future__ import annotations

import json
from typing import Optional, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError, errors_as
from ..fs import get_fs, join_uri
from .parts import SUMMARY_NAME


def read_results(out: str, storage_options: Optional[dict] = None) -> Tuple[pa.Table, Optional[dict]]:
    """The rows of a ``faceqc score`` output and its ``_summary.json`` (None for an unfinished
    run, whose ``part-*.parquet`` files are read as found)."""
    fs, path = get_fs(out, storage_options)
    with errors_as(InputError, f"cannot read results {out}"):
        if not fs.isdir(path):
            raise InputError(f"results not found: {out} is not a directory written by 'faceqc score --out'")
        summary = None
        spath = join_uri(path, SUMMARY_NAME)
        if fs.exists(spath):
            with fs.open(spath, "rb") as f:
                summary = json.loads(f.read().decode())
        if summary is not None and summary.get("files"):
            files = [join_uri(path, name) for name in summary["files"]]
        else:
            files = sorted(fs.glob(join_uri(path, "part-*.parquet")))
        if not files:
            raise InputError(f"results {out} hold no part-*.parquet files")
        tables = []
        for p in files:
            with fs.open(p, "rb") as f:
                tables.append(pq.read_table(f))
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    return table, summary


def run_profile(table: pa.Table, summary: Optional[dict]) -> Optional[str]:
    """The profile a run used (from its summary, else from the Parquet metadata)."""
    if summary and summary.get("profile"):
        return summary["profile"]
    meta = table.schema.metadata or {}
    p = meta.get(b"faceqc.profile")
    return p.decode() if p else None
