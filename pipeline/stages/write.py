"""Stage 7 — write: Parquet files, then the run summary written last as the commit marker.

Each write task writes its blocks into one ``part-*.parquet`` file carrying the schema version,
faceqc version and model ids in its metadata, and returns counts by status and verdict; the
driver merges them into ``_summary.json`` once every file is in place.  A reader that finds no
``_summary.json`` is looking at an unfinished run.
"""

from __future__ import annotations

import collections
import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.datasource import Datasink

from ..fs import get_fs, join_uri

SUMMARY_NAME = "_summary.json"


class ParquetResultSink(Datasink):
    def __init__(self, out: str, schema: pa.Schema, storage_options: dict, compression: str = "zstd"):
        self.out = out
        self.schema = schema
        self.storage_options = storage_options
        self.compression = compression
        self.result = None  # set on the driver by on_write_complete

    def write(self, blocks: Iterable, ctx) -> dict:
        counts = {"rows": 0, "status": collections.Counter(), "verdict": collections.Counter(), "files": []}
        writer = None
        name = f"part-{ctx.task_idx:05d}-{uuid.uuid4().hex[:12]}.parquet"
        uri = join_uri(self.out, name)
        fs, path = get_fs(uri, self.storage_options)
        f = None
        try:
            for block in blocks:
                table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
                if table.num_rows == 0:
                    continue
                table = table.select(self.schema.names).cast(self.schema)
                if writer is None:
                    f = fs.open(path, "wb")
                    writer = pq.ParquetWriter(f, self.schema, compression=self.compression)
                writer.write_table(table)
                counts["rows"] += table.num_rows
                counts["status"].update(table.column("status").to_pylist())
                counts["verdict"].update(table.column("verdict").to_pylist())
        finally:
            if writer is not None:
                writer.close()
            if f is not None:
                f.close()
        if writer is not None:
            counts["files"].append(name)
        counts["status"], counts["verdict"] = dict(counts["status"]), dict(counts["verdict"])
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
