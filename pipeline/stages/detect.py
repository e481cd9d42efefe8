"""Stage 3 — detect: faces, 5 landmarks, aligned crops.

Detection runs on a copy at most ``detect.detect_max_side`` px; when nothing is found it
retries on a contrast-equalised copy and on copies rotated by ``detect.retry_rotations``
(HOG misses faces rolled beyond ~30°).  For each face it emits, from the full-size pixels:

- ``face_crop112``: 112x112 crop in the ArcFace template (face-quality models);
- ``face_crop_iqa``: the same alignment, larger and with margin (general IQA);
- ``face_patch``: un-resampled source pixels around the face centre (JPEG grid and sensor
  noise survive only there), zero-padded to a fixed square, valid side in ``face_patch_size``.

plus a small thumbnail of the whole image.  The full-size image is dropped here: nothing
larger than these crops travels further.
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import geometry as geo
from ..config import Config
from ..models import model_path
from .base import Batch, Stage, objarray, per_row

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
}


# dlib 5-point indices after a horizontal mirror: the two eyes swap, the nose stays
MIRROR_ORDER = [2, 3, 0, 1, 4]


def empty_faces(c) -> dict:
    return {k: np.zeros((0, *f(c)[0]), f(c)[1]) for k, f in FACE_COLUMNS.items()}


class FaceDetector:
    """dlib detector + 5-point landmarks on a downscaled copy, with retries."""

    def __init__(self, cfg: Config):
        import dlib

        self.c = cfg.detect
        if self.c.detector == "dlib_hog":
            self._hog = dlib.get_frontal_face_detector()
            self._mmod = None
        else:
            self._hog = None
            self._mmod = dlib.cnn_face_detection_model_v1(model_path("dlib-mmod-human-face"))
        self._sp = dlib.shape_predictor(model_path("dlib-shape-predictor-5"))
        self._dlib = dlib

    def _run(self, gray: np.ndarray, upsample: int):
        if self._hog is not None:
            rects, scores, _ = self._hog.run(gray, upsample, self.c.min_det_score)
            return list(zip(rects, scores))
        out = self._mmod(gray, upsample)
        return [(d.rect, d.confidence) for d in out if d.confidence >= self.c.min_det_score]

    def _points(self, gray: np.ndarray, rect, mirrored: np.ndarray) -> np.ndarray:
        """5 landmarks, averaged with those found on the mirror image (mapped back), so that
        a mirrored photo gets mirrored landmarks: pose, crops and scores become flip-invariant
        for the cost of one more landmark pass (~1 ms)."""
        a = np.array([[p.x, p.y] for p in self._sp(gray, rect).parts()], np.float64)
        w = gray.shape[1]
        mrect = self._dlib.rectangle(w - 1 - rect.right(), rect.top(), w - 1 - rect.left(), rect.bottom())
        b = np.array([[p.x, p.y] for p in self._sp(mirrored, mrect).parts()], np.float64)
        b[:, 0] = w - 1 - b[:, 0]
        return (a + b[MIRROR_ORDER]) / 2.0

    def detect(self, img: np.ndarray):
        """Faces of an RGB image: list of (bbox[4], score, points[5,2]) in source pixels."""
        h, w = img.shape[:2]
        scale = min(1.0, self.c.detect_max_side / max(h, w))
        small = geo.shrink(img, (max(1, round(w * scale)), max(1, round(h * scale)))) if scale < 1 else img
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        # HOG finds faces of ~80 px and more: upsample small images (x2, or x4 when tiny)
        up = 0 if max(gray.shape) >= self.c.upsample_below else (1 if max(gray.shape) >= self.c.upsample_below / 2 else 2)
        if min(gray.shape) < 8:
            return []
        faces = self._faces_on(gray, up, None)
        if not faces and self.c.retry_equalized:
            clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))
            faces = self._faces_on(clahe.apply(gray), up, None)
        if not faces:
            for angle in self.c.retry_rotations:
                faces = self._faces_on(gray, up, angle)
                if faces:
                    break
        out = []
        for box, score, pts in faces:
            out.append((box / scale, score, pts / scale))
        return out

    def _faces_on(self, gray: np.ndarray, up: int, angle):
        if angle is None:
            work, back = gray, None
        else:
            h, w = gray.shape
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            cos, sin = abs(m[0, 0]), abs(m[0, 1])
            nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
            m[0, 2] += nw / 2 - w / 2
            m[1, 2] += nh / 2 - h / 2
            work = cv2.warpAffine(gray, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            back = geo.invert(m)
        faces = []
        mirrored = None
        for rect, score in self._run(work, up):
            if mirrored is None:
                mirrored = np.ascontiguousarray(work[:, ::-1])
            pts = self._points(work, rect, mirrored)
            corners = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()],
                                [rect.left(), rect.bottom()], [rect.right(), rect.bottom()]], np.float64)
            if back is not None:
                pts = geo.transform_points(back, pts)
                corners = geo.transform_points(back, corners)
            box = np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()])
            faces.append((box, float(score), pts))
        faces.sort(key=lambda f: -f[1])
        return faces


def crops_for_face(img: np.ndarray, pts: np.ndarray, c) -> dict:
    """Aligned crops and the un-resampled patch for one face with 5 points ``pts``: dlib's
    (eye corners and nose base) or, for SCRFD, insightface's (eyes, nose, mouth corners)."""
    arcface = c.detector == "scrfd"
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


def thumbnail(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(1.0, side / max(h, w, 1))
    if s >= 1.0:
        return img.copy()
    return geo.shrink(img, (max(1, round(w * s)), max(1, round(h * s))))


class ScrfdFaces:
    """insightface-pack detection: SCRFD boxes and 5 keypoints for a whole batch in one model
    call, and yaw/pitch/roll from the 1k3d68 model when the pack (or detect.pose_model) has it."""

    def __init__(self, cfg: Config):
        import os

        from ..backends.insightface_pack import Landmark3D68, ScrfdDetector, find_pack
        from ..modelstore import resolve

        c, r = cfg.detect, cfg.detect.resources
        so = cfg.input.storage_options
        if os.path.isdir(c.model):
            files = find_pack(c.model)
        else:
            files = {"det": resolve(c.model, storage_options=so), "landmark": None}
        pose = resolve(c.pose_model, storage_options=so) if c.pose_model else files.get("landmark")
        gpu = r.num_gpus > 0
        self.det = ScrfdDetector(files["det"], r.num_cpus, gpu, (c.det_size, c.det_size),
                                 c.min_det_score if c.min_det_score > 0 else 0.5)
        self.pose = Landmark3D68(pose, r.num_cpus, gpu) if pose else None

    def detect_many(self, images: list) -> list:
        """Per image: list of (bbox, score, points, pose or NaNs)."""
        out = []
        for img, (boxes, scores, kps) in zip(images, self.det.detect(images)):
            poses = self.pose.landmarks(img, boxes)[1] if self.pose is not None and len(boxes) else \
                np.full((len(boxes), 3), np.nan)
            order = np.argsort(-np.asarray(scores))
            out.append([(boxes[j], float(scores[j]), kps[j], poses[j]) for j in order])
        return out


class DetectStage(Stage):
    name = "detect"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        cv2.setNumThreads(1)
        if cfg.detect.detector == "scrfd":
            self.detector, self.scrfd = None, ScrfdFaces(cfg)
        else:
            self.detector, self.scrfd = FaceDetector(cfg), None

    def faces_of(self, img: np.ndarray, found=None) -> dict:
        c = self.cfg.detect
        if found is None:
            found = [(box, score, pts, np.full(3, np.nan)) for box, score, pts in self.detector.detect(img)]
        found = found[: c.max_faces]
        cols = {k: [] for k in FACE_COLUMNS}
        for box, score, pts, pose in found:
            h, w = img.shape[:2]
            box = np.clip(box, 0, [w, h, w, h])
            cols["face_bbox"].append(box)
            cols["face_det_score"].append(score)
            cols["face_points"].append(pts)
            cols["face_pose"].append(pose)
            for k, v in crops_for_face(img, pts, c).items():
                cols[k].append(v)
        if not found:
            return empty_faces(c)
        return {k: np.asarray(v, dtype=FACE_COLUMNS[k](c)[1]) for k, v in cols.items()}

    def process(self, batch: Batch) -> Batch:
        n = len(batch["uri"])
        c = self.cfg.detect
        per_face = {k: [empty_faces(c)[k]] * n for k in FACE_COLUMNS}
        num_faces = np.zeros(n, np.int32)
        thumbs = [np.zeros((0, 0, 3), np.uint8)] * n
        images = batch["image"]
        found = {}
        if self.scrfd is not None:  # one batched detector call for every decoded image
            ok = [i for i, st in enumerate(batch["status"]) if st == "ok" and images[i].size]
            try:
                found = dict(zip(ok, self.scrfd.detect_many([images[i] for i in ok])))
            except Exception:  # noqa: BLE001 - fall back to one image at a time: errors stay per row
                found = {}

        def one(i: int) -> None:
            img = images[i]
            thumbs[i] = thumbnail(img, c.thumb_side)
            if self.scrfd is not None and i not in found:
                found[i] = self.scrfd.detect_many([img])[0]
            faces = self.faces_of(img, found.get(i))
            for k in FACE_COLUMNS:
                per_face[k][i] = faces[k]
            num_faces[i] = len(faces["face_bbox"])

        per_row(self, batch, one)
        out = {k: v for k, v in batch.items() if k != "image"}
        out["num_faces"] = num_faces
        out["thumb"] = objarray(thumbs)
        for k in FACE_COLUMNS:
            out[k] = objarray(per_face[k])
        return out

