"""Video clips as first-class inputs: a clip is decoded into sampled frames that flow through the
same stages as images, and is judged again as one clip on the driver.

    decode.py   recognise a video by its first bytes; open it with PyAV; sample frames at
                ``video.fps`` with shot cuts; the decode stage's generator of frame batches
    tracks.py   faces linked across sampled frames into tracks; per-track facts; the clip's
                verdict from its primary track (``video.rules``)
    collect.py  on the driver: image rows pass straight on, frame rows are held per clip until
                the clip is complete, then its row, frames/ and tracks/ rows are written
    schema.py   the frames/ and tracks/ part files' columns

The tools built on them live with the other tools: ``pipeline/tools/nightly.py`` keeps
latest/frames.parquet and latest/tracks.parquet, ``clip_explain.py`` (``faceqc explain
CLIP``: shots, tracks, per-frame quality, a timeline PNG) and ``clip_report.py`` (the HTML
report's clip section).

Columns the decode stage adds to every row (images included, so that every batch has one
schema) start with ``video.``; the fuse stage carries them to the driver, and the output schema
never holds them.
"""

from __future__ import annotations

from typing import Optional

PREFIX = "video."
MEDIA = PREFIX + "media"  # "image" | "video"
FRAME_INDEX = PREFIX + "frame_index"  # index of the decoded frame in its stream (-1: not a frame)
T = PREFIX + "t"  # seconds from the clip's start (NaN: not a frame)
SHOT = PREFIX + "shot"  # shot number within the clip (-1: not a frame)
FACTS = PREFIX + "facts"  # JSON facts of the clip, on its end row only ("" elsewhere)
EMBEDDING = "face_embedding"  # the fiqa stage's embedding of the primary face, where it makes one
CLIP_END = "clip_end"  # status of a clip's last row: every stage passes it through untouched

# major brands of ISO BMFF files that are still images (HEIF / AVIF), not videos
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis",
                 b"avio", b"jpeg", b"jpgs", b"crx "}
# file suffixes of still images: such a file is read whole (one request), and recognised as a
# video from those bytes if it holds one; anything else is sniffed first, then streamed
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jp2", ".j2k", ".ppm",
                  ".pgm", ".pbm", ".ico", ".heic", ".heif", ".avif", ".jfif", ".dng")
HEAD_BYTES = 64


def sniff(head: bytes) -> Optional[str]:
    """The container a file's first bytes announce — "mp4" (ISO BMFF: mp4, mov, m4v, 3gp),
    "mkv" (EBML: Matroska, WebM) or "avi" (RIFF AVI) — or None for anything else."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "mp4"  # QuickTime files that start without an ftyp box
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    return None
