"""Stage: iqa — general image quality of each aligned face crop and of the whole image.

The ``classical`` backend's no-reference measures are always computed; a deep IQA model
(``iqa.model_backend``: timm or pyiqa, see :mod:`pipeline.backends.iqa_torch`) adds its raw output
and its 0–100 score, batched over every face crop of the batch in one model call.  The stage
runs as tasks or as an actor pool (a GPU model) as ``iqa.resources`` says.
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import registry
from ..schema import FACE_IQA_KEYS, IMAGE_IQA_KEYS
from .base import Batch, Stage, objarray, primary_index

MODEL_RAW, MODEL_SCORE = FACE_IQA_KEYS.index("model_raw"), FACE_IQA_KEYS.index("model_score")
OPENNESS = [FACE_IQA_KEYS.index("eye_openness"), FACE_IQA_KEYS.index("mouth_openness")]


class IQAStage(Stage):
    name = "iqa"

    def setup(self) -> None:
        cv2.setNumThreads(1)
        c = self.cfg.iqa
        self.classical = registry.create("iqa", c.backend, self.cfg)
        self.deep = None if c.model_backend == "none" else registry.create("iqa", c.model_backend, self.cfg)

    def process(self, batch: Batch) -> Batch:
        n = len(batch["uri"])
        face_iqa = [np.zeros((0, len(FACE_IQA_KEYS)), np.float32)] * n
        image_iqa = [np.full(len(IMAGE_IQA_KEYS), np.nan, np.float32)] * n

        def one(i: int) -> None:
            image_iqa[i] = self.classical.image(batch["thumb"][i])
            crops, patches, sizes = batch["face_crop_iqa"][i], batch["face_patch"][i], batch["face_patch_size"][i]
            if len(crops):
                p = primary_index(np.asarray(batch["face_bbox"][i]).reshape(-1, 4), np.asarray(batch["face_det_score"][i]))
                target = {"crop": batch["face_crop_target"][i], "scale": float(batch["face_target_scale"][i]),
                          "points": batch["face_target_points"][i], "outside": float(batch["face_target_outside"][i]),
                          "thumb": batch["thumb"][i]}
                face_iqa[i] = np.stack([self.classical.face(crops[j], patches[j], int(sizes[j]), target if j == p else None)
                                        for j in range(len(crops))])
                # what the detect stage's dense landmarks measured joins the raw measures
                face_iqa[i][:, OPENNESS] = np.asarray(batch["face_openness"][i], np.float32).reshape(-1, 2)

        self.per_row(batch, one)
        if self.deep is not None:
            self._deep(batch, face_iqa, image_iqa)
        out = {k: v for k, v in batch.items() if k not in ("face_crop_iqa", "face_patch", "thumb")}
        out["face_iqa"] = objarray(face_iqa)
        out["image_iqa"] = np.stack(image_iqa).astype(np.float32)
        return out

    def _deep(self, batch: Batch, face_iqa: list, image_iqa: list) -> None:
        """One batched model call over every face crop of the batch (and the thumbnails)."""
        rows = [i for i, st in enumerate(batch["status"]) if st == "ok" and len(batch["face_crop_iqa"][i])]
        if rows:
            crops = np.concatenate([np.asarray(batch["face_crop_iqa"][i]) for i in rows])
            raw, mapped = self.deep.score(crops)
            k = 0
            for i in rows:
                m = len(batch["face_crop_iqa"][i])
                face_iqa[i] = face_iqa[i].copy()
                face_iqa[i][:, MODEL_RAW], face_iqa[i][:, MODEL_SCORE] = raw[k:k + m], mapped[k:k + m]
                k += m
        if self.cfg.iqa.whole_image:
            ok = [i for i, st in enumerate(batch["status"]) if st == "ok" and batch["thumb"][i].size]
            s = self.cfg.detect.iqa_crop
            if ok:
                thumbs = np.stack([cv2.resize(batch["thumb"][i], (s, s), interpolation=cv2.INTER_AREA) for i in ok])
                _, mapped = self.deep.score(thumbs)
                for j, i in enumerate(ok):
                    image_iqa[i] = image_iqa[i].copy()
                    image_iqa[i][-1] = mapped[j]
