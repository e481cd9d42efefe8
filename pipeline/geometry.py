"""Face geometry: alignment templates, similarity transforms, crops and head pose."""

from __future__ import annotations

import math

import cv2
import numpy as np

# ArcFace 112x112 template (insightface): left eye, right eye, nose tip, mouth left, mouth right
# ("left" = image left).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float64,
)

# Where dlib's 5-point model lands in the same 112x112 frame, measured on frontal faces of
# t1.jpg, astronaut.png and Tom_Hanks_54745.png (fit through the 68-point eye centres, nose
# and mouth corners).  Order is dlib's: image-right eye outer, inner; image-left eye outer,
# inner; subnasale.
DLIB5_112 = np.array(
    [[81.5, 54.0], [67.2, 54.2], [30.6, 53.5], [44.9, 54.0], [54.8, 81.5]], np.float64
)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping src points onto dst; 2x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    r = u @ d @ vt
    var = (s0 ** 2).sum() / len(src)
    scale = (sv * np.diag(d)).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = mu_d - scale * r @ mu_s
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)


def scaled_template(template: np.ndarray, size: int, margin: float) -> np.ndarray:
    """The 112-frame template for a crop of ``size`` px showing ``margin`` times its extent."""
    k = size / 112.0 / margin
    return (template - 56.0) * k + size / 2.0


def ffhq_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 transform of FFHQ's face alignment (Karras et al. 2019, the dataset's
    ``align_images`` recipe) onto a ``size`` x ``size`` crop, from 5 landmarks in insightface order
    (left eye, right eye, nose, mouth left, mouth right): an oriented square around the eyes and
    mouth, 2x the inter-eye distance (or 1.8x the eye-to-mouth one) from its centre to a side.
    The framing digital-human training sets use; :func:`warp_crop` resamples it."""
    lm = np.asarray(landmarks, np.float64)
    eye_avg = (lm[0] + lm[1]) / 2
    eye_to_eye = lm[1] - lm[0]
    eye_to_mouth = (lm[3] + lm[4]) / 2 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= max(np.hypot(*x), 1e-9)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    src = np.float32([c - x - y, c - x + y, c + x + y])  # top-left, bottom-left, bottom-right
    dst = np.float32([[0, 0], [0, size], [size, size]])
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def shrink(img: np.ndarray, size: tuple) -> np.ndarray:
    """Area-average ``img`` down to ``size`` = (w, h).  While at least 2x too large it is halved
    with OpenCV's bilinear resize, which at exactly half size averages each 2x2 block (a box
    filter, SIMD-fast); the last, under-2x step is INTER_AREA.  Same box filter as one
    INTER_AREA resize up to rounding and block alignment, at ~40% of its cost on ~1 MP images."""
    w, h = size
    while img.shape[1] >= 2 * w and img.shape[0] >= 2 * h:
        ih, iw = img.shape[0] // 2, img.shape[1] // 2
        img = cv2.resize(img[: 2 * ih, : 2 * iw], (iw, ih), interpolation=cv2.INTER_LINEAR)
    if (img.shape[1], img.shape[0]) == (w, h):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def warp_crop(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """warpAffine with area pre-shrinking: when the transform shrinks the face by more than
    1.5x, the source region is first resized with INTER_AREA so that the crop is not aliased."""
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if scale >= 1 / 1.5:
        return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inv = invert(m)
    corners = transform_points(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], float))
    h, w = img.shape[:2]
    x0 = int(max(0, math.floor(corners[:, 0].min()) - 2))
    y0 = int(max(0, math.floor(corners[:, 1].min()) - 2))
    x1 = int(min(w, math.ceil(corners[:, 0].max()) + 2))
    y1 = int(min(h, math.ceil(corners[:, 1].max()) + 2))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    roi = img[y0:y1, x0:x1]
    f = scale * 1.25  # leave a little for the final interpolation
    rw, rh = max(2, int(round(roi.shape[1] * f))), max(2, int(round(roi.shape[0] * f)))
    small = shrink(roi, (rw, rh))
    fx, fy = rw / roi.shape[1], rh / roi.shape[0]
    # small-image coords -> source coords: x = xs / fx + x0
    to_src = np.array([[1 / fx, 0, x0], [0, 1 / fy, y0], [0, 0, 1]])
    m3 = np.vstack([m, [0, 0, 1]]) @ to_src
    return cv2.warpAffine(small, m3[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# Nose offsets on frontal faces in the 112 frame (eye centres 37 px apart, subnasale 27.5 px
# below their midpoint) and the yaw sensitivity, fitted on the faces of t1.jpg.
FRONTAL_NOSE_DROP = 0.74
YAW_K = 0.46
PITCH_K = 0.5


def head_pose_dlib5(points: np.ndarray) -> tuple[float, float, float]:
    """Yaw, pitch, roll (degrees) from dlib's 5 points, by closed-form ratios.

    In the frame where the eye line is horizontal and the inter-eye distance is 1:
    - roll is the angle of the eye line (positive: clockwise on screen);
    - yaw from the mean of two cues, the nose's sideways offset from the eye midpoint and the
      log ratio of the two eyes' widths (the far eye looks narrower): yaw = atan(d / 0.46);
      positive when the nose points towards the image left.  Mirror-symmetric by construction.
    - pitch from how far the nose base sits below the eye line against the frontal 0.74
      (positive: looking up).  Five points carry little pitch information (the subnasale is
      nearly in the eyes' depth plane, and face proportions vary as much as the signal), so
      the offline profile gives pitch no weight in fusion.

    solvePnP against a generic 3-D face was tried first and rejected: on t1.jpg it gave
    -41.9° for a face and +2.5° for its mirror image."""
    pts = np.asarray(points, np.float64)
    eye_l, eye_r = pts[2:4].mean(0), pts[0:2].mean(0)
    v = eye_r - eye_l
    ied = float(np.hypot(*v)) or 1.0
    ang = math.atan2(v[1], v[0])
    c, s = math.cos(-ang), math.sin(-ang)
    rel = pts[4] - (eye_l + eye_r) / 2
    dx = (c * rel[0] - s * rel[1]) / ied
    dy = (s * rel[0] + c * rel[1]) / ied
    w_l = float(np.hypot(*(pts[2] - pts[3])))
    w_r = float(np.hypot(*(pts[0] - pts[1])))
    width_cue = math.log(max(w_l, 1e-3) / max(w_r, 1e-3))
    yaw = math.degrees(math.atan(-(dx + width_cue) / 2 / YAW_K))
    pitch = math.degrees(math.atan(-(dy - FRONTAL_NOSE_DROP) / PITCH_K))
    return yaw, pitch, math.degrees(ang)


def primary_index(bboxes: np.ndarray, det_scores: np.ndarray) -> int:
    """Most confident of the large faces: the largest face can be a false detection."""
    areas = (bboxes[:, 2] - bboxes[:, 0]) * (bboxes[:, 3] - bboxes[:, 1])
    large = areas >= 0.5 * areas.max()
    return int(np.argmax(np.where(large, det_scores, -np.inf)))
