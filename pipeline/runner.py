"""Build and run the Ray Data pipeline: list → decode → detect → iqa → fiqa → fuse → write."""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import logging
import os
import platform
import time
import uuid
from typing import List, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import SCHEMA_VERSION, __version__
from .config import Config
from .fs import get_fs, invalidate, join_uri, redact, write_bytes_atomic
from .local import stage_classes
from .models import models_for
from .schema import schema_with_metadata
from .stages.base import Stage
from .stages.fuse import FuseStage
from .stages.listing import EXTRA_PREFIX, InputError, entries_table, expand_inputs
from .stages.write import (STATE_DIR, SUMMARY_NAME, ParquetResultSink, part_names, remove, scan_parts,
                           write_table_atomic)

log = logging.getLogger("faceqc")


class OutputError(ValueError):
    """The output location cannot be used."""


RUN_STATE = "run.json"  # in STATE_DIR: what this output's unfinished run is (for resume)
PLAN_NAME = "plan.parquet"  # in STATE_DIR: the listing of `faceqc score` inputs, frozen at the first attempt


def check_output(out: str, cfg: Config, overwrite: bool) -> None:
    """Fail before any work if ``out`` holds a finished run (unless overwrite) or is not writable."""
    fs, path = get_fs(out, cfg.input.storage_options)
    invalidate(out, cfg.input.storage_options)
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
        raise OutputError(redact(f"output {out} is not writable: {type(e).__name__}: {e}",
                                 cfg.input.storage_options)) from e
    if overwrite:
        clear_output(out, cfg.input.storage_options)


def clear_output(out: str, storage_options: dict | None) -> None:
    """Remove a previous run (part files, summary, resume state) from ``out``."""
    fs, path = get_fs(out, storage_options)
    invalidate(out, storage_options)
    for p in fs.glob(join_uri(path, "part-*.parquet")) + [join_uri(path, SUMMARY_NAME)]:
        if fs.exists(p):
            fs.rm(p)
    state = join_uri(path, STATE_DIR)
    if fs.exists(state):
        fs.rm(state, recursive=True)
    invalidate(out, storage_options)


def _read_json(uri: str, storage_options: dict | None) -> Optional[dict]:
    """A small JSON file; None if it is missing or unreadable as JSON.  A store that cannot be
    reached at all is an OutputError (reported before any work, exit code 2)."""
    fs, path = get_fs(uri, storage_options)
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):  # missing, not a folder, unreadable: check_output says more
        return None
    except Exception as e:  # noqa: BLE001 - endpoint, credentials
        raise OutputError(redact(f"cannot read {uri}: {type(e).__name__}: {e}", storage_options)) from e


def _write_json(uri: str, obj: dict, storage_options: dict | None) -> None:
    text = json.dumps(obj, indent=2, default=str)
    write_bytes_atomic(uri, redact(text, storage_options).encode(), storage_options)


def config_fingerprint(cfg: Config) -> str:
    """What decides the scores: the configuration without storage options (credentials may
    rotate between a killed attempt and its restart), and the faceqc and schema versions."""
    d = cfg.to_dict(redact=False)
    d["input"].pop("storage_options", None)
    return hashlib.sha256(json.dumps([d, __version__, SCHEMA_VERSION], sort_keys=True, default=str)
                          .encode()).hexdigest()[:32]


def plan_fingerprint(table: pa.Table) -> str:
    h = hashlib.sha256()
    for chunk in table.column("uri").chunks:
        for u in chunk.to_pylist():
            h.update(u.encode("utf-8", "surrogatepass") + b"\0")
    return f"{table.num_rows}-{h.hexdigest()[:32]}"


def _run_chain(stage_classes, batch, cfg: Config, schema: Optional[pa.Schema] = None):
    """Task mode: consecutive stages with equal resources run as one Ray task, the batch passed
    from stage to stage as it is (no conversion to a Ray block in between); each stage instance
    (and its models) is built once per worker process."""
    cfg_key = _cfg_key(cfg)
    for cls in stage_classes:
        batch = stage_instance(cls, cfg, schema if cls is FuseStage else None, cfg_key)(batch)
    return batch


_CFG_KEYS: dict = {}


def _cfg_key(cfg: Config) -> str:
    """A process-local cache of the config's identity (the same object arrives with every batch
    of a task; serialising it per stage and batch costs measurable CPU)."""
    hit = _CFG_KEYS.get(id(cfg))
    if hit is None or hit[0] is not cfg:
        if len(_CFG_KEYS) > 64:
            _CFG_KEYS.clear()
        hit = _CFG_KEYS[id(cfg)] = (cfg, json.dumps(cfg.to_dict(redact=False), sort_keys=True, default=str))
    return hit[1]


_INSTANCES: dict = {}


def stage_instance(stage_cls, cfg: Config, schema: Optional[pa.Schema] = None, cfg_key: Optional[str] = None) -> Stage:
    key = (stage_cls, cfg_key or _cfg_key(cfg), schema.to_string() if schema is not None else None)
    inst = _INSTANCES.get(key)
    if inst is None:
        inst = _INSTANCES[key] = _make_stage(stage_cls, cfg, schema)
    return inst


def _make_stage(stage_cls, cfg: Config, schema: Optional[pa.Schema] = None) -> Stage:
    if stage_cls is FuseStage:
        return stage_cls(cfg, schema or schema_with_metadata(models_for(cfg), cfg.profile))
    return stage_cls(cfg)


class _ActorStage:
    """Actor mode: one stage instance per actor."""

    def __init__(self, stage_cls, cfg: Config, schema: Optional[pa.Schema] = None):
        self.stage = _make_stage(stage_cls, cfg, schema)

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
        ray.init(address="local", include_dashboard=False, **kw)  # never attach to a stray local cluster


def block_rows(n: int, batch_size: int, cluster_cpus: float) -> int:
    """Rows per input block, which is also rows per committed part file.  Small enough that all
    CPUs are busy from the start (4 blocks per CPU at least) and that a killed run loses (and
    its restart redoes) at most ~5% of the run: one block per CPU in flight, blocks of at most
    n / (20 x CPUs) rows, never under 4.  Large enough (up to 4 batches) that per-task overhead
    stays small."""
    cpus = max(1, int(cluster_cpus))
    per_cpu = -(-n // (cpus * 4))
    return max(1, min(batch_size * 4, per_cpu, max(4, n // (20 * cpus))))


def extra_fields(table: pa.Table) -> List[pa.Field]:
    """Output columns carried through from the listing (``extra.<name>`` -> ``<name>``)."""
    return [pa.field(f.name[len(EXTRA_PREFIX):], f.type) for f in table.schema
            if f.name.startswith(EXTRA_PREFIX)]


def output_schema(cfg: Config, table: pa.Table) -> pa.Schema:
    base = schema_with_metadata(models_for(cfg), cfg.profile)
    return pa.schema(list(base) + extra_fields(table), metadata=base.metadata)


def build_dataset(entries, cfg: Config, schema: Optional[pa.Schema] = None):
    """The lazy Ray dataset: one row per entry (a list of Entry or a listing table), ending in
    the output table's rows."""
    import ray

    cluster_cpus = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    table = entries if isinstance(entries, pa.Table) else entries_table(entries)
    schema = schema or output_schema(cfg, table)
    step = block_rows(table.num_rows, cfg.decode.resources.batch_size, cluster_cpus)
    ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, max(1, table.num_rows), step)])
    from ray.data import ActorPoolStrategy

    groups: list = []  # [actors?, resource key, [stage classes], map_batches kwargs]
    for cls in stage_classes():
        res = cls.resources(cfg)
        kw = res.ray_kwargs(cluster_cpus=cluster_cpus)
        actors = isinstance(kw.get("compute"), ActorPoolStrategy)
        key = (res.num_cpus, res.num_gpus, str(res.concurrency))
        if not actors and groups and not groups[-1][0] and groups[-1][1] == key:
            groups[-1][2].append(cls)
        else:
            groups.append([actors, key, [cls], kw])
    for actors, _, classes, kw in groups:
        if actors:
            cls = classes[0]
            args = (cls, cfg, schema) if cls is FuseStage else (cls, cfg)
            actor_cls = type(f"{cls.__name__}Actor", (_ActorStage,), {})
            ds = ds.map_batches(actor_cls, fn_constructor_args=args, batch_format="numpy",
                                zero_copy_batch=True, **kw)
        else:
            fn = functools.partial(_run_chain, tuple(classes))
            ds = ds.map_batches(fn, fn_args=(cfg, schema), batch_format="numpy", zero_copy_batch=True, **kw)
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
    """Score every input file into ``out``; return the run summary (also written to out).

    An unfinished run in ``out`` (killed midway) started again with the same arguments resumes:
    the inputs listed by its first attempt are kept, finished part files are kept, and only the
    rest is scored."""
    t0 = time.time()
    so = cfg.input.storage_options
    args = {"sources": list(sources), "limit": limit, "extensions": list(cfg.input.extensions)}
    state = None if overwrite else _read_json(join_uri(join_uri(out, STATE_DIR), RUN_STATE), so)
    plan_uri = join_uri(join_uri(out, STATE_DIR), PLAN_NAME)
    table, list_stats = None, {}
    if state and state.get("args") == args and state.get("config") == config_fingerprint(cfg):
        table = _read_plan(plan_uri, so)
        list_stats = state.get("listing", {})
    if table is None:
        entries = expand_inputs(sources, so, cfg.input.extensions, list_stats)
        if limit is not None:
            entries = entries[: max(0, limit)]
        if not entries:
            raise InputError(f"no input files found in {', '.join(sources)}")
        table = entries_table(entries)
        del entries
    t_list = time.time() - t0
    check_output(out, cfg, overwrite)
    if not (state and state.get("args") == args and state.get("plan") == plan_fingerprint(table)):
        # a new run: freeze its listing, so that a restart scores exactly these files
        if part_names(out, so):
            raise OutputError(f"output {out} holds part files of an unfinished run of other inputs or "
                              f"settings; pass --overwrite to discard them or choose another --out")
        write_table_atomic(plan_uri, table, so)
    return run_table(table, out, cfg, address=address, progress=progress,
                     header={"inputs": list(sources), "skipped_by_extension": list_stats.get("skipped_by_extension", 0),
                             "listing": list_stats, "args": args},
                     t_list=t_list, t0=t0)


def _read_plan(uri: str, so: dict) -> Optional[pa.Table]:
    fs, path = get_fs(uri, so)
    try:
        with fs.open(path, "rb") as f:
            return pq.read_table(f)
    except Exception:  # noqa: BLE001 - missing or unreadable: list again
        return None


def run_table(table: pa.Table, out: str, cfg: Config, address: Optional[str] = None,
              progress: bool = True, header: Optional[dict] = None, t_list: float = 0.0,
              t0: Optional[float] = None) -> dict:
    """Score the rows of a listing table (uri, size, mtime, extra.*) into ``out``, resuming an
    unfinished run of the same table and configuration; write the summary last; return it.

    Exactly once: a part file is written whole or not at all and named after its URIs; at a
    restart the URIs of every readable part are skipped; part files that no attempt of this run
    recorded (a write of a killed attempt that landed late) are removed before the commit."""
    t0 = t0 or time.time()
    so = cfg.input.storage_options
    header = dict(header or {})
    state_uri = join_uri(join_uri(out, STATE_DIR), RUN_STATE)
    plan_fp, cfg_fp = plan_fingerprint(table), config_fingerprint(cfg)
    state = _read_json(state_uri, so)
    existing = scan_parts(out, so)
    if existing and not (state and state.get("plan") == plan_fp and state.get("config") == cfg_fp):
        raise OutputError(f"output {out} holds part files of an unfinished run of other inputs or "
                          f"settings; pass --overwrite to discard them or choose another --out")
    same_run = bool(state and state.get("plan") == plan_fp and state.get("config") == cfg_fp)
    attempt = int(state.get("attempt", 0)) + 1 if same_run else 1
    _write_json(state_uri, {"plan": plan_fp, "config": cfg_fp, "attempt": attempt, "args": header.get("args"),
                            "listing": header.get("listing", {}), "rows": table.num_rows,
                            "started_at": (state or {}).get("started_at") or _now()}, so)

    # what earlier attempts committed; unreadable files and duplicated rows are dropped
    done_parts, done_tables, seen = [], [], set()
    plan_uris = table.column("uri").combine_chunks()
    broken = [n for n, t in existing.items() if t is None]
    for name in sorted(n for n, t in existing.items() if t is not None):
        t = existing[name]
        uris = t.column("uri").to_pylist()
        foreign = pc.sum(pc.invert(pc.is_in(t.column("uri"), value_set=plan_uris))).as_py() or 0
        if foreign or any(u in seen for u in uris):
            broken.append(name)  # rows another part already holds (or not of this run): redo them
            continue
        seen.update(uris)
        done_parts.append(name)
        done_tables.append(t)
    remove(out, broken, so)
    done = pa.concat_tables(done_tables) if done_tables else None
    todo = table if done is None else table.filter(
        pc.invert(pc.is_in(table.column("uri"), value_set=done.column("uri").combine_chunks())))
    if done is not None:
        log.info("resuming %s: %d of %d rows already committed in %d part files",
                 out, done.num_rows, table.num_rows, len(done_parts))

    schema = output_schema(cfg, table)
    result = {"rows": 0, "status": {}, "verdict": {}, "files": []}
    t1, t_ray = time.time(), 0.0
    stats = ""
    if todo.num_rows:
        import ray

        init_ray(address)
        t_ray, t1 = time.time() - t1, time.time()  # a local Ray's start-up is not pipeline time
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.print_on_execution_start = False
        sink = ParquetResultSink(out, schema, so, cfg.output.compression)
        ds = build_dataset(todo, cfg, schema)
        ds.write_datasink(sink)
        result = sink.result or result
        try:
            stats = ds.stats()
        except Exception:  # noqa: BLE001 - stats are informative only
            stats = ""
    t_run = time.time() - t1

    files = sorted(set(done_parts) | set(result["files"]))
    stray = sorted(set(part_names(out, so)) - set(files))
    remove(out, stray, so)  # written by an attempt that was killed, after this one listed
    status, verdict = collections.Counter(result["status"]), collections.Counter(result["verdict"])
    if done is not None:
        status.update(done.column("status").to_pylist())
        verdict.update(done.column("verdict").to_pylist())
    rows = result["rows"] + (done.num_rows if done is not None else 0)
    summary = {
        "faceqc_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex,
        "started_at": (state or {}).get("started_at") or _now(),
        "finished_at": _now(),
        "inputs": header.get("inputs", []),
        "output": out,
        "rows": rows,
        "expected_rows": table.num_rows,
        "skipped_by_extension": header.get("skipped_by_extension", 0),
        "status_counts": dict(status),
        "verdict_counts": dict(verdict),
        "files": files,
        "resume": {"attempt": attempt, "rows_already_committed": 0 if done is None else done.num_rows,
                   "parts_already_committed": len(done_parts), "rows_scored": result["rows"],
                   "parts_dropped": len(broken) + len(stray)},
        "seconds": {"listing": round(t_list, 3), "ray_start": round(t_ray, 3), "pipeline": round(t_run, 3),
                    "total": round(time.time() - t0, 3)},
        "images_per_second": round(todo.num_rows / t_run, 3) if t_run > 0 and todo.num_rows else None,
        "profile": cfg.profile,
        "config": cfg.to_dict(redact=True),
        "versions": versions(),
        "models": [m.as_dict() for m in models_for(cfg)],
        "ray_stats": stats,
    }
    summary.update({k: v for k, v in header.items() if k not in summary and k not in ("args", "listing")})
    if rows != table.num_rows:
        summary["error"] = f"wrote {rows} rows for {table.num_rows} inputs"
        # no commit marker: the run stays unfinished, and a restart scores what is missing
        _write_json(join_uri(join_uri(out, STATE_DIR), "last_attempt.json"), summary, so)
        return summary
    _write_json(join_uri(out, SUMMARY_NAME), summary, so)
    fs, path = get_fs(out, so)
    try:
        fs.rm(join_uri(path, STATE_DIR), recursive=True)
    except FileNotFoundError:
        pass
    invalidate(out, so)
    return summary


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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
