"""Stage 4 — iqa: general image quality of each aligned face crop and of the whole image.

The ``classical`` backend computes no-reference measures (see :mod:`pipeline.measures`).  It
runs as an actor pool whose resources come from ``iqa.resources``, the same contract a deep
IQA backend on GPU actors uses.
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import measures as ms
from ..config import Config
from .base import Batch, Stage, objarray, per_row

FACE_IQA_KEYS = ("sharpness", "noise", "blockiness", "dark_clip", "bright_clip", "brightness", "contrast")
IMAGE_IQA_KEYS = ("sharpness", "noise", "brightness", "contrast")


class ClassicalIQA:
    def __init__(self, cfg: Config):
        c = cfg.detect
        self.mask = ms.face_mask(c.iqa_crop, c.iqa_margin)

    def face(self, crop: np.ndarray, patch: np.ndarray, patch_size: int) -> np.ndarray:
        gray = ms.to_gray(crop)
        crop_noise = ms.noise_level(gray)
        sharp = ms.sharpness(gray, self.mask, crop_noise)
        p = ms.to_gray(patch[:patch_size, :patch_size])
        ex = ms.exposure(crop, self.mask)
        return np.array([sharp, ms.noise_level(p), ms.blockiness(p), ex["dark_clip"], ex["bright_clip"],
                         ex["brightness"], ex["contrast"]], np.float32)

    def image(self, thumb: np.ndarray) -> np.ndarray:
        if thumb.size == 0:
            return np.full(len(IMAGE_IQA_KEYS), np.nan, np.float32)
        gray = ms.to_gray(thumb)
        noise = ms.noise_level(gray)
        whole = np.ones(gray.shape, bool)
        ex = ms.exposure(thumb, whole)
        return np.array([ms.sharpness(gray, whole, noise), noise, ex["brightness"], ex["contrast"]], np.float32)


class IQAStage(Stage):
    name = "iqa"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        cv2.setNumThreads(1)
        self.model = ClassicalIQA(cfg)

    def process(self, batch: Batch) -> Batch:
        n = len(batch["uri"])
        face_iqa = [np.zeros((0, len(FACE_IQA_KEYS)), np.float32)] * n
        image_iqa = [np.full(len(IMAGE_IQA_KEYS), np.nan, np.float32)] * n

        def one(i: int) -> None:
            image_iqa[i] = self.model.image(batch["thumb"][i])
            crops, patches, sizes = batch["face_crop_iqa"][i], batch["face_patch"][i], batch["face_patch_size"][i]
            face_iqa[i] = np.stack([self.model.face(crops[j], patches[j], int(sizes[j])) for j in range(len(crops))]) \
                if len(crops) else face_iqa[i]

        per_row(self, batch, one)
        out = {k: v for k, v in batch.items() if k not in ("face_crop_iqa", "face_patch", "thumb")}
        out["face_iqa"] = objarray(face_iqa)
        out["image_iqa"] = np.stack(image_iqa).astype(np.float32)
        return out
