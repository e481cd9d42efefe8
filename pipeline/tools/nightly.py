"""Nightly incremental cleaning: score only what is new or changed since the last committed run.

Layout of ``OUT`` (any fsspec URI)::

    runs/run_id=<YYYY-MM-DDTHHMMSSZ>/
        _plan.parquet        what this run does, fixed before any scoring: every listed object
                             that is new / changed / retry, and every deleted one, with its
                             listing key (uri, size, mtime, etag) and its previous score
        _staging/            the attempts' part files while the run works (a `faceqc score` output);
                             readers skip "_" folders, and a killed attempt's late write lands here
        scores/              the scored rows once the run is done: part files (and refused-*.parquet,
                             rows re-fused after a fusion-only settings change), _summary.json;
                             published whole (locally one directory rename; on object stores the
                             files are copied in, then the run's _summary.json commits them)
        deleted.parquet      objects gone from the source since the last run, with their last score
        _summary.json        the run's commit marker, written last
    latest/quality.parquet   "latest quality per image": one row per live object, from the run
                             that last scored it (column run_id); deleted objects leave it
    latest/accept.txt        URIs, one a line, by verdict: what a training data loader reads
    latest/review.txt
    latest/reject.txt
    latest/_view.json        the committed run the view reflects, and its counts (written last)
    latest/frames.parquet    clips: their sampled frames and face tracks, by the same rule as
    latest/tracks.parquet    quality.parquet (scores/frames/ and scores/tracks/ of each run; see
                             refresh_clip_views below); there once a run has scored a clip

Change key: an object is *new* when its URI is not in the view, *changed* when its size or
ETag differs (its mtime where the store has no ETag, as on local disks), *retry* when its last
row was a ``read_error`` (transient: the bytes were never judged), *deleted* when the view has
it and the listing does not, and *unchanged* otherwise.  Source objects are only ever read.

Settings and models: every run records its fingerprint (profile, every setting, model ids and
the sha256 of their files), and every view row the fingerprint of the run that made it
(``scoring_fp``, ``fusion_fp``).  An unchanged object whose row was scored under other scoring
settings or models is *rescored*; one whose row differs only in fusion settings (``fuse.*``,
e.g. after ``faceqc calibrate``) is *re-fused* from the raw measures its row keeps, without
reading the image.  ``--keep-scores`` keeps the stored rows as they are.

One run per output: ``OUT/_lock.json`` (:mod:`pipeline.io.lock`) is taken before any work.

Resume: a run that is killed finds its ``runs/run_id=X/`` without ``_summary.json`` when it is
started again; it keeps its frozen plan, the scoring resumes from the committed part files
(see :mod:`pipeline.stages.write`), and the run commits as if it had never stopped.  The view
and lists are derived from committed runs only and are brought up to date first thing.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import time
from typing import List, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import Config
from ..errors import FaceqcError, OutputError, RunError, errors_as
from ..executor import check_ray
from ..fs import (
    atomic_writer,
    get_fs,
    invalidate,
    is_local,
    join_uri,
    list_names,
    local_path,
    read_json,
    redact,
    write_json,
)
from ..fusion import refuse_table
from ..io import retry
from ..io.listing import ETAG, list_table
from ..io.lock import run_lock
from ..io.parts import SUMMARY_NAME, write_table_atomic
from ..modelstore import model_digests
from ..registry import check_installed, models_for
from ..run import ForeignParts, cluster_facts, failure_lines, run_facts, run_table, storage_facts, timestamp
from ..schema import EXTRA_PREFIX, output_schema
from ..video.schema import FRAMES_DIR, FRAMES_SCHEMA, TRACKS_DIR, TRACKS_SCHEMA

log = logging.getLogger("faceqc")

RUNS, LATEST = "runs", "latest"
PLAN_NAME, DELETED_NAME, VIEW_NAME, VIEW_MARKER = "_plan.parquet", "deleted.parquet", "quality.parquet", "_view.json"
VERDICT_LISTS = ("accept", "review", "reject")
CHANGE = EXTRA_PREFIX + "change"
RETRY_STATUSES = ("read_error",)  # the bytes were never judged: try again next night
VIEW_RUN_KEY = b"faceqc.view.run_id"
STAGING, SCORES = "_staging", "scores"
REFUSED_PREFIX, REFUSED_MARKER = "refused-", "_refused.json"
FP_COLUMNS = ("scoring_fp", "fusion_fp")


# ------------------------------------------------------------------------------ layout
def run_dir(out: str, run_id: str) -> str:
    return join_uri(join_uri(out, RUNS), f"run_id={run_id}")


def list_runs(out: str, so: dict) -> List[dict]:
    """Every run partition, oldest first: {"run_id", "committed"}."""
    names = [n for n in list_names(join_uri(out, RUNS), so) if n.startswith("run_id=")]
    fs, _ = get_fs(out, so)
    runs = []
    for n in sorted(names):
        rid = n.split("=", 1)[1]
        _, p = get_fs(join_uri(run_dir(out, rid), SUMMARY_NAME), so)
        runs.append({"run_id": rid, "committed": fs.exists(p)})
    return runs


def committed_runs(out: str, storage_options: Optional[dict] = None) -> List[dict]:
    """The summaries of the committed runs, oldest first: what a reader of the history takes."""
    so = storage_options or {}
    out_runs = []
    for r in list_runs(out, so):
        if r["committed"]:
            out_runs.append(read_json(join_uri(run_dir(out, r["run_id"]), SUMMARY_NAME), so))
    return [r for r in out_runs if r]


def committed_files(out: str, storage_options: Optional[dict] = None) -> List[str]:
    """The scored part files of committed runs only, oldest run first (a run in progress, or
    killed and not yet resumed, has part files under runs/ too: a glob would see them)."""
    files = []
    for s in committed_runs(out, storage_options):
        rdir = join_uri(run_dir(out, s["run_id"]), SCORES)
        files += [join_uri(rdir, n) for n in s.get("files", {}).get("scores", [])]
    return files


def _norm(uri: str) -> str:
    if is_local(uri):
        return os.path.abspath(local_path(uri)).rstrip("/")
    return uri.rstrip("/")


def _new_run_id(existing: List[str], now: Optional[float] = None) -> str:
    t = time.time() if now is None else now
    rid = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(t))
    while existing and rid <= existing[-1]:  # two runs in one second, or a clock that went back
        t += 1
        rid = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(t))
    return rid


# ------------------------------------------------------------------------ fingerprints
def _digest(x) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(x, sort_keys=True, default=str).encode()).hexdigest()[:32]


def fingerprint(cfg: Config) -> dict:
    """What made a run's rows: profile, every setting, model ids with the sha256 of their files;
    ``scoring`` digests what decides the raw measures (settings and models), ``fusion`` the
    fusion settings (see :meth:`pipeline.config.Config.parts`)."""
    fp = cfg.fingerprints()
    models = model_digests(cfg)
    return {"profile": cfg.profile, "scoring": _digest([fp["scoring"], models]), "fusion": fp["fusion"],
            "models": models, "settings": cfg.to_dict(redact=True)}


def run_fingerprint(summary: Optional[dict]) -> Optional[dict]:
    """A committed run's fingerprint; for runs made before fingerprints were recorded, rebuilt
    from the settings its summary holds (its models taken as today's files); None if unknown."""
    if not summary:
        return None
    if summary.get("fingerprint"):
        return summary["fingerprint"]
    conf = summary.get("config")
    if not isinstance(conf, dict):
        return None
    try:
        conf = json.loads(json.dumps(conf))
        conf.setdefault("input", {})["storage_options"] = {}
        return fingerprint(Config.model_validate(conf))
    except Exception:  # noqa: BLE001 - settings of another version: unknown
        return None


def _flat(d, prefix="") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "storage_options":
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def changed_settings(old: Optional[dict], new: dict) -> List[str]:
    """The settings (dotted keys) and models that differ between two fingerprints: what a
    rescoring or re-fusing is for (resources, output and storage settings change no score)."""
    if not old:
        return []
    plain = lambda x: json.loads(json.dumps(x, default=str))  # noqa: E731 - tuples and lists alike
    a, b = _flat(plain(old.get("settings"))), _flat(plain(new.get("settings")))
    skip = ("input.storage_options", "output.", "storage.")
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(skip)
                  and ".resources." not in k and k != "profile")
    if old.get("profile") != new.get("profile"):
        keys.insert(0, f"profile ({old.get('profile')} -> {new.get('profile')})")
    ma = {m["id"]: m.get("sha256") for m in old.get("models") or []}
    mb = {m["id"]: m.get("sha256") for m in new.get("models") or []}
    keys += [f"model {k}" for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)]
    return keys


# ------------------------------------------------------------------------------- diff
def view_keys(out: str, so: dict, default_fp: Optional[dict] = None) -> pa.Table:
    """The change-detection state: key columns of the latest view (empty on the first run).
    Rows of a view written before fingerprints were kept get ``default_fp``'s (the last run's)."""
    cols = ["uri", "size", "mtime", "etag", "status", "quality", "verdict", "run_id", "media", *FP_COLUMNS]
    fs, path = get_fs(join_uri(join_uri(out, LATEST), VIEW_NAME), so)
    try:
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            have = [c for c in cols if c in pf.schema_arrow.names]
            t = pf.read(columns=have)
    except FileNotFoundError:
        t = None
    types = {"uri": pa.string(), "size": pa.int64(), "mtime": pa.float64(), "etag": pa.string(),
             "status": pa.string(), "quality": pa.float32(), "verdict": pa.string(), "run_id": pa.string(),
             "media": pa.string(), "scoring_fp": pa.string(), "fusion_fp": pa.string()}
    if t is None:
        return pa.table({c: pa.array([], types[c]) for c in cols})
    for c in cols:
        if c not in t.column_names:
            t = t.append_column(c, pa.nulls(t.num_rows, types[c]))
    t = t.select(cols).cast(pa.schema([(c, types[c]) for c in cols]))
    if default_fp:
        for c, key in zip(FP_COLUMNS, ("scoring", "fusion")):
            i = t.schema.get_field_index(c)
            t = t.set_column(i, c, pc.fill_null(t.column(c), pa.scalar(default_fp[key], pa.string())))
    return t


def diff(listing: pa.Table, state: pa.Table, fp: Optional[dict] = None) -> pa.Table:
    """The plan: one row per object that is new / changed / retry / deleted (unchanged ones are
    left out), with its listing key and its previous score.  With ``fp`` (this run's
    fingerprint), an unchanged object whose row was made under other scoring settings or models
    is ``rescore``, under other fusion settings only ``refuse`` -- except a clip, which is rescored:
    its verdict comes from its tracks and the clip rules, which its stored row does not keep."""
    left = listing.select(["uri", "size", "mtime", ETAG]).rename_columns(["uri", "size", "mtime", "etag"])
    left = left.append_column("_in_listing", pa.array([True] * left.num_rows, pa.bool_()))
    right = state.rename_columns(["uri"] + [f"prev_{c}" for c in state.column_names[1:]])
    right = right.append_column("_in_state", pa.array([True] * right.num_rows, pa.bool_()))
    j = left.join(right, keys="uri", join_type="full outer", use_threads=True)
    in_l = pc.fill_null(j.column("_in_listing"), False)
    in_s = pc.fill_null(j.column("_in_state"), False)
    etag, prev_etag = j.column("etag"), j.column("prev_etag")
    both_etag = pc.and_(pc.is_valid(etag), pc.is_valid(prev_etag))
    no_etag = pc.and_(pc.is_null(etag), pc.is_null(prev_etag))
    differs = pc.or_(
        pc.fill_null(pc.not_equal(j.column("size"), j.column("prev_size")), True),
        pc.if_else(both_etag, pc.fill_null(pc.not_equal(etag, prev_etag), True),
                   pc.if_else(no_etag,
                              pc.fill_null(pc.not_equal(j.column("mtime"), j.column("prev_mtime")), True),
                              True)))
    retry = pc.fill_null(pc.is_in(j.column("prev_status"), value_set=pa.array(RETRY_STATUSES)), False)
    same = pa.array(["unchanged"] * j.num_rows, pa.string())
    if fp and "prev_scoring_fp" in j.column_names:
        other_scoring = pc.fill_null(pc.not_equal(j.column("prev_scoring_fp"), fp["scoring"]), False)
        other_fusion = pc.fill_null(pc.not_equal(j.column("prev_fusion_fp"), fp["fusion"]), False)
        clip = (pc.fill_null(pc.equal(j.column("prev_media"), "video"), False) if "prev_media" in j.column_names
                else pa.array([False] * j.num_rows))
        same = pc.if_else(other_scoring, "rescore",
                          pc.if_else(other_fusion, pc.if_else(clip, "rescore", "refuse"), "unchanged"))
    change = pc.if_else(
        pc.and_(in_l, pc.invert(in_s)), "new",
        pc.if_else(pc.and_(in_s, pc.invert(in_l)), "deleted",
                   pc.if_else(differs, "changed", pc.if_else(retry, "retry", same))))
    j = j.append_column("change", change)
    # the deleted rows keep their last known key
    for c in ("size", "mtime", "etag"):
        j = j.set_column(j.schema.get_field_index(c), c,
                         pc.if_else(in_l, j.column(c), j.column(f"prev_{c}")))
    plan = j.filter(pc.not_equal(j.column("change"), "unchanged"))
    plan = plan.select(["uri", "size", "mtime", "etag", "change", "prev_run_id", "prev_status",
                        "prev_quality", "prev_verdict"])
    return plan.sort_by([("uri", "ascending")])


def count_changes(plan: pa.Table) -> dict:
    """Objects new / changed / retry / deleted (rescore and refuse: :func:`count_settings`)."""
    vc = pc.value_counts(plan.column("change")).to_pylist() if plan.num_rows else []
    counts = {"new": 0, "changed": 0, "retry": 0, "deleted": 0}
    counts.update({d["values"]: d["counts"] for d in vc if d["values"] in counts})
    return counts


def count_settings(plan: pa.Table) -> dict:
    """Unchanged objects to rescore (scoring settings or models changed) or re-fuse."""
    vc = pc.value_counts(plan.column("change")).to_pylist() if plan.num_rows else []
    got = {d["values"]: d["counts"] for d in vc}
    return {"rescore": got.get("rescore", 0), "refuse": got.get("refuse", 0)}


# ------------------------------------------------------------------------------- view
def view_schema(run_schema: pa.Schema) -> pa.Schema:
    fields = [f for f in run_schema if f.name not in ("run_id",) + FP_COLUMNS] + \
        [pa.field("run_id", pa.string())] + [pa.field(c, pa.string()) for c in FP_COLUMNS]
    return pa.schema(fields, metadata=run_schema.metadata)


def fit_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns (missing ones null), in its order and types."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _view_run(out: str, so: dict) -> Optional[str]:
    fs, path = get_fs(join_uri(join_uri(out, LATEST), VIEW_NAME), so)
    try:
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).schema_arrow.metadata or {}
        return meta.get(VIEW_RUN_KEY, b"").decode() or None
    except FileNotFoundError:
        return None


def _run_rows(out: str, run_id: str, so: dict, schema: pa.Schema):
    """Record batches of a committed run's scored rows, with run_id, in the view's schema."""
    rdir = run_dir(out, run_id)
    summary = read_json(join_uri(rdir, SUMMARY_NAME), so) or {}
    fp = run_fingerprint(summary) or {}
    for name in summary.get("files", {}).get("scores", []):
        t = _read_table(join_uri(join_uri(rdir, SCORES), name), so)
        t = t.drop_columns([c for c in ("run_id",) + FP_COLUMNS if c in t.column_names])
        t = t.append_column("run_id", pa.array([run_id] * t.num_rows, pa.string()))
        for c, key in zip(FP_COLUMNS, ("scoring", "fusion")):
            t = t.append_column(c, pa.array([fp.get(key)] * t.num_rows, pa.string()))
        yield from fit_schema(t, schema).to_batches()


def _plan_uris(out: str, run_id: str, so: dict) -> pa.Array:
    fs, path = get_fs(join_uri(run_dir(out, run_id), PLAN_NAME), so)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=["uri"]).column("uri").combine_chunks()


def _read_table(uri: str, so: dict) -> pa.Table:
    """A whole Parquet file, read again on a storage fault."""
    fs, path = get_fs(uri, so)

    def read():
        with fs.open(path, "rb") as f:
            return pq.read_table(f)

    return read() if is_local(uri) else retry.call("read", read, what=uri)


def _rewrite_view(out: str, cfg: Config, current: Optional[str], pending: List[str], target: str) -> None:
    """latest/quality.parquet: the current view's rows without the URIs that pending runs planned,
    then each pending run's scored rows (a later run's rows replacing an earlier one's)."""
    so = cfg.input.storage_options
    vpath = join_uri(join_uri(out, LATEST), VIEW_NAME)
    listing = pa.table({ETAG: pa.array([], pa.string()), CHANGE: pa.array([], pa.string())})
    schema = view_schema(output_schema(listing, models_for(cfg), cfg.profile))
    schema = schema.with_metadata({**(schema.metadata or {}), VIEW_RUN_KEY: target.encode()})
    planned = [_plan_uris(out, r, so) for r in pending]
    drop = pa.concat_arrays(planned)
    later = [pa.concat_arrays(planned[i + 1:]) if i + 1 < len(planned) else pa.array([], pa.string())
             for i in range(len(pending))]
    fs, path = get_fs(vpath, so)
    with atomic_writer(vpath, so) as f, contextlib.closing(pq.ParquetWriter(f, schema, compression=cfg.output.compression)) as writer:
        if current is not None:
            fps: dict = {}
            with fs.open(path, "rb") as old:
                for b in pq.ParquetFile(old).iter_batches(batch_size=65536):
                    t = pa.Table.from_batches([b])
                    t = t.filter(pc.invert(pc.is_in(t.column("uri"), value_set=drop)))
                    if t.num_rows:
                        writer.write_table(_with_fingerprints(fit_schema(t, schema), out, so, fps))
        for r, newer in zip(pending, later):
            for b in _run_rows(out, r, so, schema):
                t = pa.Table.from_batches([b])
                if len(newer):
                    t = t.filter(pc.invert(pc.is_in(t.column("uri"), value_set=newer)))
                if t.num_rows:
                    writer.write_table(t)


def _with_fingerprints(t: pa.Table, out: str, so: dict, cache: dict) -> pa.Table:
    """View rows of a view written before fingerprints were kept: those of the run that made each."""
    if not t.column("scoring_fp").null_count:
        return t
    for rid in set(t.column("run_id").to_pylist()) - set(cache):
        cache[rid] = run_fingerprint(read_json(join_uri(run_dir(out, rid), SUMMARY_NAME), so) if rid else None) or {}
    rids = t.column("run_id").to_pylist()
    for c, key in zip(FP_COLUMNS, ("scoring", "fusion")):
        have = t.column(c).to_pylist()
        filled = [h if h is not None else cache.get(r, {}).get(key) for h, r in zip(have, rids)]
        t = t.set_column(t.schema.get_field_index(c), c, pa.array(filled, pa.string()))
    return t


def _write_lists(out: str, so: dict) -> tuple:
    """latest/<verdict>.txt from the view, each replaced atomically; (rows, counts per verdict)."""
    latest = join_uri(out, LATEST)
    counts = {v: 0 for v in VERDICT_LISTS}
    rows = 0
    fs, path = get_fs(join_uri(latest, VIEW_NAME), so)
    with contextlib.ExitStack() as stack:
        files = {v: stack.enter_context(atomic_writer(join_uri(latest, f"{v}.txt"), so)) for v in VERDICT_LISTS}
        with fs.open(path, "rb") as f:
            for b in pq.ParquetFile(f).iter_batches(batch_size=65536, columns=["uri", "verdict"]):
                uris, verdicts = b.column(0).to_pylist(), b.column(1).to_pylist()
                rows += len(uris)
                for v in VERDICT_LISTS:
                    sel = [u for u, w in zip(uris, verdicts) if w == v]
                    counts[v] += len(sel)
                    if sel:
                        files[v].write(("\n".join(sel) + "\n").encode("utf-8", "surrogatepass"))
    return rows, counts


def refresh_view(out: str, cfg: Config, committed: List[str]) -> Optional[dict]:
    """Bring latest/ up to date with the committed runs (oldest first); return its marker.

    The view file records the run it reflects, so a job killed while refreshing it redoes only
    what is missing; each file is replaced atomically, the marker last."""
    so = cfg.input.storage_options
    if not committed:
        return None
    latest = join_uri(out, LATEST)
    marker = read_json(join_uri(latest, VIEW_MARKER), so)
    target = committed[-1]
    if marker and marker.get("run_id") == target:
        return marker
    t0 = time.time()
    current = retry.call("read", _view_run, out, so, what="latest view")
    pending = [r for r in committed if current is None or r > current]
    # each step reads and rewrites whole files: on a storage fault it is done again (retried)
    if pending:
        retry.call("commit", _rewrite_view, out, cfg, current, pending, target, what="latest view")
    # latest/frames.parquet, latest/tracks.parquet (clips)
    retry.call("commit", refresh_clip_views, out, cfg, committed, what="clip views")
    rows, counts = retry.call("commit", _write_lists, out, so, what="verdict lists")
    marker = {"run_id": target, "rows": rows, "verdict_counts": counts, "updated_at": timestamp(),
              "view": VIEW_NAME, "lists": {v: f"{v}.txt" for v in VERDICT_LISTS},
              "seconds": round(time.time() - t0, 3)}
    write_json(join_uri(latest, VIEW_MARKER), marker, so)
    invalidate(out, so)
    return marker


# -------------------------------------------------------------------------------- run
def _check_paths(source: str, out: str, so: dict) -> None:
    src, dst = _norm(source), _norm(out)
    if dst == src or dst.startswith(src + "/") or src.startswith(dst + "/"):
        raise OutputError(f"--out {out} and --source {source} overlap: the output must lie outside "
                          f"the source prefix (and the other way round)")
    fs, path = get_fs(out, so)
    with errors_as(OutputError, f"output {out} is not usable", mask=lambda t: redact(t, so)):
        fs.makedirs(path, exist_ok=True)


def _resume_plan(out: str, run_id: str, source: str, so: dict):
    """(plan, header) of an unfinished run, or (None, None) when it was killed before its plan."""
    try:
        plan = _read_table(join_uri(run_dir(out, run_id), PLAN_NAME), so)
    except FileNotFoundError:
        return None, None
    header = json.loads((plan.schema.metadata or {}).get(b"faceqc.nightly", b"{}"))
    if _norm(header.get("source", "")) != _norm(source):
        raise OutputError(f"{run_dir(out, run_id)} is an unfinished run of source {header.get('source')}, "
                          f"not {source}; finish it with that source or remove it")
    log.info("resuming unfinished nightly run %s", run_id)
    return plan, header


def _new_plan(source: str, out: str, cfg: Config, run_id: str, base: Optional[str], keep_scores: bool = False):
    """List the source, diff it against the view (and this run's fingerprint against the one
    each view row was made under), and freeze the plan of run ``run_id``."""
    so = cfg.input.storage_options
    t = time.time()
    list_stats: dict = {}
    listing = list_table(source, so, cfg.input.extensions, list_stats)
    t_list, t = time.time() - t, time.time()
    fp = fingerprint(cfg)
    base_fp = run_fingerprint(read_json(join_uri(run_dir(out, base), SUMMARY_NAME), so)) if base else None
    state = retry.call("read", view_keys, out, so, base_fp, what="latest view")
    plan = diff(listing, state, None if keep_scores else fp)
    changed, since = changed_settings(base_fp, fp), base
    redo = plan.filter(pc.is_in(plan.column("change"), value_set=pa.array(["rescore", "refuse"])))
    if redo.num_rows and not changed:  # rows kept (--keep-scores) from a run before the last one
        since = redo.column("prev_run_id")[0].as_py()
        changed = changed_settings(run_fingerprint(read_json(join_uri(run_dir(out, since), SUMMARY_NAME), so)), fp)
    settings = {"since_run": since, "changed": changed,
                "scoring_changed": bool(base_fp) and base_fp.get("scoring") != fp["scoring"],
                "fusion_changed": bool(base_fp) and base_fp.get("fusion") != fp["fusion"],
                "known": base_fp is not None or base is None, "keep_scores": keep_scores, **count_settings(plan)}
    header = {"source": source, "run_id": run_id, "base_run_id": base, "listed": listing.num_rows,
              "known": state.num_rows, "changes": count_changes(plan), "settings": settings,
              "fingerprint": {"scoring": fp["scoring"], "fusion": fp["fusion"]},
              "skipped_by_extension": list_stats.get("skipped_by_extension", 0), "planned_at": timestamp(),
              "seconds": {"listing": round(t_list, 3), "diff": round(time.time() - t, 3)}}
    del listing, state
    plan = plan.replace_schema_metadata({b"faceqc.nightly": json.dumps(header).encode()})
    write_table_atomic(join_uri(run_dir(out, run_id), PLAN_NAME), plan, so)
    log.info("nightly run %s: %s; settings: %s", run_id, header["changes"], count_settings(plan))
    return plan, header


def _record_deleted(plan: pa.Table, rdir: str, run_id: str, so: dict) -> Optional[str]:
    """deleted.parquet: the objects gone from the source, with their last score."""
    deleted = plan.filter(pc.equal(plan.column("change"), "deleted"))
    if not deleted.num_rows:
        return None
    rec = pa.table({"uri": deleted.column("uri"), "size": deleted.column("size"),
                    "mtime": deleted.column("mtime"), "etag": deleted.column("etag"),
                    "deleted_in_run": pa.array([run_id] * deleted.num_rows, pa.string()),
                    "last_run_id": deleted.column("prev_run_id"), "last_status": deleted.column("prev_status"),
                    "last_quality": deleted.column("prev_quality"), "last_verdict": deleted.column("prev_verdict")})
    write_table_atomic(join_uri(rdir, DELETED_NAME), rec, so)
    return DELETED_NAME


def refuse(out: str, uris: pa.Array, cfg: Config, dest: str, batch_rows: int = 65536) -> dict:
    """Fuse the view rows of ``uris`` again under ``cfg``'s fusion settings, from the raw measures
    the rows keep (no image is read), into ``dest/refused-NNNNN.parquet``; return
    {files, rows, seconds}, also written to ``dest/_refused.json`` (the step's marker)."""
    so = cfg.input.storage_options
    t0 = time.time()
    fs, path = get_fs(join_uri(join_uri(out, LATEST), VIEW_NAME), so)
    files, rows = [], 0
    status, verdict = collections.Counter(), collections.Counter()
    want = pa.array(uris, pa.string()) if not isinstance(uris, pa.Array) else uris
    with fs.open(path, "rb") as f:
        for b in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
            t = pa.Table.from_batches([b])
            t = t.filter(pc.is_in(t.column("uri"), value_set=want))
            if not t.num_rows:
                continue
            t = t.drop_columns([c for c in ("run_id",) + FP_COLUMNS if c in t.column_names])
            t = refuse_table(cfg, t)
            if "change" in t.column_names:
                t = t.set_column(t.schema.get_field_index("change"), "change",
                                 pa.array(["refuse"] * t.num_rows, t.schema.field("change").type))
            name = f"{REFUSED_PREFIX}{len(files):05d}.parquet"
            write_table_atomic(join_uri(dest, name), t, so, cfg.output.compression)
            files.append(name)
            rows += t.num_rows
            status.update(t.column("status").to_pylist())
            verdict.update(t.column("verdict").to_pylist())
    done = {"files": files, "rows": rows, "seconds": round(time.time() - t0, 3), "status_counts": dict(status),
            "verdict_counts": dict(verdict)}
    write_json(join_uri(dest, REFUSED_MARKER), done, so)
    return done


def publish(rdir: str, scored: dict, refused: Optional[dict], so: dict) -> dict:
    """Move a run's finished part files from ``_staging/`` to ``scores/`` (the folder readers
    glob), the scores' ``_summary.json`` with them; return that summary.  Locally the staging
    folder is renamed (all files appear at once); on object stores each file is copied, then
    removed from staging, the summary last; a publish that is killed midway is finished by the
    next attempt (both steps can be repeated)."""
    staging, scores = join_uri(rdir, STAGING), join_uri(rdir, SCORES)
    summary = {**scored, "refused": refused or {"files": [], "rows": 0}}
    names = list(scored.get("files", [])) + list((refused or {}).get("files", []))
    side = ((scored.get("video") or {}).get("files") or {})  # clips: frames/ and tracks/ part files
    names += [f"{folder}/{n}" for folder, ns in side.items() for n in ns or []]
    if is_local(rdir):
        src, dst = local_path(staging), local_path(scores)
        write_json(join_uri(staging, SUMMARY_NAME), summary, so)
        if os.path.isdir(dst):  # a publish before this one got that far: keep what it moved
            for n in names + [SUMMARY_NAME]:
                if os.path.exists(os.path.join(src, n)):
                    os.makedirs(os.path.dirname(os.path.join(dst, n)), exist_ok=True)
                    os.replace(os.path.join(src, n), os.path.join(dst, n))
        else:
            os.rename(src, dst)
        _rm_tree(staging, so)
        return summary
    fs, _ = get_fs(staging, so)
    for n in names:
        _, s_path = get_fs(join_uri(staging, n), so)
        _, d_path = get_fs(join_uri(scores, n), so)
        if fs.exists(s_path):  # each call retried on storage faults; copying twice is harmless
            fs.copy(s_path, d_path)
            fs.rm(s_path)
    write_json(join_uri(scores, SUMMARY_NAME), summary, so)
    _rm_tree(staging, so)
    invalidate(rdir, so)
    return summary


def _rm_tree(uri: str, so: dict) -> None:
    if is_local(uri):
        import shutil

        shutil.rmtree(local_path(uri), ignore_errors=True)
        return
    fs, path = get_fs(uri, so)
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
    invalidate(uri, so)


def _exists(uri: str, so: dict) -> bool:
    if is_local(uri):
        return os.path.exists(local_path(uri))
    fs, path = get_fs(uri, so)
    invalidate(uri, so)
    return fs.exists(path)


def nightly(source: str, out: str, cfg: Config, address: Optional[str] = None, progress: bool = True,
            now: Optional[float] = None, keep_scores: bool = False) -> dict:
    """One nightly run of ``source`` into ``out`` (or the resumption of an unfinished one), under
    the output's lock."""
    so = cfg.input.storage_options
    check_ray(address)
    check_installed(cfg)
    retry.configure(cfg.storage)
    if not is_local(source):
        get_fs(source, so)  # its filesystem package, before --out is touched
    _check_paths(source, out, so)
    with run_lock(out, cfg, "faceqc nightly") as lock:  # before any work: one run per output
        try:
            return _nightly(source, out, cfg, address, progress, now, keep_scores, lock)
        except Exception as e:
            if retry.transient(e) and not isinstance(e, FaceqcError):
                raise retry.exhausted(e, f"faceqc nightly {out}", so) from e
            raise


def _nightly(source, out, cfg, address, progress, now, keep_scores, lock) -> dict:
    t0 = time.time()
    so = cfg.input.storage_options
    before = retry.counts()
    runs = list_runs(out, so)
    committed = [r["run_id"] for r in runs if r["committed"]]
    refresh_view(out, cfg, committed)  # a job killed between commit and view update
    late = 0
    if committed and _exists(join_uri(run_dir(out, committed[-1]), STAGING), so):
        # a killed attempt's writes that landed after its run committed: never seen by readers
        late = len([n for n in list_names(join_uri(run_dir(out, committed[-1]), STAGING), so) if n.endswith(".parquet")])
        _rm_tree(join_uri(run_dir(out, committed[-1]), STAGING), so)

    pending = [r["run_id"] for r in runs if not r["committed"] and (not committed or r["run_id"] > committed[-1])]
    run_id = pending[-1] if pending else _new_run_id([r["run_id"] for r in runs], now)
    plan, header = _resume_plan(out, run_id, source, so) if pending else (None, None)
    if plan is None:
        plan, header = _new_plan(source, out, cfg, run_id, committed[-1] if committed else None, keep_scores)
    rdir = run_dir(out, run_id)
    fp = fingerprint(cfg)

    # score what is new, changed, to retry or to rescore; re-fuse what only needs new fusion
    staging, scores = join_uri(rdir, STAGING), join_uri(rdir, SCORES)
    published = read_json(join_uri(scores, SUMMARY_NAME), so)
    if published is None:
        refused = None
        to_refuse = plan.filter(pc.equal(plan.column("change"), "refuse"))
        if to_refuse.num_rows:
            refused = read_json(join_uri(staging, REFUSED_MARKER), so) or \
                retry.call("write", refuse, out, to_refuse.column("uri").combine_chunks(), cfg, staging,
                           what="re-fused rows")
        todo = plan.filter(pc.invert(pc.is_in(plan.column("change"), value_set=pa.array(["deleted", "refuse"]))))
        table = pa.table({"uri": todo.column("uri"), "size": todo.column("size"), "mtime": todo.column("mtime"),
                          ETAG: todo.column("etag"), CHANGE: todo.column("change")})
        try:
            scored = read_json(join_uri(staging, SUMMARY_NAME), so) or \
                run_table(table, staging, cfg, address=address, progress=progress, inputs=[source], lock=lock)
        except ForeignParts:
            raise OutputError(f"nightly run {run_id} was started with other settings and did not finish: start "
                              f"it again with the configuration it began with, or remove {staging} to score "
                              "its plan afresh under the new one") from None
        if scored.get("error"):
            raise RunError(f"nightly run {run_id}: {scored['error']}; start it again to finish it")
        lock.check()
        published = publish(rdir, scored, refused, so)
    scored, refused = published, published.get("refused") or {"files": [], "rows": 0}
    deleted_file = _record_deleted(plan, rdir, run_id, so)

    changes = header.get("changes", {})
    settings = dict(header.get("settings") or {})
    settings.update(rows_rescored=settings.get("rescore", 0), rows_refused=refused.get("rows", 0),
                    refuse_seconds=refused.get("seconds"))
    summary = {
        "kind": "nightly", "run_id": run_id, "source": source, "output": out,
        "base_run_id": header.get("base_run_id"), "started_at": header.get("planned_at"), "finished_at": timestamp(),
        "listed": header.get("listed"), "changes": changes,
        "unchanged": (header.get("listed") or 0) - sum(v for k, v in changes.items() if k != "deleted"),
        "settings_change": settings,
        "skipped_by_extension": header.get("skipped_by_extension", 0),
        "rows": scored["rows"] + refused.get("rows", 0), "rows_scored": scored["rows"],
        "rows_refused": refused.get("rows", 0),
        "status_counts": dict(collections.Counter(scored["status_counts"]) + collections.Counter(refused.get("status_counts", {}))),
        "verdict_counts": dict(collections.Counter(scored["verdict_counts"])
                               + collections.Counter(refused.get("verdict_counts", {}))),
        "files": {"plan": PLAN_NAME, "scores": list(scored["files"]) + list(refused.get("files", [])),
                  "scores_dir": SCORES, "deleted": deleted_file},
        "resume": scored.get("resume"),
        "seconds": {**header.get("seconds", {}), "scoring": scored["seconds"]["pipeline"],
                    "refuse": refused.get("seconds"), "total_this_attempt": round(time.time() - t0, 3)},
        "images_per_second": scored.get("images_per_second"),
        "ray_logs": scored.get("ray_logs"),
        "fingerprint": fp,
        **run_facts(cfg),
    }
    worker_reads = (scored.get("storage") or {}).get("worker_read_retries", 0)
    summary["storage"] = storage_facts(before, worker_reads)
    summary["cluster"] = scored.get("cluster") or cluster_facts({})
    summary["lock"] = lock.summary()
    summary["late_writes_removed"] = late
    summary["warnings"] = settings_lines(summary) + failure_lines(summary)
    if late:
        summary["warnings"].append(f"removed {late} part files that a killed attempt of run {committed[-1]} wrote "
                                   f"after that run committed (in its _staging/, never read)")
    lock.check()
    write_json(join_uri(rdir, SUMMARY_NAME), summary, so)  # the commit
    t = time.time()
    summary["view"] = refresh_view(out, cfg, committed + [run_id])
    summary["seconds"]["view"] = round(time.time() - t, 3)
    return summary


def settings_lines(s: dict) -> List[str]:
    """What a change of settings or models made this run do, in one line (or none)."""
    c = s.get("settings_change") or {}
    what = ", ".join(c.get("changed") or [])[:300] or "settings"
    since = c.get("since_run")
    if c.get("keep_scores") and (c.get("scoring_changed") or c.get("fusion_changed")):
        return [f"settings changed since run {since} ({what}); --keep-scores: stored scores kept, only new and "
                f"changed objects scored with the new settings"]
    out = []
    if c.get("rows_rescored"):
        out.append(f"scoring settings or models changed since run {since} ({what}): rescored "
                   f"{c['rows_rescored']} unchanged objects (--keep-scores keeps stored scores)")
    if c.get("rows_refused"):
        out.append(f"fusion settings changed since run {since} ({what}): re-fused {c['rows_refused']} stored rows "
                   f"from their raw measures in {c.get('refuse_seconds')} s, without reading any image")
    if not c.get("known", True):
        out.append(f"run {since} recorded no fingerprint that this version can read: stored scores kept")
    return out


def summary_text(s: dict) -> str:
    c = s.get("changes") or {}
    lines = [f"faceqc nightly {s['run_id']}: {s['source']} -> {s['output']}",
             f"  listed {s['listed']}: new {c.get('new', 0)}, changed {c.get('changed', 0)}, "
             f"retry {c.get('retry', 0)}, deleted {c.get('deleted', 0)}, unchanged {s['unchanged']}",
             f"  scored {s.get('rows_scored', s['rows'])} in {s['seconds']['scoring']} s"
             + (f" ({s['images_per_second']} images/s)" if s.get("images_per_second") else "")
             + (f"; re-fused {s['rows_refused']} stored rows" if s.get("rows_refused") else ""),
             "  status : " + (", ".join(f"{k} {v}" for k, v in sorted(s["status_counts"].items())) or "-")]
    v = s.get("view") or {}
    if v:
        vc = v.get("verdict_counts", {})
        lines.append(f"  latest view: {v.get('rows')} images; accept {vc.get('accept', 0)}, "
                     f"review {vc.get('review', 0)}, reject {vc.get('reject', 0)}")
    r = s.get("resume") or {}
    if r.get("attempt", 1) > 1:
        lines.append(f"  resumed (attempt {r['attempt']}): {r['rows_already_committed']} rows were already committed")
    for w in s.get("warnings") or []:
        lines.append("  WARNING: " + w)
    return "\n".join(lines)


# ------------------------------------------------------------------------------ clip views
# Each nightly run scores into ``runs/run_id=X/scores/``, so its clips' ``frames/`` and ``tracks/``
# part files sit beside its scores there.  A changed clip is planned by its URI like any object and
# scored again whole.  ``latest/frames.parquet`` and ``latest/tracks.parquet`` are to the clips what
# ``latest/quality.parquet`` is to the rows: the current view's rows without the URIs that newer
# runs planned (changed, retried or deleted objects), then those runs' rows, each with its
# ``run_id``.  Each file records in its metadata the run it reflects, so a job killed while
# refreshing them redoes only what is missing.  They exist once a run has scored a clip.
VIEWS = {FRAMES_DIR: ("frames.parquet", FRAMES_SCHEMA), TRACKS_DIR: ("tracks.parquet", TRACKS_SCHEMA)}


def _clip_view_run(fs, path: str, key: bytes) -> Optional[str]:
    try:
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).schema_arrow.metadata or {}
        return meta.get(key, b"").decode() or None
    except FileNotFoundError:
        return None


def _side_files(out: str, run_id: str, folder: str, so: dict) -> List[str]:
    scores = join_uri(run_dir(out, run_id), "scores")
    summary = read_json(join_uri(scores, "_summary.json"), so) or {}
    names = ((summary.get("video") or {}).get("files") or {}).get(folder) or []
    return [join_uri(join_uri(scores, folder), n) for n in names]


def refresh_clip_views(out: str, cfg, committed: List[str]) -> dict:
    """Bring latest/frames.parquet and latest/tracks.parquet up to the last committed run;
    return {folder: rows written or None when untouched}."""
    so = cfg.input.storage_options
    done: dict = {}
    if not committed:
        return done
    target = committed[-1]
    for folder, (name, base) in VIEWS.items():
        vpath = join_uri(join_uri(out, LATEST), name)
        fs, path = get_fs(vpath, so)
        current = _clip_view_run(fs, path, VIEW_RUN_KEY)
        done[folder] = None
        if current == target:
            continue
        pending = [r for r in committed if current is None or r > current]
        files = {r: _side_files(out, r, folder, so) for r in pending}
        if current is None and not any(files.values()):
            continue  # no run has scored a clip yet: no file
        schema = pa.schema(list(base) + [pa.field("run_id", pa.string())],
                           metadata={**(base.metadata or {}), VIEW_RUN_KEY: target.encode()})
        planned = [_plan_uris(out, r, so) for r in pending]
        drop = pa.concat_arrays(planned) if planned else pa.array([], pa.string())
        rows = 0
        with atomic_writer(vpath, so) as f, \
                contextlib.closing(pq.ParquetWriter(f, schema, compression=cfg.output.compression)) as writer:
            if current is not None:
                with fs.open(path, "rb") as old:
                    for b in pq.ParquetFile(old).iter_batches(batch_size=65536):
                        t = pa.Table.from_batches([b])
                        t = t.filter(pc.invert(pc.is_in(t.column("uri"), value_set=drop)))
                        if t.num_rows:
                            writer.write_table(t.cast(schema))
                            rows += t.num_rows
            for k, r in enumerate(pending):
                newer = pa.concat_arrays(planned[k + 1:]) if k + 1 < len(planned) else pa.array([], pa.string())
                for p in files[r]:
                    pfs, pp = get_fs(p, so)
                    with pfs.open(pp, "rb") as fh:
                        t = pq.read_table(fh)
                    if len(newer):
                        t = t.filter(pc.invert(pc.is_in(t.column("uri"), value_set=newer)))
                    t = t.append_column("run_id", pa.array([r] * t.num_rows, pa.string()))
                    if t.num_rows:
                        writer.write_table(t.select(schema.names).cast(schema))
                        rows += t.num_rows
        done[folder] = rows
    return done
