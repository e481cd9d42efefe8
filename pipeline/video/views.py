"""Nightly runs (:mod:`pipeline.tools.nightly`): the clips' frames and tracks in the latest view.

Each nightly run scores into ``runs/run_id=X/scores/``, so its clips' ``frames/`` and ``tracks/``
part files sit beside its scores there.  A changed clip is planned by its URI like any object and
scored again whole.  ``latest/frames.parquet`` and ``latest/tracks.parquet`` are to the clips what
``latest/quality.parquet`` is to the rows: the current view's rows without the URIs that newer
runs planned (changed, retried or deleted objects), then those runs' rows, each with its
``run_id``.  Each file records in its metadata the run it reflects, so a job killed while
refreshing them redoes only what is missing.  They exist once a run has scored a clip.
"""

from __future__ import annotations

import contextlib
from typing import List, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..fs import atomic_writer, get_fs, join_uri, read_json
from .schema import FRAMES_DIR, FRAMES_SCHEMA, TRACKS_DIR, TRACKS_SCHEMA

VIEWS = {FRAMES_DIR: ("frames.parquet", FRAMES_SCHEMA), TRACKS_DIR: ("tracks.parquet", TRACKS_SCHEMA)}


def _view_run(fs, path: str, key: bytes) -> Optional[str]:
    try:
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).schema_arrow.metadata or {}
        return meta.get(key, b"").decode() or None
    except FileNotFoundError:
        return None


def _side_files(out: str, run_id: str, folder: str, so: dict) -> List[str]:
    from ..tools.nightly import run_dir

    scores = join_uri(run_dir(out, run_id), "scores")
    summary = read_json(join_uri(scores, "_summary.json"), so) or {}
    names = ((summary.get("video") or {}).get("files") or {}).get(folder) or []
    return [join_uri(join_uri(scores, folder), n) for n in names]


def refresh_clip_views(out: str, cfg, committed: List[str]) -> dict:
    """Bring latest/frames.parquet and latest/tracks.parquet up to the last committed run;
    return {folder: rows written or None when untouched}."""
    from ..tools.nightly import LATEST, VIEW_RUN_KEY, _plan_uris

    so = cfg.input.storage_options
    done: dict = {}
    if not committed:
        return done
    target = committed[-1]
    for folder, (name, base) in VIEWS.items():
        vpath = join_uri(join_uri(out, LATEST), name)
        fs, path = get_fs(vpath, so)
        current = _view_run(fs, path, VIEW_RUN_KEY)
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
