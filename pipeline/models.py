"""Model registry: every model faceqc can use, with its source and licence.

The offline profile uses only models that ship inside PyPI packages, so it runs with no
network at all.  Their licences are recorded here and copied into every run summary.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import asdict, dataclass


class ModelError(RuntimeError):
    """A model is missing or cannot be loaded."""


@dataclass(frozen=True)
class ModelInfo:
    id: str
    task: str
    source: str
    licence: str
    commercial_use: bool
    file: str = ""  # file name inside its package, or empty for built-in models

    def as_dict(self) -> dict:
        return asdict(self)


REGISTRY = {
    m.id: m
    for m in [
        ModelInfo(
            "dlib-hog-frontal", "detect",
            "dlib 20 built-in HOG + linear SVM frontal face detector (pip: dlib-bin)",
            "Boost Software License 1.0 (dlib); detector trained by dlib on public images",
            True,
        ),
        ModelInfo(
            "dlib-mmod-human-face", "detect",
            "dlib MMOD CNN face detector (pip: face_recognition_models)",
            "CC0 1.0 (dlib-models: trained by Davis King on his own dataset)",
            True, "mmod_human_face_detector.dat",
        ),
        ModelInfo(
            "dlib-shape-predictor-5", "landmarks",
            "dlib 5-point landmark model (pip: face_recognition_models)",
            "CC0 1.0 (dlib-models: trained on dlib's own 5-point dataset)",
            True, "shape_predictor_5_face_landmarks.dat",
        ),
        ModelInfo(
            "dlib-resnet-face-v1", "fiqa",
            "dlib ResNet-34 128-d face embedding (pip: face_recognition_models)",
            "CC0 1.0 (dlib-models: dlib_face_recognition_resnet_model_v1)",
            True, "dlib_face_recognition_resnet_model_v1.dat",
        ),
        ModelInfo(
            "faceqc-classical-iqa", "iqa",
            "faceqc's own no-reference measures (OpenCV/NumPy): sharpness, noise, blockiness, exposure",
            "same licence as faceqc (Apache-2.0)", True,
        ),
    ]
}


@functools.lru_cache(maxsize=None)
def dlib_models_dir() -> str:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
        raise ModelError("face_recognition_models is not installed: pip install face_recognition_models")
    return os.path.join(os.path.dirname(spec.origin), "models")


def model_path(model_id: str) -> str:
    info = REGISTRY.get(model_id)
    if info is None:
        raise ModelError(f"unknown model '{model_id}' (known: {', '.join(REGISTRY)})")
    if not info.file:
        raise ModelError(f"model '{model_id}' is built in and has no file")
    path = os.path.join(dlib_models_dir(), info.file)
    if not os.path.isfile(path):
        raise ModelError(f"model '{model_id}' not found at {path}: reinstall face_recognition_models")
    return path


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def models_for(cfg) -> list[ModelInfo]:
    """The models a configuration uses, in pipeline order."""
    ids = ["dlib-hog-frontal" if cfg.detect.detector == "dlib_hog" else "dlib-mmod-human-face",
           "dlib-shape-predictor-5", "faceqc-classical-iqa"]
    if cfg.fiqa.backend == "dlib_stability":
        ids.append("dlib-resnet-face-v1")
    return [REGISTRY[i] for i in ids]
