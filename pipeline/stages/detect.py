"""Stage: detect — faces, 5 landmarks, aligned crops.

The detector is the ``detect.detector`` backend (dlib HOG / MMOD with retries, or an insightface
pack's SCRFD; see :mod:`pipeline.registry`), run over the whole batch at once where it can.  For
each face this stage emits, from the full-size pixels:

- ``face_crop112``: 112x112 crop in the ArcFace template (face-quality models);
- ``face_crop_iqa``: the same alignment, larger and with margin (general IQA);
- ``face_patch``: un-resampled source pixels around the face centre (JPEG grid and sensor
  noise survive only there), zero-padded to a fixed square, valid side in ``face_patch_size``;
- for the primary face only, ``face_crop_target``: the FFHQ-aligned crop at ``detect.target_size``
  (the size faces are used at), ``face_target_scale``: source pixels per crop pixel (< 1: the
  face was smaller than the target and the crop is upsampled), ``face_target_points``: the 5
  landmarks in the crop, and ``face_target_outside``: the share of the crop outside the image.

plus a small thumbnail of the whole image.  The full-size image is dropped here: nothing
larger than these crops travels further.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .. import geometry as geo
from .. import registry
from ..regions import framing_outside
from .base import Batch, Stage, objarray, primary_index

FACE_COLUMNS = {
    # name: (per-face shape, dtype) given the config
    "face_bbox": lambda c: ((4,), np.float32),
    "face_det_score": lambda c: ((), np.float32),
    "face_points": lambda c: ((5, 2), np.float32),  # the detector's raw 5 points, source px
    "face_pose": lambda c: ((3,), np.float32),  # yaw, pitch, roll when the detector has a pose model
    "face_landmarks": lambda c: ((5, 2), np.float32),  # insightface order, source px
    "face_inter_eye": lambda c: ((), np.float32),
    "face_crop112": lambda c: ((c.fiqa_crop, c.fiqa_crop, 3), np.uint8),
    "face_crop_iqa": lambda c: ((c.iqa_crop, c.iqa_crop, 3), np.uint8),
    "face_patch": lambda c: ((c.src_patch, c.src_patch, 3), np.uint8),
    "face_patch_size": lambda c: ((), np.int32),
    "face_openness": lambda c: ((2,), np.float32),  # eye and mouth openness, with dense landmarks
}


def empty_faces(c) -> dict:
    return {k: np.zeros((0, *f(c)[0]), f(c)[1]) for k, f in FACE_COLUMNS.items()}


def crops_for_face(img: np.ndarray, pts: np.ndarray, c, arcface: bool) -> dict:
    """Aligned crops and the un-resampled patch for one face with 5 points ``pts``: dlib's
    (eye corners and nose base) or, with ``arcface``, insightface's (eyes, nose, mouth corners)."""
    template = geo.ARCFACE_112 if arcface else geo.DLIB5_112
    m112 = geo.similarity(pts, geo.scaled_template(template, c.fiqa_crop, 1.0))
    crop112 = geo.warp_crop(img, m112, c.fiqa_crop)
    m_iqa = geo.similarity(pts, geo.scaled_template(template, c.iqa_crop, c.iqa_margin))
    crop_iqa = geo.warp_crop(img, m_iqa, c.iqa_crop)
    if arcface:
        landmarks = np.asarray(pts, np.float64)
        eye_l, eye_r = landmarks[0], landmarks[1]
    else:
        inv = geo.invert(geo.similarity(pts, geo.DLIB5_112))
        mouth = geo.transform_points(inv, geo.ARCFACE_112[3:5])
        eye_l, eye_r = pts[2:4].mean(0), pts[0:2].mean(0)
        landmarks = np.vstack([eye_l, eye_r, pts[4], mouth])
    ied = float(np.linalg.norm(eye_r - eye_l))
    # patch: square of side ~2 inter-eye distances around the eyes/nose centre, source pixels
    h, w = img.shape[:2]
    side = int(min(c.src_patch, max(16, round(2.0 * ied)), h, w))
    cx, cy = (eye_l + eye_r + landmarks[2]) / 3.0
    x0 = int(min(max(0, round(cx - side / 2)), w - side))
    y0 = int(min(max(0, round(cy - side / 2)), h - side))
    patch = np.zeros((c.src_patch, c.src_patch, 3), np.uint8)
    patch[:side, :side] = img[y0:y0 + side, x0:x0 + side]
    return {
        "face_crop112": crop112, "face_crop_iqa": crop_iqa, "face_patch": patch,
        "face_patch_size": side, "face_landmarks": landmarks, "face_inter_eye": ied,
    }


def target_crop(img: np.ndarray, landmarks: np.ndarray, size: int) -> dict:
    """One face's FFHQ-aligned crop of side ``size``, with its source pixels per crop pixel, its
    5 landmarks in crop coordinates and the share of the crop square outside the image."""
    m = geo.ffhq_matrix(landmarks, size)
    return {"face_crop_target": geo.warp_crop(img, m, size),
            "face_target_scale": 1.0 / math.sqrt(abs(np.linalg.det(m[:, :2]))),
            "face_target_points": geo.transform_points(m, landmarks).astype(np.float32),
            "face_target_outside": framing_outside(m, size, img.shape[1], img.shape[0])}


TARGET_COLUMNS = {"face_crop_target": np.zeros((0, 0, 3), np.uint8), "face_target_scale": np.float32(np.nan),
                  "face_target_points": np.zeros((0, 2), np.float32), "face_target_outside": np.float32(np.nan)}


def thumbnail(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(1.0, side / max(h, w, 1))
    if s >= 1.0:
        return img.copy()
    return geo.shrink(img, (max(1, round(w * s)), max(1, round(h * s))))


class DetectStage(Stage):
    name = "detect"

    def setup(self) -> None:
        cv2.setNumThreads(1)
        c = self.cfg.detect
        self.detector = registry.create("detect", c.detector, self.cfg)
        self.arcface_points = registry.get("detect", c.detector).traits.get("points") == "arcface5"
        # dense landmarks (pose, eye and mouth openness) where the detector gives only 5 points
        self.dense = registry.create("landmarks", c.dense_landmarks, self.cfg) \
            if c.dense_landmarks != "none" and not self.arcface_points else None

    def faces_of(self, img: np.ndarray, found: list) -> dict:
        c = self.cfg.detect
        found = found[: c.max_faces]
        if not found:
            return empty_faces(c)
        cols = {k: [] for k in FACE_COLUMNS}
        h, w = img.shape[:2]
        for box, score, pts, pose, *rest in found:
            openness = rest[0] if rest else np.full(2, np.nan)
            if self.dense is not None:  # rest[1]: the detector's upright box side, when it has one
                pose, openness = self.dense.measure(img, box, pts, rest[1] if len(rest) > 1 else None)
            cols["face_bbox"].append(np.clip(box, 0, [w, h, w, h]))
            cols["face_det_score"].append(score)
            cols["face_points"].append(pts)
            cols["face_pose"].append(pose)
            cols["face_openness"].append(openness)
            for k, v in crops_for_face(img, pts, c, self.arcface_points).items():
                cols[k].append(v)
        return {k: np.asarray(v, dtype=FACE_COLUMNS[k](c)[1]) for k, v in cols.items()}

    def process(self, batch: Batch) -> Batch:
        n = len(batch["uri"])
        c = self.cfg.detect
        per_face = {k: [empty_faces(c)[k]] * n for k in FACE_COLUMNS}
        num_faces = np.zeros(n, np.int32)
        thumbs = [np.zeros((0, 0, 3), np.uint8)] * n
        target = {k: [v] * n for k, v in TARGET_COLUMNS.items()}
        images = batch["image"]
        ok = [i for i, st in enumerate(batch["status"]) if st == "ok" and images[i].size]
        try:  # one call for the whole batch (SCRFD runs it as one model batch)
            found = dict(zip(ok, self.detector.detect_many([images[i] for i in ok])))
        except Exception:  # noqa: BLE001 - again one image at a time below: errors stay per row
            found = {}

        def one(i: int) -> None:
            img = images[i]
            thumbs[i] = thumbnail(img, c.thumb_side)
            faces = self.faces_of(img, found[i] if i in found else self.detector.detect_many([img])[0])
            for k in FACE_COLUMNS:
                per_face[k][i] = faces[k]
            num_faces[i] = len(faces["face_bbox"])
            if num_faces[i]:
                p = primary_index(faces["face_bbox"], faces["face_det_score"])
                for k, v in target_crop(img, faces["face_landmarks"][p], c.target_size).items():
                    target[k][i] = v

        self.per_row(batch, one)
        out = {k: v for k, v in batch.items() if k != "image"}
        out["num_faces"] = num_faces
        out["thumb"] = objarray(thumbs)
        for k, v in target.items():
            out[k] = objarray(v) if isinstance(TARGET_COLUMNS[k], np.ndarray) else np.asarray(v, np.float32)
        for k in FACE_COLUMNS:
            out[k] = objarray(per_face[k])
        return out
