"""The offline profile's models: dlib's detectors and 5-point landmarks, and the dlib face
embedding as a face-quality measure.  All ship inside PyPI packages (``dlib-bin``,
``face_recognition_models``), so the offline profile needs no network.

- detect ``dlib_hog`` / ``dlib_mmod``: dlib's HOG or MMOD CNN detector on a downscaled copy, with
  retries on a contrast-equalised copy and on rotated copies (HOG misses faces rolled beyond
  ~30°), and dlib's 5 points (eye corners, subnasale) averaged with those of the mirror image;
- fiqa ``dlib_stability``: in the spirit of SER-FIQ, how stable the dlib 128-d embedding stays
  when the aligned face is mirrored.  A clear face maps to nearly the same point; a blurred,
  noisy or tiny one drifts.  The raw value is the cosine similarity of the two embeddings.  The
  network costs ~150 ms per pass on one CPU core (dlib-bin has no BLAS), two passes per face, so
  only the primary face of each image is scored (``fiqa.all_faces`` to score every face).
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from .. import geometry as geo
from ..models import CATALOGUE, model_path
from ..registry import register
from ..schema import FIQA_KEYS

# dlib 5-point indices after a horizontal mirror: the two eyes swap, the nose stays
MIRROR_ORDER = [2, 3, 0, 1, 4]


class FaceDetector:
    """dlib detector + 5-point landmarks on a downscaled copy, with retries."""

    def __init__(self, cfg):
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
        return [f[:3] for f in self._detect(img)]

    def _detect(self, img: np.ndarray):
        """As :meth:`detect`, each face with the side of the detector's own (upright) box in source
        pixels: for a face found on a rotated copy, the bbox is the box of that square turned back."""
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
        return [(box / scale, score, pts / scale, side / scale) for box, score, pts, side in faces]

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
            faces.append((box, float(score), pts, float(rect.right() - rect.left())))
        faces.sort(key=lambda f: -f[1])
        return faces

    def detect_many(self, images: list) -> list:
        """Per image: list of (bbox, score, 5 points, pose, openness, box side) with pose and
        openness unknown (NaN): dlib's 5 points give pose in closed form later (see the fiqa
        stage), dense landmarks both; the side of the detector's upright box is what the 68-point
        model is given (:meth:`Dlib68.measure`)."""
        return [[(box, score, pts, np.full(3, np.nan), np.full(2, np.nan), side) for box, score, pts, side in self._detect(img)]
                for img in images]


def _detector_models(cfg) -> list:
    first = "dlib-hog-frontal" if cfg.detect.detector == "dlib_hog" else "dlib-mmod-human-face"
    return [CATALOGUE[first], CATALOGUE["dlib-shape-predictor-5"]]


class Dlib68:
    """dlib's 68 landmarks (mirror-averaged) fitted to faceqc's 3-D face (:mod:`pipeline.pose3d`):
    true yaw, pitch and roll, and eye and mouth openness, per face."""

    def __init__(self, cfg=None):
        from .. import pose3d

        self.pose3d = pose3d
        self.predictor = pose3d.load_predictor()

    def measure(self, img: np.ndarray, box, points5, side: Optional[float] = None) -> tuple:
        """((yaw, pitch, roll), (eye openness, mouth openness)); NaNs where the fit fails.
        ``side``: the detector's own box side when it boxed the face upright in another frame
        (dlib's detector on a rotated copy); else the box's width.

        dlib's 68-point model is trained on faces about upright: a face rolled by more than a few
        degrees (the 5 points say how much) is first turned level, its 68 points found there and
        turned back, so that roll does not leak into yaw and pitch."""
        pts = self._points68(img, np.asarray(box, np.float64), np.asarray(points5, np.float64), side)
        fit = self.pose3d.fit_pose_68(pts, (img.shape[1], img.shape[0]))
        if fit is None:
            return np.full(3, np.nan), np.full(2, np.nan)
        o = self.pose3d.openness(pts, fit)
        return np.array([fit.yaw, fit.pitch, fit.roll]), np.array([o.eye, o.mouth])

    def _points68(self, img: np.ndarray, box: np.ndarray, points5: np.ndarray, side: Optional[float]) -> np.ndarray:
        eye_l, eye_r = points5[2:4].mean(0), points5[0:2].mean(0)  # dlib's 5-point order
        angle = math.degrees(math.atan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0]))
        if abs(angle) < 8.0:
            return self.pose3d.landmarks68(img, box, self.predictor)
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        side = side if side is not None and math.isfinite(side) and side > 0 else box[2] - box[0]
        m = cv2.getRotationMatrix2D(centre, angle, 1.0)
        level = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        upright = np.array([centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2])
        pts = self.pose3d.landmarks68(level, upright, self.predictor)
        return geo.transform_points(geo.invert(m), pts)


register("landmarks", "dlib68", models=lambda cfg: [CATALOGUE["dlib-shape-predictor-68"]],
         doc="dlib 68 landmarks: true head pose, eye and mouth openness (non-commercial training data)")(Dlib68)

register("detect", "dlib_hog", models=_detector_models, traits={"points": "dlib5"},
         doc="dlib HOG detector + 5 landmarks, with rotated / equalised retries")(FaceDetector)
register("detect", "dlib_mmod", models=_detector_models, traits={"points": "dlib5"},
         doc="dlib MMOD CNN detector + 5 landmarks")(FaceDetector)


@register("fiqa", "dlib_stability", models=lambda cfg: [CATALOGUE["dlib-resnet-face-v1"]],
          traits={"primary_only": True})
class DlibStability:
    chip = 150

    def __init__(self, cfg=None):
        import dlib

        self.net = dlib.face_recognition_model_v1(model_path("dlib-resnet-face-v1"))

    def perturbations(self, crop112: np.ndarray) -> list:
        # dlib's chips show a little more context than the ArcFace 112 frame: pad, then resize
        base = cv2.resize(cv2.copyMakeBorder(crop112, 8, 8, 8, 8, cv2.BORDER_REPLICATE), (self.chip, self.chip),
                          interpolation=cv2.INTER_LINEAR)
        return [base, base[:, ::-1].copy()]

    def score(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            self.last_embeddings = np.zeros((0, 128), np.float32)
            return np.zeros((0, len(FIQA_KEYS)), np.float32)
        chips = []
        for c in crops:
            chips.extend(self.perturbations(np.ascontiguousarray(c)))
        emb = np.asarray(self.net.compute_face_descriptor(chips), np.float32).reshape(len(crops), 2, -1)
        emb /= np.linalg.norm(emb, axis=2, keepdims=True) + 1e-9
        sims = np.einsum("nd,nkd->nk", emb[:, 0], emb[:, 1:]).mean(axis=1)
        # the face's identity, for linking faces across a video's frames: the mean of the face's
        # and its mirror's unit embeddings, unit length (read by the fiqa stage)
        mean = emb.mean(axis=1)
        self.last_embeddings = mean / (np.linalg.norm(mean, axis=1, keepdims=True) + 1e-9)
        out = np.full((len(crops), len(FIQA_KEYS)), np.nan, np.float32)
        out[:, 0] = sims
        return out
