"""`faceqc export DST --faces OUT`: training-ready face crops of what a run accepted.

For every image row whose verdict is wanted (``--verdict``, default ``accept``) and that has a
judged face, and for the best frame of every clip track whose verdict is wanted
(``DST/tracks/``), the source is read again (a clip's frame at the track's ``best_t``) and the
face is cut out with FFHQ's alignment (:func:`pipeline.geometry.ffhq_matrix`) at
``export.size`` pixels (``--size``), ``export.margin`` times FFHQ's framing, as PNG (or JPEG).

Crop names come from the inputs, but safely: ``<stem>-<digest>[-t<ms>].<ext>``, where the stem
keeps only ``[A-Za-z0-9_-]`` of the source's file name (no dot, no slash, no control character:
a key like ``../../x.jpg`` or ``/etc/passwd`` can never name a path outside OUT) and the digest
is a SHA-256 of the full URI, time and track (two inputs never share a name).  Every crop is
written whole or not at all; ``OUT/manifest.parquet``, written last, links each crop to its
source, time, track and scores (and says why a face could not be exported).
"""

from __future__ import annotations

import hashlib
import io
import re
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import Config
from ..errors import InputError, OutputError, RowError, errors_as
from ..fs import get_fs, join_uri, write_bytes_atomic
from ..geometry import ffhq_matrix, warp_crop

MANIFEST = "manifest.parquet"
MANIFEST_SCHEMA = pa.schema([
    ("crop", pa.string()),  # file name inside OUT; null when the face could not be exported
    ("uri", pa.string()),  # the source
    ("media", pa.string()),  # image | video
    ("t", pa.float64()),  # a clip's frame time (s); null for images
    ("frame_index", pa.int64()),
    ("track", pa.int32()),
    ("quality", pa.float32()),  # the image's quality, or the track's
    ("frame_quality", pa.float32()),  # the exported face's own quality (a clip's best frame)
    ("verdict", pa.string()),
    ("reasons", pa.list_(pa.string())),
    ("landmarks", pa.list_(pa.list_(pa.float32()))),  # the 5 landmarks in the source (upright) pixels
    ("size", pa.int32()),
    ("error", pa.string()),
])

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def crop_name(uri: str, t: Optional[float] = None, track: Optional[int] = None, ext: str = "png") -> str:
    """A file name for one crop that is safe whatever the URI holds, and unique per (uri, t, track)."""
    key = f"{uri}\0{'' if t is None else repr(float(t))}\0{'' if track is None else int(track)}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    base = uri.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    stem = _UNSAFE.sub("_", stem).strip("_-")[:48] or "face"
    when = "" if t is None else f"-t{int(round(float(t) * 1000)):08d}"
    return f"{stem}-{digest}{when}.{ext}"


def aligned(img: np.ndarray, landmarks, size: int, margin: float = 1.0) -> np.ndarray:
    """The FFHQ-aligned crop of side ``size``; ``margin`` > 1 shows more around it."""
    m = ffhq_matrix(np.asarray(landmarks, np.float64).reshape(5, 2), size)
    if margin != 1.0:
        c = size / 2.0
        s = np.array([[1 / margin, 0, c - c / margin], [0, 1 / margin, c - c / margin], [0, 0, 1]])
        m = (s @ np.vstack([m, [0, 0, 1]]))[:2]
    return warp_crop(img, m, size)


def encode(img: np.ndarray, fmt: str, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
    else:
        Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _items(table: pa.Table, tracks: Optional[pa.Table], verdicts: Sequence[str]) -> List[dict]:
    want = pa.array(list(verdicts))
    items = []
    media = pc.fill_null(table.column("media"), "image") if "media" in table.column_names \
        else pa.array(["image"] * table.num_rows)
    sel = pc.and_(pc.and_(pc.is_in(table.column("verdict"), value_set=want), pc.equal(media, "image")),
                  pc.is_valid(table.column("primary_face")))
    for r in table.filter(sel).select(["uri", "quality", "verdict", "reasons", "primary_face", "faces"]).to_pylist():
        face = r["faces"][r["primary_face"]]
        items.append({"uri": r["uri"], "media": "image", "t": None, "frame_index": None, "track": None,
                      "quality": r["quality"], "frame_quality": face["quality"], "verdict": r["verdict"],
                      "reasons": r["reasons"], "landmarks": face["landmarks"]})
    if tracks is not None and tracks.num_rows:
        ok = table.filter(pc.equal(media, "video")).select(["uri", "status"])
        live = pa.array([r["uri"] for r in ok.to_pylist() if r["status"] == "ok"], pa.string())
        sel = pc.and_(pc.is_in(tracks.column("verdict"), value_set=want), pc.is_in(tracks.column("uri"), value_set=live))
        for r in tracks.filter(sel).to_pylist():
            items.append({"uri": r["uri"], "media": "video", "t": r["best_t"], "frame_index": r["best_frame_index"],
                          "track": r["track"], "quality": r["quality"], "frame_quality": r["best_quality"],
                          "verdict": r["verdict"], "reasons": r["reasons"], "landmarks": r["best_landmarks"]})
    return items


def export_faces(dst: str, faces_out: str, cfg: Config, size: Optional[int] = None,
                 verdicts: Sequence[str] = ("accept",), threads: int = 4) -> dict:
    """Write the crops and the manifest; return counts."""
    from ..images import decode_image, read_file
    from ..io.results import read_results
    from ..video.collect import read_side
    from ..video.decode import VideoSource, read_frame_at

    so = cfg.input.storage_options
    size = int(size or cfg.export.size)
    if not 16 <= size <= 4096:
        raise InputError(f"--size {size}: must be between 16 and 4096")
    table, summary = read_results(dst, so)
    tracks = read_side(dst, "tracks", summary, so)
    items = _items(table, tracks, verdicts)
    ext, fmt = ("jpg", "jpg") if cfg.export.format == "jpg" else ("png", "png")
    names = [crop_name(it["uri"], it["t"], it["track"], ext) for it in items]
    if len(set(names)) != len(names):  # cannot happen short of a SHA-256 collision; never overwrite
        raise OutputError("two exported faces would share a crop name")

    def one(k: int) -> dict:
        it, name = items[k], names[k]
        rec = {**it, "crop": None, "size": size, "error": None}
        try:
            if it["media"] == "video":
                img = read_frame_at(VideoSource.of(it["uri"], so), it["t"])
            else:
                img = decode_image(read_file(it["uri"], so, cfg.decode.max_bytes), cfg.decode.max_pixels)
            crop = aligned(img, it["landmarks"], size, cfg.export.margin)
            write_bytes_atomic(join_uri(faces_out, name), encode(crop, fmt, cfg.export.jpeg_quality), so)
            rec["crop"] = name
        except RowError as e:
            rec["error"] = f"{e.status}: {e}"
        except Exception as e:  # noqa: BLE001 - one source that changed must not stop the export
            rec["error"] = f"{type(e).__name__}: {e}"
        return rec

    with errors_as(OutputError, f"cannot write to {faces_out}"):
        fs, path = get_fs(faces_out, so)
        fs.makedirs(path, exist_ok=True)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
            recs = list(ex.map(one, range(len(items))))
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(recs, schema=MANIFEST_SCHEMA), buf)
        write_bytes_atomic(join_uri(faces_out, MANIFEST), buf.getvalue(), so)
    done = sum(1 for r in recs if r["crop"])
    return {"crops": done, "failed": len(recs) - done, "images": sum(1 for r in recs if r["media"] == "image" and r["crop"]),
            "frames": sum(1 for r in recs if r["media"] == "video" and r["crop"]), "manifest": join_uri(faces_out, MANIFEST),
            "size": size}
