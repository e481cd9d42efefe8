"""The commercially clean offline profile: no model whose licence or training data excludes
commercial use, and still a score that does its job on real faces (5 points for pose, every
reviewer check that does not need the 68-point model)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from benchmarks.validity import faces_of
from pipeline.config import load_config
from pipeline.executor import LocalExecutor
from pipeline.registry import models_for
from pipeline.tools import samples
from tests.support import degradations as dg

pytestmark = pytest.mark.slow

FRONTAL = ("t1-face0", "t1-face2", "t1-face3", "t1-face5", "astronaut")
# families any usable score must follow, classic and reviewer ones
FAMILIES = ("blur", "jpeg", "noise", "downscale", "sunglasses", "mask", "border_cut", "colour_cast_green")


@pytest.fixture(scope="module")
def cfg():
    return load_config(profile="offline-clean")


def test_only_commercially_usable_models(cfg):
    models = models_for(cfg)
    assert models and all(m.commercial_use for m in models), [(m.id, m.licence) for m in models]
    assert "dlib-shape-predictor-68" not in {m.id for m in models}
    assert "dlib-shape-predictor-68" in {m.id for m in models_for(load_config())}  # the default does use it


def test_clean_profile_scores_real_faces(cfg):
    ex = LocalExecutor(cfg)
    faces = samples.test_faces()
    rows = dict(zip(faces, ex.score_images(list(faces.values())).to_pylist()))
    for name in FRONTAL:
        r = rows[name]
        assert r["verdict"] == "accept", (name, r["quality"], r["reasons"])
        face = r["faces"][r["primary_face"]]
        assert face["components"]["pitch"] is None and face["components"]["eyes_open"] is None  # not judged
        assert face["iqa"]["eye_openness"] is None  # not measured without the 68 points
    found = faces_of(ex, faces)
    for fam in FAMILIES:
        rhos = []
        for name, img in faces.items():
            imgs = [dg.apply(fam, img, s, found[name]) for s in dg.FAMILIES[fam].severities]
            q = [r["quality"] if r["quality"] is not None else 0.0 for r in ex.score_images(imgs).to_pylist()]
            rhos.append(spearmanr(np.arange(len(q)), q)[0] if np.ptp(q) > 0 else 0.0)
        assert np.mean(rhos) <= -0.8, (fam, np.round(rhos, 2))
