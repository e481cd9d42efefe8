"""The output contract: one Parquet row per input file.

Column names here are fixed (SCHEMA_VERSION bumps on any incompatible change); new columns may
be added.  See README "Output schema" for the meaning of each field.  Stages write the nested
values named here; :func:`conform` turns the fuse stage's rows into exactly this schema.
"""

from __future__ import annotations

import json
import math
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from . import SCHEMA_VERSION, __version__

# raw measures of a face (iqa stage: classical measures, a deep model's raw and 0-100 output, then
# the measures of the primary face's target crop and of its regions: see pipeline/regions.py)
FACE_IQA_KEYS = ("sharpness", "noise", "blockiness", "dark_clip", "bright_clip", "brightness", "contrast",
                 "model_raw", "model_score",
                 "grid", "banding", "combing",  # un-resampled pixels: blocks of any grid, posterisation, interlace
                 "detail",  # blur sigma (px) at the resolution the face is used at (detect.target_size)
                 "colour_noise", "black_level", "framing", "eye_visibility", "eye_glare", "lower_face",
                 "skin_hue", "skin_chroma", "colour", "illumination",
                 "eye_openness", "mouth_openness",  # from dense landmarks (eye / mouth aspect ratios)
                 "lip_line",  # horizontal over vertical edges of the lips region (schema 3)
                 "vignetting")  # the frame's radial darkening, from the whole-image thumbnail (schema 4)
# whole-image measures, from a 256 px thumbnail
IMAGE_IQA_KEYS = ("sharpness", "noise", "brightness", "contrast", "model_score")
# raw face-quality outputs (fiqa stage): the primary method (fiqa.backend: dlib stability, or an
# ONNX model's raw and 0-100 output), then the methods that run beside it when their model is set:
# SER-FIQ's 2·sigmoid(-mean distance) (fiqa.serfiq), SDD-FIQA's raw and 0-100 output
# (fiqa.sdd_fiqa), and restoration consistency's similarity and its 0-100 mapping (fiqa.restoration,
# primary face only).  New keys go at the end: positions are relied on.
FIQA_KEYS = ("stability", "model_raw", "model_score", "serfiq", "sdd_raw", "sdd_score",
             "restoration_raw", "restoration_score",
             "occlusion", "occlusion_eyes", "occlusion_mouth")  # fiqa.occlusion (schema 5), primary face only

# component scores (0-100) of a face, in the order reasons are checked
COMPONENTS = (
    "resolution", "sharpness", "noise", "compression", "underexposure", "overexposure",
    "brightness_low", "brightness_high", "contrast", "recognisability", "fiqa_model", "iqa_model", "yaw", "pitch", "roll",
    "detail", "pixelation", "banding", "interlacing", "colour_noise", "haze", "framing", "eyes_visible", "glare",
    "lower_face", "colour", "illumination", "yaw_limit", "pitch_limit", "roll_limit", "eyes_open", "mouth_open",
    "serfiq", "sdd_fiqa", "restoration", "mouth_visible", "vignetting", "occlusion",
)

STATUSES = ("ok", "no_face", "read_error", "decode_error", "too_large",
            "detect_error", "iqa_error", "fiqa_error", "fuse_error")
VERDICTS = ("accept", "review", "reject")

EXTRA_PREFIX = "extra."  # listing columns carried through the stages to the output
# what workers tell the driver beside the rows (never an output column): the sink sums it
INTERNAL_PREFIX = "_faceqc."
READ_RETRIES = INTERNAL_PREFIX + "read_retries"

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
        # clips (pipeline/video/): "image" or "video"; the rest null for images
        ("media", pa.string()),
        ("duration_s", f32),  # seconds decoded
        ("frames", pa.int32()),  # frames sampled (rows in DST/frames/)
        ("shots", pa.int32()),
        ("tracks", pa.int32()),  # face tracks (rows in DST/tracks/)
        ("quality_min", f32),  # the primary track's lowest frame quality
    ]
)

# output columns a manifest's own columns must not shadow: ours, and those nightly runs add
RESERVED = tuple(BASE_SCHEMA.names) + ("etag", "run_id", "change", "scoring_fp", "fusion_fp")


def carried_name(name: str) -> str:
    """The output column a manifest column becomes (renamed if it would shadow one of ours)."""
    return f"manifest_{name}" if name in RESERVED else name


def extra_fields(listing: Optional[pa.Table]) -> list:
    """Output columns carried through from the listing (``extra.<name>`` -> ``<name>``)."""
    if listing is None:
        return []
    return [pa.field(f.name[len(EXTRA_PREFIX):], f.type) for f in listing.schema if f.name.startswith(EXTRA_PREFIX)]


def output_schema(listing: Optional[pa.Table], models: Sequence, profile: str) -> pa.Schema:
    """The base schema, then the listing's carried columns; metadata names the schema and faceqc
    versions, the profile and every model (id, source, licence)."""
    meta = {
        "faceqc.schema_version": SCHEMA_VERSION,
        "faceqc.version": __version__,
        "faceqc.profile": profile,
        "faceqc.models": json.dumps([m.as_dict() for m in models]),
    }
    return pa.schema(list(BASE_SCHEMA) + extra_fields(listing), metadata=meta)


def carried_column(values, typ: Optional[pa.DataType]) -> pa.Array:
    """A listing column carried through the stages (NumPy or Arrow values) back to its type
    (``None``: Arrow's inference, text when even that fails)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        try:
            return values.cast(typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            values = values.to_pylist()
    try:
        return pa.array(values, type=typ, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        pass
    py = [v.tolist() if hasattr(v, "tolist") else v for v in values]
    py = [None if isinstance(v, float) and not math.isfinite(v) else v for v in py]
    try:
        return pa.array(py, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        if typ is None:
            return pa.array([None if v is None else str(v) for v in py], pa.string())
        return pa.nulls(len(py), typ)


def conform(rows, schema: pa.Schema, mask=None) -> pa.Table:
    """The fuse stage's rows (an Arrow table, or the dict of columns Ray hands on) in exactly
    ``schema``: its columns, types and metadata, carried columns taken from ``extra.<name>``,
    and ``error`` texts passed through ``mask`` (secret redaction) when given."""
    if not isinstance(rows, pa.Table):
        rows = pa.table({k: carried_column(v, BASE_SCHEMA.field(k).type) if k in BASE_SCHEMA.names else v
                         for k, v in rows.items()})
    n = rows.num_rows
    cols = []
    for f in schema:
        if f.name in BASE_SCHEMA.names:
            col = rows.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            src = EXTRA_PREFIX + f.name
            cols.append(carried_column(rows.column(src), f.type) if src in rows.column_names
                        else pa.nulls(n, f.type))
    table = pa.Table.from_arrays(cols, schema=schema)
    if mask is not None and n:
        errors = table.column("error")
        if pc.any(pc.is_valid(errors)).as_py():
            masked = pa.array([None if e is None else mask(e) for e in errors.to_pylist()], pa.string())
            table = table.set_column(schema.get_field_index("error"), "error", masked)
    return table
