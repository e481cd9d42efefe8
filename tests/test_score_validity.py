"""The score must be right: on real faces (cut from insightface's t1.jpg, and scikit-image's
astronaut), quality falls as each degradation gets worse, is mirror-invariant, separates
resolution tiers, and lands pristine usable faces in accept and severe damage in reject.

These run the real default (offline) profile's stage code in one process; the Ray pipeline runs
the very same stage objects (see test_pipeline.py)."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from pipeline.config import load_config
from pipeline.executor import LocalExecutor
from pipeline.tools import samples

pytestmark = pytest.mark.slow  # minutes of CPU: not in make test-fast


@pytest.fixture(scope="module")
def lp():
    return LocalExecutor(load_config())


@pytest.fixture(scope="module")
def faces():
    return samples.test_faces()


def qualities(table):
    # an image where no face can be found has no usable face: it ranks below every scored one
    return [r["quality"] if r["quality"] is not None else 0.0 for r in table.to_pylist()]


@pytest.fixture(scope="module")
def family_scores(lp, faces):
    out = {}
    for fam, (_, severities) in samples.FAMILIES.items():
        imgs = [samples.degrade(img, fam, s) for img in faces.values() for s in severities]
        q = np.array(qualities(lp.score_images(imgs))).reshape(len(faces), len(severities))
        out[fam] = q
    return out


@pytest.mark.parametrize("family", list(samples.FAMILIES))
def test_quality_falls_with_severity(family, family_scores, faces):
    q = family_scores[family]
    rhos = [spearmanr(np.arange(q.shape[1]), row)[0] for row in q]
    detail = "\n".join(f"  {n:10s} rho {r:+.2f}  q {np.round(row, 1)}" for n, r, row in zip(faces, rhos, q))
    assert np.mean(rhos) <= -0.8, f"{family}: mean Spearman {np.mean(rhos):+.3f}\n{detail}"


def test_worst_severity_is_clearly_worse(family_scores):
    for fam, q in family_scores.items():
        assert np.median(q[:, -1]) < np.median(q[:, 0]) - 20, (fam, q[:, 0], q[:, -1])


def test_horizontal_flip_moves_quality_little(lp, faces):
    """A mirror image is the same photo: at most 1.5 points on average, 3 at most."""
    imgs = list(faces.values())
    a = qualities(lp.score_images(imgs))
    b = qualities(lp.score_images([np.ascontiguousarray(im[:, ::-1]) for im in imgs]))
    diffs = np.abs(np.array(a) - np.array(b))
    assert diffs.mean() <= 1.5 and diffs.max() <= 3.0, dict(zip(faces, np.round(diffs, 2)))


def test_yaw_sign_flips_with_mirror(lp, faces):
    imgs = [faces["t1-face1"], faces["t1-face4"]]  # clearly turned faces
    a = lp.score_images(imgs).to_pylist()
    b = lp.score_images([np.ascontiguousarray(im[:, ::-1]) for im in imgs]).to_pylist()
    for ra, rb in zip(a, b):
        ya = ra["faces"][ra["primary_face"]]["yaw"]
        yb = rb["faces"][rb["primary_face"]]["yaw"]
        assert abs(ya) > 15 and np.sign(ya) == -np.sign(yb) and abs(abs(ya) - abs(yb)) < 5


def test_resolution_tiers_strictly_ordered(lp, faces):
    tiers = [1.0, 0.7, 0.5, 0.35, 0.25]
    medians = []
    for f in tiers:
        medians.append(float(np.median(qualities(lp.score_images([samples.downscale(im, f) for im in faces.values()])))))
    assert all(a > b for a, b in zip(medians, medians[1:])), medians


def test_pristine_accept_and_severe_reject(family_scores, faces):
    cfg = load_config()
    names = list(faces)
    frontal = [names.index(n) for n in ("t1-face0", "t1-face2", "t1-face3", "t1-face5", "astronaut")]
    pristine = family_scores["blur"][frontal, 0]
    assert (pristine >= cfg.fuse.accept).all(), pristine
    for fam in ("blur", "noise", "jpeg", "underexposure", "overexposure", "downscale"):
        worst = family_scores[fam][:, -1]
        assert (worst < cfg.fuse.review).all(), (fam, worst)


def test_profile_faces_score_lower_than_frontal(lp, faces):
    q = dict(zip(faces, qualities(lp.score_images(list(faces.values())))))
    # t1-face1 and t1-face4 are turned ~35-40 degrees; the others look near the camera
    assert max(q["t1-face1"], q["t1-face4"]) < min(q["t1-face0"], q["t1-face2"], q["astronaut"])
