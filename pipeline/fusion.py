"""Fusion: components to 0–100, one quality score, a verdict and its reasons.

Each component has a flat-topped penalty (see :class:`pipeline.config.Curve`): zero over the
range untouched photos occupy, growing beyond it.  Head pose uses OFIQ's mapping
100·max(0, cos θ)² for yaw, pitch and roll.  A component's score is 100·exp(−penalty) and

    quality = 100 · exp(−Σ penalties) = 100 · Π (component score / 100)

so the quality is explained exactly by its components: a face scoring 50 on sharpness and 100
on everything else has quality 50.  A component that "improves" under some other degradation
cannot lift the score above 100 on that component, which keeps fusion robust.

The fuse stage (:mod:`pipeline.stages.fuse`) applies it to every row; the video clips' tracks
(:mod:`pipeline.video.tracks`), calibration, ``explain`` and the nightly re-fusing of stored rows
use the same functions, so a score means the same wherever it is made.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from .config import Config, Curve
from .geometry import primary_index
from .schema import COMPONENTS, FACE_IQA_KEYS, FIQA_KEYS, IMAGE_IQA_KEYS

HUBER_A = 0.2  # quadratic over the first fifth of start..full, linear after


def curve_penalty(curve: Curve, x: float) -> float:
    """Flat-topped, smooth penalty, normalised so that penalty(full) == weight."""
    if x is None or not math.isfinite(x):
        return 0.0
    if curve.direction == "high":
        t = (x - curve.start) / (curve.full - curve.start)
    else:
        t = (curve.start - x) / (curve.start - curve.full)
    if t <= 0:
        return 0.0
    h = t * t / (2 * HUBER_A) if t <= HUBER_A else t - HUBER_A / 2
    return curve.weight * h / (1 - HUBER_A / 2)


def pose_penalty(angle_deg: float, weight: float) -> float:
    """OFIQ head-pose mapping 100·max(0, cos θ)², as a penalty (weight 1 = OFIQ exactly)."""
    if angle_deg is None or not math.isfinite(angle_deg):
        return 0.0
    c = max(math.cos(math.radians(angle_deg)), 1e-3)
    return -weight * 2.0 * math.log(c)


# degrees: beyond it yaw estimates err by 10 degrees and more (README "Head pose against known
# angles"), and 1/cos(yaw) would turn that error into resolution noise
MAX_YAW_CORRECTION = 45.0


def frontal_inter_eye(inter_eye: float, yaw: float) -> float:
    """The inter-eye distance the face would have facing the camera: a face turned by ``yaw``
    shows its eyes closer by cos(yaw), though it has as many pixels as before, so resolution is
    judged on the measured distance over cos(yaw) (yaw capped at 45 degrees; unknown yaw: as
    measured).  Pose is judged apart, by the pose components."""
    if not math.isfinite(yaw):
        return inter_eye
    return inter_eye / math.cos(math.radians(min(abs(yaw), MAX_YAW_CORRECTION)))


def _largest(*values: float) -> float:
    """The largest finite value (NaN when none is)."""
    ok = [v for v in values if math.isfinite(v)]
    return max(ok) if ok else math.nan


def face_raw(iqa: np.ndarray, fiqa: np.ndarray, inter_eye: float, pose=(math.nan, math.nan, math.nan)) -> dict:
    """The raw value each curve reads."""
    q = dict(zip(FACE_IQA_KEYS, (float(v) for v in iqa)))
    f = dict(zip(FIQA_KEYS, (float(v) for v in fiqa)))
    yaw, pitch, roll = (abs(float(a)) if a is not None else math.nan for a in pose)
    return {
        "resolution": frontal_inter_eye(float(inter_eye), yaw),
        "sharpness": q["sharpness"],
        "noise": q["noise"],
        "compression": q["blockiness"],
        "underexposure": q["dark_clip"],
        "overexposure": q["bright_clip"],
        "brightness_low": q["brightness"],
        "brightness_high": q["brightness"],
        "contrast": q["contrast"],
        "recognisability": f["stability"],
        "fiqa_model": f["model_score"],
        "iqa_model": q["model_score"],
        "detail": q["detail"],
        "pixelation": q["grid"],
        "banding": q["banding"],
        "interlacing": q["combing"],
        "colour_noise": q["colour_noise"],
        "haze": q["black_level"],
        "framing": q["framing"],
        "eyes_visible": q["eye_visibility"],
        "glare": q["eye_glare"],
        "lower_face": q["lower_face"],
        "mouth_visible": q["lip_line"],
        "vignetting": q["vignetting"],
        "colour": q["colour"],
        "illumination": q["illumination"],
        "eyes_open": q["eye_openness"],
        "mouth_open": q["mouth_openness"],
        "yaw_limit": yaw,
        "pitch_limit": pitch,
        "roll_limit": roll,
        "serfiq": f["serfiq"],
        "sdd_fiqa": f["sdd_score"],
        "restoration": f["restoration_score"],
        "occlusion": _largest(f["occlusion"], f["occlusion_eyes"], f["occlusion_mouth"]),
    }


def score_face(cfg: Config, iqa, fiqa, inter_eye: float, pose) -> tuple[dict, dict, float]:
    """(raw values, component scores 0-100 (None where not measured), quality 0-100)."""
    fc = cfg.fuse
    raw = face_raw(iqa, fiqa, inter_eye, pose)
    penalties = {}
    for name, curve in fc.curves.items():
        # a weight of 0 means "reported, not judged" (the raw value stays): no score rather than 100
        penalties[name] = None if not math.isfinite(raw[name]) or curve.weight == 0 else curve_penalty(curve, raw[name])
    for name, angle in zip(("yaw", "pitch", "roll"), pose):
        raw[name] = float(angle)
        weight = getattr(fc.pose_weights, name)
        # a weight of 0 means "not judged": no score rather than a misleading 100
        penalties[name] = None if not math.isfinite(angle) or weight == 0 else pose_penalty(angle, weight)
    total = sum(p for p in penalties.values() if p is not None)
    scores = {k: (None if p is None else 100.0 * math.exp(-p)) for k, p in penalties.items()}
    return raw, scores, 100.0 * math.exp(-total)


def reasons_for(cfg: Config, scores: dict) -> list:
    """The reasons of the components scoring below ``fuse.reason_below``, worst first, each once
    (two components may share one: sharpness and detail both say "blurry")."""
    fc = cfg.fuse
    low = [(s, k) for k, s in scores.items() if s is not None and s < fc.reason_below]
    out = []
    for _, k in sorted(low):
        reason = fc.curves[k].reason if k in fc.curves else f"pose_{k}"
        if reason not in out:
            out.append(reason)
    return out


def verdict_for(cfg: Config, quality: float) -> str:
    if quality >= cfg.fuse.accept:
        return "accept"
    if quality >= cfg.fuse.review:
        return "review"
    return "reject"


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def fuse_row(cfg: Config, row: dict) -> dict:
    """The output record of one image from its intermediate columns."""
    out = {
        "uri": row["uri"], "size": int(row["size"]), "mtime": _f(row["mtime"]),
        "status": row["status"], "error": row["error"] or None,
        "width": int(row.get("width", 0)) or None, "height": int(row.get("height", 0)) or None,
        "num_faces": None, "primary_face": None, "quality": None, "verdict": "reject",
        "reasons": [], "image_iqa": None, "faces": [],
    }
    if row["status"] != "ok":
        out["reasons"] = [row["status"]]
        return out
    out["image_iqa"] = {k: _f(v) for k, v in zip(IMAGE_IQA_KEYS, row["image_iqa"])}
    n = int(row["num_faces"])
    out["num_faces"] = n
    if n == 0:
        out["status"], out["reasons"] = "no_face", ["no_face"]
        return out
    faces, face_scores = [], []
    for j in range(n):
        pose = [float(v) for v in row["face_pose"][j]]
        raw, scores, quality = score_face(cfg, row["face_iqa"][j], row["face_fiqa"][j],
                                          float(row["face_inter_eye"][j]), pose)
        face_scores.append(scores)
        faces.append({
            "bbox": [float(v) for v in row["face_bbox"][j]],
            "det_score": float(row["face_det_score"][j]),
            "landmarks": [[float(x), float(y)] for x, y in row["face_landmarks"][j]],
            "inter_eye_px": float(row["face_inter_eye"][j]),
            "yaw": _f(pose[0]), "pitch": _f(pose[1]), "roll": _f(pose[2]),
            "iqa": {k: _f(v) for k, v in zip(FACE_IQA_KEYS, row["face_iqa"][j])},
            "fiqa": {k: _f(v) for k, v in zip(FIQA_KEYS, row["face_fiqa"][j])},
            "components": {k: scores.get(k) for k in COMPONENTS},
            "quality": quality,
        })
    bboxes = np.asarray(row["face_bbox"], np.float64).reshape(n, 4)
    p = primary_index(bboxes, np.asarray(row["face_det_score"], np.float64))
    out["faces"], out["primary_face"] = faces, p
    out["quality"] = faces[p]["quality"]
    out["verdict"] = verdict_for(cfg, out["quality"])
    reasons = reasons_for(cfg, face_scores[p])
    areas = (bboxes[:, 2] - bboxes[:, 0]) * (bboxes[:, 3] - bboxes[:, 1])
    if n > 1 and np.sum(areas >= cfg.fuse.multiple_faces_ratio * areas[p]) > 1:
        reasons.append("multiple_faces")
    out["reasons"] = reasons
    return out


# ------------------------------------------------------------------------------ re-fusing
def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def stored_row(row: dict) -> dict:
    """An output row (as read back from Parquet) in the intermediate form :func:`fuse_row` takes:
    the raw measures every face keeps (iqa, fiqa, inter-eye distance, pose, box, landmarks)."""
    faces = row.get("faces") or []
    img = row.get("image_iqa") or {}
    return {
        "uri": row["uri"], "size": row.get("size") if row.get("size") is not None else -1,
        "mtime": _nan(row.get("mtime")), "status": row["status"], "error": row.get("error") or "",
        "width": row.get("width") or 0, "height": row.get("height") or 0,
        "image_iqa": [_nan(img.get(k)) for k in IMAGE_IQA_KEYS], "num_faces": len(faces),
        "face_iqa": [[_nan((f.get("iqa") or {}).get(k)) for k in FACE_IQA_KEYS] for f in faces],
        "face_fiqa": [[_nan((f.get("fiqa") or {}).get(k)) for k in FIQA_KEYS] for f in faces],
        "face_inter_eye": [_nan(f.get("inter_eye_px")) for f in faces],
        "face_pose": [[_nan(f.get("yaw")), _nan(f.get("pitch")), _nan(f.get("roll"))] for f in faces],
        "face_bbox": [[_nan(v) for v in f.get("bbox") or [0, 0, 0, 0]] for f in faces],
        "face_det_score": [_nan(f.get("det_score")) for f in faces],
        "face_landmarks": [f.get("landmarks") or [] for f in faces],
    }


REFUSED_COLUMNS = ("faces", "primary_face", "quality", "verdict", "reasons")


def refuse_table(cfg: Config, table: pa.Table) -> pa.Table:
    """Stored output rows fused again under ``cfg``'s fusion settings (``fuse.*``): components,
    quality, verdict and reasons from the raw measures each face keeps, without reading or
    decoding an image.  Rows that were not scored (no face, read or decode errors) come back as
    they were; every other column is kept."""
    if not table.num_rows:
        return table
    ok = table.column("status").to_pylist()
    idx = [i for i, s in enumerate(ok) if s == "ok"]
    if not idx:
        return table
    sub = table.select(["uri", "size", "mtime", "status", "error", "width", "height", "image_iqa", "faces"]) \
        .take(pa.array(idx, pa.int64())).to_pylist()
    fused = [fuse_row(cfg, stored_row(r)) for r in sub]
    out = table
    for col in REFUSED_COLUMNS:
        old = table.column(col).to_pylist()
        for i, f in zip(idx, fused):
            old[i] = f[col]
        out = out.set_column(out.schema.get_field_index(col), table.schema.field(col),
                             pa.array(old, type=table.schema.field(col).type))
    return out
