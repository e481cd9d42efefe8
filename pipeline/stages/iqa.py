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

FACE_IQA_KEYS = ("sharpness", "noise", "blockiness", "dark_clip", "bright_clip", "brightness", "contrast",
                 "model_raw", "model_score")
IMAGE_IQA_KEYS = ("sharpness", "noise", "brightness", "contrast", "model_score")
N_CLASSICAL = 7


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
                         ex["brightness"], ex["contrast"], np.nan, np.nan], np.float32)

    def image(self, thumb: np.ndarray) -> np.ndarray:
        if thumb.size == 0:
            return np.full(len(IMAGE_IQA_KEYS), np.nan, np.float32)
        gray = ms.to_gray(thumb)
        noise = ms.noise_level(gray)
        whole = np.ones(gray.shape, bool)
        ex = ms.exposure(thumb, whole)
        return np.array([ms.sharpness(gray, whole, noise), noise, ex["brightness"], ex["contrast"], np.nan],
                        np.float32)


def make_model(cfg: Config):
    """The deep IQA model the config asks for, or None."""
    from ..modelstore import resolve

    c = cfg.iqa
    if c.model_backend == "none":
        return None
    path = resolve(c.model, c.sha256 or None, cfg.input.storage_options)
    gpu = c.resources.num_gpus > 0
    if c.model_backend == "timm":
        from ..backends.iqa_torch import TimmIQA

        return TimmIQA(path, use_gpu=gpu, amp=c.amp)
    from ..backends.iqa_torch import PyiqaIQA

    lo, hi = c.model_range or (None, None)
    return PyiqaIQA(c.pyiqa_metric, path, use_gpu=gpu, lo=lo, hi=hi, options=c.pyiqa_options)


class IQAStage(Stage):
    name = "iqa"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        cv2.setNumThreads(1)
        self.model = ClassicalIQA(cfg)
        self.deep = make_model(cfg)

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
                n = len(batch["face_crop_iqa"][i])
                face_iqa[i] = face_iqa[i].copy()
                face_iqa[i][:, N_CLASSICAL], face_iqa[i][:, N_CLASSICAL + 1] = raw[k:k + n], mapped[k:k + n]
                k += n
        if self.cfg.iqa.whole_image:
            ok = [i for i, st in enumerate(batch["status"]) if st == "ok" and batch["thumb"][i].size]
            s = self.cfg.detect.iqa_crop
            if ok:
                thumbs = np.stack([cv2.resize(batch["thumb"][i], (s, s), interpolation=cv2.INTER_AREA) for i in ok])
                _, mapped = self.deep.score(thumbs)
                for j, i in enumerate(ok):
                    image_iqa[i] = image_iqa[i].copy()
                    image_iqa[i][-1] = mapped[j]
