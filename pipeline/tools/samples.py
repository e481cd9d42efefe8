"""Real face photos that ship inside PyPI packages, and the degradations faceqc is tested on.

Nothing here is downloaded, and nothing is committed to this repository.

- scikit-image (a default dependency, BSD): ``astronaut.png``, NASA's portrait of Eileen Collins,
  public domain — the demo and the benchmark use only this photo, so that they run from a plain
  ``pip install`` and anyone may use what they make;
- insightface 2.1 (installed ``--no-deps`` by ``make test`` for its files only; MIT code, photos of
  unstated licence): ``data/images/t1.jpg`` (six faces, varied pose) and ``Tom_Hanks_54745.png``,
  used by the tests only; scikit-image's ``lfw_subset.npy`` (25 px LFW faces), tests only.
"""

from __future__ import annotations

import importlib.util
import io
import os
from typing import Callable, Dict, List, Sequence

import cv2
import numpy as np
from PIL import Image

from ..errors import MissingDependency, install_hint

# how to get each package whose files are used here
_INSTALL = {"skimage": install_hint("samples") + " (scikit-image)",
            "insightface": "pip install --no-deps insightface==2.1 (its sample photos; used by the tests only)"}


def _package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise MissingDependency(f"the sample photos of '{package}' are not installed: {_INSTALL[package]}")
    path = os.path.join(os.path.dirname(spec.origin), *parts)
    if not os.path.isfile(path):
        raise MissingDependency(f"{path} is missing from the installed '{package}': {_INSTALL[package]}")
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


def demo_faces() -> Dict[str, np.ndarray]:
    """Public-domain pictures of faces for the demo and the benchmark, all from scikit-image's
    astronaut: the photo, a tighter and a looser framing, its mirror image, and two people side by
    side (the photo and its mirror: two faces in one picture)."""
    ast = astronaut()
    duo = np.concatenate([ast, ast[:, ::-1]], axis=1)
    return {"astronaut": ast, "astronaut_portrait": np.ascontiguousarray(ast[20:340, 90:410]),
            "astronaut_wide": cv2.copyMakeBorder(ast, 96, 96, 96, 96, cv2.BORDER_REFLECT),
            "astronaut_mirrored": np.ascontiguousarray(ast[:, ::-1]), "two_astronauts": np.ascontiguousarray(duo)}


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
