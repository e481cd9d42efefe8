"""Re-pose a real frontal face photo to a KNOWN yaw and pitch, for testing head-pose estimators.

The photo's face is texture-mapped onto a smooth 3-D head surface, the head is rotated and
re-projected (orthographic camera: the far camera of a portrait), and the image is resampled with
``cv2.remap``; the background stays where it was, with a band around the head (hair, neck)
bending smoothly from the head's motion to none.  Visible-surface selection uses a z-buffer over a
forward splat of the surface at half-pixel steps; holes left by stretching are filled by
filling the sampling maps by normalised convolution (never the image).

The surface is deliberately NOT the estimator's model (``pipeline.pose3d.MODEL_68``, one depth per
landmark): it is a continuous height field in the face's own frame (u along the eye line, v down,
in inter-ocular distances, IOD, from the eyes' midpoint), built only from where the eyes, nose,
mouth and chin are in the photo:

- a head: an ellipse across (half-width 1.2 IOD, 1.3 IOD deep); down the face, a dome over the
  eyes up to the vertex (2.2 IOD above them) and a flat quartic from the eyes to under the chin,
  so the face is nearly cylindrical from brow to chin;
- a nose: a Gaussian ridge along the photo's nasal line from the root (0.15 IOD high, 0.10 wide)
  to the tip (0.5 IOD high, 0.18 wide), falling off below the tip; alar wings (0.12);
- eye sockets (-0.10), a brow ridge (+0.05), lips (+0.10) and chin (+0.06) as Gaussian bumps.

So an estimator fitted to it must cope with a face shape that is not its own, as on real faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# surface parameters, IOD units (see the module docstring)
HEAD_A, HEAD_C, HEAD_TOP = 1.2, 1.3, 2.2
HEAD_V0, HEAD_B = 0.2, 2.0  # the head's centre below the eyes, and its half-height (motion region)
TAPER = 1.6  # the head's motion fades to none between elliptic radius 1 and this


@dataclass
class FaceFrame:
    origin: np.ndarray  # eyes' midpoint, px
    ex: np.ndarray      # unit vector along the eye line (image-left eye -> image-right eye)
    ey: np.ndarray      # unit vector down the face
    iod: float          # px
    nose_root: float    # v of the nasal root (landmark 27), IOD
    nose_tip: np.ndarray  # (u, v) of the nose tip (30), IOD
    mouth: np.ndarray   # (u, v) of the mouth centre, IOD
    chin: float         # v of the chin (8), IOD


def face_frame(points68: np.ndarray) -> FaceFrame:
    p = np.asarray(points68, np.float64)
    el, er = p[36:42].mean(0), p[42:48].mean(0)
    d = er - el
    iod = float(np.hypot(*d))
    ex = d / iod
    ey = np.array([-ex[1], ex[0]])  # x right, y down: (1, 0) -> (0, 1)
    o = (el + er) / 2

    def uv(q):
        r = np.asarray(q) - o
        return np.array([r @ ex, r @ ey]) / iod

    return FaceFrame(o, ex, ey, iod, float(uv(p[27])[1]), uv(p[30]), uv(p[48:60].mean(0)), float(uv(p[8])[1]))


def _g(x, s):
    return np.exp(-0.5 * (x / s) ** 2)


def height(u: np.ndarray, v: np.ndarray, fr: FaceFrame) -> np.ndarray:
    """Protrusion towards the camera (IOD) of the head surface at face coordinates (u, v)."""
    # across: an ellipse; down: a dome over the eyes up to the vertex, flat over the face and
    # falling off under the chin
    qv = np.where(v < 0, (v / HEAD_TOP) ** 2, (np.clip(v, 0, None) / (fr.chin + 0.6)) ** 6)
    q = 1.0 - (u / HEAD_A) ** 2 - qv
    base = HEAD_C * np.sqrt(np.clip(q, 0.0, None))
    inside = (q > 0).astype(np.float64)
    # nose ridge along the nasal line: from the root to the tip, then falling off
    tu, tv = fr.nose_tip
    v0 = fr.nose_root
    t = np.clip((v - v0) / max(tv - v0, 1e-3), 0.0, 1.0)
    centre_u = t * tu  # the ridge follows the photo's nasal line (a face slightly turned)
    hgt = 0.15 + 0.35 * t
    wid = 0.10 + 0.08 * t
    fall = np.where(v > tv, _g(v - tv, 0.09), 1.0) * np.where(v < v0, _g(v - v0, 0.08), 1.0)
    nose = hgt * _g(u - centre_u, wid) * fall
    wings = 0.06 * _g(np.abs(u - tu) - 0.22, 0.08) * _g(v - (tv + 0.08), 0.08)
    sockets = -0.10 * (_g(u - 0.5, 0.17) + _g(u + 0.5, 0.17)) * _g(v, 0.12)
    brow = 0.05 * _g(v + 0.3, 0.1) * _g(u, 0.8)
    lips = 0.10 * _g(u - fr.mouth[0], 0.3) * _g(v - fr.mouth[1], 0.15)
    chin = 0.06 * _g(u, 0.3) * _g(v - (fr.chin - 0.2), 0.15)
    return base + inside * (nose + wings + sockets + brow + lips + chin)


def rotation(yaw: float, pitch: float) -> np.ndarray:
    """Rotation in the camera frame (x right, y down, z away from the camera) that turns a face
    looking into the lens to (yaw, pitch), faceqc's signs: the nose (0, 0, -1) ends up pointing
    to the image left for yaw > 0 and up for pitch > 0.  Pitch first (about the face's own
    ear-to-ear axis), then yaw about the camera's vertical."""
    a, b = math.radians(yaw), math.radians(pitch)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    # about x by -pitch: (0, 0, -1) -> (0, -sin(pitch), -cos(pitch)), up on screen
    rx = np.array([[1, 0, 0], [0, math.cos(b), math.sin(b)], [0, -math.sin(b), math.cos(b)]])
    return ry @ rx


def _fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill the unknown pixels of ``values`` by normalised convolution (a Gaussian-weighted mean
    of the known ones around each), widening until none is left."""
    k = known.astype(np.float32)
    out = values.copy()
    todo = k == 0
    sigma = 0.8
    while todo.any() and sigma < 64:
        num = cv2.GaussianBlur(values * k, (0, 0), sigma)
        den = cv2.GaussianBlur(k, (0, 0), sigma)
        fill = todo & (den > 1e-3)
        out[fill] = num[fill] / den[fill]
        todo &= ~fill
        sigma *= 2
    return out


def repose(img: np.ndarray, points68: np.ndarray, yaw: float, pitch: float, step: float = 0.5,
           shading: bool = True) -> np.ndarray:
    """``img`` with its face (found by ``points68``) turned by ``yaw`` and ``pitch`` degrees."""
    fr = face_frame(points68)
    h, w = img.shape[:2]
    R = rotation(yaw, pitch)
    # work only on the region the head and its taper band can touch
    reach = fr.iod * (max(HEAD_A, HEAD_B + abs(HEAD_V0)) * TAPER + 0.5)
    cxy = fr.origin + fr.ey * fr.iod * HEAD_V0
    x0, x1 = int(max(0, cxy[0] - reach)), int(min(w, cxy[0] + reach))
    y0, y1 = int(max(0, cxy[1] - reach)), int(min(h, cxy[1] + reach))
    xs = np.arange(x0, x1, step)
    ys = np.arange(y0, y1, step)
    gx, gy = np.meshgrid(xs, ys)
    rel = np.stack([gx - fr.origin[0], gy - fr.origin[1]], -1)
    u = rel @ fr.ex / fr.iod
    v = rel @ fr.ey / fr.iod
    d = height(u, v, fr) * fr.iod  # px towards the camera
    # head motion weight: 1 on the head, fading to 0 through the taper band
    rho = np.sqrt((u / HEAD_A) ** 2 + ((v - HEAD_V0) / HEAD_B) ** 2)
    wgt = np.clip((TAPER - rho) / (TAPER - 1.0), 0.0, 1.0)
    wgt = wgt * wgt * (3 - 2 * wgt)
    # rotate about the head's centre (eyes' midpoint moved down by V0, on the silhouette plane)
    pts = np.stack([gx - cxy[0], gy - cxy[1], -d], -1)
    rot = pts @ R.T
    # keep the face's front where it was: shift so the point 0.8 deep in the face's front stays put
    anchor = np.array([0.0, 0.0, -0.8 * HEAD_C * fr.iod])
    shift = anchor[:2] - (R @ anchor)[:2]
    disp = rot[..., :2] + shift - pts[..., :2]
    ox = gx + wgt * disp[..., 0]
    oy = gy + wgt * disp[..., 1]
    far = 20.0 * fr.iod
    # shading: the light comes from the camera (a Lambertian surface's brightness follows the
    # cosine between its normal and the view); the photo's shading is divided by the frontal
    # cosine and multiplied by the turned one (both softened by +0.2, which keeps grazing angles sane),
    # so a nose side that turns away darkens
    dy_, dx_ = np.gradient(d, step)
    nrm = np.stack([-dx_, -dy_, -np.ones_like(d)], -1)
    nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
    facing0 = -nrm[..., 2]
    facing1 = -(nrm @ R.T)[..., 2]
    shade = np.clip((np.clip(facing1, 0.0, None) + 0.2) / (np.clip(facing0, 0.0, None) + 0.2), 0.25, 1.6)
    shade = 1.0 + wgt * (shade - 1.0)
    z = wgt * rot[..., 2] + (1 - wgt) * far
    # forward splat with a z-buffer: per output pixel, the nearest surface point's source position
    ix = np.round(ox).astype(np.int64).ravel()
    iy = np.round(oy).astype(np.int64).ravel()
    ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    lin = (iy * w + ix)[ok]
    order = np.lexsort((z.ravel()[ok], lin))
    lin_s = lin[order]
    first = np.r_[True, lin_s[1:] != lin_s[:-1]]
    sel = order[first]
    map_x, map_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    filled = np.ones((h, w), np.uint8)
    region = np.zeros((h, w), bool)
    region[y0:y1, x0:x1] = True
    filled[region] = 0
    # sub-pixel: the splatted point lands up to half a pixel from the pixel centre; step back
    # through the forward map's local Jacobian so that the texture does not jitter
    src_x, src_y = gx.ravel()[ok][sel], gy.ravel()[ok][sel]
    dx = ix[ok][sel] - ox.ravel()[ok][sel]
    dy = iy[ok][sel] - oy.ravel()[ok][sel]
    oxy, oxx = np.gradient(ox, step)
    oyy, oyx = np.gradient(oy, step)
    a, b = oxx.ravel()[ok][sel], oxy.ravel()[ok][sel]
    c, e = oyx.ravel()[ok][sel], oyy.ravel()[ok][sel]
    det = a * e - b * c
    good = np.abs(det) > 0.05
    det = np.where(good, det, 1.0)
    off_x = np.where(good, np.clip((e * dx - b * dy) / det, -2 * step, 2 * step), 0.0)
    off_y = np.where(good, np.clip((-c * dx + a * dy) / det, -2 * step, 2 * step), 0.0)
    tx, ty = lin[sel] % w, lin[sel] // w
    map_x[ty, tx] = src_x + off_x
    map_y[ty, tx] = src_y + off_y
    gain = np.ones((h, w), np.float32)
    gain[ty, tx] = shade.ravel()[ok][sel]
    filled[ty, tx] = 1
    map_x, map_y, gain = (_fill(m, filled) for m in (map_x, map_y, gain))
    out = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if not shading:
        return out
    gain = cv2.GaussianBlur(gain, (0, 0), 0.7)
    lin = (out.astype(np.float32) / 255.0) ** 2.2 * gain[..., None]
    return np.clip(255.0 * np.clip(lin, 0, 1) ** (1 / 2.2) + 0.5, 0, 255).astype(np.uint8)


def project_points(points68: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """Where the source's landmarks land in :func:`repose`'s output (68, 2), taking each as a
    point of the head surface: what a perfect landmark detector would find (up to the
    silhouette points of the jaw, which slide over the face in reality)."""
    fr = face_frame(points68)
    R = rotation(yaw, pitch)
    p = np.asarray(points68, np.float64)
    cxy = fr.origin + fr.ey * fr.iod * HEAD_V0
    rel = p - fr.origin
    u, v = rel @ fr.ex / fr.iod, rel @ fr.ey / fr.iod
    q = np.column_stack([p - cxy, -height(u, v, fr) * fr.iod])
    anchor = np.array([0.0, 0.0, -0.8 * HEAD_C * fr.iod])
    shift = anchor[:2] - (R @ anchor)[:2]
    return (q @ R.T)[:, :2] + shift + cxy


def moved_box(box, points68: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """Where a face box (x1, y1, x2, y2) of the source goes in :func:`repose`'s output: moved
    with the mean of the inner landmarks (brows, eyes, nose, mouth), same size (a stand-in for
    a detector that misses the turned face)."""
    p = np.asarray(points68, np.float64)
    delta = (project_points(p, yaw, pitch)[17:] - p[17:]).mean(0)
    return np.asarray(box, np.float64) + np.r_[delta, delta]


def frontal_sources() -> dict:
    """The packaged photos of faces that look (nearly) into the lens, as re-posing sources:
    scikit-image's astronaut, faces 0, 2, 3 and 5 of insightface's t1.jpg (cut upright) and
    insightface's Tom Hanks (a 112 px aligned crop: upscaled 3x and padded with its border so that
    a turned head stays in frame)."""
    from pipeline.tools import samples

    t1 = samples.t1_faces()
    th = cv2.resize(samples.tom_hanks(), (336, 336), interpolation=cv2.INTER_CUBIC)
    th = cv2.copyMakeBorder(th, 84, 84, 84, 84, cv2.BORDER_REPLICATE)
    return {"astronaut": samples.astronaut(), "t1-face0": t1[0], "t1-face2": t1[2], "t1-face3": t1[3],
            "t1-face5": t1[5], "tom_hanks": th}


# the sources whose own pose is near frontal (|yaw| < ~15° by both estimators): t1-face3 and Tom
# Hanks look ~15-25° aside, so re-posing them by ±45° leaves the range under test
NEAR_FRONTAL = ("astronaut", "t1-face0", "t1-face2", "t1-face5")


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@dataclass
class Observed:
    """What the offline detector and the landmark models find on one (re-posed) image."""

    detected: bool      # the detector found this face (else the known box was used)
    box: np.ndarray
    points5: np.ndarray
    points68: np.ndarray
    size: tuple         # (width, height)


class Observer:
    """The offline profile's detector (dlib HOG + 5 points, pipeline.backends.dlib_models) and
    dlib's 68-point model, as the pipeline would run them; when the detector misses the face (or
    finds another one), the face's known box is used so that both landmark models still run."""

    def __init__(self):
        import dlib

        from pipeline import pose3d
        from pipeline.backends.dlib_models import FaceDetector
        from pipeline.config import load_config

        self.dlib = dlib
        self.det = FaceDetector(load_config())
        self.sp68 = pose3d.load_predictor()
        self.pose3d = pose3d

    def __call__(self, img: np.ndarray, known_box=None) -> Observed:
        faces = self.det.detect(img)
        if known_box is not None:
            faces = [f for f in faces if _iou(f[0], known_box) > 0.3]
        h, w = img.shape[:2]
        if faces:
            box, _, p5 = faces[0]
            detected = True
        else:
            if known_box is None:
                raise AssertionError("no face found on a source photo")
            box, detected = np.asarray(known_box, np.float64), False
            gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            rect = self.dlib.rectangle(*[int(round(v)) for v in box])
            p5 = self.det._points(gray, rect, np.ascontiguousarray(gray[:, ::-1]))
        p68 = self.pose3d.landmarks68(img, box, self.sp68)
        return Observed(detected, np.asarray(box, np.float64), p5, p68, (w, h))


@dataclass
class Case:
    source: str
    yaw: float          # applied rotation (degrees, faceqc's signs)
    pitch: float
    obs: Observed
    ideal68: np.ndarray  # where the source's 68 points land (project_points)


def sweep(poses, sources=NEAR_FRONTAL, observer: Observer = None) -> list:
    """Re-pose each named source to each (yaw, pitch) and observe it: a list of :class:`Case`,
    (0, 0) included first per source (the baseline the errors are relative to)."""
    observer = observer or Observer()
    imgs = frontal_sources()
    out = []
    for name in sources:
        img = imgs[name]
        base = observer(img)
        p0 = base.points68
        out.append(Case(name, 0.0, 0.0, base, p0))
        for yaw, pitch in poses:
            if yaw == 0 and pitch == 0:
                continue
            r = repose(img, p0, yaw, pitch)
            obs = observer(r, moved_box(base.box, p0, yaw, pitch))
            out.append(Case(name, float(yaw), float(pitch), obs, project_points(p0, yaw, pitch)))
    return out


BANDS = ((0, 15), (15, 30), (30, 45))


def band_of(angle: float) -> int:
    a = abs(angle)
    return 0 if a < 15 else (1 if a < 30 else 2)


def errors(cases: list, estimate) -> dict:
    """Per case, the estimator's change from its own estimate on the unturned source minus the
    applied rotation: {(source, yaw, pitch): (yaw error, pitch error)} (degrees; NaN when the
    estimator gives none).  ``estimate(case) -> (yaw, pitch, roll)``.  Relative, because the
    photos' own pose is not known exactly (a few degrees off frontal)."""
    est = {(c.source, c.yaw, c.pitch): np.asarray(estimate(c), np.float64) for c in cases}
    out = {}
    for (src, y, p), e in est.items():
        if y == 0 and p == 0:
            continue
        b = est[(src, 0.0, 0.0)]
        out[(src, y, p)] = (e[0] - b[0] - y, e[1] - b[1] - p)
    return out


def band_table(errs: dict) -> dict:
    """Mean absolute yaw error per |applied yaw| band and pitch error per |applied pitch| band:
    {"yaw": [(mean, n, n_nan) per band], "pitch": [...]}."""
    res = {}
    for k, axis in ((0, "yaw"), (1, "pitch")):
        rows = []
        for b in range(len(BANDS)):
            v = np.array([e[k] for (s, y, p), e in errs.items() if band_of((y, p)[k]) == b])
            ok = np.isfinite(v)
            rows.append((float(np.mean(np.abs(v[ok]))) if ok.any() else float("nan"), int(ok.sum()), int((~ok).sum())))
        res[axis] = rows
    return res
