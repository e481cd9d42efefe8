"""The model catalogue: every model faceqc knows by name, with its source and licence.

The offline profile uses only models that ship inside PyPI packages, so it runs with no
network at all.  Their licences are recorded here and copied into every run summary.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from .errors import ModelError


@dataclass(frozen=True)
class ModelInfo:
    id: str
    task: str
    source: str
    licence: str
    commercial_use: bool
    file: str = ""  # file name inside its package (offline models)
    uri: str = ""  # where `faceqc models pull` fetches it from (production models)
    sha256: Optional[str] = None  # verified before loading when known
    contract: dict = field(default_factory=dict, hash=False, compare=False)  # input/output contract

    def as_dict(self) -> dict:
        return asdict(self)


CATALOGUE = {
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
            "dlib-shape-predictor-68", "landmarks",
            "dlib 68-point (iBUG 300-W markup) landmark model (pip: face_recognition_models); "
            "used for head pose, eye and mouth openness (pipeline/pose3d.py)",
            "dlib-models' note: trained on the iBUG 300-W dataset, whose licence excludes commercial "
            "use; do not use this model commercially without a licence for that data",
            False, "shape_predictor_68_face_landmarks.dat",
        ),
        ModelInfo(
            "dlib-resnet-face-v1", "fiqa",
            "dlib ResNet-34 128-d face embedding (pip: face_recognition_models)",
            "CC0 1.0 (dlib-models: dlib_face_recognition_resnet_model_v1)",
            True, "dlib_face_recognition_resnet_model_v1.dat",
        ),
        # ---- production tier: fetched by `faceqc models pull` into the node's model cache
        ModelInfo(
            "ediffiqa-tiny", "fiqa",
            "eDifFIQA(T), Babnik et al. 2024, OpenCV model zoo: face_image_quality_assessment_ediffiqa/"
            "ediffiqa_tiny_jun2024.onnx (7.3 MB)",
            "CC-BY-4.0", True,
            uri="https://github.com/opencv/opencv_zoo/raw/main/models/face_image_quality_assessment_ediffiqa/"
                "ediffiqa_tiny_jun2024.onnx",
            contract={"size": 112, "colour": "RGB", "scale": 1 / 255, "mean": [0.5, 0.5, 0.5],
                      "std": [0.5, 0.5, 0.5], "output": "linear", "lo": 0.2, "hi": 0.8},
        ),
        ModelInfo(
            "magface-iresnet50-ofiq", "fiqa",
            "MagFace iResNet-50 as shipped by OFIQ (BSI-OFIQ/OFIQ-Project models archive: "
            "magface_iresnet50_norm.onnx); name its local path or mirror URI in fiqa.model",
            "Apache-2.0 (MagFace weights); OFIQ code MIT", True,
            contract={"size": 112, "colour": "BGR", "scale": 1 / 255, "mean": [0.0, 0.0, 0.0],
                      "std": [1.0, 1.0, 1.0], "output": "ofiq_sigmoid", "x0": 23.0, "w": 2.6},
        ),
        ModelInfo(
            "insightface-buffalo_l", "detect+landmarks+recognition",
            "insightface model pack buffalo_l (det_10g.onnx SCRFD, 1k3d68.onnx, w600k_r50.onnx); "
            "name the unpacked directory in detect.model",
            "non-commercial research use only (insightface model packs)", False,
        ),
        ModelInfo(
            "arcface-embedding-norm", "fiqa",
            "the un-normalised embedding norm of an ArcFace recognition model (e.g. insightface's "
            "w600k_r50.onnx): a weak-to-moderate face-quality proxy; name the .onnx in fiqa.model and "
            "set fiqa.contract_from: arcface-embedding-norm",
            "that of the recognition model you name (insightface packs: non-commercial)", False,
            contract={"size": 112, "colour": "RGB", "scale": 1.0, "mean": [127.5] * 3, "std": [127.5] * 3,
                      "graph_may_normalise": True, "output": "linear", "lo": 10.0, "hi": 25.0},
        ),
        ModelInfo(
            "serfiq", "fiqa (fiqa.serfiq)",
            "SER-FIQ, Terhörst et al., CVPR 2020 (arXiv:2003.09373): a method, not weights — the stability "
            "of a recognition model's embedding under dropout, run on the ArcFace-like .onnx named in "
            "fiqa.serfiq.model; faceqc's own implementation (the authors' reference code, CC BY-NC-SA 4.0, "
            "is not used)",
            "that of the recognition model you name (insightface packs w600k_r50 / glintr100: non-commercial "
            "research only); the method adds no weights", False,
            contract={"size": 112, "colour": "RGB", "scale": 1.0, "mean": [127.5] * 3, "std": [127.5] * 3,
                      "graph_may_normalise": True},
        ),
        ModelInfo(
            "sdd-fiqa", "fiqa (fiqa.sdd_fiqa)",
            "SDD-FIQA, Ou et al., CVPR 2021 (arXiv:2103.05977): the IR-50 quality regression network the "
            "authors released with Tencent/TFace (branch quality, SDD_FIQA_checkpoints_r50.pth, trained on "
            "MS1M), exported to ONNX as the README shows; name the .onnx in fiqa.sdd_fiqa.model",
            "as published by the authors: TFace code Apache-2.0; the checkpoint states no licence of its own and "
            "is trained on MS-Celeb-1M (withdrawn by Microsoft, research use) — not cleared for commercial use",
            False,
            # TFace quality/eval.py: PIL RGB, ToTensor (x/255), Normalize(0.5, 0.5) on 112x112 faces
            # aligned like MS1M's ArcFace crops; the output regresses pseudo-labels min-max normalised
            # to 0..100 over the training set
            contract={"size": 112, "colour": "RGB", "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3,
                      "output": "linear", "lo": 0.0, "hi": 100.0},
        ),
        ModelInfo(
            "face-restoration", "fiqa (fiqa.restoration)",
            "restoration consistency (the idea of FaceQgen, Hernandez-Ortega et al. 2021): any face-restoration "
            ".onnx you name in fiqa.restoration.model — GFPGAN, CodeFormer, GPEN, RestoreFormer exports — "
            "on the primary face's FFHQ-aligned crop",
            "that of the restoration model you name: e.g. GFPGAN code Apache-2.0 with weights trained on FFHQ "
            "(collection CC BY-NC-SA 4.0); CodeFormer S-Lab License 1.0 (non-commercial)", False,
            contract={"size": 512, "colour": "RGB", "range": [-1.0, 1.0], "output_range": [-1.0, 1.0]},
        ),
        ModelInfo(
            "face-occlusion", "fiqa (fiqa.occlusion)",
            "face occlusion segmentation (OFIQ's FaceOcclusionPrevention, ISO/IEC 29794-5): any face-occlusion "
            "or face-parsing .onnx you name in fiqa.occlusion.model — e.g. OFIQ's face_occlusion_segmentation "
            "model (the FaceExtraction network of FaceOcc, Yin and Chen 2022) or a BiSeNet face-parser export — "
            "on the primary face's FFHQ-aligned crop",
            "that of the segmentation model you name: OFIQ's code is MIT, but FaceOcc's and face parsers' "
            "training data include CelebAMask-HQ (non-commercial research only) — check before commercial use",
            False,
            contract={"size": 224, "colour": "RGB", "range": [0.0, 1.0], "output": "face_logit", "threshold": 0.0},
        ),
        ModelInfo(
            "timm-iqa-checkpoint", "iqa",
            "a timm backbone with a regression head, trained by your team (iqa.model: checkpoint path/URI)",
            "yours", True,
        ),
        ModelInfo(
            "pyiqa", "iqa",
            "pyiqa 0.1.16 metrics (MUSIQ, MANIQA, HyperIQA, TReS, MetaIQA, TOPIQ, topiq_nr-face) "
            "with a local weights file (optional extra pyiqa: pip install -c constraints.txt -e '.[pyiqa]')",
            "PolyForm Noncommercial 1.0 (code); weights CC BY-NC-SA 4.0 — not for commercial use "
            "without the authors' permission", False,
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
    info = CATALOGUE.get(model_id)
    if info is None:
        raise ModelError(f"unknown model '{model_id}' (known: {', '.join(CATALOGUE)})")
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


def named(ref: str, task: str) -> ModelInfo:
    """The registry entry of a model named in config, or a record of a user-supplied file."""
    if ref in CATALOGUE:
        return CATALOGUE[ref]
    uri = ref.split("#sha256=")[0]
    return ModelInfo(uri, task, f"user-supplied: {uri}", "not recorded: declared by whoever supplied the file", False,
                     uri=uri)
