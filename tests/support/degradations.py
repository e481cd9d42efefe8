"""Degradation families for validity tests and the validity benchmark: many kinds of damage, each
at graded severities (the first is none), so that a score can be tuned on some families and
judged on others it never saw.

Every operator is ``op(img, severity, face)`` where ``face`` holds the pristine image's primary
face (5 landmarks in insightface order: left eye, right eye, nose, mouth left, mouth right; and the
inter-eye distance), which occluders and framing defects need.  Families are grouped:

- ``classic``   the damage faceqc's first curves were tuned on (blur, JPEG, noise, downscale,
                exposure, rotation), plus blur of large faces at training resolution;
- ``realworld`` other common degradations: other blur kernels, other codecs, any-grid mosaic,
                banding, interlacing, other noises, haze, colour casts, vignetting (centred, and a
                lens's own off-centre falloff);
- ``reviewer``  what a reviewer rejects that is not pixel damage: framing, occlusion, hidden or
                closed eyes, uneven light, unnatural colour.

``TUNING`` names the families the components were tuned on; all others are held out, and the
validity benchmark reports the two groups apart.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from pipeline.tools import samples


@dataclass
class Face:
    landmarks: np.ndarray  # (5, 2) insightface order, source pixels
    ied: float  # inter-eye distance, px


# ------------------------------------------------------------------------------ blur
def motion_blur(img, length, face=None, angle=30.0):
    if length <= 1:
        return img
    k = np.zeros((int(length) * 2 + 1,) * 2, np.float32)
    c = int(length)
    dx, dy = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    for t in np.linspace(-length / 2, length / 2, int(length) * 4 + 1):
        k[int(round(c + t * dy)), int(round(c + t * dx))] = 1
    return cv2.filter2D(img, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)


def defocus(img, radius, face=None):
    if radius <= 0:
        return img
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    k = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    return cv2.filter2D(img, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)


def down_up(img, factor, face=None, interpolation=cv2.INTER_CUBIC):
    """Shrink by ``factor`` and scale back up: the detail of a smaller photo at the same size."""
    if factor >= 1:
        return img
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=interpolation)


def upscale(img, factor=3.0):
    """A large face: the photo enlarged with Lanczos (its detail is that of the original)."""
    h, w = img.shape[:2]
    return cv2.resize(img, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_LANCZOS4)


# ------------------------------------------------------------------------------ codecs and grids
def _codec(img, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **kw)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def webp(img, quality, face=None):
    return img if quality >= 100 else _codec(img, "WEBP", quality=int(quality))


def avif(img, quality, face=None):
    return img if quality >= 100 else _codec(img, "AVIF", quality=int(quality))


def jpeg2000(img, ratio, face=None):
    if ratio <= 1:
        return img
    ok, buf = cv2.imencode(".jp2", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, int(1000 / ratio)])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def mosaic(img, block, face=None, offset=(0, 0)):
    """Pixelation: blocks of ``block`` px averaged (any grid offset)."""
    if block <= 1:
        return img
    h, w = img.shape[:2]
    oy, ox = offset
    pad = cv2.copyMakeBorder(img, oy, block, ox, block, cv2.BORDER_REFLECT)
    ph, pw = (pad.shape[0] // block) * block, (pad.shape[1] // block) * block
    pad = pad[:ph, :pw].astype(np.float32)
    small = pad.reshape(ph // block, block, pw // block, block, 3).mean(axis=(1, 3))
    big = np.repeat(np.repeat(small, block, 0), block, 1)
    return np.clip(big[oy:oy + h, ox:ox + w] + 0.5, 0, 255).astype(np.uint8)


def posterize(img, bits, face=None):
    if bits >= 8:
        return img
    return np.asarray(Image.fromarray(img).quantize(colors=2 ** int(bits) * 2, method=Image.Quantize.MEDIANCUT,
                                                     dither=Image.Dither.NONE).convert("RGB")) if bits < 3 else \
        (np.asarray(img) >> (8 - int(bits)) << (8 - int(bits))).astype(np.uint8)


def interlace(img, shift, face=None):
    """Combing: the odd rows come from a field shifted sideways by ``shift`` px (motion between
    the two fields of an interlaced video frame)."""
    if shift <= 0:
        return img
    out = img.copy()
    m = np.float32([[1, 0, shift], [0, 1, 0]])
    moved = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    out[1::2] = moved[1::2]
    return out


def video_codec(img, crf, face=None):
    """One frame through H.264 at a given CRF (PyAV), if PyAV is installed; else JPEG at a like
    quality so that the family still degrades."""
    if crf <= 0:
        return img
    try:
        import av
    except ImportError:
        return _codec(img, "JPEG", quality=max(5, int(100 - 2 * crf)))
    h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": str(int(crf)), "preset": "fast"}
        for _ in range(2):
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h, :w]), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    out = img.copy()
    out[:h, :w] = frame
    return out


# ------------------------------------------------------------------------------ noise, light, colour
def salt_pepper(img, share, face=None, seed=0):
    if share <= 0:
        return img
    rng = np.random.default_rng(seed)
    out = img.copy()
    m = rng.random(img.shape[:2])
    out[m < share / 2] = 0
    out[m > 1 - share / 2] = 255
    return out


def poisson_low_light(img, photons, face=None, seed=0):
    """Shot noise of a dim scene (``photons`` at full scale), brightened back: phone-at-night."""
    if photons <= 0:
        return img
    rng = np.random.default_rng(seed)
    lin = (img.astype(np.float32) / 255.0) ** 2.2
    noisy = rng.poisson(lin * photons) / photons
    return np.clip(255 * np.clip(noisy, 0, 1) ** (1 / 2.2) + 0.5, 0, 255).astype(np.uint8)


def chroma_noise(img, sigma, face=None, seed=0):
    if sigma <= 0:
        return img
    rng = np.random.default_rng(seed)
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    n = cv2.GaussianBlur(rng.normal(0, sigma, ycc.shape[:2] + (2,)).astype(np.float32), (0, 0), 1.5)
    ycc[..., 1:] += n * 2.0
    return cv2.cvtColor(np.clip(ycc, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def haze(img, amount, face=None):
    """Veiling glare / fog: the image blended towards a bright grey."""
    if amount <= 0:
        return img
    return np.clip(img.astype(np.float32) * (1 - amount) + 200 * amount, 0, 255).astype(np.uint8)


def colour_cast(img, strength, face=None, hue=(1.0, 0.55, 0.35)):
    """White balance gone wrong: channel gains towards ``hue`` (default orange/tungsten)."""
    if strength <= 0:
        return img
    g = 1 + strength * (np.array(hue, np.float32) / max(hue) - 0.65) * 1.6
    lin = (img.astype(np.float32) / 255.0) ** 2.2 * g
    return np.clip(255 * np.clip(lin, 0, 1) ** (1 / 2.2) + 0.5, 0, 255).astype(np.uint8)


def desaturate(img, amount, face=None):
    if amount <= 0:
        return img
    grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB).astype(np.float32)
    return np.clip(img * (1 - amount) + grey * amount, 0, 255).astype(np.uint8)


def oversaturate(img, amount, face=None):
    if amount <= 0:
        return img
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] = np.clip(hsv[..., 1] * (1 + amount), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def vignette(img, strength, face=None):
    if strength <= 0:
        return img
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    return np.clip(img * (1 - strength * np.clip(r, 0, 1.5) ** 2)[..., None], 0, 255).astype(np.uint8)


def vignette_natural(img, strength, face=None, centre=(0.38, 0.58)):
    """A lens's own falloff, as a crop of a larger frame would keep it: the cos^4 law
    (1 + (r/f)^2)^-2 in linear light, about an optical centre away from the image centre.
    ``strength`` shortens f: at 1 the far corner keeps ~2% of its light."""
    if strength <= 0:
        return img
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - centre[0] * w, yy - centre[1] * h)
    f = np.hypot(w, h) / 2 / (2.2 * strength)
    gain = (1.0 / (1.0 + (r / f) ** 2) ** 2).astype(np.float32)
    lin = (img.astype(np.float32) / 255.0) ** 2.2 * gain[..., None]
    return np.clip(255 * lin ** (1 / 2.2) + 0.5, 0, 255).astype(np.uint8)


def side_light(img, strength, face=None):
    """Uneven illumination: light falling off across the face from one side."""
    if strength <= 0:
        return img
    h, w = img.shape[:2]
    cx = face.landmarks[:2, 0].mean() if face is not None else w / 2
    span = 2.5 * (face.ied if face is not None else w / 4)
    x = np.clip((np.arange(w) - cx) / span + 0.5, 0, 1)
    gain = 1 - strength * x  # bright on the left, dark on the right
    lin = (img.astype(np.float32) / 255.0) ** 2.2 * gain[None, :, None]
    return np.clip(255 * np.clip(lin, 0, 1) ** (1 / 2.2) + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ reviewer defects
def _ellipse_mask(shape, centre, axes, angle=0.0):
    m = np.zeros(shape[:2], np.uint8)
    cv2.ellipse(m, (int(round(centre[0])), int(round(centre[1]))), (max(1, int(axes[0])), max(1, int(axes[1]))),
                angle, 0, 360, 255, -1, cv2.LINE_AA)
    return m.astype(np.float32) / 255.0


def _blend(img, mask, colour, alpha):
    a = (mask * alpha)[..., None]
    return np.clip(img.astype(np.float32) * (1 - a) + np.asarray(colour, np.float32) * a, 0, 255).astype(np.uint8)


def _eye_angle(face):
    d = face.landmarks[1] - face.landmarks[0]
    return float(np.degrees(np.arctan2(d[1], d[0])))


def sunglasses(img, opacity, face, colour=(20, 20, 24)):
    """Dark lenses over both eyes, ``opacity`` 0..1."""
    if opacity <= 0:
        return img
    m = np.zeros(img.shape[:2], np.float32)
    for eye in face.landmarks[:2]:
        m = np.maximum(m, _ellipse_mask(img.shape, eye, (0.42 * face.ied, 0.3 * face.ied), _eye_angle(face)))
    return _blend(img, m, colour, opacity)


def eye_bar(img, coverage, face, colour=(0, 0, 0)):
    """A censor bar over the eyes, its height growing with ``coverage`` (0..1)."""
    if coverage <= 0:
        return img
    c = face.landmarks[:2].mean(0)
    m = np.zeros(img.shape[:2], np.float32)
    half_w, half_h = 0.95 * face.ied, 0.3 * face.ied * coverage
    box = cv2.boxPoints(((float(c[0]), float(c[1])), (2 * half_w, 2 * half_h), _eye_angle(face)))
    cv2.fillConvexPoly(m, box.astype(np.int32), 1.0)
    return _blend(img, m, colour, 1.0)


def glare(img, strength, face):
    """Specular glare over the eyes (glasses reflecting a light)."""
    if strength <= 0:
        return img
    m = np.zeros(img.shape[:2], np.float32)
    for eye in face.landmarks[:2]:
        m = np.maximum(m, _ellipse_mask(img.shape, eye + [0.08 * face.ied, -0.05 * face.ied],
                                        (0.35 * face.ied, 0.22 * face.ied)))
    m = cv2.GaussianBlur(m, (0, 0), 0.05 * face.ied + 0.5)
    return _blend(img, m, (255, 255, 255), strength)


def face_mask(img, coverage, face, colour=(70, 120, 200)):
    """A medical mask over the lower face, covering from the chin up to ``coverage`` of the way
    from the mouth to the eyes."""
    if coverage <= 0:
        return img
    lm = face.landmarks
    mouth = lm[3:5].mean(0)
    eyes = lm[:2].mean(0)
    top = mouth + (eyes - mouth) * min(1.0, coverage)
    bottom = mouth + (mouth - eyes) * 0.9
    centre = (top + bottom) / 2
    m = _ellipse_mask(img.shape, centre, (1.05 * face.ied, np.linalg.norm(bottom - top) / 2), _eye_angle(face))
    return _blend(img, m, colour, 1.0)


def hand_over_mouth(img, coverage, face, across=False):
    """A skin-coloured hand (an ellipse of the face's own skin tone, with finger shading) over the
    mouth, growing with ``coverage``: fingers upright, or ``across`` the mouth (horizontal gaps)."""
    if coverage <= 0:
        return img
    lm = face.landmarks
    mouth = lm[3:5].mean(0)
    cheek = (lm[0] + lm[3]) / 2 + (lm[0] - lm[1]) * 0.3
    r = int(max(2, 0.1 * face.ied))
    x, y = int(cheek[0]), int(cheek[1])
    skin = np.median(img[max(0, y - r):y + r, max(0, x - r):x + r].reshape(-1, 3), axis=0) * 0.92
    m = _ellipse_mask(img.shape, mouth + [0, 0.15 * face.ied], (0.9 * face.ied * coverage, 0.55 * face.ied * coverage))
    out = _blend(img, m, skin, 1.0)
    for k in range(-2, 3):  # finger gaps
        x0 = mouth[0] + k * 0.3 * face.ied * coverage
        a, b = (x0, mouth[1] - 0.4 * face.ied * coverage), (x0, mouth[1] + 0.6 * face.ied * coverage)
        if across:  # fingers pointing to the ear: gaps run along the lips, a finger's width apart
            y0 = mouth[1] + 0.15 * face.ied + k * 0.18 * face.ied * coverage
            a, b = (mouth[0] - 0.8 * face.ied * coverage, y0), (mouth[0] + 0.8 * face.ied * coverage, y0)
        cv2.line(out, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])),
                 tuple(int(v) for v in skin * 0.75), max(1, int(0.03 * face.ied)), cv2.LINE_AA)
    return out


def microphone(img, coverage, face):
    """A dark microphone in front of the mouth, entering from below."""
    if coverage <= 0:
        return img
    lm = face.landmarks
    mouth = lm[3:5].mean(0)
    out = img.copy()
    head_r = int(0.35 * face.ied * (0.5 + coverage))
    centre = (int(mouth[0] + 0.1 * face.ied), int(mouth[1] + 0.2 * face.ied))
    cv2.circle(out, centre, head_r, (45, 45, 50), -1, cv2.LINE_AA)
    cv2.rectangle(out, (centre[0] - head_r // 2, centre[1]), (centre[0] + head_r // 2, img.shape[0]), (30, 30, 30), -1)
    return out


def hair_over_eyes(img, coverage, face, seed=0):
    """Dark strands of hair falling over the eyes, denser with ``coverage``."""
    if coverage <= 0:
        return img
    rng = np.random.default_rng(seed)
    out = img.copy()
    lm = face.landmarks
    top = lm[:2].mean(0) - [0, 0.9 * face.ied]
    for _ in range(int(60 * coverage)):
        x0 = top[0] + rng.uniform(-1.1, 1.1) * face.ied
        pts = [(x0 + np.sin(t * 3 + x0) * 0.1 * face.ied, top[1] + t * 1.3 * face.ied) for t in np.linspace(0, 1, 12)]
        cv2.polylines(out, [np.int32(pts)], False, (40, 30, 25), max(1, int(0.025 * face.ied)), cv2.LINE_AA)
    return out


def eyes_closed(img, amount, face):
    """Closing eyes: the eye region filled with the skin just above it (the upper lid coming
    down), leaving a lash line; ``amount`` 0..1."""
    if amount <= 0:
        return img
    out = img.copy().astype(np.float32)
    for eye in face.landmarks[:2]:
        w, h = 0.32 * face.ied, 0.16 * face.ied
        lid = eye - [0, 1.6 * h]
        x, y, r = int(lid[0]), int(lid[1]), int(max(2, h / 2))
        skin = np.median(img[max(0, y - r):y + r, max(0, x - r):x + r].reshape(-1, 3), axis=0)
        m = _ellipse_mask(img.shape, eye - [0, h * (1 - amount)], (w, h * amount))
        m = cv2.GaussianBlur(m, (0, 0), 0.02 * face.ied + 0.5)
        out = out * (1 - m[..., None]) + skin * m[..., None]
        cv2.line(out, (int(eye[0] - w), int(eye[1] + 0.2 * h)), (int(eye[0] + w), int(eye[1] + 0.2 * h)),
                 (35, 30, 30), max(1, int(0.02 * face.ied * amount)), cv2.LINE_AA)
    return np.clip(out, 0, 255).astype(np.uint8)


def border_cut(img, share, face):
    """The frame cut so that ``share`` of the face (from the eyes to past the mouth, ear to ear)
    falls outside it, on the face's right side."""
    if share <= 0:
        return img
    lm = face.landmarks
    centre_x = lm[:, 0].mean()
    half = 1.2 * face.ied
    cut = int(round(centre_x + half - 2 * half * share))
    return np.ascontiguousarray(img[:, :max(8, cut)])


def top_cut(img, share, face):
    """The frame cut through the top of the head down towards the eyes."""
    if share <= 0:
        return img
    eyes_y = face.landmarks[:2, 1].mean()
    top = eyes_y - 1.6 * face.ied
    cut = int(round(top + (eyes_y - top) * share))
    return np.ascontiguousarray(img[max(0, cut):])


# ------------------------------------------------------------------------------ the families
@dataclass
class Family:
    op: Callable
    severities: Sequence[float]
    group: str  # classic | realworld | reviewer
    needs_face: bool = False
    large: bool = False  # applied to the photo enlarged 3x (a large face, judged at training size)


def _wrap(f):
    return lambda img, s, face=None: f(img, s)


FAMILIES: Dict[str, Family] = {
    # classic: the original tuning families, and blur of a large face
    "blur": Family(_wrap(samples.gaussian_blur), [0, 1.0, 2.0, 3.0, 4.5, 6.0], "classic"),
    "jpeg": Family(_wrap(samples.jpeg), [100, 60, 35, 20, 10, 5], "classic"),
    "noise": Family(_wrap(samples.noise), [0, 5, 10, 16, 24, 34], "classic"),
    "downscale": Family(_wrap(samples.downscale), [1.0, 0.75, 0.55, 0.4, 0.3, 0.22], "classic"),
    "underexposure": Family(_wrap(samples.exposure), [1.0, 0.5, 0.25, 0.12, 0.06, 0.03], "classic"),
    "overexposure": Family(_wrap(samples.exposure), [1.0, 1.6, 2.5, 4.0, 6.0, 9.0], "classic"),
    "rotation": Family(_wrap(samples.rotate), [0, 8, 16, 24, 32, 40], "classic"),
    "large_blur": Family(_wrap(samples.gaussian_blur), [0, 1.5, 3.0, 4.5, 6.0, 9.0], "classic", large=True),
    "large_down_up": Family(down_up, [1.0, 0.6, 0.4, 0.28, 0.2, 0.14], "classic", large=True),
    # other real-world damage
    "motion_blur": Family(motion_blur, [0, 3, 6, 10, 15, 22], "realworld"),
    "motion_blur_vertical": Family(lambda im, s, face=None: motion_blur(im, s, angle=90), [0, 3, 6, 10, 15, 22],
                                   "realworld"),
    "defocus": Family(defocus, [0, 1.5, 2.5, 4, 6, 8], "realworld"),
    "down_up_nearest": Family(lambda im, s, face=None: down_up(im, s, interpolation=cv2.INTER_NEAREST),
                              [1.0, 0.6, 0.4, 0.28, 0.2, 0.14], "realworld"),
    "webp": Family(webp, [100, 50, 25, 12, 6, 2], "realworld"),
    "avif": Family(avif, [100, 45, 30, 20, 10, 2], "realworld"),
    "jpeg2000": Family(jpeg2000, [1, 20, 50, 100, 200, 400], "realworld"),
    "video_h264": Family(video_codec, [0, 28, 34, 40, 45, 51], "realworld"),
    "mosaic": Family(mosaic, [1, 3, 5, 8, 12, 16], "realworld"),
    "mosaic_offset": Family(lambda im, s, face=None: mosaic(im, int(s), offset=(int(s) // 3, int(s) // 2)),
                            [1, 4, 6, 10, 14, 20], "realworld"),
    "posterize": Family(posterize, [8, 6, 5, 4, 3, 2], "realworld"),
    "interlace": Family(interlace, [0, 1, 2, 4, 6, 9], "realworld"),
    "salt_pepper": Family(salt_pepper, [0, 0.005, 0.02, 0.05, 0.1, 0.2], "realworld"),
    "low_light": Family(poisson_low_light, [0, 400, 120, 40, 15, 6], "realworld"),
    "chroma_noise": Family(chroma_noise, [0, 4, 8, 14, 22, 32], "realworld"),
    "haze": Family(haze, [0, 0.2, 0.4, 0.55, 0.7, 0.85], "realworld"),
    "vignette": Family(vignette, [0, 0.3, 0.5, 0.7, 0.85, 1.0], "realworld"),
    "vignette_natural": Family(vignette_natural, [0, 0.3, 0.5, 0.7, 0.85, 1.0], "realworld"),
    # what a reviewer rejects
    "sunglasses": Family(sunglasses, [0, 0.3, 0.5, 0.7, 0.85, 1.0], "reviewer", needs_face=True),
    "eye_bar": Family(eye_bar, [0, 0.2, 0.4, 0.6, 0.8, 1.0], "reviewer", needs_face=True),
    "glare": Family(glare, [0, 0.3, 0.5, 0.7, 0.85, 1.0], "reviewer", needs_face=True),
    "hair_over_eyes": Family(hair_over_eyes, [0, 0.2, 0.4, 0.6, 0.8, 1.0], "reviewer", needs_face=True),
    "eyes_closed": Family(eyes_closed, [0, 0.3, 0.5, 0.7, 0.85, 1.0], "reviewer", needs_face=True),
    "mask": Family(face_mask, [0, 0.2, 0.4, 0.6, 0.8, 1.0], "reviewer", needs_face=True),
    "hand": Family(hand_over_mouth, [0, 0.3, 0.5, 0.7, 0.85, 1.0], "reviewer", needs_face=True),
    "hand_across": Family(lambda im, s, face: hand_over_mouth(im, s, face, across=True), [0, 0.3, 0.5, 0.7, 0.85, 1.0],
                          "reviewer", needs_face=True),
    "microphone": Family(microphone, [0, 0.2, 0.4, 0.6, 0.8, 1.0], "reviewer", needs_face=True),
    "border_cut": Family(border_cut, [0, 0.1, 0.2, 0.3, 0.4, 0.5], "reviewer", needs_face=True),
    "top_cut": Family(top_cut, [0, 0.2, 0.4, 0.6, 0.75, 0.9], "reviewer", needs_face=True),
    "side_light": Family(side_light, [0, 0.3, 0.5, 0.7, 0.85, 0.95], "reviewer", needs_face=True),
    "colour_cast": Family(colour_cast, [0, 0.3, 0.6, 0.9, 1.2, 1.6], "reviewer"),
    "colour_cast_green": Family(lambda im, s, face=None: colour_cast(im, s, hue=(0.45, 1.0, 0.5)),
                                [0, 0.3, 0.6, 0.9, 1.2, 1.6], "reviewer"),
    "desaturate": Family(desaturate, [0, 0.3, 0.5, 0.7, 0.85, 1.0], "reviewer"),
    "oversaturate": Family(oversaturate, [0, 0.5, 1.0, 1.6, 2.4, 3.5], "reviewer"),
}

# the families the components were tuned on; every other one is held out
TUNING = ("blur", "jpeg", "noise", "downscale", "underexposure", "overexposure", "rotation", "large_blur",
          "mosaic", "posterize", "interlace", "webp", "sunglasses", "mask", "eyes_closed", "border_cut",
          "colour_cast", "side_light",
          "hand",  # mouth_visible was built after seeing faceqc fail on it: no longer held out
          "vignette")  # so was the vignetting component (0.4.0); vignette_natural stays held out


def apply(name: str, img: np.ndarray, severity: float, face: Optional[Face]) -> np.ndarray:
    fam = FAMILIES[name]
    return np.ascontiguousarray(fam.op(img, severity, face) if fam.needs_face else fam.op(img, severity))
