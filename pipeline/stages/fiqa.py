"""Stage: fiqa + pose — face quality (recognisability) and head pose of each face.

Pose: the detect stage has measured it where it could (dlib's 68 points fitted to a 3-D face, see
:mod:`pipeline.pose3d`, or an insightface pack's 1k3d68); otherwise, with
dlib's 5 points it comes from closed-form ratios of the landmarks here
(:func:`pipeline.geometry.head_pose_dlib5`).

Face quality: the primary method, ``fiqa.backend`` (:mod:`pipeline.registry`), over the 112x112
ArcFace crops — dlib embedding stability in the offline profile (only the primary face: the
network is slow on CPU, unless ``fiqa.all_faces``), or an ONNX face-quality model batched over every
face — and beside it every method whose model is set (``fiqa.serfiq``, ``fiqa.sdd_fiqa`` over every
face's 112 px crop; ``fiqa.restoration`` and the occlusion segmenter ``fiqa.occlusion`` over the
primary face's FFHQ-aligned crop, ``face_crop_target``).  Each method fills only its own keys of
:data:`pipeline.schema.FIQA_KEYS` (NaN elsewhere) and the stage merges them.  Each method scores
the whole batch in one call; if that call fails, it goes again row by row, so that a failure
stays with its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List

import cv2
import numpy as np

from .. import geometry as geo
from .. import registry
from ..schema import FIQA_KEYS
from .base import Batch, Stage, objarray, primary_index


@dataclass
class _Method:
    name: str
    model: Any  # .score(crops) -> (n, len(FIQA_KEYS)) with NaN outside its own keys
    primary_only: bool
    column: str  # face_crop112 (every face's crops) or face_crop_target (the primary face's crop)


class FIQAStage(Stage):
    name = "fiqa"

    def setup(self) -> None:
        cv2.setNumThreads(1)
        c = self.cfg.fiqa
        self.pose_from_points = registry.get("detect", self.cfg.detect.detector).traits.get("points") == "dlib5"
        self.dense = self.cfg.detect.dense_landmarks != "none"
        self.methods: List[_Method] = []
        for stage, name, _ in self.cfg.backends():
            if stage != "fiqa":
                continue
            traits = registry.get("fiqa", name).traits
            column = traits.get("input", "face_crop112")
            primary_only = column == "face_crop_target" or (not c.all_faces and traits.get("primary_only", False))
            self.methods.append(_Method(name, registry.create("fiqa", name, self.cfg), primary_only, column))

    def _inputs(self, batch: Batch, m: _Method, i: int, p: int) -> tuple:
        """(face indices, crops) method ``m`` scores in row ``i`` (primary face ``p``)."""
        if m.column == "face_crop_target":
            t = np.asarray(batch["face_crop_target"][i])
            return ([p], t[None]) if t.size else ([], None)
        crops = batch["face_crop112"][i]
        if len(crops) == 0:
            return [], None
        return ([p], crops[p:p + 1]) if m.primary_only else (list(range(len(crops))), crops)

    def process(self, batch: Batch) -> Batch:
        n = len(batch["uri"])
        fiqa = [np.zeros((0, len(FIQA_KEYS)), np.float32)] * n
        pose = [np.zeros((0, 3), np.float32)] * n
        primary = np.zeros(n, np.int64)
        embedding = [np.zeros(0, np.float32)] * n  # the primary face's, where a backend makes one

        def one(i: int) -> None:
            # the pose the detect stage measured (dense landmarks, an insightface pack's 1k3d68);
            # with dlib's 5 points alone, their closed form
            pose[i] = np.array(batch["face_pose"][i], np.float32).reshape(-1, 3)
            if self.pose_from_points:
                for j, p in enumerate(batch["face_points"][i]):
                    if not np.isfinite(pose[i][j]).all():
                        pose[i][j] = geo.head_pose_dlib5(p)
                        if self.dense:  # 5 points do not observe pitch: not a stand-in for the 68's
                            pose[i][j][1] = np.nan
            k = len(batch["face_crop112"][i])
            fiqa[i] = np.full((k, len(FIQA_KEYS)), np.nan, np.float32)
            if k:
                primary[i] = primary_index(np.asarray(batch["face_bbox"][i]).reshape(-1, 4),
                                           np.asarray(batch["face_det_score"][i]))

        self.per_row(batch, one)
        for m in self.methods:
            self._run(batch, m, fiqa, primary, embedding)
        out = {k: v for k, v in batch.items() if k not in ("face_crop112", "face_crop_target")}
        out["face_fiqa"] = objarray(fiqa)
        out["face_pose"] = objarray(pose)
        out["face_embedding"] = objarray(embedding)
        return out

    def _run(self, batch: Batch, m: _Method, fiqa: list, primary: np.ndarray, embedding: list) -> None:
        """Method ``m`` over every ok row: one call for the batch, row by row if that fails.  A
        backend that keeps its faces' embeddings (``last_embeddings``: the face tracks of clips
        use them, pipeline/video/tracks.py) gives each row its primary face's."""
        jobs = []  # (row, face indices, crops)
        for i, st in enumerate(batch["status"]):
            if st == "ok":
                idx, crops = self._inputs(batch, m, i, int(primary[i]))
                if idx:
                    jobs.append((i, idx, crops))
        if not jobs:
            return

        def put(i: int, idx: list, res: np.ndarray, emb=None) -> None:
            own = ~np.isnan(res)
            for r, j in enumerate(idx):
                fiqa[i][j][own[r]] = res[r][own[r]]
                if emb is not None and j == primary[i] and len(emb) > r:
                    embedding[i] = np.asarray(emb[r], np.float32)

        try:
            res = m.model.score(np.concatenate([c for _, _, c in jobs]))
        except Exception:  # noqa: BLE001 - again row by row below: errors stay with their rows
            res = None
        if res is not None:
            emb = getattr(m.model, "last_embeddings", None)
            off = 0
            for i, idx, _ in jobs:
                put(i, idx, res[off:off + len(idx)], None if emb is None else emb[off:off + len(idx)])
                off += len(idx)
            return
        crops_of = {i: (idx, crops) for i, idx, crops in jobs}

        def again(i: int) -> None:
            if i in crops_of:
                idx, crops = crops_of[i]
                res = m.model.score(crops)
                put(i, idx, res, getattr(m.model, "last_embeddings", None))

        self.per_row(batch, again)
