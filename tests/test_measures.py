"""The classical no-reference measures on controlled inputs, with tolerances the estimators
promise (not tuned to one image).  Unit tests: a few real crops, no pipeline."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline import measures as ms
from pipeline.tools import samples


def _texture(seed=0, side=256):
    """Band-limited texture: smooth enough that its own high-pass energy is small."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.normal(128, 40, (side, side)).astype(np.float32), (0, 0), 3.0)


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0])
def test_noise_estimate_recovers_added_gaussian_noise(sigma):
    rng = np.random.default_rng(1)
    img = _texture() + rng.normal(0, sigma, (256, 256)).astype(np.float32)
    est = ms.noise_level(img)
    # Immerkær's estimator is unbiased for white noise on smooth content; the low percentile of
    # 256 block estimates sits a little below the mean
    assert 0.75 * sigma <= est <= 1.15 * sigma, est


def test_noise_estimate_ignores_edges():
    img = np.zeros((128, 128), np.float32)
    img[:, 64:] = 200  # one strong edge, no noise
    assert ms.noise_level(img) < 0.5


def test_blockiness_sees_a_jpeg_grid_and_not_a_clean_image():
    face = samples.astronaut()[100:300, 150:350]
    gray = ms.to_gray(face)
    buf = io.BytesIO()
    Image.fromarray(face).save(buf, "JPEG", quality=8)
    jpeg = ms.to_gray(np.asarray(Image.open(buf).convert("RGB")))
    assert ms.blockiness(gray) < 1.3
    assert ms.blockiness(jpeg) > 1.6
    # offset-agnostic: the grid found wherever it starts
    assert ms.blockiness(jpeg[3:, 5:]) > 1.6
    assert np.isnan(ms.blockiness(gray[:20, :20]))  # too small to say


def test_sharpness_falls_with_blur_and_is_not_raised_by_noise():
    face = samples.astronaut()[80:304, 140:364]
    mask = ms.face_mask(224, 1.6)
    gray = ms.to_gray(face)
    sharp = [ms.sharpness(ms.to_gray(cv2.GaussianBlur(face, (0, 0), s) if s else face), mask, 0.0)
             for s in (0, 1.0, 2.0, 3.0)]
    assert all(a > b for a, b in zip(sharp, sharp[1:])), sharp
    rng = np.random.default_rng(0)
    blurred = ms.to_gray(cv2.GaussianBlur(face, (0, 0), 2.0))
    noisy = np.clip(blurred + rng.normal(0, 8, blurred.shape), 0, 255).astype(np.float32)
    # noise is suppressed and netted out: a blurred face does not become "sharp" by adding noise
    assert ms.sharpness(noisy, mask, ms.noise_level(noisy)) < ms.sharpness(gray, mask, 0.0)


def test_exposure_fractions_and_luminance():
    mask = np.ones((10, 10), bool)
    dark = np.zeros((10, 10, 3), np.uint8)
    ex = ms.exposure(dark, mask)
    assert ex["dark_clip"] == 1.0 and ex["bright_clip"] == 0.0 and ex["brightness"] == 0.0 and ex["contrast"] == 0.0
    half = np.zeros((10, 10, 3), np.uint8)
    half[:, 5:] = 255
    ex = ms.exposure(half, mask)
    assert ex["dark_clip"] == pytest.approx(0.5) and ex["bright_clip"] == pytest.approx(0.5)
    assert ex["brightness"] == pytest.approx(0.5, abs=0.01) and ex["contrast"] == pytest.approx(1.0)
    assert np.isnan(ms.exposure(half, np.zeros((10, 10), bool))["brightness"])


def test_face_mask_covers_the_inner_face():
    m = ms.face_mask(224, 1.6)
    assert m.shape == (224, 224) and m[112, 112] and not m[0, 0] and not m[223, 223]
    # the ellipse through brows-to-chin and cheek to cheek of the 112 frame (60 x 68 px), scaled
    k = 224 / 112 / 1.6
    assert m.mean() == pytest.approx(np.pi * (30 * k) * (34 * k) / 224 ** 2, rel=0.02)


# ------------------------------------------------------------------------------ vignetting
def _photos() -> dict:
    """Untouched photos: the test faces, the whole group photo and portrait they come from, and
    scikit-image's own photos (a rocket against the sky, a cat, a table top, a black-and-white
    cameraman on a field): other framings than a face in a room."""
    import skimage.data as skd

    out = dict(samples.test_faces(), t1=samples.t1(), tom_hanks=samples.tom_hanks())
    for name in ("coffee", "chelsea", "rocket", "camera"):
        im = getattr(skd, name)()
        out[name] = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im
    return out


def _thumb(img):
    from pipeline.stages.detect import thumbnail

    return thumbnail(img, 256)


START = 2.0  # the vignetting curve's start (config): two stops of fall to the corners


def test_vignetting_leaves_untouched_photos_below_its_curve():
    vals = {k: ms.vignetting(_thumb(im)) for k, im in _photos().items()}
    assert all(np.isfinite(v) and v < START for v in vals.values()), vals


def test_vignetting_does_not_read_black_bars_as_a_darkened_frame():
    """A letterboxed or pillarboxed frame (a video's black bars): the bars have no slope to read."""
    for k, im in samples.test_faces().items():
        h, w = im.shape[:2]
        letter = np.zeros((h * 3 // 2, w, 3), np.uint8)
        letter[h // 4:h // 4 + h] = im
        pillar = np.zeros((h, w * 8 // 5, 3), np.uint8)
        pillar[:, (w * 8 // 5 - w) // 2:(w * 8 // 5 - w) // 2 + w] = im
        for framed in (letter, pillar):
            v = ms.vignetting(_thumb(framed))
            assert np.isfinite(v) and v < START, (k, v)


@pytest.mark.parametrize("family", ["vignette", "vignette_natural"])
def test_vignetting_rises_with_a_darkened_frame(family):
    """Centred (the family the curve was set on) and a lens's own off-centre cos^4 falloff (held
    out): the measure grows with the strength on every face, and the strongest is past the curve's
    start."""
    from scipy.stats import spearmanr

    from tests.support import degradations as dg

    fam = dg.FAMILIES[family]
    rows = np.array([[ms.vignetting(_thumb(fam.op(im, s))) for s in fam.severities] for im in samples.test_faces().values()])
    rhos = [spearmanr(np.arange(len(r)), r)[0] for r in rows]
    assert np.mean(rhos) >= 0.9 and min(rhos) >= 0.8, rows.round(2)
    assert np.median(rows[:, -1]) > START, rows.round(2)


def _fade_to_black(img, start, end):
    """The frame faded to black between two radii (over half the diagonal): past ``end`` the
    whole ring the measure reads is black."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    rho = np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2) / (np.hypot(w, h) / 2)
    return (img * np.clip((end - rho) / (end - start), 0, 1)[..., None]).astype(np.uint8)


def test_vignetting_sees_a_fade_to_black_on_any_frame_shape():
    """A fade that ends inside the ring, and the centred vignette on wide frames (16:9, 21:9,
    2.35:1), whose strongest blackens whole columns at the sides: judged, never NaN."""
    from tests.support import degradations as dg

    for k, im in samples.test_faces().items():
        for start, end in ((0.2, 0.45), (0.1, 0.4)):
            v = ms.vignetting(_thumb(_fade_to_black(im, start, end)))
            assert np.isfinite(v) and v > START, (k, start, end, v)
        for ratio in (16 / 9, 21 / 9, 2.35):
            wide = cv2.resize(im, (int(im.shape[0] * ratio), im.shape[0]), interpolation=cv2.INTER_AREA)
            v = [ms.vignetting(_thumb(dg.vignette(wide, s))) for s in (0.85, 1.0)]
            assert all(np.isfinite(x) and x > START for x in v), (k, ratio, v)


def test_vignetting_passes_a_portrait_on_a_black_background():
    """A lit subject against black (a low-key studio portrait, here each photo cut out by an
    ellipse): black, and the subject's edge within the blur's reach of it, is not read."""
    for k, im in _photos().items():
        h, w = im.shape[:2]
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (w // 2, h // 2), (w // 4, h // 3), 0, 0, 360, 1, -1)
        v = ms.vignetting(_thumb(im * m[..., None]))
        assert not v >= START, (k, v)  # NaN (nothing lit to judge) passes too


def test_vignetting_ignores_other_damage():
    """Blur, noise, codecs, exposure, haze, colour casts, one-sided light, pixelation and a
    rotated frame's black corners do not read as a darkened frame."""
    from tests.support import degradations as dg

    worst = {}
    for family in ("blur", "noise", "jpeg", "underexposure", "overexposure", "rotation", "haze", "colour_cast",
                   "side_light", "mosaic", "low_light"):
        fam = dg.FAMILIES[family]
        worst[family] = max(ms.vignetting(_thumb(fam.op(im, s))) for im in samples.test_faces().values()
                            for s in fam.severities)
    assert all(v < START for v in worst.values()), worst


def test_vignetting_is_mirror_symmetric_and_says_when_it_cannot_judge():
    for im in list(samples.test_faces().values())[:3]:
        t = _thumb(im)
        assert abs(ms.vignetting(t) - ms.vignetting(t[:, ::-1].copy())) < 0.05
    assert np.isnan(ms.vignetting(np.zeros((64, 64, 3), np.uint8)))  # black: nothing to judge
    assert np.isnan(ms.vignetting(np.full((8, 8, 3), 128, np.uint8)))  # too small
