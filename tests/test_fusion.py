"""Fusion, in isolation: the curves, the pose mapping, the product rule, reasons and verdicts.
Unit tests on plain numbers: no Ray, no images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.config import Curve, load_config
from pipeline.fusion import (
    curve_penalty,
    fuse_row,
    pose_penalty,
    reasons_for,
    score_face,
    verdict_for,
)
from pipeline.schema import FACE_IQA_KEYS, FIQA_KEYS, IMAGE_IQA_KEYS

LOW = Curve(direction="low", start=48.0, full=12.0, weight=2.3, reason="low_resolution")
HIGH = Curve(direction="high", start=4.0, full=20.0, weight=2.3, reason="noisy")


@pytest.mark.parametrize("curve", [LOW, HIGH])
def test_curve_is_flat_then_grows_to_its_weight_at_full(curve):
    ok_side = curve.start - 10 if curve.direction == "high" else curve.start + 10
    assert curve_penalty(curve, curve.start) == 0.0
    assert curve_penalty(curve, ok_side) == 0.0
    assert curve_penalty(curve, curve.full) == pytest.approx(curve.weight)
    xs = np.linspace(curve.start, curve.full + (curve.full - curve.start), 200)
    p = np.array([curve_penalty(curve, x) for x in xs])
    assert np.all(np.diff(p) >= -1e-12)  # never decreases as the measure gets worse
    # smooth: no jump where the quadratic part meets the linear one
    assert np.max(np.abs(np.diff(p))) < 3 * curve.weight / len(xs)


def test_unmeasured_values_are_not_penalised():
    for x in (None, float("nan"), float("inf")):
        assert curve_penalty(LOW, x) == 0.0
        assert pose_penalty(x, 1.0) == 0.0


@pytest.mark.parametrize("angle,score", [(0, 100), (30, 75), (45, 50), (60, 25)])
def test_pose_uses_ofiq_cos_squared(angle, score):
    assert 100 * math.exp(-pose_penalty(angle, 1.0)) == pytest.approx(score, abs=1e-6)
    assert 100 * math.exp(-pose_penalty(-angle, 1.0)) == pytest.approx(score, abs=1e-6)
    # the weight is an exponent on OFIQ's score
    assert 100 * math.exp(-pose_penalty(angle, 2.0)) == pytest.approx(100 * (score / 100) ** 2, abs=1e-6)


def _raw(**over):
    iqa = {k: float("nan") for k in FACE_IQA_KEYS}
    iqa.update(sharpness=0.1, noise=1.0, blockiness=1.0, dark_clip=0.0, bright_clip=0.0, brightness=0.55,
               contrast=0.5)
    fiqa = {k: float("nan") for k in FIQA_KEYS}
    iqa.update({k: v for k, v in over.items() if k in iqa})
    fiqa.update({k: v for k, v in over.items() if k in fiqa})
    return [iqa[k] for k in FACE_IQA_KEYS], [fiqa[k] for k in FIQA_KEYS]


def test_quality_is_the_product_of_component_scores():
    cfg = load_config()
    iqa, fiqa = _raw(sharpness=0.02, noise=9.0, stability=0.96)
    raw, scores, quality = score_face(cfg, iqa, fiqa, 30.0, [20.0, 5.0, 3.0])
    measured = [s for s in scores.values() if s is not None]
    assert quality == pytest.approx(100 * np.prod([s / 100 for s in measured]), rel=1e-9)
    assert 0 < scores["pitch"] < 100  # judged: the default profile measures pitch from 68 points
    clean = load_config(profile="offline-clean")
    assert score_face(clean, iqa, fiqa, 30.0, [20.0, 5.0, 3.0])[1]["pitch"] is None  # weight 0: not judged
    assert scores["fiqa_model"] is None and scores["iqa_model"] is None  # not measured
    assert scores["sharpness"] < 100 and scores["noise"] < 100 and scores["resolution"] < 100
    assert raw["resolution"] == pytest.approx(30.0 / math.cos(math.radians(20.0))) and raw["yaw"] == 20.0


def test_a_pristine_frontal_face_scores_100():
    cfg = load_config()
    iqa, fiqa = _raw(stability=0.99)
    _, scores, quality = score_face(cfg, iqa, fiqa, 80.0, [0.0, 0.0, 0.0])
    assert quality == pytest.approx(100.0)
    assert reasons_for(cfg, scores) == []


def test_reasons_are_worst_first_and_named_by_their_curves():
    cfg = load_config()
    scores = {"sharpness": 40.0, "noise": 65.0, "contrast": 90.0, "yaw": 50.0, "pitch": None}
    assert reasons_for(cfg, scores) == ["blurry", "pose_yaw", "noisy"]


@pytest.mark.parametrize("q,verdict", [(60.0, "accept"), (59.99, "review"), (35.0, "review"), (34.9, "reject")])
def test_verdict_thresholds(q, verdict):
    assert verdict_for(load_config(), q) == verdict


def _row(boxes, scores, status="ok"):
    n = len(boxes)
    iqa, fiqa = _raw(stability=0.99)
    return {
        "uri": "x.jpg", "size": 10, "mtime": 0.0, "status": status, "error": "", "width": 640, "height": 480,
        "image_iqa": np.zeros(len(IMAGE_IQA_KEYS), np.float32), "num_faces": n,
        "face_pose": np.zeros((n, 3)), "face_iqa": np.array([iqa] * n), "face_fiqa": np.array([fiqa] * n),
        "face_inter_eye": np.full(n, 80.0), "face_bbox": np.array(boxes, float), "face_det_score": np.array(scores),
        "face_landmarks": np.zeros((n, 5, 2)),
    }


def test_primary_face_is_the_most_confident_large_one_and_others_add_a_reason():
    cfg = load_config()
    # face 0 is the largest but least confident; face 1 is large enough and more confident
    out = fuse_row(cfg, _row([[0, 0, 200, 200], [300, 0, 460, 160], [500, 0, 520, 20]], [0.5, 0.9, 2.0]))
    assert out["primary_face"] == 1 and out["num_faces"] == 3
    assert "multiple_faces" in out["reasons"] and out["verdict"] == "accept"
    # a second face under a quarter of the primary's area is not a reason
    out = fuse_row(cfg, _row([[0, 0, 200, 200], [300, 0, 320, 20]], [0.9, 0.5]))
    assert out["primary_face"] == 0 and "multiple_faces" not in out["reasons"]


def test_rows_without_a_usable_face_are_rejected_with_their_status():
    cfg = load_config()
    out = fuse_row(cfg, {**_row([], []), "num_faces": 0})
    assert (out["status"], out["verdict"], out["reasons"], out["quality"]) == ("no_face", "reject", ["no_face"], None)
    out = fuse_row(cfg, {**_row([], []), "status": "decode_error", "error": "truncated"})
    assert (out["verdict"], out["reasons"], out["error"]) == ("reject", ["decode_error"], "truncated")


def test_resolution_is_judged_as_if_the_face_faced_the_camera():
    """A face turned by yaw shows its eyes cos(yaw) closer together with as many pixels: its
    resolution score is that of the frontal face, and only the pose components see the turn."""
    cfg = load_config()
    iqa, fiqa = _raw()
    frontal = score_face(cfg, iqa, fiqa, 30.0, [0.0, 0.0, 0.0])[1]["resolution"]
    for yaw in (-40.0, 25.0, 40.0):
        seen = 30.0 * math.cos(math.radians(yaw))
        raw, scores, _ = score_face(cfg, iqa, fiqa, seen, [yaw, 0.0, 0.0])
        assert raw["resolution"] == pytest.approx(30.0) and scores["resolution"] == pytest.approx(frontal)
        assert scores["yaw"] < 100
    # beyond 45 degrees the correction stops (x1.41 at most); an unknown yaw leaves it as measured
    assert score_face(cfg, iqa, fiqa, 10.0, [85.0, 0.0, 0.0])[0]["resolution"] == pytest.approx(10.0 * math.sqrt(2))
    assert score_face(cfg, iqa, fiqa, 10.0, [float("nan"), 0.0, 0.0])[0]["resolution"] == pytest.approx(10.0)
    assert frontal < 100  # 30 px between the eyes is judged low: the test compares like with like
