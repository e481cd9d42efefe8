"""Clips against images, and memory against clip length (README "Video clips").

    python -m benchmarks.video_bench [--profile offline-fast] [--long 600] [--short 30] [--images 120]

Makes 640x360 clips at 25 fps from the packaged astronaut photo (a camera drifting, zooming and
cutting between framings; a blurred stretch), ``--short`` and ``--long`` seconds long, and
``--images`` JPEG stills of the same frames; scores each through the Ray pipeline (``faceqc
score``) and reports sampled frames/s against images/s, and the peak memory (PSS of the driver and
every Ray process, as ``faceqc bench``) of the long clip against the short one.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import cv2
import numpy as np


def frames(seconds: float, fps: int = 25, size=(640, 360)):
    """Synthetic footage: the astronaut under a slowly drifting, zooming camera; a cut to another
    framing every 20 s; a blurred stretch of 2 s every 30 s.  Generated frame by frame."""
    from pipeline.tools import samples
    from tests.support.videos import window

    ast = samples.astronaut()
    n = int(seconds * fps)
    for i in range(n):
        t = i / fps
        shot = int(t // 20)
        cx = 250 + 20 * np.sin(2 * np.pi * t / 7.0) + (15 if shot % 2 else 0)
        cy = 160 + 10 * np.sin(2 * np.pi * t / 5.0)
        wd = (420 if shot % 2 else 560) + 40 * np.sin(2 * np.pi * t / 11.0)
        f = window(ast, cx, cy, wd, size)
        if (t % 30) >= 28:
            f = cv2.GaussianBlur(f, (0, 0), 4)
        yield f


def write_clip(path: str, seconds: float) -> str:
    import av

    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.mp4"
    with av.open(tmp, "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "23"}
        for f in frames(seconds):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    os.replace(tmp, path)
    return path


def write_images(folder: str, n: int) -> str:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i, f in enumerate(frames(n / 2.0, fps=2)):  # the frames the clip sampler would take
        p = os.path.join(folder, f"frame{i:05d}.jpg")
        if not os.path.exists(p):
            Image.fromarray(f).save(p, quality=92)
    return folder


def score(src: str, out: str, cfg) -> dict:
    from pipeline.run import run
    from pipeline.tools.bench import MemoryTrace

    with MemoryTrace() as mem:
        s = run([src], out, cfg, overwrite=True, progress=False)
    v = s.get("video") or {}
    return {"rows": s["rows"], "seconds": s["seconds"]["pipeline"], "images_per_s": s["images_per_second"],
            "frames": v.get("frames_scored"), "frames_per_s": v.get("frames_per_second"),
            "peak_pss_mb": round(mem.peak / 2**20, 1), "quarter_peaks_pss_mb": mem.report().get("quarter_peaks_pss_mb"),
            "status": s["status_counts"], "verdict": s["verdict_counts"]}


def main(argv=None) -> dict:
    from pipeline.config import load_config
    from pipeline.executor import init_ray

    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="offline-fast")
    ap.add_argument("--long", type=float, default=600.0)
    ap.add_argument("--short", type=float, default=30.0)
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--workdir", default="/tmp/faceqc-video-bench")
    a = ap.parse_args(argv)
    cfg = load_config(profile=a.profile)
    init_ray(None)
    res = {"profile": a.profile, "cpus": os.cpu_count()}
    t = time.time()
    short = write_clip(os.path.join(a.workdir, f"short-{a.short:g}s", "clip.mp4"), a.short)
    long_ = write_clip(os.path.join(a.workdir, f"long-{a.long:g}s", "clip.mp4"), a.long)
    imgs = write_images(os.path.join(a.workdir, f"images-{a.images}"), a.images)
    print(f"data ready in {time.time() - t:.0f} s")
    res["images"] = score(imgs, os.path.join(a.workdir, "out-images"), cfg)
    res["short"] = score(short, os.path.join(a.workdir, "out-short"), cfg)
    res["long"] = score(long_, os.path.join(a.workdir, "out-long"), cfg)
    res["long_over_short_memory"] = round(res["long"]["peak_pss_mb"] / res["short"]["peak_pss_mb"], 3)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
