"""No-reference image measures used by the classical IQA backend.

Every function takes pixels and returns raw numbers; mapping them to 0–100 is fusion's job.
They are grounded in image statistics rather than fitted to one degradation operator:

- noise: Immerkær's fast noise estimate (1996), robust low percentile over patches;
- compression: 8x8 blockiness, offset-agnostic, on un-resampled pixels;
- sharpness: fine-band energy of the noise-suppressed face over its coarse-scale contrast;
- exposure: clipped-pixel fractions, mean luminance, dynamic range of the face region.
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def immerkaer_sigma(gray: np.ndarray) -> float:
    """Noise standard deviation (grey levels) of a whole patch, Immerkær's estimate."""
    h, w = gray.shape
    if h < 3 or w < 3:
        return float("nan")
    conv = cv2.filter2D(gray, -1, _IMMERKAER, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2)))


def noise_level(gray: np.ndarray, block: int = 16, percentile: float = 10.0) -> float:
    """Robust noise sigma: a low percentile of per-block estimates, so that edges and texture
    (which inflate the estimate) do not count as noise."""
    h, w = gray.shape
    if h < block or w < block:
        return immerkaer_sigma(gray)
    conv = np.abs(cv2.filter2D(gray, -1, _IMMERKAER, borderType=cv2.BORDER_REFLECT))
    hb, wb = h // block, w // block
    blocks = conv[: hb * block, : wb * block].reshape(hb, block, wb, block).mean(axis=(1, 3))
    sig = math.sqrt(math.pi / 2) / 6.0 * blocks
    return float(np.percentile(sig, percentile))


def blockiness(gray: np.ndarray) -> float:
    """JPEG-style 8x8 blockiness: mean absolute neighbour difference on the strongest of the
    8 column (and row) phases, over the median phase.  ~1.0 for natural pixels; a compressed
    image's block boundaries lift one phase.  Offset-agnostic, so the grid may start anywhere
    (EXIF rotation, crops); resampling destroys the grid, so give it un-resampled pixels."""
    h, w = gray.shape
    if h < 32 or w < 32:
        return float("nan")
    vals = []
    for d in (np.abs(np.diff(gray, axis=1)).mean(axis=0), np.abs(np.diff(gray, axis=0)).mean(axis=1)):
        n = (len(d) // 8) * 8
        phases = d[:n].reshape(-1, 8).mean(axis=0)
        med = float(np.median(phases))
        vals.append(float(phases.max()) / max(med, 0.5))
    return float(np.mean(vals))


def face_mask(size: int, margin: float) -> np.ndarray:
    """Boolean mask of the inner face (brows to chin) in an aligned crop (see
    geometry.scaled_template); the 112 frame's inner face is x 26..86, y 36..104."""
    k = size / 112.0 / margin
    x0, x1 = (26 - 56) * k + size / 2, (86 - 56) * k + size / 2
    y0, y1 = (36 - 56) * k + size / 2, (104 - 56) * k + size / 2
    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0


def _white_noise_highpass_gain() -> float:
    """E|x - G_1(x)| per unit sigma of white Gaussian noise x."""
    d = np.zeros((41, 41), np.float32)
    d[20, 20] = 1.0
    hp = d - cv2.GaussianBlur(d, (0, 0), 1.0)
    return float(np.sqrt((hp ** 2).sum()) * math.sqrt(2 / math.pi))


_HP_GAIN = _white_noise_highpass_gain()


def sharpness(gray: np.ndarray, mask: np.ndarray, noise_sigma: float) -> float:
    """Fine-band energy of the face, net of noise, over its coarse-scale contrast.

    fine = mean |g - G_1(g)| (detail at 1-2 px), structure = std of G_2(g) (the face's shading
    and features), both over the face mask.  Exposure and contrast changes scale both alike;
    blur removes fine detail first.  Noise adds fine-band energy that is not detail: it is
    suppressed with non-local means (strength 2x the measured noise), and what noise remains
    (its median block estimate) is subtracted at white noise's high-pass gain."""
    g = gray
    if noise_sigma > 1.0:
        g8 = np.clip(gray, 0, 255).astype(np.uint8)
        g = cv2.fastNlMeansDenoising(g8, None, h=float(2.0 * noise_sigma), templateWindowSize=5,
                                     searchWindowSize=11).astype(np.float32)
    b1 = cv2.GaussianBlur(g, (0, 0), 1.0)
    b2 = cv2.GaussianBlur(g, (0, 0), 2.0)
    fine = np.abs(g - b1)[mask].mean()
    residual = noise_level(g, percentile=50.0)
    structure = b2[mask].std()
    return float(max(0.0, fine - _HP_GAIN * residual) / max(structure, 2.0))


def exposure(rgb: np.ndarray, mask: np.ndarray) -> dict:
    """Luminance statistics of the face region (0..1 scale, fractions of pixels)."""
    y = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[mask].astype(np.float32)
    if y.size == 0:
        return {"dark_clip": float("nan"), "bright_clip": float("nan"), "brightness": float("nan"),
                "contrast": float("nan")}
    p5, p95 = np.percentile(y, [5, 95])
    return {
        "dark_clip": float((y <= 12).mean()),
        "bright_clip": float((y >= 243).mean()),
        "brightness": float(y.mean() / 255.0),
        "contrast": float((p95 - p5) / 255.0),
    }


# ------------------------------------------------------------------------------ detail and grids
def blur_sigma(gray: np.ndarray, mask: Optional[np.ndarray] = None, reblur: float = 2.0, pre: float = 0.6,
               top: float = 0.1) -> float:
    """Blur of the image's strongest edges, as the standard deviation (in pixels) of an equivalent
    Gaussian: the re-blur gradient ratio of Zhuo & Sim (2011, "Defocus map estimation from a
    single image").  An edge blurred by sigma keeps a share sigma / sqrt(sigma^2 + s0^2) of its
    gradient when blurred again by s0, so the ratio R of the gradients before and after gives
    sigma = s0 / sqrt(R^2 - 1).  Taken per edge orientation (four bins) at the strongest tenth of
    each orientation's edge pixels in ``mask``: the median of each bin, and the blurriest bin —
    motion blur softens only the edges across its direction, defocus and upscaling soften all.  A small
    pre-blur ``pre`` steadies the derivatives and is taken out again."""
    g = gray.astype(np.float32)
    b0 = cv2.GaussianBlur(g, (0, 0), pre)
    b1 = cv2.GaussianBlur(g, (0, 0), math.hypot(pre, reblur))
    gx0, gy0 = cv2.Sobel(b0, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(b0, cv2.CV_32F, 0, 1, ksize=3)
    gx1, gy1 = cv2.Sobel(b1, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(b1, cv2.CV_32F, 0, 1, ksize=3)
    m0, m1 = np.hypot(gx0, gy0), np.hypot(gx1, gy1)
    valid = (np.ones(g.shape, bool) if mask is None else mask) & (m1 > 1e-6)
    if valid.sum() < 64:
        return float("nan")
    orient = (np.floor(np.mod(np.arctan2(gy0, gx0), np.pi) / (np.pi / 4)).astype(np.int8)) % 4
    per_bin = []
    for b in range(4):
        sel = valid & (orient == b)
        if sel.sum() < 64:
            continue
        # this orientation's own strongest edges: those across a motion blur are blurred too
        v0 = m0[sel]
        keep = v0 >= max(float(np.quantile(v0, 1 - top)), 1e-3)
        if keep.sum() < 16:
            continue
        r = v0[keep] / m1[sel][keep]
        total = np.where(r > 1.0001, reblur / np.sqrt(np.maximum(r * r - 1, 1e-8)), 50.0)
        per_bin.append(float(np.median(np.sqrt(np.maximum(total * total - pre * pre, 0.0)))))
    return max(per_bin) if per_bin else float("nan")


def grid_blockiness(gray: np.ndarray, periods=range(2, 33)) -> float:
    """Blocks on a grid of any period (mosaic / pixelation, macroblocks): for each period p, the
    mean absolute neighbour difference on the strongest of the p column (and row) phases over the
    median phase, normalised by what random content gives at that period; the largest over
    periods.  ~1 for natural pixels, large when every step lies on one grid.  Un-resampled pixels
    only (resampling blurs the steps)."""
    h, w = gray.shape
    if h < 32 or w < 32:
        return float("nan")
    best = 1.0
    profiles = (np.abs(np.diff(gray, axis=1)).mean(axis=0), np.abs(np.diff(gray, axis=0)).mean(axis=1))
    for p in periods:
        vals = []
        for d in profiles:
            n = (len(d) // p) * p
            if n < 3 * p:
                break
            phases = d[:n].reshape(-1, p).mean(axis=0)
            vals.append(float(phases.max()) / max(float(np.median(phases)), 0.25))
        if len(vals) == 2:
            # the max of p phase means of random content exceeds their median by ~ sqrt(2 ln p) sd
            spread = 1.0 + 0.35 * math.sqrt(2 * math.log(p)) * math.sqrt(p / max(len(profiles[0]), 1))
            best = max(best, float(np.mean(vals)) / spread)
    return best


def banding(rgb: np.ndarray) -> float:
    """Posterisation: the share of empty histogram levels between the 2nd and 98th percentile of
    each channel, the worst channel (natural 8-bit photos fill nearly every level; banded ones
    leave combs).  NaN for too few pixels to tell."""
    px = rgb.reshape(-1, rgb.shape[-1]) if rgb.ndim == 3 else rgb.reshape(-1, 1)
    if len(px) < 2048:
        return float("nan")
    worst = 0.0
    for c in range(px.shape[1]):
        v = px[:, c]
        lo, hi = np.percentile(v, [2, 98])
        lo, hi = int(lo), int(hi)
        if hi - lo < 24:
            continue
        counts = np.bincount(v, minlength=256)[lo:hi + 1]
        expected_empty = math.exp(-len(v) / (hi - lo + 1))  # random 8-bit content of this size
        worst = max(worst, float((counts == 0).mean()) - expected_empty)
    return worst


def combing(gray: np.ndarray) -> float:
    """Interlacing: energy at the vertical Nyquist frequency (rows alternating between two
    fields) over the same at the horizontal one; ~1 for natural pixels, large for combed frames."""
    g = gray.astype(np.float32)
    if g.shape[0] < 8 or g.shape[1] < 8:
        return float("nan")
    dy = np.abs(g[1:-1, :] - 0.5 * (g[:-2, :] + g[2:, :])).mean()
    dx = np.abs(g[:, 1:-1] - 0.5 * (g[:, :-2] + g[:, 2:])).mean()
    return float(dy / max(dx, 0.25))


def chroma_noise(rgb: np.ndarray) -> float:
    """Colour noise: Immerkær's noise sigma of the two chroma planes (YCrCb), the larger."""
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    return max(noise_level(ycc[..., 1]), noise_level(ycc[..., 2]))


# sRGB to linear luminance (Rec. 709 weights on gamma-2.2 decoded channels)
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)


def vignetting(rgb: np.ndarray, sectors: int = 8, ring=(0.4, 0.98), inner: float = 0.2, floor: float = 4e-3,
               sigma: float = 1.5, min_pixels: int = 30) -> float:
    """Darkening of the frame towards its edges (lens vignetting, a darkened-corners filter), from
    the whole-image thumbnail: the radial derivative of log linear luminance, per unit of half the
    image diagonal, its median over the lit pixels of each of ``sectors`` directions around the
    image centre in the ``ring`` of radii, and the falloff read as minus the 75th percentile of
    those medians.  Lit: above ``floor`` and beyond the blur's reach of any pixel that is not, so
    black has no slope to read and the edge of a black area (a letterboxed frame's bars, a studio's
    black backdrop behind a lit subject) is not read as a steep fall.  A direction with no lit pixel
    in the ring (a fade to black that ends inside it) is read from ``inner`` outwards instead:
    where its light goes.

    Vignetting multiplies every pixel at one radius by the same gain, so the log luminance of
    everything in the ring, flat or textured, slopes down as the radius grows, in every direction
    (Zheng et al., "Single-image vignetting correction using radial gradient symmetry", CVPR
    2008: natural images' radial gradients are symmetric).  Content does not: a dark background or
    a bright sky moves the median of a few directions, edges are outliers to the median, and the
    upper quartile asks most directions to fall.  Untouched photos read -4.5 to 1.7 (the ones
    tried); a one-stop fall to the corners (gain 2^-ρ², ρ the radius over half the diagonal) adds
    about 1 to a photo's own reading, two stops about 2; black corners 4 to 12 on the photos
    tried (lowest where a wide frame's whole sides turn black).  NaN when too few directions have
    lit pixels to judge (a tiny or black image)."""
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 16:
        return float("nan")
    y0 = (rgb.astype(np.float32) / 255.0) ** 2.2 @ _LUMA
    reach = int(math.ceil(3 * sigma))
    near_black = cv2.dilate((y0 <= floor).astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) > 0
    y = cv2.GaussianBlur(y0, (0, 0), sigma)
    ly = np.log(y + 0.5 * floor)
    gx = cv2.Sobel(ly, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(ly, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    h, w = y.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - (w - 1) / 2.0, yy - (h - 1) / 2.0
    r = np.hypot(dx, dy)
    half_diag = math.hypot(w, h) / 2.0
    radial = (gx * dx + gy * dy) / np.maximum(r, 1e-6) * half_diag
    rho = r / half_diag
    sector = ((np.arctan2(dy, dx) + math.pi) / (2 * math.pi) * sectors).astype(np.int32) % sectors
    lit = ~near_black
    bands = ((rho > ring[0]) & (rho < ring[1]) & lit, (rho > inner) & (rho < ring[1]) & lit)
    medians = []
    for s in range(sectors):
        for band in bands:
            px = radial[band & (sector == s)]
            if px.size >= min_pixels:
                medians.append(float(np.median(px)))
                break
    if len(medians) < sectors - 2:
        return float("nan")
    return float(-np.percentile(medians, 75))
