"""`python -m benchmarks.pose_accuracy`: head-pose error per angle band, on real faces re-posed to
known angles, for the 68-point fit (pipeline.pose3d) and the 5-point closed form
(pipeline.geometry.head_pose_dlib5), and what each costs per face.

The packaged frontal photos are texture-mapped onto a smooth 3-D head (tests/support/repose.py:
a surface that is not the estimator's model), turned to a grid of (yaw, pitch) and rendered; the
offline detector (dlib HOG with its retries, and its mirror-averaged 5 points) and dlib's 68-point
model run on each render as the pipeline would run them (the known box when the detector misses
the face).  Errors are relative to each estimator's own reading of the unturned photo (the
photos' own pose is a few degrees off frontal and not known exactly); bands are by |applied
angle|: 0-15, 15-30, 30-45 (yaw: -45..45 step 7.5; pitch: -30..30 step 15, all combinations).
The row "ideal points" feeds the 68-point fit the source's landmarks carried exactly by the
rendered rotation: the error of the 3-D model alone, without landmark error.

Run from the repository root (it uses tests/support); ~3 minutes on one core.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--yaw-step", type=float, default=7.5)
    ap.add_argument("--pitch-step", type=float, default=15.0)
    ap.add_argument("--all-sources", action="store_true",
                    help="also t1-face3 and Tom Hanks (turned ~15-25° already: their +-45° renders leave the range)")
    ap.add_argument("--reps", type=int, default=20, help="timing repetitions per face")
    a = ap.parse_args(argv)

    from pipeline import pose3d
    from pipeline.geometry import head_pose_dlib5
    from tests.support import repose as rp

    yaws = np.arange(-45, 45 + 1e-9, a.yaw_step)
    pitches = np.arange(-30, 30 + 1e-9, a.pitch_step)
    poses = [(float(y), float(p)) for y in yaws for p in pitches]
    observer = rp.Observer()
    sources = tuple(rp.frontal_sources()) if a.all_sources else rp.NEAR_FRONTAL
    t0 = time.perf_counter()
    cases = rp.sweep(poses, sources, observer)
    render_s = time.perf_counter() - t0

    methods = {
        "68-point, weak-perspective fit (default)": lambda c: pose3d.head_pose_68(c.obs.points68),
        "68-point, cv2.solvePnP": lambda c: pose3d.head_pose_68(c.obs.points68, c.obs.size, "pnp"),
        "5-point closed form (today)": lambda c: geometry5(head_pose_dlib5, c.obs.points5),
        "68-point fit on ideal points": lambda c: pose3d.head_pose_68(c.ideal68),
    }
    n_turned = sum(1 for c in cases if (c.yaw, c.pitch) != (0, 0))
    n_det = sum(1 for c in cases if (c.yaw, c.pitch) != (0, 0) and c.obs.detected)
    print(f"{len(sources)} sources ({', '.join(sources)}), {n_turned} renders; the detector found the face "
          f"on {n_det} ({100 * n_det / n_turned:.0f} %), the known box stood in on the rest; "
          f"{render_s:.0f} s to render and observe\n")
    print("mean |error| in degrees (renders), by |applied angle|:\n")
    print("| method | yaw 0-15 | yaw 15-30 | yaw 30-45 | pitch 0-15 | pitch 15-30 | pitch 30-45 |")
    print("|---|---|---|---|---|---|---|")
    for name, fn in methods.items():
        t = rp.band_table(rp.errors(cases, fn))
        cells = [fmt(m, nan) for m, _, nan in t["yaw"]] + [fmt(m, nan) for m, _, nan in t["pitch"]]
        print(f"| {name} | " + " | ".join(cells) + " |")
    first = rp.band_table(rp.errors(cases, next(iter(methods.values()))))
    print("\n(renders per band — yaw:", ", ".join(str(n + k) for _, n, k in first["yaw"]),
          "; pitch:", ", ".join(str(n + k) for _, n, k in first["pitch"]), ")")

    seen = [c for c in cases if c.obs.detected or (c.yaw, c.pitch) == (0, 0)]
    print("\nthe same, only the renders where the detector found the face (what the pipeline would score):\n")
    print("| method | yaw 0-15 | yaw 15-30 | yaw 30-45 | pitch 0-15 | pitch 15-30 | pitch 30-45 |")
    print("|---|---|---|---|---|---|---|")
    for name, fn in list(methods.items())[:3]:
        t = rp.band_table(rp.errors(seen, fn))
        print(f"| {name} | " + " | ".join(fmt(m, nan) for m, _, nan in t["yaw"] + t["pitch"]) + " |")

    # bias: the signed error, turned towards the applied direction (< 0: under-read, towards frontal)
    print("\nbias (mean signed error towards the applied direction; < 0 reads the face as more frontal than it is):")
    for name, fn in list(methods.items())[:3]:
        errs = rp.errors(cases, fn)
        parts = []
        for axis, k, vals in (("yaw", 0, [15.0, 30.0, 45.0]), ("pitch", 1, [15.0, 30.0])):
            for v in vals:
                e = [err[k] * math.copysign(1, (y, p)[k]) for (_, y, p), err in errs.items()
                     if abs((y, p)[k]) == v and abs(y) <= 45]
                if np.isfinite(e).any():
                    parts.append(f"{axis} {v:g}: {np.nanmean(e):+.1f}")
        print(f"  {name}: " + ", ".join(parts))

    # per source: the yaw sweep at pitch 0 as each method reads it
    print("\nyaw read along the sweep at pitch 0 (applied:", ", ".join(f"{y:g}" for y in yaws), ")")
    for src in sources:
        by = {(c.yaw, c.pitch): c for c in cases if c.source == src}
        for name in list(methods)[:3:2]:
            fn = methods[name]
            vals = [fn(by[(float(y), 0.0)])[0] if (float(y), 0.0) in by else math.nan for y in yaws]
            print(f"  {src:10s} {name[:24]:24s} " + " ".join(f"{v:6.1f}" for v in vals))

    # cost per face, on the sources (landmarks + pose; detection not included)
    imgs = rp.frontal_sources()
    obs = {s: observer(imgs[s]) for s in sources}
    import cv2
    import dlib

    def t68(s):
        o = obs[s]
        t = time.perf_counter()
        p = pose3d.landmarks68(imgs[s], o.box, observer.sp68)
        t1 = time.perf_counter()
        pose3d.fit_pose_68(p)
        t2 = time.perf_counter()
        pose3d.fit_pose_68(p, o.size, "pnp")
        return t1 - t, t2 - t1, time.perf_counter() - t2

    def t5(s):
        o = obs[s]
        img = imgs[s]
        t = time.perf_counter()
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        rect = dlib.rectangle(*[int(round(v)) for v in o.box])
        p5 = observer.det._points(gray, rect, np.ascontiguousarray(gray[:, ::-1]))
        t1 = time.perf_counter()
        head_pose_dlib5(p5)
        return t1 - t, time.perf_counter() - t1

    def tdet(s):
        t = time.perf_counter()
        observer.det.detect(imgs[s])
        return time.perf_counter() - t

    r68 = np.median([[t68(s) for s in sources] for _ in range(a.reps)], axis=0).mean(0) * 1e3
    r5 = np.median([[t5(s) for s in sources] for _ in range(a.reps)], axis=0).mean(0) * 1e3
    rd = np.median([[tdet(s) for s in sources] for _ in range(max(3, a.reps // 4))], axis=0).mean() * 1e3
    print("\ncost per face (ms, one core, median over repetitions, mean over the sources):")
    print(f"  68 landmarks, mirror-averaged (2 dlib passes on a crop): {r68[0]:.2f}; weak-perspective fit: "
          f"{r68[1]:.3f}; solvePnP fit: {r68[2]:.3f}")
    print(f"  5 landmarks, mirror-averaged (as FaceDetector): {r5[0]:.2f}; closed form: {r5[1]:.3f}")
    print(f"  (for scale: the whole offline detection, HOG + 5 points, per image: {rd:.1f})")


def geometry5(fn, pts):
    if pts is None or not np.isfinite(pts).all():
        return (math.nan,) * 3
    return fn(pts)


def fmt(m, nan):
    s = "—" if not math.isfinite(m) else f"{m:.1f}"
    return s + (f" ({nan} NaN)" if nan else "")


if __name__ == "__main__":
    main()
