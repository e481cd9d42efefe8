"""Test videos made at test time from the packaged photos, encoded with PyAV (nothing committed).

Every clip is small (320x240 or 240x320, 10 frames per second, a few seconds): the tests sample
them at 2 frames per second.  Scenes are camera moves over a still photo — a window that pans and
zooms across it — so that faces move, grow and shrink as in footage.
"""

from __future__ import annotations

import fractions
import os
from typing import Iterable, List, Optional, Sequence

import cv2
import numpy as np

from pipeline.tools import samples

W, H, FPS = 320, 240, 10


def window(img: np.ndarray, cx: float, cy: float, width: float, size=(W, H)) -> np.ndarray:
    """The view of a camera centred on (cx, cy) showing ``width`` source pixels across."""
    w, h = size
    s = w / width
    m = np.float32([[s, 0, w / 2 - s * cx], [0, s, h / 2 - s * cy]])
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def move(img: np.ndarray, n: int, start: Sequence[float], end: Sequence[float], size=(W, H)) -> List[np.ndarray]:
    """n frames of a camera moving from (cx, cy, width) ``start`` to ``end`` (eased)."""
    out = []
    for i in range(n):
        a = 0.5 - 0.5 * np.cos(np.pi * i / max(1, n - 1))
        cx, cy, wd = (float(s + (e - s) * a) for s, e in zip(start, end))
        out.append(window(img, cx, cy, wd, size))
    return out


def write_video(path: str, frames: Iterable[np.ndarray], fps: int = FPS, codec: str = "libx264",
                rotation: Optional[int] = None, times: Optional[Sequence[float]] = None) -> str:
    """Encode RGB frames; ``rotation``: display-matrix rotation (degrees counter-clockwise) that
    players (and faceqc) apply; ``times``: presentation times in seconds (variable frame rate)."""
    import av

    frames = list(frames)
    h, w = frames[0].shape[:2]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(path, "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            s.options = {"crf": "18", "preset": "veryfast"}
        if times is not None:
            s.codec_context.time_base = fractions.Fraction(1, 1000)
            s.time_base = fractions.Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, f in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if times is not None:
                fr.pts = int(round(times[i] * 1000))
                fr.time_base = fractions.Fraction(1, 1000)
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_audio(path: str, seconds: float = 2.0) -> str:
    import av

    with av.open(path, "w") as c:
        s = c.add_stream("aac", rate=16000)
        t = np.arange(int(16000 * seconds)) / 16000
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for i in range(0, len(tone), 1024):
            fr = av.AudioFrame.from_ndarray(tone[None, i:i + 1024], format="fltp", layout="mono")
            fr.sample_rate = 16000
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


# the packaged photos: the astronaut (512 px, face ~ (260, 130)), a second person from t1.jpg
def astronaut() -> np.ndarray:
    return samples.astronaut()


def other_person() -> np.ndarray:
    return samples.t1_faces()[2]


def blurred(frames: List[np.ndarray], sigma: float) -> List[np.ndarray]:
    return [cv2.GaussianBlur(f, (0, 0), sigma) for f in frames]


def paste(frame: np.ndarray, sprite: np.ndarray, x: int, y: int) -> np.ndarray:
    """``sprite`` pasted with its top-left corner at (x, y), clipped to the frame."""
    out = frame.copy()
    h, w = sprite.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(out.shape[1], x + w), min(out.shape[0], y + h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = sprite[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


# ------------------------------------------------------------------------------ the scenes
def cut_scene() -> List[np.ndarray]:
    """4 s of the astronaut (a pan with a zoom in), a cut, 2 s of another person (a slow pan)."""
    a = move(astronaut(), 40, (250, 150, 330), (268, 155, 290))
    o = other_person()
    s = o.shape[0]
    b = move(o, 20, (s * 0.48, s * 0.5, s * 0.85), (s * 0.52, s * 0.5, s * 0.8))
    return a + b


def blur_scene() -> List[np.ndarray]:
    """8 s of the astronaut, a slow pan; from 3 s to 5 s heavily blurred (a focus pull)."""
    frames = move(astronaut(), 80, (245, 150, 300), (275, 150, 300))
    return frames[:30] + blurred(frames[30:50], 3.0) + frames[50:]


def enter_scene() -> List[np.ndarray]:
    """2 s without a face (the camera on the astronaut's suit), a tilt up to her face, and from
    5 s a second face sliding in from the right."""
    ast = astronaut()
    down = move(ast, 20, (200, 420, 300), (200, 420, 300))
    up = move(ast, 20, (200, 420, 300), (230, 160, 380))
    hold = move(ast, 40, (230, 160, 380), (232, 160, 380))
    o = cv2.resize(other_person(), (150, 150), interpolation=cv2.INTER_AREA)
    for i in range(10, 40):  # from 5 s: slides in from the right edge in 1.5 s and stays
        x = int(W - min(1.0, (i - 10) / 15) * 145)
        hold[i] = paste(hold[i], o, x, 40)
    return down + up + hold


def rotated_scene() -> List[np.ndarray]:
    """3 s of the astronaut framed upright in portrait (240x320), stored turned a quarter
    clockwise (320x240) as phones store it: a rotation of 90° in the display matrix turns it back."""
    upright = move(astronaut(), 30, (256, 200, 360), (262, 200, 360), size=(240, 320))
    return [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]


def build_clips(root: str) -> dict:
    """Every test clip in ``root``: {role: path}."""
    out = {
        "cut": write_video(os.path.join(root, "cut.mp4"), cut_scene()),
        "blur": write_video(os.path.join(root, "blur.mkv"), blur_scene()),
        "enter": write_video(os.path.join(root, "enter.webm"), enter_scene(), codec="libvpx-vp9"),
        "rotated": write_video(os.path.join(root, "rotated.mov"), rotated_scene(), rotation=90),
    }
    return out


def truncate(path: str, dst: str, keep: float = 0.5) -> str:
    with open(path, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return dst


def patch_codec(path: str, dst: str) -> str:
    """A Matroska file whose codec ID names a codec no FFmpeg knows (same length, so the file
    stays well-formed)."""
    with open(path, "rb") as f:
        data = f.read()
    assert b"V_MPEG4/ISO/AVC" in data
    with open(dst, "wb") as f:
        f.write(data.replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/QQQ"))
    return dst


def small_scene(n: int = 20) -> List[np.ndarray]:
    return move(astronaut(), n, (250, 150, 320), (262, 150, 320))



