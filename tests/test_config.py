"""The configuration checks itself: every wrong setting is one line naming the key, the value and
what is allowed, and the job exits 2 before any work.  Unit tests: no Ray, no images."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from pipeline.config import PROFILES, Config, load_config, merge
from pipeline.errors import ConfigError

# (overrides, words the one-line message must contain)
WRONG = [
    ({"detect": {"resources": {"batch_size": -5}}}, ["detect.resources.batch_size", "-5", "greater than or equal to 1"]),
    ({"detect": {"resources": {"batch_size": 0}}}, ["detect.resources.batch_size"]),
    ({"fuse": {"pose_weights": {"yawn": 2}}}, ["unknown setting 'fuse.pose_weights.yawn'", "yaw"]),
    ({"fuse": {"pose_weights": {"yaw": -1}}}, ["fuse.pose_weights.yaw", "-1"]),
    ({"fuse": {"pose_weights": {"yaw": "much"}}}, ["fuse.pose_weights.yaw", "must be a number", "'much'"]),
    ({"iqa": {"resources": {"concurrency": "abc"}}}, ["iqa.resources.concurrency", "'abc'", "whole number"]),
    ({"iqa": {"resources": {"concurrency": 0}}}, ["iqa.resources.concurrency", "at least 1"]),
    ({"iqa": {"resources": {"concurrency": [3, 1], "actors": True}}}, ["iqa.resources.concurrency", "min <= max"]),
    ({"iqa": {"resources": {"concurrency": [1, 2]}}}, ["iqa.resources", "actors: true"]),
    ({"iqa": {"resources": {"num_gpus": -0.5}}}, ["iqa.resources.num_gpus", "-0.5"]),
    ({"input": {"extensions": [1, 2]}}, ["input.extensions.0", "valid string", "1"]),
    ({"input": {"extensions": ["jpg"]}}, ["input.extensions", "dot", "'jpg'"]),
    ({"detect": {"max_faces": 0}}, ["detect.max_faces", "0"]),
    ({"detect": {"detector": "yolo"}}, ["detect.detector", "'yolo'", "dlib_hog", "scrfd"]),
    ({"detect": {"detector": "scrfd"}}, ["detect.model"]),
    ({"detect": {"retry_rotations": [400]}}, ["detect.retry_rotations", "-180"]),
    ({"detect": {"upsample": 2}}, ["unknown setting 'detect.upsample'", "upsample_below"]),
    ({"output": {"compression": "nope"}}, ["output.compression", "'nope'", "zstd"]),
    ({"output": {"max_rows_per_file": 0}}, ["output.max_rows_per_file"]),
    ({"decode": {"backend": "nvjpeg"}}, ["decode.backend", "'nvjpeg'", "opencv", "torchvision"]),
    ({"decode": {"resources": {"num_gpus": 0.1}}}, ["num_gpus", "decode.backend torchvision"]),
    ({"decode": {"max_pixels": 0}}, ["decode.max_pixels"]),
    ({"fiqa": {"backend": "onnx"}}, ["fiqa.model"]),
    ({"fiqa": {"backend": "magic"}}, ["fiqa.backend", "'magic'", "dlib_stability", "onnx"]),
    ({"fiqa": {"backend": "onnx", "model": "x.onnx", "contract_from": "nope"}}, ["fiqa.contract_from", "'nope'"]),
    ({"fiqa": {"sha256": "xyz"}}, ["fiqa.sha256", "'xyz'"]),
    ({"iqa": {"model_backend": "timm"}}, ["iqa.model"]),
    ({"iqa": {"model_backend": "pyiqa", "model": "w.pth"}}, ["iqa.pyiqa_metric"]),
    ({"iqa": {"model_range": [1, 1]}}, ["iqa.model_range"]),
    ({"iqa": {"backend": "deep"}}, ["iqa.backend", "'deep'", "classical"]),
    ({"fuse": {"accept": 20, "review": 50}}, ["review (50) <= accept (20)"]),
    ({"fuse": {"accept": 120}}, ["fuse.accept", "120"]),
    ({"fuse": {"multiple_faces_ratio": 0}}, ["fuse.multiple_faces_ratio"]),
    ({"fuse": {"curves": {"sharp": {"start": 1}}}}, ["unknown curve 'sharp'", "sharpness"]),
    ({"fuse": {"curves": {"sharpness": {"start": 0.001}}}}, ["fuse.curves.sharpness", "full must be below start"]),
    ({"fuse": {"curves": {"noise": {"direction": "up"}}}}, ["fuse.curves.noise.direction", "'up'"]),
    ({"fuse": {"curves": {"noise": {"weight": -1}}}}, ["fuse.curves.noise.weight"]),
    ({"fuse": {"curves": {"noise": {"start": 20}}}}, ["fuse.curves.noise", "start and full must differ"]),
    ({"fuse": 5}, ["fuse", "valid dictionary"]),
    ({"fuse": {"acept": 50}}, ["unknown setting 'fuse.acept'", "accept"]),
    ({"profile": "fast"}, ["unknown profile 'fast'", "offline-fast"]),
]


def _one_line(msg: str) -> None:
    assert "\n" not in msg.strip(), msg


@pytest.mark.parametrize("overrides,words", WRONG, ids=[json.dumps(o)[:60] for o, _ in WRONG])
def test_wrong_setting_is_one_clear_line(overrides, words):
    profile = overrides.get("profile")
    with pytest.raises(ConfigError) as e:
        load_config(profile=profile, overrides={k: v for k, v in overrides.items() if k != "profile"})
    msg = str(e.value)
    _one_line(msg)
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("overrides,words", WRONG[:12], ids=[json.dumps(o)[:60] for o, _ in WRONG[:12]])
def test_cli_refuses_a_wrong_config_file_before_any_work(overrides, words, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "team.yaml"
    cfg.write_text(yaml.safe_dump(overrides))
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"x")
    out = tmp_path / "out"
    assert main(["score", str(src), "--out", str(out), "--config", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceqc: error: ") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()  # nothing was written: it failed before any work


def test_unreadable_config_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fuse: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        load_config(str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_partial_overrides_merge_into_the_profile(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("profile: offline-fast\nfuse:\n  accept: 70\n  curves:\n    sharpness: {start: 0.05}\n")
    cfg = load_config(str(good))
    default = load_config()
    assert cfg.profile == "offline-fast" and cfg.fiqa.backend == "none"  # the profile's own settings
    assert cfg.fuse.accept == 70 and cfg.fuse.curves["sharpness"].start == 0.05
    assert cfg.fuse.curves["sharpness"].full == default.fuse.curves["sharpness"].full
    assert cfg.fuse.curves["noise"] == default.fuse.curves["noise"]
    # --profile wins over the file's profile; overrides win over both
    cfg = load_config(str(good), profile="offline", overrides={"fuse": {"accept": 75}})
    assert cfg.profile == "offline" and cfg.fiqa.backend == "dlib_stability" and cfg.fuse.accept == 75


def test_merge_is_key_by_key():
    assert merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": 3}, "d": [2]}) == {"a": {"b": 1, "c": 3}, "d": [2]}


def test_every_profile_is_valid_and_typed():
    for name in PROFILES:
        cfg = load_config(profile=name)
        assert isinstance(cfg, Config) and cfg.profile == name
    cfg = load_config(overrides={"detect": {"det_size": "640"}, "fuse": {"accept": 61}})
    assert cfg.detect.det_size == 640 and isinstance(cfg.fuse.accept, float)


# Fingerprints of these configurations: an unchanged configuration keeps its fingerprint, so its
# unfinished runs still resume.  The pydantic config reproduced the dataclass config's values
# exactly (f01de1d3... for the default); they change, legitimately, with faceqc's version,
# SCHEMA_VERSION or a new setting (schema 2: the reviewer components, the face-quality methods,
# the video and export sections; schema 3: mouth_visible; schema 4: vignetting; schema 5:
# fiqa.occlusion): update them then.
PINNED = {
    "default": ({}, "36c12d48aa99307dde1209ee4b255baf"),
    "offline-fast": ({"profile": "offline-fast"}, "d5ea794cb02e1d9305ead367cc473ad1"),
    "overrides": ({"overrides": {"fuse": {"accept": 70, "curves": {"sharpness": {"start": 0.05}}, "pose_weights": {"yaw": 2}},
                                 "input": {"extensions": [".jpg"], "storage_options": {"key": "x"}},
                                 "iqa": {"resources": {"concurrency": [1, 2], "actors": True}},
                                 "detect": {"retry_rotations": [10, -10]}}}, "e4cb0e78853ca15f2228171c48b9292d"),
}


@pytest.mark.parametrize("name", list(PINNED))
def test_fingerprint_of_an_unchanged_configuration_is_stable(name):
    kw, want = PINNED[name]
    assert load_config(**kw).fingerprint() == want


def test_fingerprint_ignores_storage_options_and_sees_everything_else():
    a = load_config(overrides={"input": {"storage_options": {"key": "one"}}})
    b = load_config(overrides={"input": {"storage_options": {"key": "two"}}})
    assert a.fingerprint() == b.fingerprint()
    assert load_config(overrides={"fuse": {"accept": 61}}).fingerprint() != a.fingerprint()


def test_summary_view_of_the_config_masks_secrets():
    cfg = load_config(overrides={"input": {"storage_options": {"key": "AKIA123", "secret": "s3cr3t"}}})
    d = cfg.to_dict()
    assert d["input"]["storage_options"] == {"key": "***", "secret": "***"}
    assert cfg.to_dict(redact=False)["input"]["storage_options"]["secret"] == "s3cr3t"
    assert "s3cr3t" not in json.dumps(d)
