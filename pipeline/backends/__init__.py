"""Backends: the swappable parts of stages (decoders, detectors, IQA and face-quality models).
Each module registers its backends with :mod:`pipeline.registry` on import and imports its
framework (dlib, ONNX Runtime, torch...) only when a backend is built; a missing one is reported
before any work as one line naming the extra to install."""

from . import (  # noqa: F401
    classical,
    decoders,
    dlib_models,
    fiqa_onnx,
    insightface_pack,
    iqa_torch,
    occlusion,
    restoration,
    serfiq,
)
