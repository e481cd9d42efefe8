"""What one 1 MP image costs on one core, stage by stage, and what each face measure costs.

    python -m benchmarks.cost [-n 40] [--profile offline]

Scores ``n`` JPEGs of 1152x864 px (the public-domain astronaut, scaled, shifted and degraded
in turn, so that the face is found at several sizes) in this process with one thread per library,
timing each stage's process() over every batch, then each measure of the primary face separately
on the same inputs (ms per image).  Run from the repository root.
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np


def make_jpegs(n: int, side=(1152, 864), seed=0) -> list:
    import cv2
    from PIL import Image

    from pipeline.tools import samples

    rng = np.random.default_rng(seed)
    ast = samples.astronaut()
    out = []
    for i in range(n):
        s = rng.uniform(0.9, 1.6)
        img = cv2.resize(ast, (int(512 * s), int(512 * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        canvas = np.full((side[1], side[0], 3), 128, np.uint8)
        h, w = min(img.shape[0], side[1]), min(img.shape[1], side[0])
        y, x = rng.integers(0, side[1] - h + 1), rng.integers(0, side[0] - w + 1)
        canvas[y:y + h, x:x + w] = img[:h, :w]
        if i % 2:
            fam = list(samples.FAMILIES)[i // 2 % len(samples.FAMILIES)]
            canvas = samples.degrade(canvas, fam, samples.FAMILIES[fam][1][2])
        buf = io.BytesIO()
        Image.fromarray(canvas).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import tempfile

    import cv2
    from threadpoolctl import threadpool_limits

    from pipeline.config import load_config
    from pipeline.executor import build_stages

    cv2.setNumThreads(1)
    cfg = load_config(profile=args.profile)
    stages = build_stages(cfg)
    for st in stages:
        st.setup()
    jpegs = make_jpegs(args.n)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, j in enumerate(jpegs):
            paths.append(os.path.join(d, f"{i}.jpg"))
            with open(paths[-1], "wb") as f:
                f.write(j)
        times = {st.name: 0.0 for st in stages}
        with threadpool_limits(1):
            for i in range(0, len(paths), args.batch):
                uris = paths[i:i + args.batch]
                batch = {"uri": np.array(uris, dtype=object), "size": np.full(len(uris), -1, np.int64),
                         "mtime": np.full(len(uris), np.nan)}
                for st in stages:
                    t = time.process_time()
                    batch = st.process(batch)
                    times[st.name] += time.process_time() - t
    ms_per = {k: round(1000 * v / len(paths), 1) for k, v in times.items()}
    total = round(sum(ms_per.values()), 1)
    print(f"profile {cfg.profile}, {len(paths)} JPEGs of 1152x864 px, CPU ms per image on one core:")
    for k, v in ms_per.items():
        print(f"  {k:8s} {v:7.1f}")
    print(f"  {'total':8s} {total:7.1f}")
    res = {"profile": cfg.profile, "n": len(paths), "stage_ms": ms_per, "total_ms": total}
    measures = component_costs(cfg, jpegs[: min(len(jpegs), 16)])
    if measures:
        print("face measures of the primary face, CPU ms per image:")
        for k, v in measures.items():
            print(f"  {k:24s} {v:6.2f}")
        res["measure_ms"] = measures
    print("COST", res)
    return res


def component_costs(cfg, jpegs: list) -> dict:
    """Each measure of the primary face timed alone on the inputs the stages give it."""
    try:
        from pipeline import regions
    except ImportError:  # a version without the region checks
        return {}
    from pipeline import measures as ms
    from pipeline.images import decode_image
    from pipeline.stages.base import primary_index
    from pipeline.stages.detect import DetectStage

    det = DetectStage(cfg)
    det.setup()
    items = []
    for j in jpegs:
        img = decode_image(j, 1 << 40)
        b = {"uri": np.array(["x"], object), "status": np.array(["ok"], object), "error": np.array([""], object),
             "image": np.empty(1, object)}
        b["image"][0] = img
        o = det.process(b)
        if not o["num_faces"][0]:
            continue
        items.append((o, img))
    if not items:
        return {}
    out: dict = {}

    def clock(name, fn):
        t = time.process_time()
        for o, img in items:
            fn(o, img)
        out[name] = round(1000 * (time.process_time() - t) / len(items), 2)

    def target(o, img):
        p = primary_index(o["face_bbox"][0], o["face_det_score"][0])
        from pipeline.stages.detect import target_crop

        target_crop(img, o["face_landmarks"][0][p], cfg.detect.target_size)

    def native(o):
        return regions.native(o["face_crop_target"][0], float(o["face_target_scale"][0]))

    def reg(o):
        img = native(o)
        k = img.shape[0] / o["face_crop_target"][0].shape[0]
        return img, regions.Regions.of(img.shape, o["face_target_points"][0] * k)

    def patch(o):
        s = int(o["face_patch_size"][0][0])
        return o["face_patch"][0][0][:s, :s]

    clock("target crop (FFHQ, 512)", target)
    clock("regions (masks)", lambda o, img: reg(o))
    clock("detail (blur sigma)", lambda o, img: ms.blur_sigma(ms.to_gray(reg(o)[0]), reg(o)[1].face))
    clock("pixelation (any grid)", lambda o, img: ms.grid_blockiness(ms.to_gray(patch(o))))
    clock("banding", lambda o, img: ms.banding(patch(o)))
    clock("interlacing", lambda o, img: ms.combing(ms.to_gray(patch(o))))
    clock("Lab conversion", lambda o, img: regions.lab(reg(o)[0]))
    if hasattr(regions, "lip_line"):
        labs = {}
        for o, _ in items:
            img, rg = reg(o)
            labs[id(o)] = (regions.lab(img), rg)
        clock("mouth visible (lip line, Lab given)", lambda o, img: regions.lip_line(*labs[id(o)]))
    if hasattr(ms, "vignetting"):
        clock("vignetting (whole-image thumbnail)", lambda o, img: ms.vignetting(o["thumb"][0]))
    clock("eyes, lower face, colour, light, haze, colour noise",
          lambda o, img: regions.checks(o["face_crop_target"][0], o["face_target_points"][0],
                                        float(o["face_target_scale"][0])))
    return out


if __name__ == "__main__":
    main()
