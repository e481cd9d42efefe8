"""A scoring run: list the inputs, freeze the plan, score what no part file holds yet, commit.

    run(sources, out, cfg)        `faceqc score`: listing -> plan -> run_table
    run_table(table, out, cfg)    score the rows of a listing table into ``out`` (also nightly's)

Exactly once: a part file is written whole or not at all and named after its URIs
(:mod:`pipeline.io.parts`); at a restart the URIs of every readable part are skipped; part files
that no attempt of this run recorded (a write of a killed attempt that landed late) are removed
before the commit; the summary, written last, is the commit marker and lists every part file.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import platform
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import SCHEMA_VERSION, __version__
from .config import Config
from .errors import FaceqcError, InputError, OutputError, errors_as
from .executor import alive_nodes, check_ray, init_ray, ray_dataset, work_counter
from .fs import get_fs, invalidate, is_local, join_uri, local_path, read_json, redact, write_json
from .io import retry
from .io.listing import list_sources
from .io.lock import run_lock
from .io.parts import (
    STATE_DIR,
    SUMMARY_NAME,
    PartWriter,
    part_names,
    remove,
    scan_parts,
    write_table_atomic,
)
from .progress import Progress
from .registry import check_installed, models_for
from .schema import output_schema
from .video.collect import (
    ClipCollector,
    clear_side_parts,
    settle_side_parts,
    video_summary,
)

log = logging.getLogger("faceqc")

RUN_STATE = "run.json"  # in STATE_DIR: what this output's unfinished run is (for resume)
PLAN_NAME = "plan.parquet"  # in STATE_DIR: the listing of `faceqc score` inputs, frozen at the first attempt


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def versions() -> dict:
    import cv2
    import dlib
    import numpy
    import ray

    return {"faceqc": __version__, "schema": SCHEMA_VERSION, "python": platform.python_version(),
            "ray": ray.__version__, "pyarrow": pa.__version__, "numpy": numpy.__version__,
            "opencv": cv2.__version__, "dlib": dlib.__version__}


def run_facts(cfg: Config) -> dict:
    """What every summary records about how its rows were made."""
    return {"faceqc_version": __version__, "schema_version": SCHEMA_VERSION, "profile": cfg.profile,
            "config": cfg.to_dict(redact=True), "versions": versions(),
            "models": [m.as_dict() for m in models_for(cfg)]}


def plan_fingerprint(table: pa.Table) -> str:
    h = hashlib.sha256()
    for chunk in table.column("uri").chunks:
        for u in chunk.to_pylist():
            h.update(u.encode("utf-8", "surrogatepass") + b"\0")
    return f"{table.num_rows}-{h.hexdigest()[:32]}"


# ------------------------------------------------------------------------------ the output
def check_output(out: str, cfg: Config, overwrite: bool) -> None:
    """Fail before any work if ``out`` holds a finished run (unless overwrite) or is not writable."""
    so = cfg.input.storage_options
    fs, path = get_fs(out, so)
    invalidate(out, so)
    with errors_as(OutputError, f"output {out} is not writable", mask=lambda t: redact(t, so)):
        if fs.exists(path) and not fs.isdir(path):
            raise OutputError(f"output {out} exists and is not a directory")
        if fs.exists(join_uri(path, SUMMARY_NAME)) and not overwrite:
            raise OutputError(f"output {out} already holds a finished run ({SUMMARY_NAME}); "
                              f"pass --overwrite to replace it or choose another --out")
        fs.makedirs(path, exist_ok=True)
        probe = join_uri(path, f".faceqc-write-test-{uuid.uuid4().hex[:8]}")

        def write_probe():
            with fs.open(probe, "wb") as f:
                f.write(b"ok")

        retry.call("write", write_probe, what=probe)
        fs.rm(probe)
    if overwrite:
        clear_output(out, so)


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
    clear_side_parts(out, storage_options)  # a video run's frames/ and tracks/
    invalidate(out, storage_options)


class ForeignParts(OutputError):
    """The output holds part files of an unfinished run of other inputs or settings."""


def _foreign_parts(out: str) -> OutputError:
    return ForeignParts(f"output {out} holds part files of an unfinished run of other inputs or "
                        f"settings; pass --overwrite to discard them or choose another --out")


@dataclass
class RunState:
    """What an unfinished run in an output folder is (``_faceqc/run.json``): a restart with the
    same plan and configuration resumes it."""

    plan: str
    config: str
    attempt: int = 0
    args: Optional[dict] = None
    listing: dict = field(default_factory=dict)
    rows: int = 0
    started_at: str = ""

    @staticmethod
    def uri(out: str) -> str:
        return join_uri(join_uri(out, STATE_DIR), RUN_STATE)

    @classmethod
    def load(cls, out: str, so: dict) -> Optional["RunState"]:
        d = read_json(cls.uri(out), so)
        if not d:
            return None
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**{"plan": "", "config": "", **known})

    def save(self, out: str, so: dict) -> None:
        write_json(self.uri(out), asdict(self), so)

    def same(self, plan: str, config: str) -> bool:
        return self.plan == plan and self.config == config


def _read_plan(uri: str, so: dict) -> Optional[pa.Table]:
    fs, path = get_fs(uri, so)

    def read():
        with fs.open(path, "rb") as f:
            return pq.read_table(f)

    try:
        return retry.call("read", read, what=uri)
    except Exception as e:  # noqa: BLE001 - missing or unreadable: list again
        if retry.transient(e):
            raise OutputError(redact(f"cannot read {uri}: {type(e).__name__}: {e}", so)) from e
        return None


@dataclass
class Committed:
    """What earlier attempts committed: readable part files whose rows belong to the plan, each
    URI once; ``broken`` are the files to drop (unreadable, foreign or duplicated rows)."""

    parts: List[str]
    table: Optional[pa.Table]
    broken: List[str]

    @property
    def rows(self) -> int:
        return 0 if self.table is None else self.table.num_rows

    @classmethod
    def scan(cls, out: str, plan: pa.Table, so: dict, existing: Optional[dict] = None) -> "Committed":
        existing = scan_parts(out, so) if existing is None else existing
        plan_uris = plan.column("uri").combine_chunks()
        parts, tables, seen = [], [], set()
        broken = [n for n, t in existing.items() if t is None]
        for name in sorted(n for n, t in existing.items() if t is not None):
            t = existing[name]
            uris = t.column("uri").to_pylist()
            foreign = pc.sum(pc.invert(pc.is_in(t.column("uri"), value_set=plan_uris))).as_py() or 0
            if foreign or any(u in seen for u in uris):
                broken.append(name)  # rows another part already holds (or not of this run): redo them
                continue
            seen.update(uris)
            parts.append(name)
            tables.append(t)
        return cls(parts, pa.concat_tables(tables) if tables else None, broken)

    def todo(self, plan: pa.Table) -> pa.Table:
        if self.table is None:
            return plan
        return plan.filter(pc.invert(pc.is_in(plan.column("uri"), value_set=self.table.column("uri").combine_chunks())))


# ------------------------------------------------------------------------------ scoring
def score(todo: pa.Table, out: str, cfg: Config, schema: pa.Schema, address: Optional[str] = None,
          progress: bool = True) -> dict:
    """Score the rows of ``todo`` through Ray into part files in ``out``; return the writer's
    counts, the Ray start-up and pipeline seconds, and Ray Data's stats."""
    empty = {"rows": 0, "status": {}, "verdict": {}, "files": [], "seconds_ray_start": 0.0,
             "seconds_pipeline": 0.0, "ray_stats": "", "ray_logs": None, "read_retries": 0, "rows_started": 0,
             "nodes": 0, "nodes_lost": []}
    if not todo.num_rows:
        return empty
    import ray

    t = time.time()
    ray_logs = init_ray(address)
    t_ray, t = time.time() - t, time.time()  # a local Ray's start-up is not pipeline time
    nodes = alive_nodes()
    try:
        counter = work_counter()
    except Exception as e:  # noqa: BLE001 - the count of redone rows is informative only
        log.warning("cannot count the rows Ray redoes: %s: %s", type(e).__name__, e)
        counter = None
    ds = ray_dataset(todo, cfg, counter)
    writer = PartWriter(out, schema, cfg.input.storage_options, cfg.output.compression)
    clips = ClipCollector(writer, out, cfg, models_for(cfg))  # images pass; a video's rows become one clip row
    try:
        with Progress(todo.num_rows, enabled=progress) as bar:
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
                bar.update(clips.add(block))
    finally:
        counts = writer.close()
    counts["video"] = clips.close()
    try:
        stats = ds.stats()
    except Exception:  # noqa: BLE001 - stats are informative only
        stats = ""
    started, count_error = None, None
    if counter is not None:
        for _ in range(3):  # a busy cluster may take a while to answer
            try:
                started = ray.get(counter.total.remote(), timeout=60)
                break
            except Exception as e:  # noqa: BLE001
                count_error = f"{type(e).__name__}: {str(e)[:300]}"
                if "Timeout" not in type(e).__name__:
                    break
        if started is None:
            log.warning("cannot count the rows Ray redid: %s", count_error)
        try:
            ray.kill(counter)
        except Exception:  # noqa: BLE001
            pass
    now = alive_nodes()
    lost = sorted(addr for node, addr in nodes.items() if node not in now)
    return {**counts, "seconds_ray_start": t_ray, "seconds_pipeline": time.time() - t, "ray_stats": stats,
            "ray_logs": ray_logs, "rows_started": started, "nodes": len(nodes), "nodes_lost": lost,
            "count_error": None if started is not None else count_error}


def run(sources: Sequence[str], out: str, cfg: Config, limit: Optional[int] = None,
        address: Optional[str] = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Score every input file into ``out``; return the run summary (also written to out).

    An unfinished run in ``out`` (killed midway) started again with the same arguments resumes:
    the inputs listed by its first attempt are kept, finished part files are kept, and only the
    rest is scored."""
    check_ray(address)
    check_installed(cfg)
    retry.configure(cfg.storage)
    for src in list(sources) + [out]:  # every store's filesystem package, before --out is touched
        if not is_local(src):
            get_fs(src, cfg.input.storage_options)
    if is_local(out):  # the lock lives in --out: it must be a folder that can be written
        path = local_path(out)
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputError(f"output {out} exists and is not a directory")
        with errors_as(OutputError, f"output {out} is not writable"):
            os.makedirs(path, exist_ok=True)
    with run_lock(out, cfg, "faceqc score") as lock:  # before any work: one run per output
        try:
            return _run(sources, out, cfg, limit, address, overwrite, progress, lock)
        except Exception as e:
            if retry.transient(e) and not isinstance(e, FaceqcError):
                raise retry.exhausted(e, f"faceqc score {out}", cfg.input.storage_options) from e
            raise


def _run(sources, out, cfg, limit, address, overwrite, progress, lock) -> dict:
    t0 = time.time()
    so = cfg.input.storage_options
    before = retry.counts()
    args = {"sources": list(sources), "limit": limit, "extensions": list(cfg.input.extensions)}
    state = None if overwrite else RunState.load(out, so)
    resumable = state is not None and state.args == args and state.config == cfg.fingerprint()
    table = _read_plan(join_uri(join_uri(out, STATE_DIR), PLAN_NAME), so) if resumable else None
    list_stats = dict(state.listing) if resumable and table is not None else {}
    if table is None:
        table = list_sources(sources, so, cfg.input.extensions, list_stats, limit)
        if not table.num_rows:
            raise InputError(f"no input files found in {', '.join(sources)}")
    t_list = time.time() - t0
    check_output(out, cfg, overwrite)
    if not (resumable and state.plan == plan_fingerprint(table)):
        # a new run: freeze its listing, so that a restart scores exactly these files
        if part_names(out, so):
            raise _foreign_parts(out)
        write_table_atomic(join_uri(join_uri(out, STATE_DIR), PLAN_NAME), table, so)
    return run_table(table, out, cfg, address=address, progress=progress, state=state, t0=t0, t_list=t_list,
                     inputs=list(sources), args=args, listing=list_stats, lock=lock, retries_before=before)


def run_table(table: pa.Table, out: str, cfg: Config, address: Optional[str] = None, progress: bool = True,
              state: Optional[RunState] = None, t0: Optional[float] = None, t_list: float = 0.0,
              inputs: Sequence[str] = (), args: Optional[dict] = None, listing: Optional[dict] = None,
              extra: Optional[dict] = None, lock=None, retries_before: Optional[dict] = None) -> dict:
    """Score the rows of a listing table (uri, size, mtime, extra.*) into ``out``, resuming an
    unfinished run of the same table and configuration; write the summary last; return it.
    ``extra``: more fields for the summary (nightly's).  ``lock``: the run's
    :class:`~pipeline.io.lock.RunLock`, checked before the commit.  ``retries_before``: the
    storage retry counts (:func:`pipeline.io.retry.counts`) when the run began."""
    t0 = t0 or time.time()
    so = cfg.input.storage_options
    check_ray(address)
    check_installed(cfg)
    retry.configure(cfg.storage)
    before = retry.counts() if retries_before is None else retries_before
    plan_fp, cfg_fp = plan_fingerprint(table), cfg.fingerprint()
    state = state if state is not None else RunState.load(out, so)
    existing = scan_parts(out, so)
    same_run = state is not None and state.same(plan_fp, cfg_fp)
    if existing and not same_run:
        raise _foreign_parts(out)
    state = RunState(plan_fp, cfg_fp, attempt=(state.attempt + 1) if same_run else 1, args=args,
                     listing=dict(listing or {}), rows=table.num_rows,
                     started_at=(state.started_at if same_run else "") or timestamp())
    state.save(out, so)

    done = Committed.scan(out, table, so, existing)
    remove(out, done.broken, so)
    todo = done.todo(table)
    if done.rows:
        log.info("resuming %s: %d of %d rows already committed in %d part files",
                 out, done.rows, table.num_rows, len(done.parts))
    result = score(todo, out, cfg, output_schema(table, models_for(cfg), cfg.profile), address, progress)

    files = sorted(set(done.parts) | set(result["files"]))
    stray = sorted(set(part_names(out, so)) - set(files))
    remove(out, stray, so)  # written by an attempt that was killed, after this one listed
    clip_files = settle_side_parts(out, files, so)  # frames/ and tracks/ parts of no committed part: strays
    summary = {"run_id": uuid.uuid4().hex, "started_at": state.started_at, "finished_at": timestamp(),
               "inputs": list(inputs), "output": out,
               **_counts(result, done, table.num_rows, todo.num_rows, files, len(done.broken) + len(stray), state),
               "seconds": {"listing": round(t_list, 3), "ray_start": round(result["seconds_ray_start"], 3),
                           "pipeline": round(result["seconds_pipeline"], 3), "total": round(time.time() - t0, 3)},
               "video": video_summary(result, clip_files),
               "ray_logs": result["ray_logs"], **run_facts(cfg), **(extra or {}), "ray_stats": result["ray_stats"]}
    summary["storage"] = storage_facts(before, result.get("read_retries", 0))
    summary["cluster"] = cluster_facts(result)
    if lock is not None:
        summary["lock"] = lock.summary()
    summary["warnings"] = failure_lines(summary)
    rows = summary["rows"]
    if rows != table.num_rows:
        summary["error"] = f"wrote {rows} rows for {table.num_rows} inputs"
        # no commit marker: the run stays unfinished, and a restart scores what is missing
        write_json(join_uri(join_uri(out, STATE_DIR), "last_attempt.json"), summary, so)
        return summary
    if lock is not None:
        lock.check()  # a run whose lock was taken over never commits
    write_json(join_uri(out, SUMMARY_NAME), summary, so)
    fs, path = get_fs(out, so)
    try:
        fs.rm(join_uri(path, STATE_DIR), recursive=True)
    except FileNotFoundError:
        pass
    invalidate(out, so)
    return summary


def storage_facts(before: dict, worker_reads: int = 0) -> dict:
    """The retry budget and what this run used of it (the driver's retries since ``before``,
    plus the object reads the workers retried)."""
    got = retry.since(before)
    got["read"] = got.get("read", 0) + int(worker_reads or 0)
    return {"policy": retry.policy().as_dict(), "retries": got,
            "retries_total": sum(v for k, v in got.items() if k != "gave_up"),
            "worker_read_retries": int(worker_reads or 0)}


def cluster_facts(result: dict) -> dict:
    """Ray nodes at the start and those lost mid-run; rows started (every execution) against
    rows written: the share of the work a lost node or worker made Ray redo."""
    started, written = result.get("rows_started"), result.get("rows", 0)
    redone = max(0, started - written) if isinstance(started, int) else None
    return {"nodes": result.get("nodes", 0), "nodes_lost": list(result.get("nodes_lost") or []),
            "rows_started": started, "rows_redone": redone, "count_error": result.get("count_error"),
            "redone_share": round(redone / written, 4) if redone is not None and written else (0.0 if redone == 0 else None)}


def failure_lines(summary: dict) -> List[str]:
    """One line per fault the run survived or that needs attention (console and summary)."""
    out = []
    st = (summary.get("storage") or {}).get("retries") or {}
    total = sum(v for k, v in st.items() if k != "gave_up")
    if total or st.get("gave_up"):
        kinds = ", ".join(f"{k} {v}" for k, v in st.items() if v and k != "gave_up")
        out.append(f"storage faults: {total} operations retried ({kinds})"
                   + (f"; {st['gave_up']} gave up after the whole budget" if st.get("gave_up") else ""))
    c = summary.get("cluster") or {}
    if c.get("nodes_lost"):
        redone = (f"{c['rows_redone']} rows ({100 * (c.get('redone_share') or 0):.1f}% of the rows written) were "
                  f"scored again elsewhere" if c.get("rows_redone") is not None
                  else "the rows redone could not be counted")
        out.append(f"lost {len(c['nodes_lost'])} of {c.get('nodes')} Ray nodes mid-run "
                   f"({', '.join(c['nodes_lost'])}); {redone}")
    elif c.get("rows_redone"):
        out.append(f"{c['rows_redone']} rows ({100 * (c.get('redone_share') or 0):.1f}%) were scored twice "
                   f"(a worker was lost and Ray redid its tasks)")
    t = (summary.get("lock") or {}).get("taken_over")
    if t:
        out.append(f"took over a stale lock from host {t.get('host')}, pid {t.get('pid')} "
                   f"(started {t.get('started_at')}): {t.get('reason')}")
    r = summary.get("resume") or {}
    if r.get("parts_dropped"):
        out.append(f"dropped {r['parts_dropped']} part files that no committed attempt wrote "
                   f"(a killed attempt's late writes, or unreadable files); their rows were scored again")
    return out


def _counts(result: dict, done: Committed, planned: int, scored: int, files: List[str], dropped: int,
            state: RunState) -> dict:
    """The summary's row counts: this attempt's and the earlier attempts' together."""
    status, verdict = collections.Counter(result["status"]), collections.Counter(result["verdict"])
    if done.table is not None:
        status.update(done.table.column("status").to_pylist())
        verdict.update(done.table.column("verdict").to_pylist())
    t = result["seconds_pipeline"]
    return {"rows": result["rows"] + done.rows, "expected_rows": planned,
            "skipped_by_extension": state.listing.get("skipped_by_extension", 0),
            "status_counts": dict(status), "verdict_counts": dict(verdict), "files": files,
            "resume": {"attempt": state.attempt, "rows_already_committed": done.rows,
                       "parts_already_committed": len(done.parts), "rows_scored": result["rows"],
                       "parts_dropped": dropped},
            "images_per_second": round(scored / t, 3) if t > 0 and scored else None}


def summary_text(summary: dict) -> str:
    """A short human summary of a run."""
    lines = [f"faceqc {summary['faceqc_version']}: {summary['rows']} images -> {summary['output']}",
             f"  {summary['images_per_second']} images/s over {summary['seconds']['pipeline']} s "
             f"(profile {summary['profile']})"]
    lines.append("  status : " + ", ".join(f"{k} {v}" for k, v in sorted(summary["status_counts"].items(),
                                                                      key=lambda kv: -kv[1])))
    lines.append("  verdict: " + ", ".join(f"{k} {summary['verdict_counts'].get(k, 0)}"
                                          for k in ("accept", "review", "reject")))
    v = summary.get("video") or {}
    if v.get("clips_scored"):
        lines.append(f"  clips  : {v['clips_scored']} clips, {v['frames_scored']} sampled frames "
                     f"({v['frames_per_second']} frames/s); their frames/ and tracks/ are beside the rows")
    noncommercial = [m["id"] for m in summary.get("models", []) if not m.get("commercial_use", True)]
    if noncommercial:
        lines.append("  NOTE   : non-commercial models were used: " + ", ".join(noncommercial))
    if summary.get("ray_logs"):
        lines.append(f"  logs   : Ray's logs are in {summary['ray_logs']}")
    for w in summary.get("warnings") or []:
        lines.append("  WARNING: " + w)
    if summary.get("error"):
        lines.append("  ERROR  : " + summary["error"])
    return "\n".join(lines)
