"""Video decoding: a clip's sampled frames, streamed.

PyAV (FFmpeg's libraries, bundled in its wheel) opens the file — a local path directly, a bucket
object through an fsspec file (ranged reads, never the whole object in memory) — and decodes its
first video stream frame by frame:

- **sampling**: frames are taken on a time grid of ``1 / video.fps`` seconds by their presentation
  timestamps (so variable frame rates sample evenly in time), sparser when the declared duration
  would give more than ``video.max_frames``;
- **shots**: every decoded frame (not only the sampled ones) is shrunk to a 64x36 grey thumbnail;
  a cut is a mean absolute change above ``video.shot_threshold`` that is also ``video.shot_ratio``
  times the median change of the frames before it (a pan or a zoom changes every frame a little,
  a cut changes one frame a lot);
- **rotation**: the display matrix (phone videos) is applied to every sampled frame;
- **guards**: more than ``video.max_pixels`` per frame or ``video.max_duration_s`` declared ->
  ``too_large`` before any frame is decoded; no video stream (audio only), an unknown codec or
  an unreadable container -> ``decode_error``; a file that breaks (or ends) before its declared
  duration keeps the frames sampled so far and records ``truncated``.

:func:`expand` is what the decode stage returns when its batch holds videos: a generator of
batches (images first, then each clip's frames in chunks of ``decode.resources.batch_size``, then
one ``clip_end`` row carrying the clip's facts as JSON), so that a clip is never whole in memory.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Union

import numpy as np

from ..errors import MissingDependency, RowError
from ..fs import get_fs, is_local, local_path
from ..images import EMPTY_IMAGE, read_file
from . import (
    CLIP_END,
    FACTS,
    FRAME_INDEX,
    HEAD_BYTES,
    IMAGE_SUFFIXES,
    MEDIA,
    SHOT,
    T,
    sniff,
)

INSTALL_HINT = "pip install -c constraints.txt -e \".[video]\" (PyAV)"
THUMB = (64, 36)


def require_av():
    try:
        import av
    except ImportError as e:
        raise MissingDependency(f"video files need PyAV, which is not installed: {INSTALL_HINT}") from e
    return av


@dataclass
class VideoSource:
    """A file recognised as a video: where to open it (a local path, an in-memory copy, or a
    bucket URI) and which container its first bytes announce."""

    uri: str
    kind: str
    path: Optional[str] = None  # local file
    data: Optional[bytes] = None  # already read (a file named like an image that holds a video)
    storage_options: dict = field(default_factory=dict)

    @classmethod
    def of(cls, uri: str, so: Optional[dict] = None) -> "VideoSource":
        """A video known to be one (a clip row's URI), streamed from where it lies."""
        return cls(uri, "video", path=local_path(uri) if is_local(uri) else None, storage_options=so or {})

    def open(self):
        """A PyAV input container (the caller closes it)."""
        av = require_av()
        if self.data is not None:
            return av.open(io.BytesIO(self.data), mode="r")
        if self.path is not None:
            return av.open(self.path, mode="r")
        fs, p = get_fs(self.uri, self.storage_options)
        f = fs.open(p, "rb", block_size=4 * 1024 * 1024, cache_type="readahead")
        try:
            c = av.open(f, mode="r")
        except BaseException:
            f.close()
            raise
        c._faceqc_file = f  # closed with the container (see close())
        return c


def close(container) -> None:
    try:
        container.close()
    finally:
        f = getattr(container, "_faceqc_file", None)
        if f is not None:
            f.close()


def _head(uri: str, so: dict) -> Optional[bytes]:
    """The first bytes of a regular file or object; None when it cannot be read that way (the
    image path then reads it and reports why)."""
    try:
        if is_local(uri):
            path = local_path(uri)
            if not stat.S_ISREG(os.stat(path).st_mode):  # never open a fifo: it would block
                return None
            with open(path, "rb") as f:
                return f.read(HEAD_BYTES)
        fs, p = get_fs(uri, so)
        with fs.open(p, "rb", block_size=HEAD_BYTES, cache_type="none") as f:
            return f.read(HEAD_BYTES)
    except Exception:  # noqa: BLE001 - read_file says what is wrong
        return None


def read_input(uri: str, so: dict, max_bytes: int) -> Union[bytes, VideoSource]:
    """The decode stage's read: an image's bytes (as :func:`pipeline.images.read_file`), or a
    :class:`VideoSource` for a video, recognised by content.  A file named like an image is read
    whole first (one request, as before) and recognised from those bytes; any other file's first
    bytes are read first, so that a video is streamed, never read whole."""
    if not uri.lower().endswith(IMAGE_SUFFIXES):
        head = _head(uri, so)
        kind = sniff(head) if head else None
        if kind:
            return VideoSource(uri, kind, path=local_path(uri) if is_local(uri) else None, storage_options=so)
    data = read_file(uri, so, max_bytes)
    kind = sniff(data[:HEAD_BYTES])
    return VideoSource(uri, kind, data=data) if kind else data


# ------------------------------------------------------------------------------ reading a clip
@dataclass
class Frame:
    rgb: np.ndarray
    t: float
    index: int
    shot: int


def _rotate(rgb: np.ndarray, rotation: float) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, as FFmpeg reports it)."""
    k = int(round((rotation or 0) / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


class ClipReader:
    """Opens a clip, checks it, and yields its sampled frames; :attr:`facts` say what it is and
    what happened (kept up to date while frames are read)."""

    def __init__(self, source: VideoSource, vcfg, threads: int = 1):
        self.source, self.c, self.threads = source, vcfg, max(1, int(threads))
        self.facts: dict = {"status": "ok", "error": None, "container": source.kind, "codec": None,
                            "width": None, "height": None, "rotation": 0, "fps": None, "duration_s": None,
                            "declared_duration_s": None, "frames_decoded": 0, "frames": 0, "shots": 0, "cuts": [],
                            "sample_interval_s": None, "vfr": False, "truncated": False}

    def _fail(self, status: str, msg: str) -> None:
        self.facts.update(status=status, error=msg)

    def frames(self) -> Iterator[Frame]:
        """Sampled frames, in order.  Failures end the iteration and are recorded in facts."""
        av = require_av()
        try:
            container = self.source.open()
        except av.error.FFmpegError as e:
            self._fail("decode_error", f"not a readable video ({self.source.kind}): {e.strerror or e}")
            return
        except Exception as e:  # noqa: BLE001 - missing object, permissions, network
            self._fail("read_error", f"{type(e).__name__}: {e}")
            return
        try:
            yield from self._frames(av, container)
        finally:
            close(container)

    def _open_stream(self, container):
        f = self.facts
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            self._fail("decode_error", "no video stream" + (f" (only {', '.join(kinds)})" if kinds else ""))
            return None
        stream = container.streams.video[0]
        ctx = stream.codec_context
        name = getattr(ctx, "name", None) if ctx is not None else None
        if not name or name == "none":
            tag = getattr(ctx, "codec_tag", None) if ctx is not None else None
            self._fail("decode_error", f"unsupported video codec{f' ({tag})' if tag else ''}")
            return None
        f["codec"] = name
        w, h = int(stream.width or 0), int(stream.height or 0)
        if w < 1 or h < 1:
            self._fail("decode_error", f"invalid frame size {w}x{h} ({name})")
            return None
        if w * h > self.c.max_pixels:
            self._fail("too_large", f"{w}x{h} = {w * h} pixels per frame is over video.max_pixels ({self.c.max_pixels})")
            return None
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        f["declared_duration_s"] = duration
        if duration is not None and duration > self.c.max_duration_s:
            self._fail("too_large", f"{duration:.0f} s is over video.max_duration_s ({self.c.max_duration_s:g})")
            return None
        rate = stream.average_rate or stream.guessed_rate
        f["fps"] = float(rate) if rate else None
        f["width"], f["height"] = w, h
        ctx.thread_count = self.threads
        stream.thread_type = "AUTO"
        return stream

    def _frames(self, av, container) -> Iterator[Frame]:
        f, c = self.facts, self.c
        stream = self._open_stream(container)
        if stream is None:
            return
        interval = 1.0 / c.fps
        if f["declared_duration_s"]:
            interval = max(interval, f["declared_duration_s"] / c.max_frames)
        f["sample_interval_s"] = interval
        tb = float(stream.time_base) if stream.time_base else None
        half_frame = 0.5 / f["fps"] if f["fps"] else 0.0
        start, next_t, shot = None, 0.0, 0
        prev_thumb, hist, deltas, last_t = None, deque(maxlen=25), [], None
        held = None  # (t, index, rgb or None, change from the frame before): its shot is known one frame later

        def settle(d_next: float):
            """Decide whether the held frame starts a new shot: its change is a spike over the
            changes before it and the change after it (a pan changes every frame alike)."""
            nonlocal shot
            t_h, idx_h, rgb_h, d_h = held
            if d_h is not None:
                base = max(statistics.median(hist) if hist else 0.0, d_next)
                if d_h > c.shot_threshold and d_h > c.shot_ratio * base:
                    shot += 1
                    if len(f["cuts"]) < 1000:
                        f["cuts"].append(round(t_h, 3))
                hist.append(d_h)
            if rgb_h is None:
                return None
            f["shots"] = shot + 1
            return Frame(rgb_h, round(t_h, 4), idx_h, shot)

        try:
            for frame in container.decode(stream):
                idx = f["frames_decoded"]
                f["frames_decoded"] += 1
                if frame.pts is not None and tb:
                    ts = frame.pts * tb
                elif frame.time is not None:
                    ts = float(frame.time)
                else:
                    ts = idx / f["fps"] if f["fps"] else float(idx)
                if start is None:
                    start = ts
                t = float(ts - start)
                if t > c.max_duration_s:  # a duration declared short (or none) is no licence to decode for ever
                    f["truncated"] = True
                    f["error"] = f"decoding stopped at video.max_duration_s ({c.max_duration_s:g} s of frames)"
                    break
                if last_t is not None and len(deltas) < 500:
                    deltas.append(t - last_t)
                last_t = t
                thumb = frame.to_ndarray(width=THUMB[0], height=THUMB[1], format="gray",
                                         interpolation="AREA").astype(np.int16)
                d = None if prev_thumb is None else float(np.abs(thumb - prev_thumb).mean()) / 255.0
                prev_thumb = thumb
                if held is not None:
                    out = settle(d)
                    held = None
                    if out is not None:
                        yield out
                rgb = None
                if t + half_frame + 1e-6 >= next_t and f["frames"] < c.max_frames:
                    # the next sampling point after t (computed, not stepped to: a corrupt
                    # timestamp far in the future must not spin)
                    next_t = (math.floor((t + half_frame + 1e-6) / interval) + 1) * interval
                    rot = frame.rotation or 0
                    if rot and not f["rotation"]:
                        f["rotation"] = int(round(rot))
                        if int(round(rot / 90.0)) % 2:
                            f["width"], f["height"] = f["height"], f["width"]
                    rgb = _rotate(frame.to_ndarray(format="rgb24"), rot)
                    f["frames"] += 1
                    f["duration_s"] = round(t, 3)
                elif f["frames"] >= c.max_frames and not f["declared_duration_s"]:
                    break  # no declared duration to spread the samples over: stop at the cap
                held = (t, idx, rgb, d)
        except av.error.FFmpegError as e:
            f["truncated"] = True
            f["error"] = f"decoding stopped after {last_t or 0:.2f} s: {e.strerror or e}"
        if held is not None:
            out = settle(0.0)
            if out is not None:
                yield out
        if f["frames_decoded"] == 0 and f["status"] == "ok":
            self._fail("decode_error", f["error"] or f"no frame could be decoded ({f['codec']})")
            return
        f["shots"] = shot + 1
        f["duration_s"] = round((last_t or 0.0) + (1.0 / f["fps"] if f["fps"] else 0.0), 3)
        declared = f["declared_duration_s"]
        if declared and f["frames"] < c.max_frames and f["duration_s"] < declared - max(1.0, 2 * interval):
            f["truncated"] = True
            f["error"] = f["error"] or f"the file ends after {f['duration_s']:.2f} s of the {declared:.2f} s it declares"
        if len(deltas) >= 3:
            med = statistics.median(deltas)
            f["vfr"] = bool(med > 0 and (max(deltas) - min(deltas)) > 0.5 * med)


def read_frame_at(source: VideoSource, t: float) -> np.ndarray:
    """The frame shown at ``t`` seconds (the clip's own clock, as frames' ``t``), upright: for
    the crop export and the report."""
    require_av()
    container = source.open()
    try:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        first = None
        best, best_d = None, math.inf
        # seek to the keyframe before t (measured from the stream's start), then decode forward
        origin = stream.start_time or 0
        container.seek(int(origin + max(0.0, t - 0.5) / tb), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            ts = (frame.pts if frame.pts is not None else 0) * tb
            if first is None:
                first = origin * tb
            d = abs((ts - first) - t)
            if d < best_d:
                best, best_d = frame, d
            elif ts - first > t:
                break
        if best is None:
            raise RowError("decode_error", f"no frame at {t:.2f} s")
        return _rotate(best.to_ndarray(format="rgb24"), best.rotation or 0)
    finally:
        close(container)


# ------------------------------------------------------------------------------ the stage's output
def video_columns(n: int) -> dict:
    """The ``video.*`` columns of n image rows."""
    return {MEDIA: np.full(n, "image", dtype=object), FRAME_INDEX: np.full(n, -1, np.int64),
            T: np.full(n, np.nan), SHOT: np.full(n, -1, np.int32), FACTS: np.full(n, "", dtype=object)}


def _take(batch: dict, rows: List[int]) -> dict:
    idx = np.asarray(rows, np.int64)
    return {k: np.asarray(v)[idx] if not isinstance(v, list) else [v[i] for i in rows] for k, v in batch.items()}


def _objarray(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, it in enumerate(items):
        out[i] = it
    return out


OWN = ("status", "error", "width", "height", "image")


def _clip_rows(base: dict, frames: List[Frame], facts: Optional[dict]) -> dict:
    """A batch of one clip's frame rows (and its end row when ``facts`` is given).  ``base``: the
    input row's other columns (uri, size, mtime, carried extra.* columns) as length-1 arrays,
    repeated here with their dtypes."""
    n = len(frames) + (facts is not None)
    end = [facts] if facts is not None else []
    out = {k: v[np.zeros(n, np.int64)] for k, v in base.items()}
    images = [fr.rgb for fr in frames] + [EMPTY_IMAGE for _ in end]
    out.update({
        "status": np.asarray(["ok"] * len(frames) + [CLIP_END for _ in end], dtype=object),
        "error": np.full(n, "", dtype=object),
        "width": np.asarray([im.shape[1] for im in images[:len(frames)]] + [e.get("width") or 0 for e in end], np.int32),
        "height": np.asarray([im.shape[0] for im in images[:len(frames)]] + [e.get("height") or 0 for e in end], np.int32),
        "image": _objarray(images),
        MEDIA: np.full(n, "video", dtype=object),
        FRAME_INDEX: np.asarray([fr.index for fr in frames] + [-1 for _ in end], np.int64),
        T: np.asarray([fr.t for fr in frames] + [np.nan for _ in end], np.float64),
        SHOT: np.asarray([fr.shot for fr in frames] + [-1 for _ in end], np.int32),
        FACTS: np.asarray([""] * len(frames) + [json.dumps(e) for e in end], dtype=object),
    })
    return out


def clip_batches(cfg, base: dict, source: VideoSource) -> Iterator[dict]:
    """One clip as batches of at most ``decode.resources.batch_size`` frame rows; the last batch
    ends with the clip's ``clip_end`` row.  Exactly one end row, whatever the file does."""
    size = cfg.decode.resources.batch_size
    reader = ClipReader(source, cfg.video, threads=cfg.decode.resources.num_cpus)
    buf: List[Frame] = []
    sent = 0  # frame rows handed on: what the clip's end row announces, whatever stopped decoding
    try:
        for fr in reader.frames():
            buf.append(fr)
            sent += 1
            if len(buf) >= size:
                yield _clip_rows(base, buf, None)
                buf = []
    except MissingDependency as e:
        reader._fail("decode_error", str(e))
    except RowError as e:
        reader._fail(e.status, str(e))
    except Exception as e:  # noqa: BLE001 - one clip must never stop the job
        if reader.facts["frames"]:
            reader.facts.update(truncated=True, error=f"decoding stopped: {type(e).__name__}: {e}")
        else:
            reader._fail("decode_error", f"{type(e).__name__}: {e}")
    # a frame counted as sampled but lost to an error before it was handed on (it waits one
    # decoded frame for shot detection) must not leave the clip waiting for it
    reader.facts["frames"] = sent
    yield _clip_rows(base, buf, reader.facts)


def expand(cfg, out: dict, videos: List[tuple]):
    """The decode stage's result: ``out`` (its rows, with the ``video.*`` columns added) when the
    batch holds no video; otherwise a generator of batches: the other rows first, then each
    video's frames and its end row (``videos``: (row index, VideoSource) pairs)."""
    n = len(out["uri"])
    out.update(video_columns(n))
    if not videos:
        return out

    skip = {i for i, _ in videos}
    rest = [i for i in range(n) if i not in skip]
    first = _take(out, rest) if rest else None
    clips = [({k: np.asarray(v)[[i]] for k, v in out.items() if k not in OWN and not k.startswith("video.")}, source)
             for i, source in videos]
    return _batches(cfg, first, clips)


def _batches(cfg, first: Optional[dict], clips: list):
    if first is not None:
        yield first
    for base, source in clips:
        yield from clip_batches(cfg, base, source)


def is_video(uri: str, cfg) -> bool:
    """Whether a file holds a video (its first bytes; the whole file for image-named ones)."""
    try:
        return isinstance(read_input(uri, cfg.input.storage_options, cfg.decode.max_bytes), VideoSource)
    except RowError:
        return False
