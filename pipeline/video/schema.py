"""The clip outputs beside the main rows: ``DST/frames/`` (one row per sampled frame) and
``DST/tracks/`` (one row per face track).  Their part files are named like the main part that
holds their clips' rows (``part-<digest>.parquet``); see README "Video clips"."""

from __future__ import annotations

import json
from typing import Sequence

import pyarrow as pa

from .. import SCHEMA_VERSION, __version__
from ..schema import COMPONENTS, f32

FRAMES_DIR, TRACKS_DIR = "frames", "tracks"
SIDE_DIRS = (FRAMES_DIR, TRACKS_DIR)

FRAMES_SCHEMA = pa.schema([
    ("uri", pa.string()),  # the clip
    ("t", pa.float64()),  # seconds from the clip's first frame
    ("frame_index", pa.int64()),  # the decoded frame's index in the stream
    ("shot", pa.int32()),
    ("track", pa.int32()),  # the track of the frame's primary face; null without a face
    ("status", pa.string()),  # ok | no_face | <stage>_error
    ("num_faces", pa.int32()),
    ("face_tracks", pa.list_(pa.int32())),  # the track of every face, in the order of the frame's faces
    ("quality", f32),  # the primary face's quality (0-100)
    ("verdict", pa.string()),  # the frame judged as an image would be
    ("reasons", pa.list_(pa.string())),
    ("components", pa.struct([(k, f32) for k in COMPONENTS])),  # the primary face's
    ("bbox", pa.list_(f32)),  # the primary face's box, upright frame pixels
    ("yaw", f32), ("pitch", f32), ("roll", f32),
])

TRACKS_SCHEMA = pa.schema([
    ("uri", pa.string()),
    ("track", pa.int32()),  # numbered in order of start within the clip
    ("shot", pa.int32()),
    ("primary", pa.bool_()),  # the track the clip is judged on
    ("start_s", pa.float64()), ("end_s", pa.float64()),  # times of its first and last sampled frames
    ("frames", pa.int32()),
    ("coverage", f32),  # frames over the clip's sampled frames
    ("quality", f32),  # quality_mean times the track rules' penalties
    ("verdict", pa.string()),
    ("reasons", pa.list_(pa.string())),
    ("quality_mean", f32), ("quality_min", f32), ("quality_p10", f32),
    ("accepted_share", f32),  # frames whose face quality reaches fuse.accept
    ("yaw_min", f32), ("yaw_max", f32), ("yaw_range", f32), ("pitch_range", f32),
    ("head_motion", f32),  # 90th percentile, inter-eye distances per second
    ("identity_consistency", f32),  # mean cosine similarity of its embeddings to their mean; null without embeddings
    ("best_t", pa.float64()), ("best_frame_index", pa.int64()), ("best_quality", f32),
    ("best_bbox", pa.list_(f32)),
    ("best_landmarks", pa.list_(pa.list_(f32))),  # 5 x [x, y] (insightface order), upright frame pixels
    ("embedding", pa.list_(f32)),  # the mean unit embedding (null without embeddings)
])


def with_meta(schema: pa.Schema, models: Sequence, profile: str) -> pa.Schema:
    return schema.with_metadata({
        "faceqc.schema_version": SCHEMA_VERSION, "faceqc.version": __version__, "faceqc.profile": profile,
        "faceqc.models": json.dumps([m.as_dict() for m in models]),
    })
