"""The one small interface every stage implements."""

from __future__ import annotations

import time
import traceback
from typing import Callable, ClassVar, Dict, List

import numpy as np

from ..config import Config, Resources

Batch = Dict[str, np.ndarray]


def objarray(items: List) -> np.ndarray:
    """A 1-d object array holding arbitrary items (ndarrays of varying shape included)."""
    out = np.empty(len(items), dtype=object)
    for i, it in enumerate(items):
        out[i] = it
    return out


def batch_len(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


class Stage:
    """A pipeline stage.  Subclasses set ``name`` (its config section) and implement
    ``process``; whether it runs as Ray tasks or actors is its config's ``resources.actors``."""

    name: ClassVar[str] = "stage"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.seconds = 0.0
        self.rows = 0

    @classmethod
    def resources(cls, cfg: Config) -> Resources:
        return getattr(cfg, cls.name).resources

    def process(self, batch: Batch) -> Batch:
        raise NotImplementedError

    def __call__(self, batch: Batch) -> Batch:
        t = time.perf_counter()
        out = self.process(batch)
        self.seconds += time.perf_counter() - t
        self.rows += batch_len(batch)
        return out

    def mark_failed(self, status: np.ndarray, error: np.ndarray, i: int, exc: BaseException) -> None:
        """Record an unexpected failure of this stage on row i; the row flows on."""
        status[i] = f"{self.name}_error"
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        error[i] = f"{self.name}: {tb}"


def ok_rows(batch: Batch) -> List[int]:
    return [i for i, s in enumerate(batch["status"]) if s == "ok"]


def per_row(stage: Stage, batch: Batch, fn: Callable[[int], None]) -> None:
    """Run fn(i) for every ok row, turning an exception into that row's error status."""
    status = np.asarray(batch["status"], dtype=object).copy()
    error = np.asarray(batch["error"], dtype=object).copy()
    for i in range(len(status)):
        if status[i] != "ok":
            continue
        try:
            fn(i)
        except Exception as e:  # noqa: BLE001 - one bad row must never stop the job
            stage.mark_failed(status, error, i, e)
    batch["status"] = status
    batch["error"] = error


def primary_index(bboxes: np.ndarray, det_scores: np.ndarray) -> int:
    """Most confident of the large faces: the largest face can be a false detection."""
    areas = (bboxes[:, 2] - bboxes[:, 0]) * (bboxes[:, 3] - bboxes[:, 1])
    large = areas >= 0.5 * areas.max()
    return int(np.argmax(np.where(large, det_scores, -np.inf)))
