"""The output contract: one Parquet row per input file.

Column names here are fixed (SCHEMA_VERSION bumps on any incompatible change); new columns may
be added.  See README "Output schema" for the meaning of each field.
"""

from __future__ import annotations

import json

import pyarrow as pa

from . import SCHEMA_VERSION, __version__
from .stages.fiqa import FIQA_KEYS
from .stages.iqa import FACE_IQA_KEYS, IMAGE_IQA_KEYS

# component scores (0-100) of a face, in the order reasons are checked
COMPONENTS = (
    "resolution", "sharpness", "noise", "compression", "underexposure", "overexposure",
    "brightness_low", "brightness_high", "contrast", "recognisability", "fiqa_model", "iqa_model", "yaw", "pitch", "roll",
)

STATUSES = ("ok", "no_face", "read_error", "decode_error", "too_large",
            "detect_error", "iqa_error", "fiqa_error", "fuse_error")
VERDICTS = ("accept", "review", "reject")

f32 = pa.float32()


def _struct(keys) -> pa.DataType:
    return pa.struct([(k, f32) for k in keys])


FACE_TYPE = pa.struct(
    [
        ("bbox", pa.list_(f32)),  # x1, y1, x2, y2 in source pixels (after EXIF orientation)
        ("det_score", f32),
        ("landmarks", pa.list_(pa.list_(f32))),  # 5 x [x, y]: left eye, right eye, nose, mouth l/r
        ("inter_eye_px", f32),
        ("yaw", f32),
        ("pitch", f32),
        ("roll", f32),
        ("iqa", _struct(FACE_IQA_KEYS)),  # raw no-reference measures of the aligned face
        ("fiqa", _struct(FIQA_KEYS)),  # raw face-quality model outputs
        ("components", _struct(COMPONENTS)),  # each component mapped to 0-100
        ("quality", f32),
    ]
)

BASE_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_faces", pa.int32()),
        ("primary_face", pa.int32()),
        ("quality", f32),
        ("verdict", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("image_iqa", _struct(IMAGE_IQA_KEYS)),
        ("faces", pa.list_(FACE_TYPE)),
    ]
)


def schema_with_metadata(models: list, profile: str) -> pa.Schema:
    return BASE_SCHEMA.with_metadata(
        {
            "faceqc.schema_version": SCHEMA_VERSION,
            "faceqc.version": __version__,
            "faceqc.profile": profile,
            "faceqc.models": json.dumps([m.as_dict() for m in models]),
        }
    )
