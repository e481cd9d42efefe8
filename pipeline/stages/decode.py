"""Stage: read + decode, bytes to an 8-bit RGB array (see :mod:`pipeline.images`).

Every file is read and its header checked here (size limits, format, decompression bombs); the
pixels come from the ``decode.backend`` decoder (:mod:`pipeline.backends.decoders`).  Failures
become the row's status (``read_error``, ``decode_error``, ``too_large``) and flow on.

A video (recognised by its first bytes) becomes its sampled frames: then ``process`` returns a
generator of batches (:func:`pipeline.video.decode.expand`).
"""

from __future__ import annotations

import numpy as np

from .. import registry
from ..errors import RowError
from ..images import EMPTY_IMAGE, open_image
from ..io import retry
from ..schema import READ_RETRIES
from ..video.decode import expand, read_input
from .base import Batch, Stage, objarray


class DecodeStage(Stage):
    name = "decode"

    def setup(self) -> None:
        retry.configure(self.cfg.storage)  # this worker's retry budget for reading objects
        self.decoder = registry.create("decode", self.cfg.decode.backend, self.cfg)

    def process(self, batch: Batch):
        c, so = self.cfg.decode, self.cfg.input.storage_options
        n = len(batch["uri"])
        status = np.full(n, "ok", dtype=object)
        error = np.full(n, "", dtype=object)
        width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
        images = [EMPTY_IMAGE] * n
        opened, rows, videos = [], [], []
        before = retry.counts().get("read", 0)
        for i, uri in enumerate(batch["uri"]):
            try:
                data = read_input(str(uri), so, c.max_bytes)
                if not isinstance(data, bytes):
                    videos.append((i, data))
                    continue
                opened.append((data, open_image(data, c.max_pixels)))
                rows.append(i)
            except RowError as e:
                status[i], error[i] = e.status, str(e)
            except Exception as e:  # noqa: BLE001 - whatever else a file does, it is this row's
                status[i], error[i] = "decode_error", f"{type(e).__name__}: {e}"
        for i, got in zip(rows, self.decoder.decode(opened) if opened else []):
            if isinstance(got, RowError):
                status[i], error[i] = got.status, str(got)
            else:
                images[i] = got
                height[i], width[i] = got.shape[:2]
        out = dict(batch)
        # reads this batch retried (storage faults), told to the driver on its first image row (a
        # clip's rows are its frames: a batch of clips only does not report them)
        retried = np.zeros(n, np.int64)
        video_rows = {i for i, _ in videos}
        first = next((i for i in range(n) if i not in video_rows), None)
        if first is not None:
            retried[first] = retry.counts().get("read", 0) - before
        out.update(status=status, error=error, width=width, height=height, image=objarray(images))
        out[READ_RETRIES] = retried
        return expand(self.cfg, out, videos)
