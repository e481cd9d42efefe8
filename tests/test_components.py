"""Each component that sees what a reviewer sees, on real faces: it leaves pristine faces alone,
and its score falls as the defect it is built for grows (the families of
tests/support/degradations.py: the one each component was tuned on, and others it never saw).

Real faces: six people cut from insightface's t1.jpg (turned upright) and scikit-image's
astronaut; the offline-fast profile (the components are the same in every offline profile).
A face that is no longer found scores 0: it would be rejected."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from benchmarks.validity import faces_of
from pipeline.config import load_config
from pipeline.executor import LocalExecutor
from pipeline.tools import samples
from tests.support import degradations as dg

pytestmark = pytest.mark.slow

# component -> (families that must move it, its mean Spearman over faces at most this)
CASES = {
    "detail": (("defocus", -0.85), ("motion_blur", -0.85)),
    "pixelation": (("mosaic", -0.8),),
    "banding": (("posterize", -0.8),),
    "interlacing": (("interlace", -0.85),),
    "colour_noise": (("chroma_noise", -0.85),),
    "haze": (("haze", -0.85),),
    "framing": (("border_cut", -0.8), ("top_cut", -0.85)),
    "eyes_visible": (("sunglasses", -0.85),),
    "glare": (("glare", -0.6),),
    "lower_face": (("mask", -0.8), ("microphone", -0.85)),
    "mouth_visible": (("hand", -0.8),),
    "vignetting": (("vignette", -0.85),),  # a lens's own off-centre falloff: tests/test_measures.py
    "colour": (("colour_cast_green", -0.85), ("oversaturate", -0.8)),
}
FRONTAL = ("t1-face0", "t1-face2", "t1-face3", "t1-face5", "astronaut")


@pytest.fixture(scope="module")
def ex():
    return LocalExecutor(load_config(profile="offline-fast"))


@pytest.fixture(scope="module")
def faces():
    return samples.test_faces()


@pytest.fixture(scope="module")
def pristine(ex, faces):
    rows = ex.score_images(list(faces.values())).to_pylist()
    return dict(zip(faces, rows))


@pytest.fixture(scope="module")
def scored(ex, faces):
    """family -> {face: [primary face components per severity, None when no face was found]}"""
    found = faces_of(ex, faces)
    out = {}
    for fam in sorted({f for cases in CASES.values() for f, _ in cases}):
        out[fam] = {}
        for name, img in faces.items():
            imgs = [dg.apply(fam, img, s, found[name]) for s in dg.FAMILIES[fam].severities]
            rows = ex.score_images(imgs).to_pylist()
            out[fam][name] = [r["faces"][r["primary_face"]]["components"] if r["primary_face"] is not None else None
                              for r in rows]
    return out


def _score(comps, name):
    if comps is None:  # no face found any more: as bad as it gets
        return 0.0
    v = comps.get(name)
    return 100.0 if v is None else v


@pytest.mark.parametrize("component", list(CASES))
def test_pristine_faces_are_left_alone(component, pristine):
    for face in FRONTAL:
        v = pristine[face]["faces"][pristine[face]["primary_face"]]["components"][component]
        assert v is None or v >= 90, (face, component, v)


@pytest.mark.parametrize("component,family,bound", [(c, f, b) for c, cases in CASES.items() for f, b in cases])
def test_component_falls_with_its_defect(component, family, bound, scored):
    rhos = []
    for face, comps in scored[family].items():
        s = [_score(c, component) for c in comps]
        rhos.append(spearmanr(np.arange(len(s)), s)[0] if np.ptp(s) > 0 else 0.0)
    detail = {f: [round(_score(c, component)) for c in cs] for f, cs in scored[family].items()}
    assert np.mean(rhos) <= bound, f"{component} under {family}: mean Spearman {np.mean(rhos):+.3f}\n{detail}"
    worst = [np.median([_score(cs[-1], component) for cs in scored[family].values()])]
    assert worst[0] < 60, (component, family, detail)
