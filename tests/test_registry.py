"""The backend registry: names, models and licences, config checks, missing packages.  Unit tests."""

from __future__ import annotations

import pytest

from pipeline import registry
from pipeline.config import load_config
from pipeline.errors import ConfigError, MissingDependency


def test_every_stage_has_its_backends_registered():
    assert registry.names("decode") == ["opencv", "torchvision"]
    assert {"dlib_hog", "dlib_mmod", "scrfd"} <= set(registry.names("detect"))
    assert {"classical", "timm", "pyiqa"} <= set(registry.names("iqa"))
    assert {"dlib_stability", "onnx"} <= set(registry.names("fiqa"))


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ConfigError, match=r"detect.detector: 'yolo' is unknown \(registered: dlib_hog, dlib_mmod, scrfd"):
        registry.get("detect", "yolo", "detect.detector")


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("detect", "dlib_hog")(lambda cfg: None)


def test_models_and_licences_follow_the_configuration():
    ids = [m.id for m in registry.models_for(load_config())]
    assert ids == ["dlib-hog-frontal", "dlib-shape-predictor-5", "dlib-shape-predictor-68", "faceqc-classical-iqa",
                   "dlib-resnet-face-v1"]
    default = {m.id: m for m in registry.models_for(load_config())}
    assert not default["dlib-shape-predictor-68"].commercial_use  # iBUG 300-W: the default profile says so
    clean = registry.models_for(load_config(profile="offline-clean"))
    assert clean and all(m.commercial_use for m in clean)  # the commercially clean offline profile
    fast = [m.id for m in registry.models_for(load_config(profile="offline-fast"))]
    assert "dlib-resnet-face-v1" not in fast
    cfg = load_config(overrides={"fiqa": {"backend": "onnx", "model": "ediffiqa-tiny"},
                                 "iqa": {"model_backend": "pyiqa", "model": "/w/topiq.pth", "pyiqa_metric": "topiq_nr-face"}})
    models = {m.id: m for m in registry.models_for(cfg)}
    assert models["ediffiqa-tiny"].licence == "CC-BY-4.0" and models["ediffiqa-tiny"].commercial_use
    assert not models["pyiqa"].commercial_use and "PolyForm Noncommercial" in models["pyiqa"].licence
    assert not models["/w/topiq.pth"].commercial_use  # a user's file: nothing recorded, not assumed clean


def test_traits_tell_stages_what_a_backend_gives():
    assert registry.get("detect", "dlib_hog").traits["points"] == "dlib5"
    assert registry.get("detect", "scrfd").traits["points"] == "arcface5"
    assert registry.get("fiqa", "dlib_stability").traits["primary_only"] is True


def test_a_missing_package_is_one_line_naming_the_extra():
    spec = registry.Backend("fiqa", "test-only", build=lambda cfg: None,
                            needs=(("faceqc_no_such_module", "prod"),))
    with pytest.raises(MissingDependency) as e:
        spec.require()
    msg = str(e.value)
    assert "\n" not in msg and 'pip install -c constraints.txt -e ".[prod]"' in msg and "faceqc_no_such_module" in msg
    assert spec.missing() == ["prod"]
