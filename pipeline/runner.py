"""Build and run the Ray Data pipeline: list → decode → detect → iqa → fiqa → fuse → write."""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import time
import uuid
from typing import List, Optional, Sequence

import pyarrow as pa

from . import SCHEMA_VERSION, __version__
from .config import Config
from .fs import get_fs, join_uri
from .local import stage_classes
from .models import models_for
from .schema import schema_with_metadata
from .stages.base import Stage
from .stages.fuse import FuseStage
from .stages.listing import Entry, InputError, entries_table, expand_inputs
from .stages.write import SUMMARY_NAME, ParquetResultSink

log = logging.getLogger("faceqc")


class OutputError(ValueError):
    """The output location cannot be used."""


def check_output(out: str, cfg: Config, overwrite: bool) -> None:
    """Fail before any work if ``out`` holds a finished run (unless overwrite) or is not writable."""
    fs, path = get_fs(out, cfg.input.storage_options)
    try:
        if fs.exists(path) and not fs.isdir(path):
            raise OutputError(f"output {out} exists and is not a directory")
        if fs.exists(join_uri(path, SUMMARY_NAME)):
            if not overwrite:
                raise OutputError(f"output {out} already holds a finished run ({SUMMARY_NAME}); "
                                  f"pass --overwrite to replace it or choose another --out")
        fs.makedirs(path, exist_ok=True)
        probe = join_uri(path, f".faceqc-write-test-{uuid.uuid4().hex[:8]}")
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
    except OutputError:
        raise
    except Exception as e:  # noqa: BLE001 - permission, read-only fs, bad bucket
        raise OutputError(f"output {out} is not writable: {type(e).__name__}: {e}") from e
    if overwrite:
        for p in fs.glob(join_uri(path, "part-*.parquet")) + [join_uri(path, SUMMARY_NAME)]:
            if fs.exists(p):
                fs.rm(p)


def _run_in_task(stage_cls, batch, cfg: Config):
    """Task mode: the stage instance (and its models) is built once per worker process."""
    return stage_instance(stage_cls, cfg)(batch)


_INSTANCES: dict = {}


def stage_instance(stage_cls, cfg: Config) -> Stage:
    key = (stage_cls, json.dumps(cfg.to_dict(redact=False), sort_keys=True, default=str))
    inst = _INSTANCES.get(key)
    if inst is None:
        inst = _INSTANCES[key] = _make_stage(stage_cls, cfg)
    return inst


def _make_stage(stage_cls, cfg: Config) -> Stage:
    if stage_cls is FuseStage:
        return stage_cls(cfg, schema_with_metadata(models_for(cfg), cfg.profile))
    return stage_cls(cfg)


class _ActorStage:
    """Actor mode: one stage instance per actor."""

    def __init__(self, stage_cls, cfg: Config):
        self.stage = _make_stage(stage_cls, cfg)

    def __call__(self, batch):
        return self.stage(batch)


def init_ray(address: Optional[str], quiet: bool = True) -> None:
    import ray

    if ray.is_initialized():
        return
    kw = {"ignore_reinit_error": True, "log_to_driver": not quiet}
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(include_dashboard=False, **kw)


def build_dataset(entries: List[Entry], cfg: Config):
    """The lazy Ray dataset: one row per entry, ending in the output table's rows."""
    import ray

    cluster_cpus = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    table = entries_table(entries)
    # several blocks so that task stages run in parallel from the start
    step = max(1, min(cfg.decode.resources.batch_size * 4, -(-len(entries) // max(1, int(cluster_cpus) * 4))))
    ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, max(1, table.num_rows), step)])
    for cls in stage_classes():
        res = cls.resources(cfg)
        kw = res.ray_kwargs(cluster_cpus=cluster_cpus)
        if "compute" in kw and type(kw["compute"]).__name__ == "ActorPoolStrategy":
            actor_cls = type(f"{cls.__name__}Actor", (_ActorStage,), {})
            ds = ds.map_batches(actor_cls, fn_constructor_args=(cls, cfg), batch_format="numpy",
                                zero_copy_batch=True, **kw)
        else:
            fn = functools.partial(_run_in_task, cls)
            fn.__name__ = cls.__name__  # names the operator in progress bars and stats
            ds = ds.map_batches(fn, fn_args=(cfg,), batch_format="numpy", zero_copy_batch=True, **kw)
    return ds


def versions() -> dict:
    import cv2
    import dlib
    import numpy
    import ray

    return {"faceqc": __version__, "schema": SCHEMA_VERSION, "python": platform.python_version(),
            "ray": ray.__version__, "pyarrow": pa.__version__, "numpy": numpy.__version__,
            "opencv": cv2.__version__, "dlib": dlib.__version__}


def run(sources: Sequence[str], out: str, cfg: Config, limit: Optional[int] = None,
        address: Optional[str] = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Score every input file into ``out``; return the run summary (also written to out)."""
    t0 = time.time()
    list_stats: dict = {}
    entries = expand_inputs(sources, cfg.input.storage_options, cfg.input.extensions, list_stats)
    if limit is not None:
        entries = entries[: max(0, limit)]
    if not entries:
        raise InputError(f"no input files found in {', '.join(sources)}")
    check_output(out, cfg, overwrite)
    t_list = time.time() - t0

    import ray

    init_ray(address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = False
    schema = schema_with_metadata(models_for(cfg), cfg.profile)
    sink = ParquetResultSink(out, schema, cfg.input.storage_options, cfg.output.compression)
    ds = build_dataset(entries, cfg)
    t1 = time.time()
    ds.write_datasink(sink)
    t_run = time.time() - t1
    result = sink.result or {"rows": 0, "status": {}, "verdict": {}, "files": []}
    try:
        stats = ds.stats()
    except Exception:  # noqa: BLE001 - stats are informative only
        stats = ""
    summary = {
        "faceqc_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": list(sources),
        "output": out,
        "rows": result["rows"],
        "expected_rows": len(entries),
        "skipped_by_extension": list_stats.get("skipped_by_extension", 0),
        "status_counts": result["status"],
        "verdict_counts": result["verdict"],
        "files": result["files"],
        "seconds": {"listing": round(t_list, 3), "pipeline": round(t_run, 3), "total": round(time.time() - t0, 3)},
        "images_per_second": round(len(entries) / t_run, 3) if t_run > 0 else None,
        "profile": cfg.profile,
        "config": cfg.to_dict(redact=True),
        "versions": versions(),
        "models": [m.as_dict() for m in models_for(cfg)],
        "ray_stats": stats,
    }
    if result["rows"] != len(entries):
        summary["error"] = f"wrote {result['rows']} rows for {len(entries)} inputs"
    fs, path = get_fs(out, cfg.input.storage_options)
    with fs.open(join_uri(path, SUMMARY_NAME), "wb") as f:
        f.write(json.dumps(summary, indent=2, default=str).encode())
    return summary


def summary_table(summary: dict) -> str:
    """A short human summary of a run."""
    lines = [f"faceqc {summary['faceqc_version']}: {summary['rows']} images -> {summary['output']}",
             f"  {summary['images_per_second']} images/s over {summary['seconds']['pipeline']} s "
             f"(profile {summary['profile']})"]
    lines.append("  status : " + ", ".join(f"{k} {v}" for k, v in sorted(summary["status_counts"].items(),
                                                                      key=lambda kv: -kv[1])))
    lines.append("  verdict: " + ", ".join(f"{k} {summary['verdict_counts'].get(k, 0)}"
                                          for k in ("accept", "review", "reject")))
    if summary.get("error"):
        lines.append("  ERROR  : " + summary["error"])
    return "\n".join(lines)
