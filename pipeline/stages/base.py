"""The one contract every stage implements.

A stage is a step of the pipeline (decode, detect, iqa, fiqa, fuse).  It

- is built from the configuration alone, cheaply: nothing is loaded in ``__init__``, so the
  driver can build, inspect and ship it;
- declares the Ray resources it wants (:attr:`resources`: CPUs, GPU fraction, batch size,
  concurrency, actors or tasks), read from its own config section;
- loads its models once in :meth:`setup` (once per Ray worker process in task mode, once per
  actor in actor mode, once in process for ``faceqc explain``);
- maps a batch to a batch in :meth:`process`.  A batch is a dict of equally long columns
  (NumPy arrays; object arrays for per-row arrays), or an Arrow table (the last stage, fuse,
  emits the output rows).  A stage may return more or fewer rows than it received (a video clip
  becomes many frames), as long as every row keeps the key columns that let a later step gather
  rows again (``uri``, and for expanded rows their sequence number).
- may instead return an iterator of batches (a generator), so that one input row can become
  more rows than fit in memory at once: the decode stage yields a video's sampled frames in
  chunks of at most its batch size (:mod:`pipeline.video.decode`).  Executors pass each batch
  on as it comes (Ray Data's ``map_batches`` takes generator functions); every batch a stage
  yields has the same columns.

The pipeline itself is data: the list :data:`pipeline.stages.STAGES`, which an executor walks
(:mod:`pipeline.executor`).  Swappable parts of a stage (decoders, detectors, models) are
backends from :mod:`pipeline.registry`, built in ``setup``.
"""

from __future__ import annotations

import traceback
from typing import Callable, ClassVar, Dict, Iterator, List, Union

import numpy as np
import pyarrow as pa

from ..config import Config, Resources
from ..geometry import primary_index  # noqa: F401 - the stages take it from here

Batch = Dict[str, np.ndarray]
Output = Union[Batch, pa.Table]
Outputs = Union[Output, Iterator[Output]]  # what process() returns: one batch or a generator of batches


def objarray(items: List) -> np.ndarray:
    """A 1-d object array holding arbitrary items (ndarrays of varying shape included)."""
    out = np.empty(len(items), dtype=object)
    for i, it in enumerate(items):
        out[i] = it
    return out


def batch_len(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


class Stage:
    """Subclasses set ``name`` (their config section), and implement ``setup`` when they load
    anything and ``process``."""

    name: ClassVar[str] = "stage"

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @property
    def resources(self) -> Resources:
        return getattr(self.cfg, self.name).resources

    def setup(self) -> None:
        """Load models and other heavy state; called once before the first batch."""

    def process(self, batch: Batch) -> Outputs:
        raise NotImplementedError

    def fail(self, status: np.ndarray, error: np.ndarray, i: int, exc: BaseException) -> None:
        """Record an unexpected failure of this stage on row i; the row flows on."""
        status[i] = f"{self.name}_error"
        error[i] = f"{self.name}: {traceback.format_exception_only(type(exc), exc)[-1].strip()}"

    def per_row(self, batch: Batch, fn: Callable[[int], None]) -> None:
        """Run fn(i) for every ok row, turning an exception into that row's error status."""
        status = np.asarray(batch["status"], dtype=object).copy()
        error = np.asarray(batch["error"], dtype=object).copy()
        for i in range(len(status)):
            if status[i] != "ok":
                continue
            try:
                fn(i)
            except Exception as e:  # noqa: BLE001 - one bad row must never stop the job
                self.fail(status, error, i, e)
        batch["status"] = status
        batch["error"] = error

