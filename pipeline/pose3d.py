"""True head pose from dlib's 68 landmarks fitted to a generic 3-D face, and what else the 68 points
tell: eye and mouth openness, region polygons for occlusion and framing checks.

Conventions (faceqc's, as :func:`pipeline.geometry.head_pose_dlib5`): angles in degrees;
**yaw > 0** when the nose points towards the image LEFT (the subject turns to their own right),
**pitch > 0** looking up, **roll > 0** clockwise on screen.  Points are (x, y) pixels, x right,
y down, in dlib's iBUG 300-W order (0-16 jaw from the image-left ear round the chin, 17-21 / 22-26
image-left / image-right brow, 27-30 nose bridge down to the tip, 31-35 nostrils, 36-41 / 42-47
image-left / image-right eye, 48-59 outer lips, 60-67 inner lips).

The 3-D model (:data:`MODEL_68`)
--------------------------------
faceqc's own, shipped under faceqc's licence; no 3-D face model's data (BFM, 3DDFA, insightface's
mean shape) went into it.  Units are inter-ocular distances (IOD: between the two eye centres,
each the mean of its six points); x right, y down, z away from the camera (OpenCV's camera frame,
so the identity rotation is a face looking into the lens); origin at the eyes' midpoint.

- **x, y**: where dlib's 68-point model puts the landmarks on the frontal faces of the packaged
  photos (scikit-image's astronaut; faces 0, 2, 3 and 5 of insightface's t1.jpg), each face and
  its mirror image (so the layout is exactly left-right symmetric), similarity-aligned onto the
  eye centres and averaged (iterated Procrustes); the same kind of measurement as
  ``geometry.DLIB5_112``.  (Faces 3 and 5 look ~15° aside; averaged with their mirror images
  they leave the layout symmetric and a few per cent narrower, which the affine fit absorbs.)  Those people smile: the mouth is narrowed to the neutral mouth width
  (cheilion-cheilion ~0.85 IOD: ~52 mm against a ~62 mm interpupillary distance, Farkas 1994)
  and closed (the inner lips meet on the stomion line).  Pitch 0 is therefore "as these portrait
  subjects hold their heads when looking at the camera".
- **depth** per landmark, in mm in front of (+) or behind (-) the plane of the corneal apices,
  divided by 63 mm (the adult mean interpupillary distance, Dodgson 2004: ~63 mm), from
  anthropometric proportions of the soft-tissue profile (Farkas, *Anthropometry of the Head and
  Face*, 1994; the usual facial-profile norms: nasal tip projection ~0.6 of the nasal length, the
  lips behind the nose-chin line): the nose tip stands 32 mm in front of the corneae (0.6 IOD in
  front of the eye centres), the nasal dorsum a straight line from the nasal root (+10 mm) to the
  tip, the nostrils and subnasale between the tip and the alar base (+5 mm); the inner eye corners
  6 mm and the outer ones 18 mm behind the corneae (the lateral canthus sits well behind the
  medial one), the lids on the globe; the brows over the orbital rims, receding to -18 mm at
  their tails as the forehead curves; the lips on a ridge (+16 mm upper, +12 mm lower lip) that
  falls to -4 mm at the mouth corners; the chin at 0 and the jaw outline receding along the
  head's curve to -68 mm at the ears.
- The fit uses the 51 inner points (brows, nose, eyes, lips) and the chin (6-10): the rest of
  the jaw outline is a silhouette that slides over the face as the head turns, so it would pull
  yaw towards zero.

Pose
----
By default (``method="affine"``) a closed-form weak-perspective fit: the least-squares affine
camera taking the model's fit points onto the image points, and the rotation nearest to it (its
two rows orthonormalised by SVD) — how 3DDFA and insightface read pose off their affine cameras.
It has a single solution (no initial guess, no local minima: solvePnP on 5 points gave -41.9°
for a face and +2.5° for its mirror), is exactly mirror-symmetric, needs no focal length, and
its two extra degrees of freedom (an affine camera has 8, a rotation with scale and shift 6)
absorb the face's own proportions — a face wider or longer than the model — instead of reading
them as a turn.  ``method="pnp"`` is ``cv2.solvePnP`` (Levenberg-Marquardt) with the rigid model,
started from the affine fit, the principal point on the face (the pose relative to the line of
sight, so that cropping does not change it) and a focal length of the image width but at least
``MIN_DISTANCE_IOD`` inter-ocular distances.  Measured (tests/test_pose3d.py,
benchmarks/pose_accuracy.py): on an independent 3-D face (insightface's mean shape, used in tests
only) seen in perspective from 6 to 40 IODs, mean errors of <= 1.6° yaw and <= 3.4° pitch up to
45° / 30°, against up to 2.9° and 9.0° for solvePnP; on real photos re-posed to known angles,
1.7 / 3.8° yaw and 2.5 / 5.6° pitch up to 15 / 30°, against 2.8 / 4.8° and 3.1 / 6.2° for
solvePnP and 2.8 / 5.7° and 8.3 / 8.8° for the 5-point closed form.  Beyond ~35° of yaw dlib's
68 landmarks themselves cling to a frontal shape and yaw is under-read.

Euler angles follow R = Rz(roll)·Ry(yaw)·Rx(-pitch) (pitch applied first, roll last: roll is in
the image plane).  Degenerate points (non-finite, collapsed, collinear, mirrored labels), a fit
behind the camera or a residual too large for a face (``max_rms``) give NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import cv2
import numpy as np

# --------------------------------------------------------------------------- landmark indices
JAW = np.arange(0, 17)
BROW_L, BROW_R = np.arange(17, 22), np.arange(22, 27)  # image-left, image-right
NOSE_BRIDGE, NOSTRILS = np.arange(27, 31), np.arange(31, 36)
EYE_L, EYE_R = np.arange(36, 42), np.arange(42, 48)  # image-left (subject's right), image-right
LIPS_OUTER, LIPS_INNER = np.arange(48, 60), np.arange(60, 68)

# index of each point's counterpart in the mirror image (x -> -x): left and right swap, the
# midline (27-30 bridge, 33 subnasale, 8 chin, 51/57/62/66 lip centres) stays
MIRROR_68 = np.array(
    list(range(16, -1, -1))                   # jaw 0..16
    + list(range(26, 16, -1))                 # brows 17..26
    + [27, 28, 29, 30] + [35, 34, 33, 32, 31]  # bridge, nostrils
    + [45, 44, 43, 42, 47, 46]                # image-left eye 36..41 <- image-right eye
    + [39, 38, 37, 36, 41, 40]                # image-right eye 42..47
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips 48..59
    + [64, 63, 62, 61, 60, 67, 66, 65]        # inner lips 60..67
)

# --------------------------------------------------------------------------- the 3-D model
# (index, x, y, depth in mm) for the image-right half and the midline; the image-left half is
# its mirror.  x, y in IOD; see the module docstring for where each number comes from.
_HALF = [
    # jaw outline, chin (8) to the image-right ear (16)
    (8, 0.000, 1.811, 0.0), (9, 0.287, 1.760, -6.0), (10, 0.524, 1.573, -16.0),
    (11, 0.738, 1.356, -28.0), (12, 0.920, 1.103, -40.0), (13, 1.033, 0.828, -50.0),
    (14, 1.099, 0.530, -58.0), (15, 1.127, 0.231, -64.0), (16, 1.139, -0.066, -68.0),
    # image-right brow, medial (22) to tail (26)
    (22, 0.199, -0.259, 4.0), (23, 0.385, -0.342, 3.0), (24, 0.574, -0.377, -1.0),
    (25, 0.762, -0.360, -8.0), (26, 0.915, -0.263, -18.0),
    # nasal bridge (27 root .. 30 tip), nostrils (33 subnasale .. 35 alar base)
    (27, 0.000, -0.033, 10.0), (28, 0.000, 0.177, 17.3), (29, 0.000, 0.389, 24.7),
    (30, 0.000, 0.599, 32.0), (33, 0.000, 0.785, 18.0), (34, 0.124, 0.738, 14.0),
    (35, 0.239, 0.689, 5.0),
    # image-right eye: 42 inner corner, 43-44 upper lid, 45 outer corner, 46-47 lower lid
    (42, 0.299, 0.011, -6.0), (43, 0.430, -0.042, -2.0), (44, 0.567, -0.040, -4.0),
    (45, 0.693, -0.007, -18.0), (46, 0.574, 0.038, -4.0), (47, 0.438, 0.040, -2.0),
    # outer lips (mouth width narrowed to 0.85 IOD): 51 upper centre .. 54 corner .. 57 lower
    (51, 0.000, 0.960, 16.0), (52, 0.116, 0.932, 13.0), (53, 0.265, 0.926, 6.0),
    (54, 0.424, 0.943, -4.0), (55, 0.276, 1.163, 3.0), (56, 0.122, 1.264, 10.0),
    (57, 0.000, 1.286, 12.0),
    # inner lips, closed on the stomion line
    (62, 0.000, 1.076, 13.0), (63, 0.113, 1.058, 11.0), (64, 0.361, 1.062, -2.0),
    (65, 0.119, 1.058, 10.0), (66, 0.000, 1.076, 12.0),
]
IOD_MM = 63.0


def _build_model() -> np.ndarray:
    m = np.full((68, 3), np.nan)
    for i, x, y, d in _HALF:
        m[i] = (x, y, -d / IOD_MM)  # z away from the camera: protrusion is negative z
    for i in range(68):
        if np.isnan(m[i, 0]):
            j = MIRROR_68[i]
            m[i] = (-m[j, 0], m[j, 1], m[j, 2])
    assert np.isfinite(m).all()
    m.setflags(write=False)
    return m


MODEL_68 = _build_model()

# the least camera distance assumed, in IODs (~0.75 m): the focal length is at least this many
# times the face's inter-ocular distance in pixels, so a tight crop is not read as a selfie
MIN_DISTANCE_IOD = 12.0

# the points the fit uses: all but the sliding jaw silhouette (chin 6-10 kept)
FIT_POINTS = np.r_[6:11, 17:68]


# --------------------------------------------------------------------------- landmarks
def predictor_path() -> str:
    """Path of dlib's ``shape_predictor_68_face_landmarks.dat`` inside the face_recognition_models
    package (found without importing it: its __init__ needs pkg_resources)."""
    from .models import model_path

    return model_path("dlib-shape-predictor-68")


def load_predictor(path: Optional[str] = None):
    import dlib

    return dlib.shape_predictor(path or predictor_path())


def landmarks68(img_rgb: np.ndarray, box, predictor, mirror_average: bool = True) -> np.ndarray:
    """dlib's 68 landmarks (68, 2) float64 source pixels for the face in ``box`` (x1, y1, x2, y2,
    as FaceDetector returns it).  With ``mirror_average`` (the default) they are averaged with
    those found on the mirror image (mapped back through :data:`MIRROR_68`), as FaceDetector
    does for its 5 points, so that a mirrored photo gets exactly mirrored landmarks.  dlib runs on
    a grey crop around the box (twice its size), not on the whole image."""
    import dlib

    img = np.asarray(img_rgb)
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    ox, oy = int(max(0, math.floor(x1 - bw / 2))), int(max(0, math.floor(y1 - bh / 2)))
    ex, ey = int(min(w, math.ceil(x2 + bw / 2) + 1)), int(min(h, math.ceil(y2 + bh / 2) + 1))
    crop = img[oy:ey, ox:ex]
    gray = crop if crop.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    gray = np.ascontiguousarray(gray)
    rect = dlib.rectangle(int(round(x1 - ox)), int(round(y1 - oy)), int(round(x2 - ox)), int(round(y2 - oy)))
    a = np.array([[p.x, p.y] for p in predictor(gray, rect).parts()], np.float64)
    if mirror_average:
        cw = gray.shape[1]
        mrect = dlib.rectangle(cw - 1 - rect.right(), rect.top(), cw - 1 - rect.left(), rect.bottom())
        b = np.array([[p.x, p.y] for p in predictor(np.ascontiguousarray(gray[:, ::-1]), mrect).parts()], np.float64)
        b[:, 0] = cw - 1 - b[:, 0]
        a = (a + b[MIRROR_68]) / 2.0
    return a + [ox, oy]


def mirror_points(points68: np.ndarray, width: int) -> np.ndarray:
    """The landmarks of the horizontally mirrored image (width ``width``), in dlib's order."""
    p = np.asarray(points68, np.float64)[MIRROR_68].copy()
    p[:, 0] = width - 1 - p[:, 0]
    return p


# --------------------------------------------------------------------------- pose
@dataclass(frozen=True)
class PoseFit:
    """A solved pose.  ``M`` (2x3) and ``c`` (2) are the affine camera of the fit, a model point X
    (IODs) landing near pixel ``M @ X + c`` (exactly so for the weak-perspective fit; the
    linearisation at the face for the perspective one, whose camera is in ``camera``)."""

    yaw: float
    pitch: float
    roll: float
    R: np.ndarray          # 3x3 rotation, model -> camera (OpenCV frame)
    M: np.ndarray          # 2x3 affine camera
    c: np.ndarray          # its translation (pixels)
    iod_px: float          # the face's inter-ocular distance in pixels (the fit's scale)
    rms: float             # reprojection residual of the fitted points, in IODs
    method: str            # "affine" or "pnp"
    camera: Optional[tuple] = None  # pnp: (rvec, tvec, K)

    def project(self, model: np.ndarray = MODEL_68) -> np.ndarray:
        X = np.asarray(model, np.float64)
        if self.camera is not None:
            rvec, tvec, K = self.camera
            return cv2.projectPoints(X, rvec, tvec, K, None)[0].reshape(-1, 2)
        return X @ self.M.T + self.c


def euler_faceqc(R: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees, faceqc's signs, of a model->camera rotation in OpenCV's
    camera frame, decomposed as R = Rz(roll)·Ry(yaw)·Rx(-pitch) (pitch first, roll last)."""
    R = np.asarray(R, np.float64)
    sy = math.hypot(R[0, 0], R[1, 0])
    if sy > 1e-6:
        x = math.atan2(R[2, 1], R[2, 2])
        z = math.atan2(R[1, 0], R[0, 0])
    else:  # gimbal lock (yaw = ±90°): put it all in pitch
        x = math.atan2(-R[1, 2], R[1, 1])
        z = 0.0
    y = math.atan2(-R[2, 0], sy)
    return math.degrees(y), -math.degrees(x), math.degrees(z)


def rotation_faceqc(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """The model->camera rotation of a face at (yaw, pitch, roll) degrees (the inverse of
    :func:`euler_faceqc`)."""
    y, x, z = math.radians(yaw), -math.radians(pitch), math.radians(roll)
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine_fit(model: np.ndarray, pts: np.ndarray):
    """Closed-form weak-perspective fit: the least-squares affine camera pts ≈ M·X + c, and the
    rotation nearest to it (its two rows orthonormalised by SVD, the third their cross product).
    Returns (M, c, R, scale in px per model unit)."""
    mx, my = model.mean(0), pts.mean(0)
    A, *_ = np.linalg.lstsq(model - mx, pts - my, rcond=None)  # (3, 2)
    M = A.T
    u, sv, vt = np.linalg.svd(M, full_matrices=False)
    r12 = u @ vt
    R = np.vstack([r12, np.cross(r12[0], r12[1])])
    return M, my - M @ mx, R, float(sv.mean()), sv


def _degenerate(pts: np.ndarray) -> bool:
    if not np.isfinite(pts).all():
        return True
    c = pts - pts.mean(0)
    sv = np.linalg.svd(c, compute_uv=False)
    return not (sv[0] > 1e-6 and sv[1] > 0.05 * sv[0])


def fit_pose_68(points68: np.ndarray, image_size=None, method: str = "affine",
                focal: Optional[float] = None, max_rms: float = 0.35) -> Optional[PoseFit]:
    """Solve the head pose of dlib's 68 landmarks: the :class:`PoseFit`, or None when the points
    are degenerate (non-finite, collapsed, collinear, mirrored) or fit no face (residual over
    ``max_rms`` IODs).

    ``method="affine"`` (the default): the closed-form weak-perspective fit.  ``"pnp"``:
    ``cv2.solvePnP`` (Levenberg-Marquardt) with a pinhole camera looking straight at the face
    (principal point at the points' centroid), focal length ``focal`` or the image width
    (``image_size`` = (width, height)), at least ``MIN_DISTANCE_IOD`` inter-ocular distances, started
    from the affine fit.  The module docstring says why the affine fit is the default."""
    pts = np.asarray(points68, np.float64)
    if pts.shape != (68, 2):
        return None
    img_pts = pts[FIT_POINTS]
    if _degenerate(img_pts):
        return None
    model = MODEL_68[FIT_POINTS]
    M, c, R, s, sv = _affine_fit(model, img_pts)
    if not (np.isfinite(M).all() and s > 1e-6 and sv[1] > 0.2 * sv[0]):
        return None
    if np.linalg.det(M[:, :2]) <= 0:  # the face's plane seen from behind: mirrored labels
        return None
    camera = None
    if method == "pnp":
        w = float(image_size[0]) if image_size is not None else 0.0
        f = float(focal) if focal else max(w, MIN_DISTANCE_IOD * s, 1.0)
        cx, cy = (float(v) for v in img_pts.mean(0))  # the camera looks straight at the face
        z0 = f / s
        t0 = np.array([(c[0] - cx) * z0 / f, (c[1] - cy) * z0 / f, z0])
        K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], np.float64)
        try:
            ok, rvec, tvec = cv2.solvePnP(model, img_pts, K, None, cv2.Rodrigues(R)[0], t0.reshape(3, 1),
                                          useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        except cv2.error:
            return None
        if not ok or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()):
            return None
        R = cv2.Rodrigues(rvec)[0]
        cam = model @ R.T + tvec.ravel()
        if (cam[:, 2] <= 1e-6).any():  # behind the camera
            return None
        proj = f * cam[:, :2] / cam[:, 2:3] + [cx, cy]
        s = f / float(tvec[2, 0])
        # the affine camera of the perspective fit, linearised at the model's origin
        M = s * R[:2]
        c = f * tvec.ravel()[:2] / float(tvec[2, 0]) + [cx, cy]
        camera = (rvec, tvec, K)
    elif method == "affine":
        proj = model @ M.T + c
    else:
        raise ValueError(f"unknown pose method {method!r}")
    rms = float(np.sqrt(((proj - img_pts) ** 2).sum(1).mean()) / s)
    if not math.isfinite(rms) or rms > max_rms:
        return None
    yaw, pitch, roll = euler_faceqc(R)
    return PoseFit(yaw, pitch, roll, R, M, c, s, rms, method, camera)


def head_pose_68(points68: np.ndarray, image_size=None, method: str = "affine") -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees, faceqc's convention, from dlib's 68 landmarks (in an image of
    ``image_size`` = (width, height), used by ``method="pnp"`` only); NaNs when no pose fits."""
    fit = fit_pose_68(points68, image_size, method)
    if fit is None:
        return (math.nan, math.nan, math.nan)
    return (fit.yaw, fit.pitch, fit.roll)


# --------------------------------------------------------------------------- openness
def frontalise(points68: np.ndarray, fit: PoseFit) -> np.ndarray:
    """The landmarks moved into the model's frontal frame (68, 2), in IODs: each point is its
    model point plus its image residual taken back through the fit's affine camera, assuming the
    shape's deviation from the model (open eyes, an open mouth) lies in the face's plane.
    Distances here do not depend on face size, yaw, pitch or roll (to first order)."""
    pts = np.asarray(points68, np.float64)
    J = fit.M[:, :2]  # d(pixel) / d(model x, y)
    if abs(np.linalg.det(J)) < 1e-9 * max(fit.iod_px, 1e-9) ** 2:
        return np.full((68, 2), np.nan)
    resid = pts - (MODEL_68 @ fit.M.T + fit.c)
    return MODEL_68[:, :2] + np.linalg.solve(J, resid.T).T


def eye_aspect_ratios(points: np.ndarray) -> tuple[float, float]:
    """Eye aspect ratio (Soukupová & Čech 2016) of the image-left and image-right eye:
    (|p2-p6| + |p3-p5|) / (2·|p1-p4|), ~0.25-0.35 open, < ~0.15 closed.  Size-free; on raw image
    points it grows with |yaw| (the eye's width foreshortens): pass :func:`frontalise` d points
    for a yaw-robust value, as :func:`openness` does."""
    p = np.asarray(points, np.float64)
    out = []
    for e in (EYE_L, EYE_R):
        p1, p2, p3, p4, p5, p6 = e
        width = float(np.hypot(*(p[p1] - p[p4])))
        gap = float(np.hypot(*(p[p2] - p[p6])) + np.hypot(*(p[p3] - p[p5])))
        out.append(gap / (2 * width) if width > 1e-9 else math.nan)
    return out[0], out[1]


def mouth_aspect_ratio(points: np.ndarray) -> float:
    """Inner-lip gap over mouth width: mean |61-67|, |62-66|, |63-65| over |60-64| (0 closed,
    ~0.5+ wide open); pass :func:`frontalise` d points for a yaw-robust value."""
    p = np.asarray(points, np.float64)
    width = float(np.hypot(*(p[60] - p[64])))
    gap = float(np.mean([np.hypot(*(p[a] - p[b])) for a, b in ((61, 67), (62, 66), (63, 65))]))
    return gap / width if width > 1e-9 else math.nan


@dataclass(frozen=True)
class Openness:
    eye_left: float    # EAR of the image-left eye (subject's right), in the frontal frame
    eye_right: float   # EAR of the image-right eye
    eye: float         # the nearer eye's EAR when |yaw| > 20° (the far one is foreshortened and
    #                    partly hidden), else the mean of both
    mouth: float       # mouth aspect ratio, frontal frame


def openness(points68: np.ndarray, fit: Optional[PoseFit]) -> Openness:
    """Eye and mouth openness, independent of face size and, through :func:`frontalise`, of the
    head's pose.  Without a fit (None) the ratios of the raw points are returned."""
    if fit is None:
        p, yaw = np.asarray(points68, np.float64), 0.0
    else:
        p, yaw = frontalise(points68, fit), fit.yaw
    el, er = eye_aspect_ratios(p)
    if yaw > 20:  # nose towards the image left: the image-right eye faces the camera
        eye = er
    elif yaw < -20:
        eye = el
    else:
        eye = (el + er) / 2
    return Openness(el, er, eye, mouth_aspect_ratio(p))


# --------------------------------------------------------------------------- regions
def _up(p: np.ndarray) -> np.ndarray:
    """The face's up direction in the image (unit): perpendicular to the eye line, pointing
    from the mouth towards the eyes."""
    eyes = p[EYE_R].mean(0) - p[EYE_L].mean(0)
    n = np.array([eyes[1], -eyes[0]])
    n /= max(float(np.hypot(*n)), 1e-9)
    if np.dot(n, p[EYE_L].mean(0) + p[EYE_R].mean(0) - 2 * p[LIPS_OUTER].mean(0)) < 0:
        n = -n
    return n


def forehead_top(points68: np.ndarray) -> np.ndarray:
    """An estimate of the forehead's upper edge (10, 2): the brow points (17-26) raised along the
    face's up direction by 1.1x the nasal height (root 27 to subnasale 33); the hairline sits
    about one nasal height above the brows (the classic facial thirds, trichion-glabella ≈
    glabella-subnasale)."""
    p = np.asarray(points68, np.float64)
    lift = 1.1 * float(np.hypot(*(p[33] - p[27])))
    return p[17:27] + lift * _up(p)


def face_outline(points68: np.ndarray) -> np.ndarray:
    """The face's outline polygon (27, 2): the jaw (0-16) and the estimated forehead top back."""
    p = np.asarray(points68, np.float64)
    return np.vstack([p[JAW], forehead_top(p)[::-1]])


def regions(points68: np.ndarray) -> Dict[str, np.ndarray]:
    """Polygons (k, 2) float pixels of the face's parts, "left"/"right" as seen in the image:
    jaw (open polyline 0-16), face (outline), forehead, left/right_brow (polylines),
    left/right_eye, nose (bridge and nostrils), mouth (outer lips), mouth_inner,
    left/right_cheek (between the eye, the nose, the mouth corner and the jaw)."""
    p = np.asarray(points68, np.float64)
    top = forehead_top(p)
    return {
        "jaw": p[JAW],
        "face": face_outline(p),
        "forehead": np.vstack([p[17:27], top[::-1]]),
        "left_brow": p[BROW_L], "right_brow": p[BROW_R],
        "left_eye": p[EYE_L], "right_eye": p[EYE_R],
        "nose": p[[27, 42, 35, 34, 33, 32, 31, 39]],
        "mouth": p[LIPS_OUTER], "mouth_inner": p[LIPS_INNER],
        "left_cheek": p[[41, 40, 39, 31, 48, 4, 3, 2, 1]],
        "right_cheek": p[[46, 47, 42, 35, 54, 12, 13, 14, 15]],
    }


def region_mask(polygon: np.ndarray, shape) -> np.ndarray:
    """A uint8 mask (255 inside) of ``polygon`` for an image of ``shape`` (h, w, ...)."""
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(polygon, np.float64)).astype(np.int32)], 255)
    return m


def inside_fraction(polygon: np.ndarray, image_size, grid: int = 128) -> float:
    """Fraction of ``polygon``'s area inside an image of ``image_size`` = (w, h): 1 when the face
    is fully in frame (framing checks); NaN for an empty or non-finite polygon.  The polygon is
    rasterised on a ``grid`` x ``grid`` canvas over its bounding box."""
    poly = np.asarray(polygon, np.float64)
    if len(poly) < 3 or not np.isfinite(poly).all():
        return math.nan
    lo, hi = poly.min(0), poly.max(0)
    span = float(max(hi - lo))
    if span <= 0:
        return math.nan
    k = (grid - 1) / span
    canvas = np.zeros((grid, grid), np.uint8)
    cv2.fillPoly(canvas, [np.round((poly - lo) * k * 16).astype(np.int32)], 1, shift=4)
    total = int(canvas.sum())
    if total == 0:
        return math.nan
    w, h = image_size
    xs = lo[0] + np.arange(grid) / k  # image coordinates of the canvas' pixel centres
    ys = lo[1] + np.arange(grid) / k
    inx = (xs >= -0.5) & (xs <= w - 0.5)
    iny = (ys >= -0.5) & (ys <= h - 0.5)
    return float(canvas[np.ix_(iny, inx)].sum() / total)
