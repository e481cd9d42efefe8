"""The same stage code, run in one process without Ray: `faceqc explain`, the benchmark's
baseline loop, and tests that score in-memory images."""

from __future__ import annotations

from typing import Iterable, List

import numpy as np
import pyarrow as pa

from .config import Config
from .models import models_for
from .schema import schema_with_metadata
from .stages.base import objarray
from .stages.decode import DecodeStage
from .stages.detect import DetectStage
from .stages.fiqa import FIQAStage
from .stages.fuse import FuseStage
from .stages.iqa import IQAStage
from .stages.listing import Entry, entries_table


def stage_classes():
    """The pipeline's stages, in order (listing and writing are not batch stages)."""
    return [DecodeStage, DetectStage, IQAStage, FIQAStage, FuseStage]


class LocalPipeline:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        schema = schema_with_metadata(models_for(cfg), cfg.profile)
        self.stages = [cls(cfg) if cls is not FuseStage else cls(cfg, schema) for cls in stage_classes()]

    def run_batch(self, batch: dict, start: int = 0) -> pa.Table:
        for st in self.stages[start:]:
            batch = st(batch)
        return batch

    def score_entries(self, entries: List[Entry], batch_size: int = 16) -> pa.Table:
        tables = []
        t = entries_table(entries)
        for off in range(0, len(entries), batch_size):
            part = t.slice(off, batch_size)
            batch = {c: part.column(c).to_numpy(zero_copy_only=False) for c in part.column_names}
            tables.append(self.run_batch(batch))
        return pa.concat_tables(tables) if tables else self.stages[-1].schema.empty_table()

    def score_images(self, images: Iterable[np.ndarray], names: Iterable[str] | None = None) -> pa.Table:
        """Score decoded RGB uint8 arrays (skips reading and decoding)."""
        images = list(images)
        n = len(images)
        names = list(names) if names is not None else [f"image-{i}" for i in range(n)]
        batch = {
            "uri": np.array(names, dtype=object), "size": np.full(n, -1, np.int64),
            "mtime": np.full(n, np.nan), "status": np.full(n, "ok", dtype=object),
            "error": np.full(n, "", dtype=object),
            "width": np.array([im.shape[1] for im in images], np.int32),
            "height": np.array([im.shape[0] for im in images], np.int32),
            "image": objarray(images),
        }
        return self.run_batch(batch, start=1)
