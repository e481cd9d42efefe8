"""Decode backends: image bytes (already opened and checked by :func:`pipeline.images.open_image`)
to HxWx3 uint8 RGB pixels.

- ``opencv`` (default): OpenCV for complete upright RGB JPEGs (the same libjpeg-turbo output as
  Pillow's, bit for bit, in half the time), Pillow for everything else; image by image, CPU.
- ``torchvision``: plain JPEGs batched through ``torchvision.io.decode_jpeg`` — nvJPEG on the
  GPU when the decode stage has one, libjpeg-turbo on the CPU otherwise; everything else, and
  any batch in which one file fails, as ``opencv``.

A backend's ``decode(items)`` takes (bytes, opened image) pairs and returns, per item, the
pixels or the :class:`RowError` that becomes the row's status.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, ModelError, RowError
from ..images import decode_opened, plain_jpeg
from ..registry import register

Item = Tuple[bytes, object]  # (file bytes, PIL image opened on them)


def _one(data: bytes, im) -> Union[np.ndarray, RowError]:
    try:
        return decode_opened(im, data)
    except RowError as e:
        return e
    except Exception as e:  # noqa: BLE001 - a decoder's own failure is still one row's
        return RowError("decode_error", f"{type(e).__name__}: {e}")


def _cpu_only(cfg) -> None:
    if cfg.decode.resources.num_gpus > 0:
        raise ConfigError("decode.resources.num_gpus > 0 needs decode.backend torchvision (nvJPEG); "
                          "the opencv backend decodes on the CPU")


@register("decode", "opencv", check=_cpu_only)
class OpenCVDecoder:
    """OpenCV (plain JPEGs) and Pillow, image by image on the CPU."""

    def __init__(self, cfg):
        pass

    def decode(self, items: Sequence[Item]) -> List[Union[np.ndarray, RowError]]:
        return [_one(data, im) for data, im in items]


@register("decode", "torchvision", needs=(("torch", "prod"), ("torchvision", "prod")))
class TorchJpeg:
    """Batched JPEG decoding with ``torchvision.io.decode_jpeg``: nvJPEG on the GPU when the
    stage has one, libjpeg-turbo on the CPU otherwise.  Pixels come back to host memory as HxWx3
    uint8 RGB: the stages after decode crop them on the CPU."""

    def __init__(self, cfg):
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        use_gpu = cfg.decode.resources.num_gpus > 0
        self.torch, self._decode, self._rgb = torch, decode_jpeg, ImageReadMode.RGB
        if use_gpu and not torch.cuda.is_available():
            raise ModelError("decode.backend torchvision with decode.resources.num_gpus > 0, "
                             "but this worker sees no CUDA device")
        self.device = torch.device("cuda" if use_gpu else "cpu")

    def decode_jpegs(self, datas: Sequence[bytes]) -> list:
        """HxWx3 uint8 arrays, one per JPEG; raises if any of them fails (the caller then
        decodes that batch image by image)."""
        torch = self.torch
        ts = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        out = self._decode(ts, mode=self._rgb, device=self.device)
        # CHW -> HWC on the device: a strided transpose on the host costs ~5 ms per 1 MP image
        return [t.permute(1, 2, 0).contiguous().cpu().numpy() for t in out]

    def decode(self, items: Sequence[Item]) -> List[Union[np.ndarray, RowError]]:
        out: list = [None] * len(items)
        batch = [i for i, (data, im) in enumerate(items) if plain_jpeg(im, data)]
        arrays: list = [None] * len(batch)
        if batch:
            try:
                arrays = self.decode_jpegs([items[i][0] for i in batch])
            except Exception:  # noqa: BLE001 - one bad file fails the batch call: go one by one
                pass
        for i, arr in zip(batch, arrays):
            im = items[i][1]
            if arr is not None and arr.shape[:2] == (im.size[1], im.size[0]):
                out[i] = arr
        return [o if o is not None else _one(*items[i]) for i, o in enumerate(out)]
