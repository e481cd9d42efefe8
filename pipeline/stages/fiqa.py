"""Stage: fiqa + pose — face quality (recognisability) and head pose of each face.

Pose: a detector whose backend gives pose (an insightface pack's 1k3d68) has already set it; with
dlib's 5 points it comes from closed-form ratios of the landmarks here
(:func:`pipeline.geometry.head_pose_dlib5`).

Face quality: the ``fiqa.backend`` backend (:mod:`pipeline.registry`) over the 112x112 ArcFace
crops — dlib embedding stability in the offline profile (only the primary face: the network is
slow on CPU, unless ``fiqa.all_faces``), or an ONNX face-quality model batched over every face.
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import geometry as geo
from .. import registry
from ..schema import FIQA_KEYS
from .base import Batch, Stage, objarray, primary_index


class FIQAStage(Stage):
    name = "fiqa"

    def setup(self) -> None:
        cv2.setNumThreads(1)
        c = self.cfg.fiqa
        self.pose_from_points = registry.get("detect", self.cfg.detect.detector).traits.get("points") == "dlib5"
        self.model = None if c.backend == "none" else registry.create("fiqa", c.backend, self.cfg)
        self.primary_only = c.backend != "none" and not c.all_faces and \
            registry.get("fiqa", c.backend).traits.get("primary_only", False)

    def process(self, batch: Batch) -> Batch:
        n = len(batch["uri"])
        fiqa = [np.zeros((0, len(FIQA_KEYS)), np.float32)] * n
        pose = [np.zeros((0, 3), np.float32)] * n
        embedding = [np.zeros(0, np.float32)] * n  # the primary face's, where the backend makes one

        def one(i: int) -> None:
            if self.pose_from_points:
                pose[i] = np.array([geo.head_pose_dlib5(p) for p in batch["face_points"][i]], np.float32).reshape(-1, 3)
            else:
                pose[i] = np.array(batch["face_pose"][i], np.float32).reshape(-1, 3)
            crops = batch["face_crop112"][i]
            fiqa[i] = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
            if self.model is None or len(crops) == 0:
                return
            p = primary_index(np.asarray(batch["face_bbox"][i]).reshape(-1, 4), np.asarray(batch["face_det_score"][i]))
            if not self.primary_only:
                fiqa[i] = self.model.score(crops)
            else:
                fiqa[i][p] = self.model.score(crops[p:p + 1])[0]
                p = 0
            emb = getattr(self.model, "last_embeddings", None)  # face tracks (pipeline/video/tracks.py)
            if emb is not None and len(emb) > p:
                embedding[i] = np.asarray(emb[p], np.float32)

        self.per_row(batch, one)
        out = {k: v for k, v in batch.items() if k not in ("face_crop112", "face_crop_target")}
        out["face_fiqa"] = objarray(fiqa)
        out["face_pose"] = objarray(pose)
        out["face_embedding"] = objarray(embedding)
        return out
