"""Stage 5 — fiqa + pose: face quality (recognisability) and head pose of each face.

Pose: yaw, pitch and roll from closed-form ratios of the 5 landmarks
(:func:`pipeline.geometry.head_pose_dlib5`).

Face quality, backend ``dlib_stability``: in the spirit of SER-FIQ, how stable the dlib 128-d
embedding stays when the aligned face is mirrored.  A
clear face maps to nearly the same point; a blurred, noisy or tiny one drifts.  The raw value is
the cosine similarity between the embeddings of the crop and of its mirror image.  The dlib
network costs ~150 ms per face on one CPU core (dlib-bin has no BLAS), so only the primary face
of each image is scored (``fiqa.all_faces`` to score every face).
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import geometry as geo
from ..config import Config
from ..models import model_path
from .base import Batch, Stage, objarray, per_row, primary_index

FIQA_KEYS = ("stability",)
POSE_KEYS = ("yaw", "pitch", "roll")


class DlibStability:
    chip = 150

    def __init__(self):
        import dlib

        self.net = dlib.face_recognition_model_v1(model_path("dlib-resnet-face-v1"))

    def perturbations(self, crop112: np.ndarray) -> list:
        # dlib's chips show a little more context than the ArcFace 112 frame: pad, then resize
        base = cv2.resize(cv2.copyMakeBorder(crop112, 8, 8, 8, 8, cv2.BORDER_REPLICATE), (self.chip, self.chip),
                          interpolation=cv2.INTER_LINEAR)
        return [base, base[:, ::-1].copy()]

    def score(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, len(FIQA_KEYS)), np.float32)
        chips = []
        for c in crops:
            chips.extend(self.perturbations(np.ascontiguousarray(c)))
        emb = np.asarray(self.net.compute_face_descriptor(chips), np.float32).reshape(len(crops), 2, -1)
        emb /= np.linalg.norm(emb, axis=2, keepdims=True) + 1e-9
        sims = np.einsum("nd,nkd->nk", emb[:, 0], emb[:, 1:])
        return sims.mean(axis=1, keepdims=True).astype(np.float32)


class FIQAStage(Stage):
    name = "fiqa"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        cv2.setNumThreads(1)
        self.model = DlibStability() if cfg.fiqa.backend == "dlib_stability" else None

    def process(self, batch: Batch) -> Batch:
        n = len(batch["uri"])
        fiqa = [np.zeros((0, len(FIQA_KEYS)), np.float32)] * n
        pose = [np.zeros((0, 3), np.float32)] * n

        def one(i: int) -> None:
            pts = batch["face_points"][i]
            pose[i] = np.array([geo.head_pose_dlib5(p) for p in pts], np.float32).reshape(-1, 3)
            crops = batch["face_crop112"][i]
            fiqa[i] = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
            if self.model is None or len(crops) == 0:
                return
            if self.cfg.fiqa.all_faces:
                fiqa[i] = self.model.score(crops)
            else:
                p = primary_index(np.asarray(batch["face_bbox"][i]).reshape(-1, 4), np.asarray(batch["face_det_score"][i]))
                fiqa[i][p] = self.model.score(crops[p:p + 1])[0]

        per_row(self, batch, one)
        out = {k: v for k, v in batch.items() if k != "face_crop112"}
        out["face_fiqa"] = objarray(fiqa)
        out["face_pose"] = objarray(pose)
        return out
