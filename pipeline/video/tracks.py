"""Face tracks and the clip's verdict.

**Linking.**  Within a shot, the faces of each sampled frame are matched to the tracks seen in
the last ``video.track_max_gap`` sampled frames by an optimal assignment (Hungarian) on
``(1 - IoU) + landmark motion``, where the motion is the mean displacement of the 5 landmarks in
inter-eye distances.  A pair is allowed when the boxes overlap by ``video.track_iou`` or the
landmarks moved at most ``video.track_max_motion``; where both faces have an embedding (the
offline profile embeds the primary face of every frame) their cosine similarity must also reach
``video.track_min_similarity``.  Faces left over start new tracks; a cut ends every track.

**Per track**: start, end, frames, coverage, quality mean / min / 10th percentile, the share of
frames at ``fuse.accept`` or above, yaw and pitch range, head motion (90th percentile of the
landmarks' motion between consecutive sampled frames, in inter-eye distances per second), identity
consistency (mean cosine similarity of its embeddings to their mean) and its best frame.

**The clip** is judged on its primary track, the one with the most frames (ties: higher mean
quality).  Each rule of ``video.rules`` reads one raw measure and maps it to a penalty with the
fusion curves' function (:func:`pipeline.fusion.curve_penalty`); then

    track quality = quality_mean · Π exp(−penalty)  over quality_min, yaw_range, pitch_range, head_motion
    clip quality  = the primary track's quality · Π exp(−penalty)  over coverage, multiple_faces, identity_change

and the verdict uses ``fuse.accept`` / ``fuse.review``.  A file that ended before its declared
duration is rejected (reason ``truncated``) whatever its quality; a clip without any face is
``no_face``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..fusion import curve_penalty, verdict_for

TRACK_RULES = ("quality_min", "yaw_range", "pitch_range", "head_motion")
CLIP_RULES = ("coverage", "multiple_faces", "identity_change")


@dataclass
class Obs:
    """One face in one sampled frame."""

    pos: int  # the frame's position among the clip's sampled frames
    j: int  # the face's index in the frame's faces
    t: float
    frame_index: int
    bbox: np.ndarray
    landmarks: np.ndarray
    ied: float
    quality: Optional[float]
    yaw: Optional[float]
    pitch: Optional[float]
    emb: Optional[np.ndarray]


@dataclass
class Track:
    id: int
    shot: int
    obs: List[Obs] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    @property
    def last(self) -> Obs:
        return self.obs[-1]

    def mean_embedding(self) -> Optional[np.ndarray]:
        embs = [o.emb for o in self.obs if o.emb is not None]
        if not embs:
            return None
        m = np.mean(embs, axis=0)
        return m / (np.linalg.norm(m) + 1e-9)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _motion(a: Obs, b: Obs) -> float:
    """Mean landmark displacement in inter-eye distances."""
    scale = max(1e-6, 0.5 * (a.ied + b.ied))
    return float(np.linalg.norm(a.landmarks - b.landmarks, axis=1).mean() / scale)


def _f(v) -> Optional[float]:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def observations(frames: List[dict]) -> List[List[Obs]]:
    """The faces of each frame row (fused output rows, sorted by t) as observations."""
    out = []
    for pos, fr in enumerate(frames):
        obs = []
        emb = fr.get("face_embedding")
        emb = np.asarray(emb, np.float64) if emb is not None and len(emb) else None
        for j, face in enumerate(fr.get("faces") or []):
            lm = np.asarray(face["landmarks"], np.float64).reshape(5, 2)
            obs.append(Obs(pos, j, float(fr["t"]), int(fr["frame_index"]), np.asarray(face["bbox"], np.float64), lm,
                           float(face["inter_eye_px"] or 0.0) or float(np.linalg.norm(lm[1] - lm[0])),
                           _f(face.get("quality")), _f(face.get("yaw")), _f(face.get("pitch")),
                           emb if j == fr.get("primary_face") else None))
        out.append(obs)
    return out


def link(frames: List[dict], vcfg) -> List[Track]:
    """Faces of a clip's sampled frames (sorted by t) linked into tracks, numbered by start."""
    from scipy.optimize import linear_sum_assignment

    per_frame = observations(frames)
    tracks: List[Track] = []
    active: List[Track] = []
    shot = None
    for pos, (fr, obs) in enumerate(zip(frames, per_frame)):
        if fr["shot"] != shot:
            active, shot = [], fr["shot"]
        active = [tr for tr in active if pos - tr.last.pos <= vcfg.track_max_gap]
        pairs = []
        if active and obs:
            big = 1e6
            cost = np.full((len(active), len(obs)), big)
            for a, tr in enumerate(active):
                temb = tr.mean_embedding()
                for b, o in enumerate(obs):
                    iou, mot = _iou(tr.last.bbox, o.bbox), _motion(tr.last, o)
                    if iou < vcfg.track_iou and mot > vcfg.track_max_motion:
                        continue
                    if temb is not None and o.emb is not None and float(temb @ o.emb) < vcfg.track_min_similarity:
                        continue
                    cost[a, b] = (1.0 - iou) + mot
            rows, cols = linear_sum_assignment(cost)
            pairs = [(a, b) for a, b in zip(rows, cols) if cost[a, b] < big]
        used = set()
        for a, b in pairs:
            active[a].obs.append(obs[b])
            used.add(b)
        for b, o in enumerate(obs):
            if b not in used:
                tr = Track(len(tracks), int(shot), [o])
                tracks.append(tr)
                active.append(tr)
    return tracks


def _rule(cfg, name: str, raw: Optional[float]):
    curve = cfg.video.rules[name]
    if raw is None or not math.isfinite(raw):
        return None, 0.0
    pen = curve_penalty(curve, raw)
    return 100.0 * math.exp(-pen), pen


def describe_track(tr: Track, cfg, n_frames: int) -> dict:
    """A track's facts (a row of DST/tracks/ without uri), its rule scores and its quality."""
    obs = tr.obs
    q = np.array([o.quality for o in obs if o.quality is not None], np.float64)
    yaws = [o.yaw for o in obs if o.yaw is not None]
    pitches = [o.pitch for o in obs if o.pitch is not None]
    motion = []
    for a, b in zip(obs, obs[1:]):
        dt = b.t - a.t
        if dt > 0:
            motion.append(_motion(a, b) / dt)
    embs = [o.emb for o in obs if o.emb is not None]
    mean_emb = tr.mean_embedding()
    best = max(obs, key=lambda o: -1.0 if o.quality is None else o.quality)
    f = {
        "track": tr.id, "shot": tr.shot, "start_s": obs[0].t, "end_s": obs[-1].t, "frames": len(obs),
        "coverage": len(obs) / max(1, n_frames),
        "quality_mean": float(q.mean()) if len(q) else None, "quality_min": float(q.min()) if len(q) else None,
        "quality_p10": float(np.percentile(q, 10)) if len(q) else None,
        "accepted_share": float(np.mean(q >= cfg.fuse.accept)) if len(q) else None,
        "yaw_min": min(yaws) if yaws else None, "yaw_max": max(yaws) if yaws else None,
        "yaw_range": (max(yaws) - min(yaws)) if yaws else None,
        "pitch_range": (max(pitches) - min(pitches)) if pitches else None,
        "head_motion": float(np.percentile(motion, 90)) if motion else None,
        "identity_consistency": float(np.mean([e @ mean_emb for e in embs])) if len(embs) >= 2 else None,
        "best_t": best.t, "best_frame_index": best.frame_index, "best_quality": best.quality,
        "best_bbox": [float(v) for v in best.bbox], "best_landmarks": best.landmarks.tolist(),
        "best_face": best.j, "best_pos": best.pos,
        "embedding": mean_emb.tolist() if mean_emb is not None else None,
    }
    scores, total = {}, 0.0
    for name in TRACK_RULES:
        scores[name], pen = _rule(cfg, name, f[name])
        total += pen
    f["rule_scores"] = scores
    f["quality"] = None if f["quality_mean"] is None else f["quality_mean"] * math.exp(-total)
    f["verdict"] = "reject" if f["quality"] is None else verdict_for(cfg, f["quality"])
    f["reasons"] = _reasons(cfg, scores)
    tr.facts = f
    return f


def _reasons(cfg, scores: Dict[str, Optional[float]]) -> List[str]:
    low = sorted((s, k) for k, s in scores.items() if s is not None and s < cfg.fuse.reason_below)
    out = []
    for _, k in low:
        r = cfg.video.rules[k].reason or k
        if r not in out:
            out.append(r)
    return out


def judge(frames: List[dict], facts: dict, cfg) -> dict:
    """Tracks and the clip's judgement from its fused frame rows (any order) and decode facts:
    {"tracks": [Track], "primary": Track | None, "quality", "verdict", "reasons", "raw", "scores",
    "status"}."""
    frames = sorted(frames, key=lambda r: (r["t"], r["frame_index"]))
    tracks = link(frames, cfg.video)
    n = len(frames)
    for tr in tracks:
        describe_track(tr, cfg, n)
    res = {"frames": frames, "tracks": tracks, "primary": None, "quality": None, "verdict": "reject",
           "reasons": [], "raw": {}, "scores": {}, "status": "ok"}
    scored = [tr for tr in tracks if tr.facts["quality_mean"] is not None]
    if not scored:
        res["status"], res["reasons"] = "no_face", ["no_face"]
        return res
    primary = max(scored, key=lambda tr: (tr.facts["frames"], tr.facts["quality_mean"], -tr.id))
    res["primary"] = primary
    pf = primary.facts
    multi = sum(1 for fr in frames if "multiple_faces" in (fr.get("reasons") or [])) / max(1, n)
    pemb = primary.mean_embedding()
    identity = None
    if pemb is not None:
        identity = 0.0
        for tr in tracks:
            other = tr.mean_embedding()
            if tr is primary or other is None or tr.facts["coverage"] < cfg.video.identity_min_share:
                continue
            identity = max(identity, 1.0 - float(pemb @ other))
    raw = {"coverage": pf["coverage"], "multiple_faces": multi, "identity_change": identity}
    scores, total = {}, 0.0
    for name in CLIP_RULES:
        scores[name], pen = _rule(cfg, name, raw[name])
        total += pen
    for name in TRACK_RULES:
        raw[name] = pf[name]
    all_scores = {**pf["rule_scores"], **scores}
    quality = pf["quality"] * math.exp(-total)
    reasons = _reasons(cfg, all_scores)
    if pf["quality_mean"] < cfg.fuse.reason_below:
        # what the frames of the primary track say most often (blurry, dark...)
        counts: Dict[str, int] = {}
        for o in primary.obs:
            for r in frames[o.pos].get("reasons") or []:
                if r != "multiple_faces":
                    counts[r] = counts.get(r, 0) + 1
        reasons += [r for r, c in sorted(counts.items(), key=lambda kv: -kv[1])
                    if c >= 0.5 * len(primary.obs) and r not in reasons]
    verdict = verdict_for(cfg, quality)
    if facts.get("truncated"):
        reasons.append("truncated")
        verdict = "reject"
    res.update(quality=quality, verdict=verdict, reasons=reasons, raw=raw, scores=all_scores)
    return res
