"""What a reviewer checks region by region: are the eyes visible, is the lower face covered and the
mouth visible, is the skin a natural colour, is the light even across the face, is the face framed
whole.

Every check runs on the primary face's FFHQ-aligned crop (:func:`pipeline.geometry.ffhq_matrix`)
at the resolution it is judged at, with the face's 5 landmarks mapped into it: in that frame the
eyes, nose and mouth sit where the landmarks say and the face's axis is vertical, so regions are
simple shapes drawn from the landmarks.  Each check compares a region with the face's own skin
(forehead and cheeks), never with an absolute skin colour, so it holds for every skin tone.
Each function returns a raw number; mapping it to 0–100 is fusion's job (``fuse.curves``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import cv2
import numpy as np

from .measures import blur_sigma


def _ellipse(shape, centre, axes, angle_deg: float = 0.0) -> np.ndarray:
    m = np.zeros(shape[:2], np.uint8)
    cv2.ellipse(m, (int(round(centre[0])), int(round(centre[1]))),
                (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))), angle_deg, 0, 360, 1, -1)
    return m.astype(bool)


@dataclass
class Regions:
    """Boolean masks in the crop, drawn from the 5 landmarks (insightface order)."""

    ied: float
    face: np.ndarray  # brows to chin, cheek to cheek
    eyes: List[np.ndarray]  # left, right
    skin: np.ndarray  # forehead and upper cheeks: the face's own skin reference
    mouth: np.ndarray  # the lips
    lower: np.ndarray  # nose tip to chin, mouth excluded: what a mask, a hand or a microphone covers
    halves: List[np.ndarray]  # the face left and right of its axis

    @classmethod
    def of(cls, shape, pts5: np.ndarray) -> "Regions":
        p = np.asarray(pts5, np.float64)
        le, re, nose, ml, mr = p
        ied = float(np.linalg.norm(re - le))
        ang = math.degrees(math.atan2(re[1] - le[1], re[0] - le[0]))
        eye_mid, mouth = (le + re) / 2, (ml + mr) / 2
        down = mouth - eye_mid  # eyes to mouth: the face's vertical axis
        u = down / max(np.linalg.norm(down), 1e-6)
        r = np.array([u[1], -u[0]])  # across the face, from its left eye to its right eye
        if np.dot(r, re - le) < 0:
            r = -r
        face = _ellipse(shape, eye_mid + down * 0.45, (1.05 * ied, 1.35 * ied), ang)
        eyes = [_ellipse(shape, e, (0.34 * ied, 0.17 * ied), ang) for e in (le, re)]
        skin = (_ellipse(shape, eye_mid - u * 0.6 * ied, (0.55 * ied, 0.16 * ied), ang)
                | _ellipse(shape, le + u * 0.55 * ied - r * 0.05 * ied, (0.2 * ied, 0.14 * ied), ang)
                | _ellipse(shape, re + u * 0.55 * ied + r * 0.05 * ied, (0.2 * ied, 0.14 * ied), ang))
        lips = _ellipse(shape, mouth, (0.55 * np.linalg.norm(mr - ml) + 0.05 * ied, 0.2 * ied), ang)
        lower = _ellipse(shape, mouth + u * 0.1 * ied, (0.62 * ied, 0.52 * ied), ang) & ~lips
        lower &= ~_ellipse(shape, nose - u * 0.1 * ied, (0.3 * ied, 0.3 * ied), ang)
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
        side = (xx - eye_mid[0]) * r[0] + (yy - eye_mid[1]) * r[1]
        halves = [face & (side < -0.08 * ied), face & (side > 0.08 * ied)]
        return cls(ied, face, eyes, skin, lips, lower, halves)


def lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* as floats: L 0..100, a and b centred on 0."""
    x = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    x[..., 0] *= 100.0 / 255.0
    x[..., 1:] -= 128.0
    return x


def _skin_l(labimg: np.ndarray, reg: Regions) -> float:
    v = labimg[..., 0][reg.skin]
    return float(np.median(v)) if v.size else float("nan")


def eye_visibility(labimg: np.ndarray, reg: Regions) -> float:
    """How visible the less visible eye is: the spread of lightness inside it (10th to 90th
    percentile: iris, pupil and lashes against the white of the eye) over the skin's lightness.
    Dark lenses, a bar, glare, closed lids and blur all flatten it."""
    sk = _skin_l(labimg, reg)
    if not math.isfinite(sk) or sk < 5:
        return float("nan")
    vals = []
    for m in reg.eyes:
        v = labimg[..., 0][m]
        if v.size < 16:
            return float("nan")
        lo, hi = np.percentile(v, [10, 90])
        vals.append((hi - lo) / sk)
    return float(min(vals))


def eye_glare(labimg: np.ndarray, reg: Regions) -> float:
    """Share of the eyes that is near white (L* >= 90): specular glare on glasses, blown-out
    highlights.  The white of a well exposed eye stays below it."""
    v = np.concatenate([labimg[..., 0][m] for m in reg.eyes])
    return float((v >= 90).mean()) if v.size else float("nan")


def lower_face_occlusion(labimg: np.ndarray, reg: Regions) -> float:
    """Share of the lower face (nose tip to chin, lips excluded) that is not skin: of another hue
    than the face's own skin (more than 35 degrees off in a*b*), or far greyer (under a third of
    its chroma: white, grey or black objects).  Shading and highlights change skin's lightness and
    chroma together but keep its hue, so they pass; masks, microphones and most held objects do
    not.  NaN when the skin itself has too little colour to compare with (a greyscale photo)."""
    sk = labimg[reg.skin]
    lo = labimg[reg.lower]
    if sk.shape[0] < 48 or lo.shape[0] < 48:
        return float("nan")
    a, b = float(np.median(sk[:, 1])), float(np.median(sk[:, 2]))
    chroma = math.hypot(a, b)
    if chroma < 4.0:
        return float("nan")
    c = np.hypot(lo[:, 1], lo[:, 2])
    cos = (lo[:, 1] * a + lo[:, 2] * b) / np.maximum(c * chroma, 1e-6)
    other_hue = (c >= 3.0) & (cos < math.cos(math.radians(35)))
    grey = c < max(3.0, chroma / 3.0)
    return float((other_hue | grey).mean())


def lip_line(labimg: np.ndarray, reg: Regions) -> float:
    """Is the mouth there to see: the mean vertical lightness gradient (horizontal edges) in the lips
    region over the mean horizontal one, in the aligned face's frame.  A visible mouth is
    dominated by horizontal edges (the lip line between the corners, the lips' upper and lower
    borders: about 1-3 on faces turned up to ~50 degrees), whether it is closed, open or blurred
    (blur and noise shrink or spread both gradients alike).  A hand, a scarf or any object held
    in front of it replaces them with its own edges or none, so the ratio falls towards 0 however
    skin-coloured the object is.  NaN with too few pixels to judge."""
    m = reg.mouth
    if m.sum() < 48:
        return float("nan")
    light = labimg[..., 0]
    gy = np.abs(cv2.Sobel(light, cv2.CV_32F, 0, 1, ksize=3))[m]
    gx = np.abs(cv2.Sobel(light, cv2.CV_32F, 1, 0, ksize=3))[m]
    return float(gy.mean() / max(float(gx.mean()), 0.05))


def skin_colour(labimg: np.ndarray, reg: Regions) -> tuple:
    """(hue angle in degrees, chroma) of the face's skin: its median a*, b*."""
    sk = labimg[reg.skin]
    if sk.shape[0] < 48:
        return float("nan"), float("nan")
    a, b = np.median(sk[:, 1]), np.median(sk[:, 2])
    return float(math.degrees(math.atan2(b, a))), float(math.hypot(a, b))


# Human skin in CIE L*a*b*, all tones (measured skin colour surveys report hue angles of about
# 30-80 degrees and chroma of about 10-30; e.g. Xiao et al. 2017, "Characterising the variations
# in ethnic skin colours"), with a margin: the region no natural photo of a face leaves.
SKIN_HUE = (20.0, 92.0)
SKIN_CHROMA = (6.0, 34.0)


def unnatural_colour(hue: float, chroma: float) -> float:
    """How far (in a*b* units) the skin's colour lies outside the region of natural skin colours
    (0 inside): greyscale, colour casts, oversaturation."""
    if not (math.isfinite(hue) and math.isfinite(chroma)):
        return float("nan")
    h = math.radians(hue)
    a, b = chroma * math.cos(h), chroma * math.sin(h)
    # distance to the annular sector [SKIN_HUE] x [SKIN_CHROMA]
    lo_h, hi_h = map(math.radians, SKIN_HUE)
    hc = min(max(h, lo_h), hi_h)
    cc = min(max(chroma, SKIN_CHROMA[0]), SKIN_CHROMA[1])
    return float(math.hypot(a - cc * math.cos(hc), b - cc * math.sin(hc)))


def illumination_asymmetry(labimg: np.ndarray, reg: Regions) -> float:
    """Uneven light across the face: the difference of the median lightness of its two halves
    over their mean (OFIQ's illumination uniformity compares the halves too)."""
    m = [labimg[..., 0][h] for h in reg.halves]
    if min(x.size for x in m) < 32:
        return float("nan")
    a, b = float(np.median(m[0])), float(np.median(m[1]))
    return abs(a - b) / max((a + b) / 2, 5.0)


def black_level(labimg: np.ndarray, reg: Regions) -> float:
    """The darkest face detail (pupils, nostrils, brows: 2nd percentile of lightness, 0..1): haze
    and veiling glare lift it, whatever the exposure."""
    v = labimg[..., 0][reg.face]
    return float(np.percentile(v, 2) / 100.0) if v.size >= 64 else float("nan")


def colour_blotches(labimg: np.ndarray, reg: Regions) -> float:
    """Colour noise: band-pass chroma in the skin (natural skin colour varies smoothly)."""
    m = reg.skin
    if m.sum() < 48:
        return float("nan")
    s = max(1.0, reg.ied / 40.0)  # scale with the face: blotches of ~1/40 of the inter-eye distance
    out = []
    for c in (1, 2):
        ch = labimg[..., c]
        band = cv2.GaussianBlur(ch, (0, 0), s) - cv2.GaussianBlur(ch, (0, 0), 4 * s)
        out.append(float(np.std(band[m])))
    return float(np.hypot(*out))


def framing_outside(matrix: np.ndarray, size: int, width: int, height: int, samples: int = 64) -> float:
    """Share of the FFHQ crop square (``size`` px, ``matrix`` mapping source to crop) that lies
    outside the source image: a face cut by the frame, or framed too tightly to show the head."""
    inv = cv2.invertAffineTransform(matrix)
    t = (np.arange(samples) + 0.5) / samples * size
    xx, yy = np.meshgrid(t, t)
    src = np.stack([xx.ravel(), yy.ravel()], 1) @ inv[:, :2].T + inv[:, 2]
    inside = (src[:, 0] >= 0) & (src[:, 0] <= width) & (src[:, 1] >= 0) & (src[:, 1] <= height)
    return float(1.0 - inside.mean())


def native(crop: np.ndarray, scale: float, min_side: int = 48) -> np.ndarray:
    """The target crop at the resolution the face has in its source (no upsampled pixels): the
    crop itself when the face is at least the target size, else shrunk by ``scale``."""
    if not (math.isfinite(scale) and scale < 1.0):
        return crop
    side = max(min_side, int(round(crop.shape[0] * scale)))
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def checks(crop: np.ndarray, pts5: np.ndarray, scale: float) -> Optional[dict]:
    """Every check of the primary face's target crop (``pts5`` in crop coordinates), at the
    resolution the face is judged at (:func:`native`): ``detail`` is the blur sigma of its
    strongest edges in pixels of that resolution, so a large face is judged at the target size
    and a small one at its own."""
    if crop.size == 0:
        return None
    img = native(crop, scale)
    k = img.shape[0] / crop.shape[0]
    pts = np.asarray(pts5, np.float64) * k
    reg = Regions.of(img.shape, pts)
    lb = lab(img)
    hue, chroma = skin_colour(lb, reg)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return {"detail": blur_sigma(gray, reg.face), "eye_visibility": eye_visibility(lb, reg), "eye_glare": eye_glare(lb, reg),
            "lower_face_occlusion": lower_face_occlusion(lb, reg), "lip_line": lip_line(lb, reg), "skin_hue": hue, "skin_chroma": chroma,
            "unnatural_colour": unnatural_colour(hue, chroma), "illumination_asymmetry": illumination_asymmetry(lb, reg),
            "black_level": black_level(lb, reg), "colour_blotches": colour_blotches(lb, reg)}
