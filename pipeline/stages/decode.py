"""Stage: read + decode, bytes to an 8-bit RGB array (see :mod:`pipeline.images`).

Every file is read and its header checked here (size limits, format, decompression bombs); the
pixels come from the ``decode.backend`` decoder (:mod:`pipeline.backends.decoders`).  Failures
become the row's status (``read_error``, ``decode_error``, ``too_large``) and flow on.
"""

from __future__ import annotations

import numpy as np

from .. import registry
from ..errors import RowError
from ..images import EMPTY_IMAGE, open_image, read_file
from ..io import retry
from ..schema import READ_RETRIES
from .base import Batch, Stage, objarray


class DecodeStage(Stage):
    name = "decode"

    def setup(self) -> None:
        retry.configure(self.cfg.storage)  # this worker's retry budget for reading objects
        self.decoder = registry.create("decode", self.cfg.decode.backend, self.cfg)

    def process(self, batch: Batch) -> Batch:
        c, so = self.cfg.decode, self.cfg.input.storage_options
        n = len(batch["uri"])
        status = np.full(n, "ok", dtype=object)
        error = np.full(n, "", dtype=object)
        width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
        images = [EMPTY_IMAGE] * n
        opened, rows = [], []
        before = retry.counts().get("read", 0)
        for i, uri in enumerate(batch["uri"]):
            try:
                data = read_file(str(uri), so, c.max_bytes)
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
        retried = np.zeros(n, np.int64)  # reads this batch retried (storage faults), told to the driver
        if n:
            retried[0] = retry.counts().get("read", 0) - before
        out.update(status=status, error=error, width=width, height=height, image=objarray(images))
        out[READ_RETRIES] = retried
        return out
