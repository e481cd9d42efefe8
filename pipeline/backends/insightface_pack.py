"""insightface model packs on ONNX Runtime: SCRFD detection with 5 keypoints and 1k3d68 landmarks
with head pose.  The pack's ArcFace model (its un-normalised embedding norm, a face-quality
signal) runs through the ONNX FIQA backend with the ``arcface-embedding-norm`` contract.

Pre- and post-processing mirror insightface 2.1 (``insightface/model_zoo/scrfd.py``,
``landmark.py``, ``arcface_onnx.py`` and ``utils/transform.py``; insightface's code is MIT
licensed, (c) Jia Guo and the insightface contributors) so that the pack's models see exactly
the tensors they were trained on, with three differences that do not change any result:

- images come in RGB (faceqc's decode stage) where insightface takes OpenCV's BGR and swaps it
  with ``blobFromImage(..., swapRB=True)``: every one of these networks is therefore fed RGB;
- detection runs the whole batch of letterboxed images in one ``session.run`` when the model's
  batch dimension is dynamic (insightface runs one image at a time), and landmarks run all faces
  of an image in one call; decoding is vectorised over the batch;
- pose is returned in faceqc's convention (see :func:`pose_from_landmarks`).

The model packs' *weights* are licensed by insightface for non-commercial research only; this
module ships none.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.util
import math
import os
import pickle
from typing import Optional, Sequence

import cv2
import numpy as np

from ..errors import ConfigError, ModelError, require
from ..models import named
from ..registry import register
from .onnx_runtime import (
    chunks,
    fixed_batch,
    graph_normalises_input,
    make_session,
    pad_to,
)

# --------------------------------------------------------------------------------------------
# shared helpers


def _spatial(shape) -> Optional[tuple[int, int]]:
    """(width, height) when an NCHW shape fixes both spatial axes, else None."""
    if shape is None or len(shape) < 4:
        return None
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return int(w), int(h)
    return None


# --------------------------------------------------------------------------------------------
# SCRFD detector


def distance2bbox(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Anchor centres (n, 2) and (left, top, right, bottom) distances (n, 4) -> x1y1x2y2."""
    return np.concatenate([points - distance[:, 0:2], points + distance[:, 2:4]], axis=-1)


def distance2kps(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Anchor centres (n, 2) and keypoint offsets (n, 2k) -> keypoints (n, k, 2)."""
    return points[:, None, :] + distance.reshape(len(distance), -1, 2)


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
    """insightface's greedy NMS (areas with the +1 pixel convention, stable score order);
    returns kept indices in descending score order."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[ovr <= thresh]
    return np.asarray(keep, np.int64)


# output count -> (feature-map count, strides, anchors per location, keypoints)
SCRFD_LAYOUTS = {
    6: (3, (8, 16, 32), 2, False),
    9: (3, (8, 16, 32), 2, True),
    10: (5, (8, 16, 32, 64, 128), 1, False),
    15: (5, (8, 16, 32, 64, 128), 1, True),
}


class ScrfdDetector:
    """SCRFD face detector (insightface ``det_10g.onnx``, ``det_500m.onnx``, ``scrfd_*.onnx``).

    ``detect(images)`` takes RGB uint8 images of any sizes and returns, per image,
    ``(bboxes (n, 4) float32 x1y1x2y2, scores (n,) float32, kps (n, 5, 2) float32)`` in source
    pixels, sorted by descending score after NMS.  Keypoints are in insightface order: left eye,
    right eye, nose, mouth left, mouth right ("left" = image left); models without keypoints
    (6 or 10 outputs) give NaN keypoints.

    Preprocessing as insightface's ``SCRFD.detect``: the image is resized keeping its aspect ratio
    to fit ``det_size`` (width, height) — or the model's own input size when the graph fixes it —
    with ``cv2.resize`` (bilinear), placed at the top-left of a zero canvas, fed as RGB
    ``(x − 127.5) / 128``.  Decoding: anchors at ``(x·stride, y·stride)`` (no half-stride
    offset), ``num_anchors`` consecutive rows per location, distances × stride, scores
    ``>= score_thresh``, boxes divided by the resize factor, NMS at ``nms_thresh``.

    Batching: when the model's batch dimension is dynamic, up to ``max_batch`` letterboxed images
    go through one ``session.run``.  Outputs of rank 3 carry the batch axis; outputs of rank 2
    (how ``det_10g.onnx`` is exported: ``(N·K, C)``, batch-major) are reshaped to ``(N, K, C)``
    after checking that their row count is exactly N·K — otherwise the detector falls back to one
    image per run.  A fixed batch dimension is respected (chunks padded to it).
    """

    def __init__(self, path: str, num_cpus: float = 1, use_gpu: bool = False,
                 det_size: tuple[int, int] = (640, 640), score_thresh: float = 0.5,
                 nms_thresh: float = 0.4, *, max_batch: int = 32):
        self.path = path
        self.session = make_session(path, num_cpus, use_gpu, what=f"face detector {path}")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        fixed_size = _spatial(inp.shape)
        if isinstance(det_size, (int, np.integer)):
            det_size = (int(det_size), int(det_size))
        # a graph with a fixed input size is run at that size, as insightface does
        self.input_size = fixed_size or (int(det_size[0]), int(det_size[1]))
        outputs = self.session.get_outputs()
        self.output_names = [o.name for o in outputs]
        if len(outputs) not in SCRFD_LAYOUTS:
            raise ModelError(f"{path}: not an SCRFD detector: {len(outputs)} outputs "
                             f"(SCRFD has 6, 9, 10 or 15)")
        self.fmc, self.strides, self.num_anchors, self.use_kps = SCRFD_LAYOUTS[len(outputs)]
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.max_batch = int(max_batch)
        self.fixed_batch = fixed_batch(self.session)
        self.batched = self.fixed_batch != 1  # dynamic (None) or a fixed batch > 1
        self._centres: dict = {}

    # -- preprocessing

    def letterbox(self, img: np.ndarray) -> tuple[np.ndarray, float]:
        """The image resized into the detector's canvas (top-left) and the resize factor."""
        in_w, in_h = self.input_size
        h, w = img.shape[:2]
        im_ratio = float(h) / w
        model_ratio = float(in_h) / in_w
        if im_ratio > model_ratio:
            new_h = in_h
            new_w = int(new_h / im_ratio)
        else:
            new_w = in_w
            new_h = int(new_w * im_ratio)
        new_w, new_h = max(1, new_w), max(1, new_h)  # insightface crashes on 1xN slivers
        det_scale = float(new_h) / h
        canvas = np.zeros((in_h, in_w, 3), np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(img, (new_w, new_h))
        return canvas, det_scale

    @staticmethod
    def blob(canvases: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) RGB uint8 -> (N, 3, H, W) float32 (x − 127.5) / 128."""
        x = canvases.astype(np.float32)
        x -= np.float32(127.5)
        x *= np.float32(1.0 / 128.0)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    # -- inference

    def _anchor_centres(self, stride: int) -> np.ndarray:
        in_w, in_h = self.input_size
        key = (in_h // stride, in_w // stride, stride)
        c = self._centres.get(key)
        if c is None:
            h, w = key[0], key[1]
            c = np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32)
            c = (c * stride).reshape(-1, 2)
            if self.num_anchors > 1:
                c = np.repeat(c, self.num_anchors, axis=0)  # == np.stack([c]*A, axis=1)
            self._centres[key] = c
        return c

    def _run(self, blob: np.ndarray) -> list[np.ndarray]:
        """Network outputs of a chunk as (n, K, C) arrays, one per output."""
        n = len(blob)
        x = pad_to(blob, self.fixed_batch)
        b = len(x)
        outs = self.session.run(self.output_names, {self.input_name: x})
        in_w, in_h = self.input_size
        shaped = []
        for idx, o in enumerate(outs):
            stride = self.strides[idx % self.fmc]
            k = (in_h // stride) * (in_w // stride) * self.num_anchors
            o = np.asarray(o)
            rows = o.shape[0] * o.shape[1] if o.ndim == 3 else o.shape[0]
            if rows != b * k:
                if b > 1 and o.ndim == 2 and self.fixed_batch is None:
                    raise _Unbatchable(idx, rows, b * k)
                raise ModelError(f"{self.path}: output {idx} has shape {o.shape}; expected {k} anchors "
                                 f"per image at stride {stride} for input {in_w}x{in_h}, batch {b}")
            shaped.append(o.reshape(b, k, o.shape[-1])[:n])
        return shaped

    def detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Faces of each RGB image: (bboxes (n, 4), scores (n,), kps (n, 5, 2)), source pixels."""
        results = []
        i = 0
        while i < len(images):
            step = self.fixed_batch or (self.max_batch if self.batched else 1)
            j = min(len(images), i + step)
            boxed = [self.letterbox(np.asarray(im)) for im in images[i:j]]
            scales = [b[1] for b in boxed]
            blob = self.blob(np.stack([b[0] for b in boxed]))
            try:
                results.extend(self._decode(self._run(blob), scales))
            except _Unbatchable:
                # flattened (N*K, C) outputs that do not split per image: one image per run from now on
                self.batched = False
                for t in range(len(blob)):
                    results.extend(self._decode(self._run(blob[t:t + 1]), scales[t:t + 1]))
            i = j
        return results

    def _decode(self, outs: list[np.ndarray], scales: np.ndarray):
        n = len(scales)
        fmc = self.fmc
        img_idx, all_scores, all_boxes, all_kps = [], [], [], []
        for level, stride in enumerate(self.strides):
            scores = outs[level][..., 0]  # (n, K)
            bi, ki = np.nonzero(scores >= self.score_thresh)
            if bi.size == 0:
                continue
            centres = self._anchor_centres(stride)[ki]
            img_idx.append(bi)
            all_scores.append(scores[bi, ki])
            all_boxes.append(distance2bbox(centres, outs[level + fmc][bi, ki] * stride))
            if self.use_kps:
                all_kps.append(distance2kps(centres, outs[level + 2 * fmc][bi, ki] * stride))
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        if not img_idx:
            return [empty for _ in range(n)]
        img_idx = np.concatenate(img_idx)
        scores = np.concatenate(all_scores).astype(np.float32)
        boxes = np.concatenate(all_boxes)
        kps = np.concatenate(all_kps) if self.use_kps else None
        out = []
        for i in range(n):
            sel = np.nonzero(img_idx == i)[0]
            if sel.size == 0:
                out.append(empty)
                continue
            order = sel[np.argsort(-scores[sel], kind="stable")]
            # float32 / Python float stays float32, as in insightface
            b = (boxes[order] / float(scales[i])).astype(np.float32)
            s = scores[order]
            keep = nms(b, s, self.nms_thresh)
            if kps is not None:
                k = (kps[order][keep] / float(scales[i])).astype(np.float32)
            else:
                k = np.full((len(keep), 5, 2), np.nan, np.float32)
            out.append((b[keep], s[keep], k))
        return out


class _Unbatchable(Exception):
    def __init__(self, idx, rows, want):
        super().__init__(f"output {idx}: {rows} rows, expected {want}")


# --------------------------------------------------------------------------------------------
# 1k3d68: 68 3-D landmarks and head pose


def meanshape_path() -> str:
    spec = importlib.util.find_spec("insightface")  # locates the package without importing it
    if spec is None or not spec.origin:
        raise ModelError("the 1k3d68 pose needs insightface's mean face shape (meanshape_68.pkl, shipped in "
                         "the insightface wheel): pip install --no-deps insightface==2.1")
    path = os.path.join(os.path.dirname(spec.origin), "data", "objects", "meanshape_68.pkl")
    if not os.path.isfile(path):
        raise ModelError(f"insightface is installed but {path} is missing: "
                         f"pip install --force-reinstall --no-deps insightface==2.1")
    return path


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles a plain numpy array and nothing else (no code runs from the file)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"meanshape_68.pkl: refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":  # numpy >= 2 renamed numpy.core to numpy._core
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


@functools.lru_cache(maxsize=1)
def mean_shape_68() -> np.ndarray:
    """insightface's 68-point mean face (68, 3) float32: x right, y down, z towards the camera."""
    with open(meanshape_path(), "rb") as f:
        arr = np.asarray(_NumpyOnlyUnpickler(f).load(), np.float32)
    if arr.shape != (68, 3):
        raise ModelError(f"meanshape_68.pkl: unexpected shape {arr.shape}")
    arr.setflags(write=False)
    return arr


# The three functions below are insightface/utils/transform.py (MIT licence, insightface),
# copied with only numpy-2 spelling changes (lstsq rcond).

def estimate_affine_matrix_3d23d(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Least-squares affine camera P (3, 4) with Y ≈ P·[X; 1] for (n, 3) point sets."""
    X_homo = np.hstack((X, np.ones([X.shape[0], 1])))
    return np.linalg.lstsq(X_homo, Y, rcond=None)[0].T


def P2sRt(P: np.ndarray):
    """Scale, rotation (3, 3) and translation of an affine camera matrix."""
    t = P[:, 3]
    R1 = P[0:1, :3]
    R2 = P[1:2, :3]
    s = (np.linalg.norm(R1) + np.linalg.norm(R2)) / 2.0
    r1 = R1 / np.linalg.norm(R1)
    r2 = R2 / np.linalg.norm(R2)
    r3 = np.cross(r1, r2)
    R = np.concatenate((r1, r2, r3), 0)
    return s, R, t


def matrix2angle(R: np.ndarray) -> tuple[float, float, float]:
    """Euler angles in degrees (x: pitch, y: yaw, z: roll) of R = Rz·Ry·Rx."""
    sy = math.sqrt(R[0, 0] * R[0, 0] + R[1, 0] * R[1, 0])
    if sy >= 1e-6:
        x = math.atan2(R[2, 1], R[2, 2])
        y = math.atan2(-R[2, 0], sy)
        z = math.atan2(R[1, 0], R[0, 0])
    else:
        x = math.atan2(-R[1, 2], R[1, 1])
        y = math.atan2(-R[2, 0], sy)
        z = 0
    return x * 180 / np.pi, y * 180 / np.pi, z * 180 / np.pi


# insightface's pose [pitch, yaw, roll] -> faceqc's (yaw, pitch, roll).  Both frames are the
# image's (x right, y down) with the mean shape's z towards the camera, so insightface's angles
# mean: pitch > 0 = the nose tip moves up on screen (looking up), yaw > 0 = the nose tip moves to
# the image RIGHT, roll > 0 = clockwise on screen.  faceqc's pose as the pipeline computes it
# (geometry.head_pose_dlib5, and the pose axes `faceqc explain` draws) has pitch > 0 looking up,
# roll > 0 clockwise, and yaw > 0 when the nose points to the image LEFT (the subject turns to
# their own right).  So pitch and roll carry over, yaw changes sign.  (The words "turns towards
# the image right" in head_pose_dlib5's docstring and the report's axis label describe the other
# sign than that code computes; flip YAW_SIGN if the project settles on the words instead.)
YAW_SIGN = -1.0


def pose_from_landmarks(lmk68: np.ndarray, mean_shape: Optional[np.ndarray] = None) -> np.ndarray:
    """(yaw, pitch, roll) in degrees, faceqc convention, from 68 3-D landmarks (68, 3) in pixels:
    insightface's affine fit of the mean shape, its rotation and Euler angles."""
    ms = mean_shape_68() if mean_shape is None else mean_shape
    if not np.isfinite(lmk68).all():
        return np.full(3, np.nan, np.float32)
    P = estimate_affine_matrix_3d23d(ms, lmk68)
    _, R, _ = P2sRt(P)
    rx, ry, rz = matrix2angle(R)  # insightface: pitch, yaw, roll
    return np.array([YAW_SIGN * ry, rx, rz], np.float32)


class Landmark3D68:
    """insightface ``1k3d68.onnx``: 68 3-D landmarks and head pose per face box.

    As insightface's ``Landmark.get``: a square crop of the model's input side (192) centred on
    the box centre, scale ``192 / (max(w, h) · 1.5)``, no rotation, bilinear ``warpAffine`` with a
    black border; the crop is fed RGB with insightface's mean/std (0/1 when the graph normalises
    itself — MXNet-converted, detected from its first node names like insightface does — else
    127.5/128).  The output (3309 = 1103 × 3) is reshaped to (−1, 3); its last 68 rows are the
    landmarks in [−1, 1] crop units: x, y (+1)·96, z ·96, then mapped back to source pixels
    (z scaled by the inverse crop scale).  All faces of an image go through one run when the
    model's batch dimension is dynamic.
    """

    def __init__(self, path: str, num_cpus: float = 1, use_gpu: bool = False, *,
                 input_mean: Optional[float] = None, input_std: Optional[float] = None, max_batch: int = 64):
        self.path = path
        if input_mean is None or input_std is None:
            mx = graph_normalises_input(path, landmark=True)
            input_mean, input_std = (0.0, 1.0) if mx else (127.5, 128.0)
        self.input_mean, self.input_std = float(input_mean), float(input_std)
        self.session = make_session(path, num_cpus, use_gpu, what=f"landmark model {path}")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_size = (_spatial(inp.shape) or (192, 192))[0]
        outs = self.session.get_outputs()
        if len(outs) != 1:
            raise ModelError(f"{path}: a landmark model has one output, this one has {len(outs)}")
        dim = outs[0].shape[-1]
        if isinstance(dim, int) and dim != 3309:
            raise ModelError(f"{path}: not a 1k3d68 model (output {outs[0].shape}, expected (N, 3309))")
        self.fixed_batch = fixed_batch(self.session)
        self.max_batch = max_batch
        self.lmk_num = 68

    def crop_transform(self, bbox) -> np.ndarray:
        """The 2x3 matrix taking source pixels into the model's crop for one box."""
        x1, y1, x2, y2 = (float(v) for v in bbox[:4])
        w, h = x2 - x1, y2 - y1
        cx, cy = (x2 + x1) / 2, (y2 + y1) / 2
        size = self.input_size
        s = size / (max(w, h) * 1.5) if max(w, h) > 0 else 1.0
        return np.array([[s, 0.0, size / 2 - cx * s], [0.0, s, size / 2 - cy * s]], np.float64)

    def landmarks(self, image: np.ndarray, bboxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bboxes = np.asarray(bboxes, np.float64).reshape(-1, 4)
        n = len(bboxes)
        if n == 0:
            return np.zeros((0, 68, 3), np.float32), np.zeros((0, 3), np.float32)
        size = self.input_size
        ms = [self.crop_transform(b) for b in bboxes]
        crops = np.stack([cv2.warpAffine(image, m, (size, size), borderValue=0.0) for m in ms])
        x = (crops.astype(np.float32) - np.float32(self.input_mean)) * np.float32(1.0 / self.input_std)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        preds = []
        for i, j in chunks(n, self.fixed_batch, self.max_batch):
            out = self.session.run(None, {self.input_name: pad_to(x[i:j], self.fixed_batch)})[0]
            preds.append(np.asarray(out, np.float32).reshape(-1, out.shape[-1])[: j - i])
        pred = np.concatenate(preds).reshape(n, -1, 3)[:, -self.lmk_num:, :].astype(np.float64)
        half = size // 2
        pred[:, :, 0:2] += 1
        pred[:, :, 0:2] *= half
        pred[:, :, 2] *= half
        lmk = np.empty_like(pred)
        pose = np.empty((n, 3), np.float32)
        for f, m in enumerate(ms):
            im = cv2.invertAffineTransform(m)
            lmk[f, :, 0:2] = pred[f, :, 0:2] @ im[:, :2].T + im[:, 2]
            lmk[f, :, 2] = pred[f, :, 2] * math.sqrt(im[0, 0] ** 2 + im[0, 1] ** 2)
            pose[f] = pose_from_landmarks(lmk[f].astype(np.float32))
        return lmk.astype(np.float32), pose


# --------------------------------------------------------------------------------------------
# pack directories

PACK_PATTERNS = {
    "det": ("det_*.onnx", "scrfd*.onnx"),
    "landmark": ("1k3d68*.onnx",),
    "rec": ("w600k*.onnx", "glintr100*.onnx", "*arcface*.onnx"),
}
_ROLE_WORDS = {"det": "an SCRFD detector", "landmark": "the 1k3d68 landmark/pose model",
               "rec": "an ArcFace recognition model"}


def classify_onnx(path: str) -> Optional[str]:
    """'det', 'landmark', 'rec' or None from a model's input/output shapes."""
    ort = require("onnxruntime", "prod", "ONNX models")
    try:
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - not a loadable ONNX model: not part of the pack
        return None
    ins, outs = s.get_inputs(), s.get_outputs()
    if not ins or len(ins[0].shape) != 4 or ins[0].shape[1] != 3:
        return None
    if len(outs) in SCRFD_LAYOUTS and all(len(o.shape) in (2, 3) for o in outs):
        return "det"
    if len(outs) == 1:
        last = outs[0].shape[-1]
        size = _spatial(ins[0].shape)
        if last == 3309:
            return "landmark"
        if isinstance(last, int) and last in (128, 256, 512, 1024) and size == (112, 112):
            return "rec"
    return None


def find_pack(directory: str, need: Sequence[str] = ("det", "landmark", "rec")) -> dict:
    """Paths of the detector, landmark and recognition models in an insightface pack directory
    (buffalo_l: det_10g / 1k3d68 / w600k_r50; buffalo_s: det_500m / 1k3d68 / w600k_mbf;
    antelopev2: scrfd_10g_bnkps / 1k3d68 / glintr100), by file name, or, for files no pattern
    names, by their input/output shapes.  Raises ModelError naming whatever is missing."""
    if not os.path.isdir(directory):
        raise ModelError(f"insightface model pack: {directory} is not a directory (unpack buffalo_l.zip "
                         f"or antelopev2.zip there, or name it by URI and `faceqc models pull` it)")
    files = sorted(f for f in os.listdir(directory)
                   if f.lower().endswith(".onnx") and os.path.isfile(os.path.join(directory, f)))
    found: dict = {}
    claimed = set()
    for role, patterns in PACK_PATTERNS.items():
        for pat in patterns:
            hits = [f for f in files if fnmatch.fnmatch(f.lower(), pat) and f not in claimed]
            if hits:
                found[role] = os.path.join(directory, hits[0])
                claimed.add(hits[0])
                break
    if any(r not in found for r in need):
        for f in files:
            if f in claimed:
                continue
            role = classify_onnx(os.path.join(directory, f))
            if role and role not in found:
                found[role] = os.path.join(directory, f)
                claimed.add(f)
    missing = [r for r in need if r not in found]
    if missing:
        what = "; ".join(f"{_ROLE_WORDS[r]} ({' / '.join(PACK_PATTERNS[r])})" for r in missing)
        raise ModelError(f"insightface model pack {directory}: missing {what}; it holds "
                         f"{', '.join(files) or 'no .onnx files'}")
    return {r: found.get(r) for r in ("det", "landmark", "rec")}


# --------------------------------------------------------------------------------------------
# the detect backend


def _scrfd_models(cfg) -> list:
    out = [named(cfg.detect.model, "detect")]
    if cfg.detect.pose_model:
        out.append(named(cfg.detect.pose_model, "landmarks+pose"))
    return out


def _scrfd_check(cfg) -> None:
    if not cfg.detect.model:
        raise ConfigError("detect.detector 'scrfd' needs detect.model: an insightface pack directory or a "
                          "detector .onnx path/URI")


@register("detect", "scrfd", models=_scrfd_models, check=_scrfd_check, needs=(("onnxruntime", "prod"),),
          traits={"points": "arcface5"})
class ScrfdFaces:
    """insightface-pack detection: SCRFD boxes and 5 keypoints for a whole batch in one model
    call, and yaw/pitch/roll from the 1k3d68 model when the pack (or detect.pose_model) has it."""

    def __init__(self, cfg):
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
        """Per image: list of (bbox, score, points, pose, (eye, mouth) openness), NaNs where the
        pack has no landmark model."""
        from .. import pose3d

        out = []
        for img, (boxes, scores, kps) in zip(images, self.det.detect(images)):
            poses, opens = np.full((len(boxes), 3), np.nan), np.full((len(boxes), 2), np.nan)
            if self.pose is not None and len(boxes):
                lmk, poses = self.pose.landmarks(img, boxes)
                for f, pts in enumerate(lmk[:, :, :2]):  # 1k3d68 uses iBUG's 68-point order
                    o = pose3d.openness(pts, pose3d.fit_pose_68(pts))
                    opens[f] = (o.eye, o.mouth)
            order = np.argsort(-np.asarray(scores))
            out.append([(boxes[j], float(scores[j]), kps[j], poses[j], opens[j]) for j in order])
        return out
