"""Per-clip assembly on the driver, without a shuffle.

The fuse stage's output reaches the driver block by block (``run.score`` iterates the dataset).
:class:`ClipAssembler` passes image rows straight on, and holds each clip's fused frame rows
(small: no pixels) until the clip's ``clip_end`` row and as many frame rows as it announces have
arrived — in any order, from any block, since actor pools may finish blocks out of order.  Then
it builds the clip's tracks and its one output row (:mod:`pipeline.video.tracks`).  Memory: the
rows of the clips in flight, a few KB per sampled frame.

:class:`ClipCollector` writes them (``faceqc score``): for each block, the rows that pass and the
clip rows completed become one main part file, named ``part-<digest>`` after its URIs as before;
the frame and track rows of those clips go to ``frames/part-<digest>.parquet`` and
``tracks/part-<digest>.parquet`` **first**, the main part **last**.  So a main part on disk means
its clips' frames and tracks are complete; at a restart the URIs of the main parts are done, and
``frames/`` and ``tracks/`` parts without their main part are strays, removed before the commit
(:func:`settle_side_parts`), like stray main parts.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..fs import (
    atomic_writer,
    get_fs,
    invalidate,
    is_local,
    join_uri,
    list_names,
    local_path,
)
from ..io.parts import PART_PREFIX, PART_SUFFIX, STATE_DIR, part_name
from ..schema import BASE_SCHEMA, EXTRA_PREFIX, carried_column, conform
from . import CLIP_END, EMBEDDING, FACTS, FRAME_INDEX, MEDIA, PREFIX, SHOT, T
from .schema import (
    FRAMES_DIR,
    FRAMES_SCHEMA,
    SIDE_DIRS,
    TRACKS_DIR,
    TRACKS_SCHEMA,
    with_meta,
)
from .tracks import judge

log = logging.getLogger("faceqc")


def with_media(out):
    """Rows as the fuse stage made them, with ``media`` "image" where no video set it."""
    if isinstance(out, pa.Table) and "media" in out.column_names:
        i = out.schema.get_field_index("media")
        return out.set_column(i, "media", pc.fill_null(out.column("media").cast(pa.string()), "image"))
    return out


@dataclass
class Clip:
    uri: str
    row: dict  # the main row: BASE_SCHEMA names, and the listing's extra.* columns
    frames: pa.Table  # FRAMES_SCHEMA
    tracks: pa.Table  # TRACKS_SCHEMA
    judgement: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)


@dataclass
class _Pending:
    frames: List[dict] = field(default_factory=list)
    end: Optional[dict] = None


def _frame_row(r: dict) -> dict:
    r = dict(r)
    r["t"], r["frame_index"], r["shot"] = r.pop(T), r.pop(FRAME_INDEX), r.pop(SHOT)
    return r


def _primary(row: dict) -> Optional[dict]:
    p = row.get("primary_face")
    faces = row.get("faces") or []
    return faces[p] if p is not None and 0 <= p < len(faces) else None


def frames_table(uri: str, frames: List[dict], tracks) -> pa.Table:
    """DST/frames/ rows of one clip (frames sorted by t)."""
    which: Dict[Tuple[int, int], int] = {(o.pos, o.j): tr.id for tr in tracks for o in tr.obs}
    recs = []
    for pos, fr in enumerate(frames):
        face = _primary(fr)
        n = len(fr.get("faces") or [])
        recs.append({
            "uri": uri, "t": fr["t"], "frame_index": fr["frame_index"], "shot": fr["shot"],
            "track": which.get((pos, fr.get("primary_face"))) if face else None,
            "status": fr["status"], "num_faces": fr.get("num_faces"),
            "face_tracks": [which.get((pos, j)) for j in range(n)],
            "quality": fr.get("quality"), "verdict": fr.get("verdict"), "reasons": fr.get("reasons") or [],
            "components": face["components"] if face else None, "bbox": face["bbox"] if face else None,
            "yaw": face["yaw"] if face else None, "pitch": face["pitch"] if face else None,
            "roll": face["roll"] if face else None,
        })
    return pa.Table.from_pylist(recs, schema=FRAMES_SCHEMA)


def tracks_table(uri: str, tracks, primary) -> pa.Table:
    names = TRACKS_SCHEMA.names
    recs = [{**{k: v for k, v in tr.facts.items() if k in names}, "uri": uri, "primary": tr is primary}
            for tr in tracks]
    return pa.Table.from_pylist(recs, schema=TRACKS_SCHEMA)


def build_clip(cfg, end: dict, frames: List[dict]) -> Clip:
    """A clip's main row, frame rows and track rows from its end row and fused frame rows."""
    facts = json.loads(end[FACTS] or "{}")
    uri = end["uri"]
    row = {f.name: None for f in BASE_SCHEMA}
    row.update({k: v for k, v in end.items() if k.startswith(EXTRA_PREFIX)})
    row.update(uri=uri, size=end["size"], mtime=end["mtime"], media="video", faces=[], reasons=[],
               verdict="reject", frames=facts.get("frames", len(frames)), shots=facts.get("shots"),
               duration_s=facts.get("duration_s"))
    status = facts.get("status", "ok")
    if status != "ok":  # the file could not be opened or failed a guard: as a failed image
        row.update(status=status, error=facts.get("error") or status, reasons=[status], frames=0, shots=None,
                   duration_s=None)
        return Clip(uri, row, FRAMES_SCHEMA.empty_table(), TRACKS_SCHEMA.empty_table(), facts=facts)
    frames = [_frame_row(r) for r in frames]
    j = judge(frames, facts, cfg)
    frames, tracks, primary = j["frames"], j["tracks"], j["primary"]
    row.update(status=j["status"], error=facts.get("error"), width=facts.get("width"), height=facts.get("height"),
               tracks=len(tracks), quality=j["quality"], verdict=j["verdict"], reasons=j["reasons"])
    if primary is not None:
        pf = primary.facts
        best = frames[pf["best_pos"]]
        row.update(num_faces=best.get("num_faces"), primary_face=pf["best_face"], faces=best.get("faces") or [],
                   image_iqa=best.get("image_iqa"), quality_min=pf["quality_min"])
    else:
        row["num_faces"] = 0
        if facts.get("truncated"):
            row["reasons"] = row["reasons"] + ["truncated"]
    return Clip(uri, row, frames_table(uri, frames, tracks), tracks_table(uri, tracks, primary), j, facts)


class ClipAssembler:
    """Gathers each clip's rows from the blocks that reach the driver (see the module's text)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.pending: Dict[str, _Pending] = {}
        self.counts = {"clips": 0, "frames": 0}

    def add(self, out) -> Tuple[Optional[pa.Table], List[Clip]]:
        """(the rows that pass straight on, the clips this output completed)."""
        if not isinstance(out, pa.Table):
            out = pa.table({k: carried_column(v, BASE_SCHEMA.field(k).type if k in BASE_SCHEMA.names else None)
                            for k, v in out.items()})
        if MEDIA not in out.column_names:
            return with_media(out), []
        is_video = pc.fill_null(pc.equal(out.column(MEDIA), "video"), False)
        if not pc.any(is_video).as_py():
            return with_media(out), []
        rest = out.filter(pc.invert(is_video))
        clips = []
        for r in out.filter(is_video).to_pylist():
            p = self.pending.setdefault(r["uri"], _Pending())
            if r["status"] == CLIP_END:
                p.end = r
            else:
                p.frames.append(r)
            if p.end is not None:
                want = json.loads(p.end[FACTS] or "{}").get("frames", 0)
                if len(p.frames) >= want:
                    del self.pending[r["uri"]]
                    clips.append(build_clip(self.cfg, p.end, p.frames))
                    self.counts["clips"] += 1
                    self.counts["frames"] += len(p.frames)
        return (with_media(rest) if rest.num_rows else None), clips

    def check_done(self) -> List[str]:
        """URIs of clips still incomplete after the last block (their rows are missing: the run's
        row count then falls short, and a restart scores them again)."""
        left = sorted(self.pending)
        for u in left:
            p = self.pending[u]
            log.warning("clip %s incomplete: %d frame rows, end row %s", u, len(p.frames),
                        "seen" if p.end is not None else "missing")
        return left


def _clip_columns(clips: Sequence[Clip]) -> pa.Table:
    rows = [c.row for c in clips]
    cols = {f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in BASE_SCHEMA}
    extras = sorted({k for r in rows for k in r if k.startswith(EXTRA_PREFIX)})
    for k in extras:
        cols[k] = carried_column([r.get(k) for r in rows], None)
    return pa.table(cols)


def main_rows(rows: Optional[pa.Table], clips: Sequence[Clip], schema: pa.Schema, mask=None) -> pa.Table:
    """One output table (in ``schema``) of the rows that passed and the rows of the clips."""
    parts = []
    if rows is not None and rows.num_rows:
        parts.append(conform(rows, schema, mask))
    if clips:
        parts.append(conform(_clip_columns(clips), schema, mask))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def side_tables(clips: Sequence[Clip], frames_schema: pa.Schema, tracks_schema: pa.Schema):
    fr = [c.frames for c in clips if c.frames.num_rows]
    tr = [c.tracks for c in clips if c.tracks.num_rows]
    return (pa.concat_tables(fr).cast(frames_schema) if fr else None,
            pa.concat_tables(tr).cast(tracks_schema) if tr else None)


class ClipCollector:
    """The driver's sink for a run that may hold videos: image rows and finished clips go to the
    main :class:`pipeline.io.parts.PartWriter`; each main part's clips' frames and tracks are
    written beside it first (see the module's text)."""

    def __init__(self, writer, out: str, cfg, models: Sequence = ()):
        self.writer, self.out, self.cfg = writer, out, cfg
        self.so = cfg.input.storage_options
        self.assembler = ClipAssembler(cfg)
        self.frames_schema = with_meta(FRAMES_SCHEMA, models, cfg.profile)
        self.tracks_schema = with_meta(TRACKS_SCHEMA, models, cfg.profile)
        self.side_files = {FRAMES_DIR: [], TRACKS_DIR: []}

    def add(self, block) -> int:
        """Take one block of the fuse stage's output; return the main rows written."""
        rows, clips = self.assembler.add(block)
        if not clips:
            return self.writer.write(rows) if rows is not None and rows.num_rows else 0
        main = main_rows(rows, clips, self.writer.schema, self.writer.mask)
        name = part_name(main.column("uri").to_pylist())
        frames, tracks = side_tables(clips, self.frames_schema, self.tracks_schema)
        for folder, table in ((FRAMES_DIR, frames), (TRACKS_DIR, tracks)):
            if table is not None:  # before the main part: a main part on disk has its side parts
                write_side(self.out, folder, name, table, self.so, self.cfg.output.compression)
                self.side_files[folder].append(name)
        return self.writer.write(main)

    def close(self) -> dict:
        left = self.assembler.check_done()
        return {"clips": self.assembler.counts["clips"], "frames": self.assembler.counts["frames"],
                "incomplete": left}


# ------------------------------------------------------------------------ side parts on disk
def write_side(out: str, folder: str, name: str, table: pa.Table, so: Optional[dict], compression: str) -> None:
    """One frames/ or tracks/ part, whole or not at all (local temporaries in the output's state
    folder, which the commit removes)."""
    uri = join_uri(join_uri(out, folder), name)
    tmp = os.path.join(local_path(join_uri(out, STATE_DIR)), "tmp") if is_local(out) else None
    with atomic_writer(uri, so, tmp) as f:
        pq.write_table(table, f, compression=compression)


def side_names(out: str, folder: str, so: Optional[dict]) -> List[str]:
    return [n for n in list_names(join_uri(out, folder), so) if n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX)]


def settle_side_parts(out: str, files: Sequence[str], so: Optional[dict]) -> Dict[str, List[str]]:
    """Remove the frames/ and tracks/ parts whose main part is not among ``files`` (written by a
    killed attempt, or beside a main part dropped as broken); return the ones kept."""
    keep = set(files)
    kept: Dict[str, List[str]] = {}
    for folder in SIDE_DIRS:
        names = side_names(out, folder, so)
        for n in names:
            if n not in keep:
                fs, path = get_fs(join_uri(join_uri(out, folder), n), so)
                try:
                    fs.rm(path)
                except FileNotFoundError:
                    pass
        kept[folder] = sorted(n for n in names if n in keep)
    invalidate(out, so)
    return kept


def read_side(dst: str, folder: str, summary: Optional[dict], so: Optional[dict]) -> Optional[pa.Table]:
    """A finished run's frames/ or tracks/ rows: the files its summary lists (those found, for a
    run without a summary); None when it has none."""
    fs, path = get_fs(join_uri(dst, folder), so)
    names = ((summary or {}).get("video") or {}).get("files", {}).get(folder)
    if names is None:
        names = side_names(dst, folder, so)
    tables = []
    for n in names:
        with fs.open(join_uri(path, n), "rb") as f:
            tables.append(pq.read_table(f))
    return pa.concat_tables(tables) if tables else None


def clear_side_parts(out: str, so: Optional[dict]) -> None:
    """Remove frames/ and tracks/ (``--overwrite``)."""
    for folder in SIDE_DIRS:
        fs, path = get_fs(join_uri(out, folder), so)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    invalidate(out, so)


def video_summary(result: dict, kept: Dict[str, List[str]]) -> dict:
    """The run summary's clip facts: clips and sampled frames scored by this attempt, and the
    frames/ and tracks/ part files of the committed run."""
    v = result.get("video") or {}
    t = result.get("seconds_pipeline") or 0
    frames = v.get("frames", 0)
    return {"clips_scored": v.get("clips", 0), "frames_scored": frames,
            "frames_per_second": round(frames / t, 3) if t > 0 and frames else None,
            "files": kept}


def media_of(table: pa.Table) -> np.ndarray:
    """The media column of output rows ("image" where absent or null)."""
    if "media" not in table.column_names:
        return np.full(table.num_rows, "image", dtype=object)
    return np.asarray(pc.fill_null(table.column("media"), "image").to_pylist(), dtype=object)


__all__ = ["ClipAssembler", "ClipCollector", "Clip", "build_clip", "main_rows", "with_media", "settle_side_parts",
           "clear_side_parts", "video_summary", "PREFIX", "EMBEDDING"]
