"""The ``classical`` IQA backend: faceqc's own no-reference measures (:mod:`pipeline.measures`)
of each aligned face crop, of the un-resampled pixels around the face, and of the whole-image
thumbnail.  Always on: deep IQA models come on top of it, each feeding its own component."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .. import measures as ms
from .. import regions
from ..models import CATALOGUE
from ..registry import register
from ..schema import FACE_IQA_KEYS, IMAGE_IQA_KEYS

KEY = {k: i for i, k in enumerate(FACE_IQA_KEYS)}


@register("iqa", "classical", models=lambda cfg: [CATALOGUE["faceqc-classical-iqa"]])
class ClassicalIQA:
    """sharpness, noise, blockiness and exposure of the face; the same of the whole image"""

    def __init__(self, cfg):
        c = cfg.detect
        self.mask = ms.face_mask(c.iqa_crop, c.iqa_margin)

    def face(self, crop: np.ndarray, patch: np.ndarray, patch_size: int, target: Optional[dict] = None) -> np.ndarray:
        """FACE_IQA_KEYS of one face (the model columns NaN).  ``target``: the primary face's
        FFHQ-aligned crop, its scale, its landmarks in it and the share of it outside the image
        (see the detect stage), and the whole-image thumbnail (``thumb``: vignetting); its region
        checks are NaN for the other faces."""
        gray = ms.to_gray(crop)
        crop_noise = ms.noise_level(gray)
        sharp = ms.sharpness(gray, self.mask, crop_noise)
        src = patch[:patch_size, :patch_size]
        p = ms.to_gray(src)
        ex = ms.exposure(crop, self.mask)
        out = np.full(len(FACE_IQA_KEYS), np.nan, np.float32)
        out[:7] = [sharp, ms.noise_level(p), ms.blockiness(p), ex["dark_clip"], ex["bright_clip"],
                   ex["brightness"], ex["contrast"]]
        vals = {"grid": ms.grid_blockiness(p), "banding": ms.banding(src), "combing": ms.combing(p)}
        if target is not None:
            chk = regions.checks(target["crop"], target["points"], target["scale"]) or {}
            vals.update(chk, colour_noise=chk.get("colour_blotches", np.nan), lower_face=chk.get("lower_face_occlusion", np.nan),
                        colour=chk.get("unnatural_colour", np.nan), illumination=chk.get("illumination_asymmetry", np.nan),
                        framing=target["outside"])
            if target.get("thumb") is not None:
                vals["vignetting"] = ms.vignetting(target["thumb"])
        for k, v in vals.items():
            if k in KEY:
                out[KEY[k]] = v
        return out

    def image(self, thumb: np.ndarray) -> np.ndarray:
        """IMAGE_IQA_KEYS of a whole-image thumbnail (the model column NaN)."""
        if thumb.size == 0:
            return np.full(len(IMAGE_IQA_KEYS), np.nan, np.float32)
        gray = ms.to_gray(thumb)
        noise = ms.noise_level(gray)
        whole = np.ones(gray.shape, bool)
        ex = ms.exposure(thumb, whole)
        return np.array([ms.sharpness(gray, whole, noise), noise, ex["brightness"], ex["contrast"], np.nan],
                        np.float32)
