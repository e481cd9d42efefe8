"""`python -m benchmarks.gpubench`: where the time goes for the production tier on one GPU node.

It measures, on ~1 MP JPEGs made from packaged photos:
1. the CPU side — decode (EXIF, colour), detector letterbox, aligned crops and the classical
   IQA measures, i.e. faceqc's own stage code — in a process pool of all the node's cores;
2. the GPU side — a detector at 640x640, a face-quality network on 112x112 crops and a deep IQA
   network on 224x224 crops, batched, bfloat16, inputs through pinned host memory — with GPU
   utilisation sampled by NVML while it runs.
The production pipeline is bounded by the slower of the two; both figures are printed.

Random-init weights are honest for timing: the networks are the architectures the production
tier runs (GMACs printed), one face per image.  The deep IQA network goes through the real
backend class (:class:`pipeline.backends.iqa_torch.TimmIQA`); the others run in torch with the
same bfloat16 autocast (the device has no onnxruntime-gpu build, so ONNX Runtime's CUDA provider
is not what is timed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def make_jpegs(n: int, side=(1152, 864), seed=0) -> list:
    from PIL import Image

    from pipeline.tools import samples

    rng = np.random.default_rng(seed)
    base = samples.astronaut()
    out = []
    for i in range(n):
        s = int(rng.integers(300, 512))
        y, x = rng.integers(0, 512 - s + 1, 2)
        img = Image.fromarray(np.ascontiguousarray(base[y:y + s, x:x + s])).resize(side, Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _cpu_work(args):
    """faceqc's CPU stage code for one image: decode, letterbox for the detector, crops from a
    face box (the detector's job is on the GPU), classical IQA.  Returns seconds per part."""
    import cv2

    from pipeline.backends.classical import ClassicalIQA
    from pipeline.config import load_config
    from pipeline.images import decode_image
    from pipeline.stages.detect import crops_for_face, thumbnail

    data, cfg_over = args  # data: JPEG bytes, or the index of an image decoded at start-up
    cfg = _CFG.get("cfg")
    if cfg is None:
        cv2.setNumThreads(1)
        cfg = _CFG["cfg"] = load_config(overrides=cfg_over)
        _CFG["iqa"] = ClassicalIQA(cfg)
    t0 = time.perf_counter()
    img = _CFG["decoded"][data] if isinstance(data, int) else decode_image(data, cfg.decode.max_pixels)
    t1 = time.perf_counter()
    h, w = img.shape[:2]
    s = 640 / max(h, w)
    det_in = np.zeros((640, 640, 3), np.uint8)
    det_in[: round(h * s), : round(w * s)] = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
    t2 = time.perf_counter()
    # a face where the astronaut's is: 5 ArcFace points scaled to this image
    pts = np.array([[0.40, 0.33], [0.55, 0.33], [0.47, 0.43], [0.41, 0.52], [0.54, 0.52]]) * [w, h]
    crops = crops_for_face(img, pts, cfg.detect, arcface=True)
    thumbnail(img, cfg.detect.thumb_side)
    t3 = time.perf_counter()
    _CFG["iqa"].face(crops["face_crop_iqa"], crops["face_patch"], int(crops["face_patch_size"]))
    t4 = time.perf_counter()
    return {"decode": t1 - t0, "letterbox": t2 - t1, "crops+thumbnail": t3 - t2, "classical_iqa": t4 - t3}


_CFG: dict = {}


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _predecode(jpegs):
    """Pool initializer for ``--decode gpu``: the worker holds decoded images, as a stage after
    a GPU decode stage reads them from Ray's shared-memory object store."""
    from pipeline.images import decode_image

    _CFG["decoded"] = [decode_image(j, 1 << 40) for j in jpegs]


def cpu_side(jpegs: list, workers: int, timing: threading.Event | None = None, predecoded: int = 0) -> dict:
    """The CPU stage code over ``jpegs`` in a pool of ``workers`` processes; ``timing`` is set
    while the timed part runs (after every worker has warmed up) and cleared at its end.  With
    ``predecoded`` > 0 decoding is left out (it runs on the GPU): each worker decodes that many
    images at start-up and crops and scores them in turn."""
    over = {"detect": {"detector": "scrfd", "model": "unused.onnx"}}
    init = dict(initializer=_predecode, initargs=(jpegs[:predecoded],)) if predecoded else {}
    items = [i % predecoded for i in range(len(jpegs))] if predecoded else jpegs
    # spawn, not fork: the together run starts this pool from a process that holds CUDA
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), **init) as pool:
        list(pool.map(_cpu_work, [(items[0], over)] * workers))
        seen: set = set()
        while len(seen) < workers:  # every worker started, initialised and warm before timing
            seen |= set(pool.map(_pid_after, [0.2] * workers, chunksize=1))
        timing and timing.set()
        t = time.perf_counter()
        per = list(pool.map(_cpu_work, [(j, over) for j in items], chunksize=8))
        wall = time.perf_counter() - t
        timing and timing.clear()
    parts = {k: round(1000 * float(np.mean([p[k] for p in per])), 2) for k in per[0]}
    return {"images": len(jpegs), "workers": workers, "images_per_s": round(len(jpegs) / wall, 1),
            "ms_per_image_per_core": round(sum(parts.values()), 2), "ms_by_part": parts}


class GpuSampler:
    def __init__(self):
        self.util, self.mem, self._stop = [], [], threading.Event()

    def _loop(self):
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        while not self._stop.is_set():
            u = pynvml.nvmlDeviceGetUtilizationRates(h)
            self.util.append(u.gpu)
            self.mem.append(pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**30)
            self._stop.wait(0.05)

    def __enter__(self):
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self.t.join()


def _gflops(model, shape) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(shape, device=next(model.parameters()).device)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() / 2 / shape[0] / 1e9  # multiply-adds per image


def networks(device):
    """(name, module, input side) of the networks run per image: the SCRFD-10G-shaped detector,
    the 1k3d68-shaped landmark/pose model and an iResNet-50 face-quality network (MagFace's and
    ArcFace's architecture), all random-init from :mod:`pipeline.backends.synthetic`."""
    from tests.support import synthetic

    nets = [("detector (SCRFD-10G architecture) @640", synthetic.scrfd_module("10g", (640, 640), plant_face=False), 640),
            ("landmarks+pose (1k3d68-shaped ResNet-50) @192", synthetic.landmark_module(), 192),
            ("face quality (iResNet-50, MagFace/ArcFace) @112", synthetic.iresnet(), 112)]
    return [(n, m.eval().to(device), s) for n, m, s in nets]


def gpu_setup(batch: int, ckpt_dir: str, device: str = "cuda"):
    """The networks on ``device`` and one ``step()`` that runs a batch of ``batch`` images
    through all of them: (step, nets, iqa, host inputs, sync, result dict with GMACs)."""
    import torch

    from pipeline.backends.iqa_torch import TimmIQA

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    torch.backends.cudnn.benchmark = True
    import timm

    torch.save({"arch": "resnet50", "state_dict": timm.create_model("resnet50", num_classes=1).state_dict(),
                "input_size": 224}, os.path.join(ckpt_dir, "iqa.pt"))
    iqa = TimmIQA(os.path.join(ckpt_dir, "iqa.pt"), use_gpu=cuda, amp=True)
    nets = [(n, m.to(memory_format=torch.channels_last), s) for n, m, s in networks(dev)]
    res = {"gpu": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)", "batch": batch, "networks": {}}
    for name, m, s in nets:
        res["networks"][name] = {"gmacs_per_image": round(_gflops(m, (1, 3, s, s)), 2)}
    res["networks"]["deep IQA (timm resnet50 @224, TimmIQA backend)"] = {
        "gmacs_per_image": round(_gflops(iqa.model, (1, 3, 224, 224)), 2)}
    host = {s: torch.randint(0, 255, (batch, s, s, 3), dtype=torch.uint8) for _, _, s in nets}
    if cuda:
        host = {s: v.pin_memory() for s, v in host.items()}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    crops = np.random.default_rng(0).integers(0, 255, (batch, 224, 224, 3), dtype=np.uint8)

    def step():
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            for _, m, s in nets:
                x = host[s].to(dev, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
                m(x.contiguous(memory_format=torch.channels_last))
        iqa.score(crops, max_batch=batch)  # the real backend: numpy -> pinned -> GPU -> bf16
        sync()

    for _ in range(3):
        step()
    return step, nets, host, sync, res, cuda, dev


def run_steps(step, batch: int, until, cuda: bool) -> dict:
    """Run ``step`` until ``until()`` is true, with NVML sampling on CUDA."""
    smp = GpuSampler() if cuda else None
    with smp or contextlib.nullcontext():
        t, n = time.perf_counter(), 0
        while not until():
            step()
            n += batch
        wall = time.perf_counter() - t
    return {"images_per_s": round(n / wall, 1) if wall > 0 else None,
            "gpu_util_mean_pct": round(float(np.mean(smp.util)), 1) if smp and smp.util else None,
            "gpu_mem_max_gib": round(float(np.max(smp.mem)), 2) if smp and smp.mem else None}


def gpu_side(batch: int, seconds: float, ckpt_dir: str, device: str = "cuda", jpegs=None, workers=0,
             decode_jpegs=None) -> dict:
    """GPU throughput alone, each network alone, and — with ``jpegs`` — both sides at once: the
    CPU pool on ``workers`` processes while this process feeds the GPU, as in the pipeline.
    With ``decode_jpegs`` every step also decodes a batch of them on the GPU through the decode
    stage's own batched decoder (nvJPEG), pixels back to host memory."""
    import torch

    step, nets, host, sync, res, cuda, dev = gpu_setup(batch, ckpt_dir, device)
    if decode_jpegs:
        from pipeline.backends.decoders import TorchJpeg
        from pipeline.config import load_config

        gpu = {"resources": {"num_gpus": 0.25}} if cuda else {}
        nvjpeg = TorchJpeg(load_config(overrides={"decode": {"backend": "torchvision", **gpu}}))
        nets_step, pos = step, [0]

        def step():
            i = pos[0] % len(decode_jpegs)
            chunk = (decode_jpegs[i:] + decode_jpegs)[:batch]
            pos[0] += batch
            nvjpeg.decode_jpegs(chunk)
            nets_step()

        step()
        res["decode_on_gpu"] = True
    t0 = time.perf_counter()
    res.update(run_steps(step, batch, lambda: time.perf_counter() - t0 >= seconds, cuda))
    # each network alone
    for name, m, s in nets:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            x = host[s].to(dev).permute(0, 3, 1, 2).float().div_(255).contiguous(memory_format=torch.channels_last)
            for _ in range(3):
                m(x)
            sync()
            t = time.perf_counter()
            for _ in range(10):
                m(x)
            sync()
        res["networks"][name]["images_per_s_alone"] = round(10 * batch / (time.perf_counter() - t), 1)
    if jpegs:
        timing, out = threading.Event(), {}
        pre = 64 if decode_jpegs else 0
        th = threading.Thread(target=lambda: out.update(cpu=cpu_side(jpegs, workers, timing, pre)), daemon=True)
        th.start()
        while not timing.is_set() and th.is_alive():
            time.sleep(0.01)
        gpu = run_steps(step, batch, lambda: not timing.is_set(), cuda)
        th.join()
        res["together"] = {"cpu_workers": workers, "cpu_images_per_s": out["cpu"]["images_per_s"],
                           "gpu_images_per_s": gpu["images_per_s"], "gpu_util_mean_pct": gpu["gpu_util_mean_pct"],
                           "bound_images_per_s": min(out["cpu"]["images_per_s"], gpu["images_per_s"] or 0)}
    return res


def decode_stage(jpegs: list, batch: int, device: str = "cuda") -> dict:
    """The decode stage itself, ``decode.backend: torchvision`` on the GPU (nvJPEG) against the
    default ``opencv`` backend, over files holding ``jpegs`` plus a truncated JPEG and a PNG:
    images/s and CPU ms per image of one stage instance, whether every status agrees, and how
    far nvJPEG's pixels are from libjpeg-turbo's."""
    from PIL import Image

    from pipeline.config import load_config
    from pipeline.stages.decode import DecodeStage
    from pipeline.tools import samples

    gpu = {"num_gpus": 0.25} if device == "cuda" else {}
    stages = {"opencv": DecodeStage(load_config()),
              "torchvision": DecodeStage(load_config(overrides={"decode": {"backend": "torchvision", "resources": gpu}}))}
    res: dict = {"batch": batch}
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, j in enumerate(jpegs):
            paths.append(os.path.join(d, f"{i}.jpg"))
            with open(paths[-1], "wb") as f:
                f.write(j)
        with open(os.path.join(d, "truncated.jpg"), "wb") as f:
            f.write(jpegs[0][: len(jpegs[0]) // 2])
        Image.fromarray(samples.astronaut()).save(os.path.join(d, "astronaut.png"))
        paths[5:5] = [os.path.join(d, "truncated.jpg")]
        paths[9:9] = [os.path.join(d, "astronaut.png")]
        batches = [{"uri": np.array(paths[i:i + batch], dtype=object)} for i in range(0, len(paths), batch)]
        outs = {}
        for name, st in stages.items():
            st.setup()
            st.process(dict(batches[0]))  # warm-up (CUDA context, nvJPEG handles)
            t, c = time.perf_counter(), time.process_time()
            outs[name] = [st.process(dict(b)) for b in batches]
            res[name] = {"images_per_s": round(len(paths) / (time.perf_counter() - t), 1),
                         "cpu_ms_per_image": round(1000 * (time.process_time() - c) / len(paths), 2)}
    rows = {k: [r for o in v for r in zip(o["status"], o["image"])] for k, v in outs.items()}
    res["statuses_equal"] = [s for s, _ in rows["opencv"]] == [s for s, _ in rows["torchvision"]]
    res["statuses"] = sorted({s for s, _ in rows["torchvision"]})
    diff = np.concatenate([np.abs(a[1].astype(np.int16) - b[1]).ravel()
                           for a, b in zip(rows["opencv"], rows["torchvision"]) if a[0] == "ok"])
    res["pixels_vs_opencv"] = {"max_abs": int(diff.max()), "mean_abs": round(float(diff.mean()), 4),
                               "share_equal": round(float((diff == 0).mean()), 4)}
    return res


def gpu_decode(jpegs: list, batch: int, device: str = "cuda") -> dict:
    """What moving decode and resizing onto the GPU would buy: nvJPEG batch decode
    (``torchvision.io.decode_jpeg`` on CUDA) plus the detector's 640 px letterbox resize on the
    GPU, with the feeding process's CPU seconds per image (pixel agreement: :func:`decode_stage`)."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]

    def run(chunk):
        imgs = decode_jpeg(chunk, device=dev)
        for im in imgs:  # CHW uint8
            h, w = im.shape[1:]
            s = 640 / max(h, w)
            F.interpolate(im[None].float(), size=(round(h * s), round(w * s)), mode="bilinear", antialias=False)
        if cuda:
            torch.cuda.synchronize()

    run(data[:batch])
    t, c = time.perf_counter(), time.process_time()
    for i in range(0, len(data), batch):
        run(data[i:i + batch])
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"images": len(data), "batch": batch, "images_per_s": round(len(data) / wall, 1),
            "cpu_ms_per_image": round(1000 * cpu / len(data), 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=2000, help="distinct JPEGs for the CPU side")
    p.add_argument("--passes", type=int, default=3, help="timed passes over them on the CPU side")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--no-together", action="store_true",
                   help="skip the run of both sides at once (CPU pool on workers-1 cores + GPU feeder)")
    p.add_argument("--device", default="cuda", help="cpu: a dry run of the GPU side")
    p.add_argument("--gpu-decode", action="store_true",
                   help="also measure the decode stage on the GPU (nvJPEG) against the CPU backend, "
                        "and nvJPEG decode + letterbox resize alone")
    p.add_argument("--decode", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: decode.backend torchvision on the GPU (nvJPEG) - the GPU side decodes, "
                        "the CPU side starts from decoded images")
    a = p.parse_args(argv)
    out = {"cpus": os.cpu_count()}
    jpegs = make_jpegs(a.n)
    out["jpeg_kb_mean"] = round(float(np.mean([len(j) for j in jpegs])) / 1024, 1)
    jpegs = jpegs * a.passes
    out["decode"] = a.decode
    out["cpu_side"] = cpu_side(jpegs, a.workers, predecoded=64 if a.decode == "gpu" else 0)
    print("cpu side:", json.dumps(out["cpu_side"]), flush=True)
    if not a.no_gpu:
        with tempfile.TemporaryDirectory() as d:
            out["gpu_side"] = gpu_side(a.batch, a.seconds, d, a.device,
                                       jpegs=None if a.no_together else jpegs, workers=max(1, a.workers - 1),
                                       decode_jpegs=jpegs[: a.n] if a.decode == "gpu" else None)
        print("gpu side:", json.dumps(out["gpu_side"]), flush=True)
        if a.gpu_decode:
            out["decode_stage"] = decode_stage(jpegs[: min(a.n, 256)], a.batch, a.device)
            print("decode stage:", json.dumps(out["decode_stage"]), flush=True)
            out["gpu_decode"] = gpu_decode(jpegs, a.batch, a.device)
            print("gpu decode:", json.dumps(out["gpu_decode"]), flush=True)
        together = out["gpu_side"].get("together")
        out["bound_images_per_s"] = (together["bound_images_per_s"] if together else
                                     min(out["cpu_side"]["images_per_s"], out["gpu_side"]["images_per_s"]))
    print("GPUBENCH " + json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
