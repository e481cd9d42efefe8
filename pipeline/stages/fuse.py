"""Stage: fuse — every row's output record (:func:`pipeline.fusion.fuse_row`: components,
quality, verdict and reasons), as one Arrow table per batch in the base schema."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..fusion import fuse_row
from ..schema import BASE_SCHEMA, EXTRA_PREFIX, INTERNAL_PREFIX, carried_column
from .base import Batch, Stage

# columns passed on to the driver as they came: the listing's (extra.*), a video frame's
# (video.*: pipeline/video/) and the primary face's embedding where the profile makes one
CARRIED = (EXTRA_PREFIX, "video.", "face_embedding")


class FuseStage(Stage):
    """Builds the output rows (an Arrow table in the base schema), and passes the listing's
    carried columns (``extra.<name>``: ETag, a manifest's own columns) on as they came; the sink
    gives them their output names and types (:func:`pipeline.schema.conform`)."""

    name = "fuse"

    def process(self, batch: Batch) -> pa.Table:
        records = []
        for i in range(len(batch["uri"])):
            row = {k: v[i] for k, v in batch.items()}
            try:
                records.append(fuse_row(self.cfg, row))
            except Exception as e:  # noqa: BLE001 - the row survives with an error status
                records.append(fuse_row(self.cfg, {**row, "status": "fuse_error",
                                                   "error": f"fuse: {type(e).__name__}: {e}"}))
        table = pa.Table.from_pylist(records, schema=BASE_SCHEMA)
        for name in batch:
            if name.startswith(CARRIED):
                table = table.append_column(name, carried_column(batch[name], None))
            elif name.startswith(INTERNAL_PREFIX):
                table = table.append_column(name, pa.array(np.asarray(batch[name], np.int64)))
        return table
