"""Real face photos that ship inside PyPI packages, and the degradations faceqc is tested on.

Used by the demo (`faceqc demo`), the benchmark and the tests; nothing here is downloaded.
- insightface (MIT code): ``data/images/t1.jpg`` (six faces, varied pose), ``Tom_Hanks_54745.png``
- scikit-image (BSD): ``astronaut.png`` (public domain, NASA), ``lfw_subset.npy``
"""

from __future__ import annotations

import importlib.util
import io
import os
from typing import Callable, Dict, List, Sequence

import cv2
import numpy as np
from PIL import Image


def _package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise FileNotFoundError(f"package '{package}' is not installed (pip install {package})")
    path = os.path.join(os.path.dirname(spec.origin), *parts)
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    return path


def load_rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def t1() -> np.ndarray:
    return load_rgb(_package_file("insightface", "data", "images", "t1.jpg"))


def tom_hanks() -> np.ndarray:
    return load_rgb(_package_file("insightface", "data", "images", "Tom_Hanks_54745.png"))


def astronaut() -> np.ndarray:
    return load_rgb(_package_file("skimage", "data", "astronaut.png"))


def lfw_faces() -> np.ndarray:
    """200 greyscale 25x25 faces (float 0..1), as RGB uint8."""
    arr = np.load(_package_file("skimage", "data", "lfw_subset.npy"))
    g = np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=3)


# Face boxes (x1, y1, x2, y2) of the six people in t1.jpg and the roll of their eye lines
# (degrees, clockwise), found by the offline detector.  Each cut keeps 1.1 box widths of
# context on every side and is turned upright, so that in-plane rotation starts from level.
T1_BOXES = [(65, 284, 170, 389), (275, 179, 363, 267), (452, 300, 578, 426),
            (734, 365, 838, 469), (883, 89, 988, 194), (1114, 284, 1218, 388)]
T1_ROLLS = [-25.5, -33.2, 15.4, 7.3, -8.9, -4.5]


def t1_faces(context: float = 1.1, upright: bool = True) -> List[np.ndarray]:
    img = t1()
    h, w = img.shape[:2]
    out = []
    for (x1, y1, x2, y2), roll in zip(T1_BOXES, T1_ROLLS):
        cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * (0.5 + context)
        if upright:
            m = cv2.getRotationMatrix2D((cx, cy), roll, 1.0)
            m[:, 2] += [s - cx, s - cy]
            side = int(round(2 * s))
            out.append(cv2.warpAffine(img, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
            continue
        a, b = int(max(0, cx - s)), int(max(0, cy - s))
        c, d = int(min(w, cx + s)), int(min(h, cy + s))
        out.append(np.ascontiguousarray(img[b:d, a:c]))
    return out


def test_faces() -> Dict[str, np.ndarray]:
    faces = {f"t1-face{i}": f for i, f in enumerate(t1_faces())}
    faces["astronaut"] = astronaut()
    return faces


# ---------------------------------------------------------------- degradations
def gaussian_blur(img, sigma):
    return img if sigma <= 0 else cv2.GaussianBlur(img, (0, 0), sigma)


def jpeg(img, quality):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def noise(img, sigma, seed=0):
    if sigma <= 0:
        return img
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def downscale(img, factor):
    if factor >= 1:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


def exposure(img, gain):
    """Scale linear light by ``gain`` (sRGB approx. gamma 2.2), clipping like a sensor."""
    lin = (img.astype(np.float32) / 255.0) ** 2.2 * gain
    return np.clip(255.0 * np.clip(lin, 0, 1) ** (1 / 2.2) + 0.5, 0, 255).astype(np.uint8)


def rotate(img, angle):
    if angle == 0:
        return img
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# family -> (operator, severities from none to worst)
FAMILIES: Dict[str, tuple[Callable, Sequence[float]]] = {
    "blur": (gaussian_blur, [0, 1.0, 2.0, 3.0, 4.5, 6.0]),
    "jpeg": (jpeg, [100, 60, 35, 20, 10, 5]),
    "noise": (noise, [0, 5, 10, 16, 24, 34]),
    "downscale": (downscale, [1.0, 0.75, 0.55, 0.4, 0.3, 0.22]),
    "underexposure": (exposure, [1.0, 0.5, 0.25, 0.12, 0.06, 0.03]),
    "overexposure": (exposure, [1.0, 1.6, 2.5, 4.0, 6.0, 9.0]),
    "rotation": (rotate, [0, 8, 16, 24, 32, 40]),
}


def degrade(img: np.ndarray, family: str, severity: float) -> np.ndarray:
    op, _ = FAMILIES[family]
    return np.ascontiguousarray(op(img, severity))
