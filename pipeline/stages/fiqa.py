"""Stage 5 — fiqa + pose: face quality (recognisability) and head pose of each face.

Pose: with dlib's 5 points, yaw, pitch and roll from closed-form ratios of the landmarks
(:func:`pipeline.geometry.head_pose_dlib5`); with an insightface pack, the detect stage has
already run the 1k3d68 model on full-size pixels and its pose is passed through.

Face quality, backend ``dlib_stability``: in the spirit of SER-FIQ, how stable the dlib 128-d
embedding stays when the aligned face is mirrored.  A
clear face maps to nearly the same point; a blurred, noisy or tiny one drifts.  The raw value is
the cosine similarity between the embeddings of the crop and of its mirror image.  The dlib
network costs ~150 ms per face on one CPU core (dlib-bin has no BLAS), so only the primary face
of each image is scored (``fiqa.all_faces`` to score every face).

Backend ``onnx``: an ONNX face-quality model (eDifFIQA, OFIQ's MagFace, or any model with a
declared input contract, see :mod:`pipeline.backends.fiqa_onnx`), batched over every face's
112x112 ArcFace crop; raw output in ``model_raw``, mapped 0–100 in ``model_score``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import geometry as geo
from ..config import Config
from ..models import REGISTRY, ModelError, model_path
from .base import Batch, Stage, objarray, per_row, primary_index

FIQA_KEYS = ("stability", "model_raw", "model_score")
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
        sims = np.einsum("nd,nkd->nk", emb[:, 0], emb[:, 1:]).mean(axis=1)
        out = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
        out[:, 0] = sims
        return out


class OnnxModel:
    """An ONNX face-quality model with a declared contract (see backends.fiqa_onnx)."""

    def __init__(self, cfg: Config):
        from ..backends.fiqa_onnx import OnnxFIQA
        from ..modelstore import resolve

        f = cfg.fiqa
        if not f.model:
            raise ModelError("fiqa.backend 'onnx' needs fiqa.model (a registry name, path or URI)")
        info = REGISTRY.get(f.contract_from or f.model)
        if f.contract_from and info is None:
            raise ModelError(f"fiqa.contract_from: unknown registry model '{f.contract_from}'")
        contract = {**(info.contract if info else {}), **f.contract}
        path = resolve(f.model, f.sha256, cfg.input.storage_options)
        self.model = OnnxFIQA(path, contract, f.model, f.resources.num_cpus, f.resources.num_gpus > 0)

    def score(self, crops: np.ndarray) -> np.ndarray:
        out = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
        if len(crops):
            raw, mapped = self.model.score(crops)
            out[:, 1], out[:, 2] = raw, mapped
        return out


class FIQAStage(Stage):
    name = "fiqa"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        cv2.setNumThreads(1)
        backend = cfg.fiqa.backend
        self.model = DlibStability() if backend == "dlib_stability" else OnnxModel(cfg) if backend == "onnx" else None

    def process(self, batch: Batch) -> Batch:
        n = len(batch["uri"])
        fiqa = [np.zeros((0, len(FIQA_KEYS)), np.float32)] * n
        pose = [np.zeros((0, 3), np.float32)] * n

        def one(i: int) -> None:
            pts = batch["face_points"][i]
            pose[i] = np.array(batch["face_pose"][i], np.float32).reshape(-1, 3)
            if self.cfg.detect.detector != "scrfd":  # dlib's 5 points: closed-form pose here
                pose[i] = np.array([geo.head_pose_dlib5(p) for p in pts], np.float32).reshape(-1, 3)
            crops = batch["face_crop112"][i]
            fiqa[i] = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
            if self.model is None or len(crops) == 0:
                return
            if self.cfg.fiqa.all_faces or not isinstance(self.model, DlibStability):
                fiqa[i] = self.model.score(crops)
            else:
                p = primary_index(np.asarray(batch["face_bbox"][i]).reshape(-1, 4), np.asarray(batch["face_det_score"][i]))
                fiqa[i][p] = self.model.score(crops[p:p + 1])[0]

        per_row(self, batch, one)
        out = {k: v for k, v in batch.items() if k != "face_crop112"}
        out["face_fiqa"] = objarray(fiqa)
        out["face_pose"] = objarray(pose)
        return out
