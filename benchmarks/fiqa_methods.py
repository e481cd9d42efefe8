"""Cost per face of the face-quality methods that run beside the primary one, on this machine's CPU,
with models of the real ones' size (random weights: honest for timing, not for scores):

- SER-FIQ on an iResNet-50 ArcFace (w600k_r50's architecture, 43.6 M parameters, 6.3 GMACs): the
  backbone once per face, then the head ``--passes`` times (m = 100) as one matrix product;
- SDD-FIQA's regression network (IR-50 body + its Flatten/PReLU/Linear(25088, 1) head);
- restoration consistency with a UNet-ish 512 px restorer (50.7 GMACs), and its similarity
  measure (GMSD, SSIM) alone;
- face occlusion (``fiqa.occlusion``) with a UNet-ish 224 px segmenter (its class-score output),
  and faceqc's own part alone (resizing the 512 px crop, counting the parts) with a one-op model;
- for reference, one plain pass of the same ArcFace (what ``fiqa.backend: onnx`` with
  ``arcface-embedding-norm`` costs).

Each stage has ``fiqa.resources.num_cpus`` CPUs: ``--threads`` (default 1) bounds ONNX Runtime's
intra-op threads and NumPy's BLAS threads alike.  Wall and CPU time per face are printed: with one
thread, CPU time is the cost even while other work shares the cores.  Faces are the primary faces of the astronaut
demo pictures, aligned by the detect stage.

    python -m benchmarks.fiqa_methods [--threads 1] [--faces 8] [--passes 100] [--repeat 3]
    python -m benchmarks.fiqa_methods --recogniser w600k_r50.onnx --restorer GFPGANv1.4.onnx   # your models
    python -m benchmarks.fiqa_methods --occluder face_occlusion_segmentation_ort.onnx          # (224 px, logits)
    python -m benchmarks.fiqa_methods --oracle    # the restoration calibration table (see README)

``--oracle`` prints, for the validity test's degradation families, the median similarity between
a damaged face's FFHQ-aligned crop and the undamaged one's — what a perfect restorer (one that
returns the undamaged face) would score — on the test photos (t1.jpg's six people and the
astronaut): how ``fiqa.restoration.score_range``'s defaults were chosen.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np


def _faces(n: int):
    from pipeline.config import load_config
    from pipeline.stages.base import primary_index
    from pipeline.stages.detect import DetectStage, target_crop
    from pipeline.tools.samples import demo_faces

    st = DetectStage(load_config())
    st.setup()
    c112, c512 = [], []
    for img in demo_faces().values():
        f = st.faces_of(img, st.detector.detect_many([img])[0])
        if len(f["face_bbox"]):
            p = primary_index(f["face_bbox"], f["face_det_score"])
            c112.append(f["face_crop112"][p])
            c512.append(target_crop(img, f["face_landmarks"][p], 512)["face_crop_target"])
    reps = -(-n // len(c112))
    return np.stack((c112 * reps)[:n]), np.stack((c512 * reps)[:n])


def _time(fn, repeat: int) -> tuple:
    """(best wall time, best CPU time of this process) of ``repeat`` calls, after a warm-up.  CPU
    time is what a call costs when other work shares the machine's cores."""
    fn()  # warm-up: sessions allocate on their first run
    wall = cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu


def _one_op_segmenter(path: str, size: int = 224) -> str:
    """A face-logit 'segmenter' of one operator (R - B): times faceqc's own part of fiqa.occlusion."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Split", ["input"], ["r", "g", "b"], axis=1, num_outputs=3),
                           helper.make_node("Sub", ["r", "b"], ["out"])], "one-op",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 1, size, size])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def bench(threads: int, n: int, passes: int, repeat: int, recogniser: str = "", sdd_model: str = "",
          restorer: str = "", size: int = 512, occluder: str = "") -> None:
    from threadpoolctl import threadpool_limits

    from pipeline.backends.fiqa_onnx import OnnxFIQA
    from pipeline.backends.occlusion import OcclusionSegmenter
    from pipeline.backends.restoration import Restorer, gmsd, ssim
    from pipeline.backends.serfiq import SerFIQ
    from pipeline.models import CATALOGUE
    from tests.support import synthetic

    crops, targets = _faces(n)
    tmp = tempfile.mkdtemp(prefix="fiqa-bench-")
    print(f"building models in {tmp} ...", flush=True)
    arc = recogniser or synthetic.arcface_like(os.path.join(tmp, "w600k_r50_like.onnx"))
    sdd = sdd_model or synthetic.sdd_fiqa_like(os.path.join(tmp, "sdd_fiqa_like.onnx"))
    unet = restorer or synthetic.unet_restorer_like(os.path.join(tmp, "unet512.onnx"), 512)
    rows = []
    with threadpool_limits(limits=threads):
        plain = OnnxFIQA(arc, CATALOGUE["arcface-embedding-norm"].contract, "arc", threads)
        rec = os.path.basename(recogniser) if recogniser else "ArcFace iResNet-50"
        rows.append((f"{rec}, one plain pass (reference)", _time(lambda: plain.score(crops), repeat)))
        s = SerFIQ(arc, "arc", passes=passes, num_cpus=threads)
        feats = s.features(crops)
        t_bb = _time(lambda: s.features(crops), repeat)
        t_head = _time(lambda: s.embeddings(feats), repeat)
        t_all = _time(lambda: s.score(crops), repeat)
        rows += [(f"SER-FIQ m = {passes}: backbone", t_bb), (f"SER-FIQ m = {passes}: head, {passes} passes", t_head),
                 (f"SER-FIQ m = {passes}: total (q included)", t_all)]
        d = OnnxFIQA(sdd, CATALOGUE["sdd-fiqa"].contract, "sdd", threads)
        rows.append((f"SDD-FIQA ({os.path.basename(sdd_model) if sdd_model else 'IR-50 regression'})",
                     _time(lambda: d.score(crops), repeat)))
        r = Restorer(unet, "unet", size=size, num_cpus=threads, max_batch=4)
        x, y = r.restore(targets)
        what = os.path.basename(restorer) if restorer else "UNet-ish 512 px restorer (50.7 GMACs)"
        rows.append((f"restoration: {what}", _time(lambda: r.restore(targets), repeat)))
        rows.append((f"restoration: GMSD at {size} px", _time(lambda: [gmsd(a, b) for a, b in zip(x, y)], repeat)))
        rows.append((f"restoration: SSIM at {size} px", _time(lambda: [ssim(a, b) for a, b in zip(x, y)], repeat)))
        if occluder:
            seg = OcclusionSegmenter(occluder, "occluder", num_cpus=threads)
            what = os.path.basename(occluder)
        else:
            seg = OcclusionSegmenter(synthetic.unet_restorer_like(os.path.join(tmp, "unet224.onnx"), 224),
                                     "unet224", output="classes", face_classes=[1], num_cpus=threads)
            what = "UNet-ish 224 px segmenter"
        rows.append((f"occlusion: {what}", _time(lambda: seg.score(targets), repeat)))
        own = OcclusionSegmenter(_one_op_segmenter(os.path.join(tmp, "one_op.onnx")), "one-op", num_cpus=threads)
        rows.append(("occlusion: faceqc's part (one-op model)", _time(lambda: own.score(targets), repeat)))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{n} faces, {threads} thread(s), best of {repeat}; {os.cpu_count()} CPUs on this machine")
    print(f"{'method':52s} {'wall ms/face':>12s} {'CPU ms/face':>12s} {'faces/s':>8s}")
    for name, (wall, cpu) in rows:
        print(f"{name:52s} {1000 * wall / n:12.1f} {1000 * cpu / n:12.1f} {n / wall:8.2f}")
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def oracle() -> None:
    from pipeline.backends.restoration import DEFAULT_SCORE_RANGE, gmsd, map_score, ssim
    from pipeline.config import load_config
    from pipeline.stages.base import primary_index
    from pipeline.stages.detect import DetectStage, target_crop
    from pipeline.tools import samples

    st = DetectStage(load_config())
    st.setup()
    res: dict = {}
    faces = samples.test_faces()
    for img in faces.values():
        f = st.faces_of(img, st.detector.detect_many([img])[0])
        lm = f["face_landmarks"][primary_index(f["face_bbox"], f["face_det_score"])]
        ref = target_crop(img, lm, 512)[0].astype(np.float64)
        for fam, (_, sevs) in samples.FAMILIES.items():
            if fam == "rotation":  # the crop follows the landmarks: rotation is undone by alignment
                continue
            for sev in sevs[1:]:
                d = samples.degrade(img, fam, sev)
                crop = target_crop(d, lm * (d.shape[1] / img.shape[1]), 512)[0].astype(np.float64)
                res.setdefault((fam, sev), []).append((gmsd(crop, ref), ssim(crop, ref)))
    print(f"{len(faces)} faces; median over them (min-max); score = default score_range mapping")
    print(f"{'family':14s} {'severity':>8s}  {'GMSD':>20s} {'score':>5s}  {'SSIM':>20s} {'score':>5s}")
    for (fam, sev), v in res.items():
        v = np.array(v)
        g, s = np.median(v, axis=0)
        print(f"{fam:14s} {sev:8g}  {g:6.3f} ({v[:, 0].min():.3f}-{v[:, 0].max():.3f}) "
              f"{map_score([g], DEFAULT_SCORE_RANGE['gmsd'])[0]:5.0f}  "
              f"{s:6.3f} ({v[:, 1].min():.3f}-{v[:, 1].max():.3f}) {map_score([s], DEFAULT_SCORE_RANGE['ssim'])[0]:5.0f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (ONNX Runtime intra-op and BLAS)")
    p.add_argument("--faces", type=int, default=8, help="faces per timed call")
    p.add_argument("--passes", type=int, default=100, help="SER-FIQ's m")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per method (the best is kept)")
    p.add_argument("--oracle", action="store_true", help="print the restoration calibration table instead")
    p.add_argument("--recogniser", default="", help="time SER-FIQ on this ArcFace-like .onnx instead")
    p.add_argument("--sdd", default="", help="time this SDD-FIQA .onnx instead")
    p.add_argument("--restorer", default="", help="time this face-restoration .onnx (RGB, [-1, 1]) instead")
    p.add_argument("--size", type=int, default=512, help="the restorer's input side")
    p.add_argument("--occluder", default="", help="time this face-occlusion .onnx (224 px, RGB, [0, 1], logits) instead")
    a = p.parse_args(argv)
    if a.oracle:
        oracle()
    else:
        bench(a.threads, a.faces, a.passes, a.repeat, a.recogniser, a.sdd, a.restorer, a.size, a.occluder)


if __name__ == "__main__":
    main()
