"""`faceqc bench`: pipeline throughput against a plain single-process loop over the same stage
code, and the pipeline's peak memory (PSS of the driver and every Ray process it started)."""

from __future__ import annotations

import os
import resource
import shutil
import threading
import time

import numpy as np
from PIL import Image

from . import samples


def generate(folder: str, n: int, size: int, seed: int = 0) -> str:
    """n JPEGs of size x size px: the public-domain demo faces (scikit-image's astronaut, framed
    several ways), randomly cropped, scaled and, half of them, degraded."""
    marker = folder.rstrip("/") + ".complete"  # beside the images, or it would be scored too
    if os.path.exists(marker):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    rng = np.random.default_rng(seed)
    bases = list(samples.demo_faces().values())
    fams = list(samples.FAMILIES)
    for i in range(n):
        img = bases[i % len(bases)]
        h, w = img.shape[:2]
        s = int(min(h, w) * rng.uniform(0.75, 1.0))
        y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        crop = np.ascontiguousarray(img[y:y + s, x:x + s])
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
        if rng.random() < 0.5:
            fam = fams[rng.integers(len(fams))]
            crop = samples.degrade(crop, fam, samples.FAMILIES[fam][1][int(rng.integers(1, 4))])
        sub = os.path.join(folder, f"{i // 1000:04d}")
        os.makedirs(sub, exist_ok=True)
        Image.fromarray(crop).save(os.path.join(sub, f"img{i:07d}.jpg"), quality=90)
    open(marker, "w").close()
    return folder


class MemoryTrace:
    """Samples the summed PSS of this process and all its descendants (but ``exclude`` and its
    children, e.g. a local S3 server) every ``interval`` seconds: reading /proc/*/smaps_rollup
    costs CPU that the pipeline would otherwise use.  ``peak`` in bytes; :meth:`report` in MB,
    with the peak of each quarter of the run (flat = no growth with the work done)."""

    def __init__(self, interval: float = 2.0, exclude: int | None = None):
        import psutil

        self.psutil, self.interval, self.exclude = psutil, interval, exclude
        self.samples: list = []  # (time, summed PSS, this process's RSS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def peak(self) -> int:
        return max((s[1] for s in self.samples), default=0)

    def _sample(self) -> tuple:
        me = self.psutil.Process()
        skip = set()
        if self.exclude is not None:
            skip.add(self.exclude)
            try:
                skip |= {c.pid for c in self.psutil.Process(self.exclude).children(recursive=True)}
            except self.psutil.Error:
                pass
        total = 0
        for p in [me] + me.children(recursive=True):
            if p.pid in skip:
                continue
            try:
                total += p.memory_full_info().pss
            except (self.psutil.Error, AttributeError):
                try:
                    total += p.memory_info().rss
                except self.psutil.Error:
                    pass
        return time.time(), total, me.memory_info().rss

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append(self._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        if not self.samples:
            return {}
        mb, n = 2 ** 20, len(self.samples)
        quarters = [self.samples[i * n // 4:(i + 1) * n // 4] or self.samples[-1:] for i in range(4)]
        return {"peak_pss_mb": round(self.peak / mb),
                "quarter_peaks_pss_mb": [round(max(s[1] for s in q) / mb) for q in quarters],
                "driver_peak_rss_mb": round(max(s[2] for s in self.samples) / mb), "samples": n}


def bench(cfg, n: int, size: int, workdir: str, loop: bool = True, loop_n: int | None = None) -> dict:
    from ..executor import LocalExecutor
    from ..io.listing import expand_inputs
    from ..run import run

    t = time.time()
    data = generate(os.path.join(workdir, f"images-{n}-{size}"), n, size)
    print(f"data: {n} images of {size}x{size} px in {data} ({time.time() - t:.1f} s to prepare)")
    res = {"n": n, "size": size, "cpus": os.cpu_count(), "profile": cfg.profile}
    out = os.path.join(workdir, f"out-{n}-{size}")
    with MemoryTrace() as mem:
        summary = run([data], out, cfg, overwrite=True, progress=False)
    res["pipeline_images_per_s"] = summary["images_per_second"]
    res["pipeline_seconds"] = summary["seconds"]["pipeline"]
    res["pipeline_peak_pss_mb"] = round(mem.peak / 2**20, 1)
    print(f"pipeline: {summary['rows']} rows, {res['pipeline_images_per_s']:.2f} images/s "
          f"({res['pipeline_seconds']:.1f} s), peak memory (PSS, all processes) {res['pipeline_peak_pss_mb']:.0f} MB")
    if loop:
        m = min(n, loop_n or 2000)
        entries = expand_inputs([data])[:m]
        t = time.time()  # model loading counts, as it does in the pipeline's workers
        lp = LocalExecutor(cfg)
        lp.score_entries(entries, batch_size=cfg.detect.resources.batch_size)
        dt = time.time() - t
        res["loop_images_per_s"] = round(m / dt, 3)
        res["loop_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        res["speedup"] = round(res["pipeline_images_per_s"] / res["loop_images_per_s"], 3)
        print(f"loop    : {m} images, {res['loop_images_per_s']:.2f} images/s ({dt:.1f} s)")
        print(f"speedup : pipeline / loop = {res['speedup']:.2f}x on {os.cpu_count()} CPUs")
    print("BENCH " + " ".join(f"{k}={v}" for k, v in res.items()))
    return res
